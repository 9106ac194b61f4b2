// Quantizer throughput: encode and decode of every codec at a cache-resident size (256 rows of
// C = 192, ~200 KB of floats) and a DRAM-sized one (65536 rows, ~50 MB of floats, ~25 MB fp16),
// single-threaded; a stream-like memory bandwidth measurement (read, write, copy) as the bound;
// and an estimate of one layer's prefill time for the default model (OpenBLAS sgemm over the
// layer's weight shapes) to put encode costs in proportion; decode_add (y += decoded rows) of
// the AQUA-KV residual codecs, 256 rows. Counters: items = values,
// bytes = fp16 bytes of decoded output (decode) or float bytes of input (encode).
//   build/bench_quant --benchmark_min_time=0.2s
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "aquakv/quant/channel_scaled_codec.h"
#include "aquakv/quant/codec.h"
#include "aquakv/quant/cq_codec.h"
#include "aquakv/quant/kvquant_codec.h"
#include "aquakv/quant/gauss_rng.h"
#include "aquakv/util/parallel.h"

namespace aquakv {
namespace {

constexpr int64_t kDim = 192;  // default model's KV width (3 heads x 64)

const char* const kSpecs[] = {"fp16",          "uniform:2:g32:token", "uniform:4:g32:token",
                              "uniform:2:g32:channel", "higgs:2x16:g192", "higgs:2x16:g64",
                              "higgs:2x16:g192:seed1", "higgs:2x64:g192", "higgs:2x256:g192",
                              "higgs:4x256:g64", "higgs:4x256:g192", "higgs:4x16:g192",
                              "higgs:1x4:g192",   "higgs:8x65536:g192", "higgs:6x4096:g192",
                              "q8_0",
                              "q4_0",                "q4_1",            "q8_0r:h64",
                              "q4_0r:h64",           "q4_1r:h64",       "kvquant3:key",
                              "kvquant3:value",      "cq:4c8b",         "cq:8c8b"};

std::vector<float> gaussian(int64_t n) {
  GaussRng rng(1);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = float(rng.normal());
  return x;
}

// The reference EDEN6-4096 grid: $AQUAKV_SHARED_DIR (default ../shared, from the repository
// root)/reference/grids; its benchmarks are left out when the file is not there.
std::string eden6_path() {
  const char* dir = std::getenv("AQUAKV_SHARED_DIR");
  return std::string(dir ? dir : "../shared") + "/reference/grids/EDEN6-4096.n4096xd6.f32le";
}

// Spec strings of quant/codec.h, plus the calibrated codecs with synthetic tables (their speed
// does not depend on the table values): KVQuant 3-bit with ceil(1%) = 2 outliers per row
// (keys: per-channel ranges; values: per token), CQ with c channels x 8 bits.
std::unique_ptr<Codec> bench_codec(const std::string& spec) {
  if (spec.rfind("kvquant3:", 0) == 0) {
    KvQuantParams p;
    p.bits = 3;
    for (int i = 0; i < 8; ++i) p.centroids.push_back(-1.0f + (float(i) + 0.5f) / 4.0f);
    p.per_channel = spec == "kvquant3:key";
    if (p.per_channel) {
      p.offset.assign(kDim, 0.0f);
      p.scale.assign(kDim, 2.5f);
    }
    p.outliers_per_row = 2;
    return std::make_unique<KvQuantCodec>(spec, kDim, p);
  }
  if (spec.rfind("cq:", 0) == 0) {
    const int64_t c = spec == "cq:4c8b" ? 4 : 8;
    return std::make_unique<CqCodec>(spec, kDim, c, 8, gaussian(kDim * 256));
  }
  if (std::string(spec) == "higgs:6x4096:g192") {  // no built-in 6x4096 grid: the reference file
    return make_codec(spec + ":grid=" + eden6_path(), kDim);
  }
  const std::string suffix = "+chscale";  // the codec in a ChannelScaledCodec, scales in [0.5, 2)
  if (spec.size() > suffix.size() && spec.compare(spec.size() - suffix.size(), suffix.size(), suffix) == 0) {
    std::vector<float> s(static_cast<size_t>(kDim));
    for (size_t c = 0; c < s.size(); ++c) s[c] = 0.5f + 1.5f * float((c * 37) % 64) / 64.0f;
    return std::make_unique<ChannelScaledCodec>(bench_codec(spec.substr(0, spec.size() - suffix.size())), std::move(s));
  }
  return make_codec(spec, kDim);
}

void BM_Encode(benchmark::State& st, const char* spec) {
  const auto c = bench_codec(spec);
  const int64_t rows = st.range(0) / c->block_rows() * c->block_rows();
  const auto x = gaussian(rows * kDim);
  std::vector<uint8_t> b(static_cast<size_t>(c->encoded_bytes(rows)));
  for (auto _ : st) {
    c->encode(x.data(), rows, b.data());
    benchmark::DoNotOptimize(b.data());
  }
  st.SetItemsProcessed(st.iterations() * rows * kDim);
  st.SetBytesProcessed(st.iterations() * rows * kDim * 4);
  st.counters["bits/value"] = c->bits_per_value();
}

void BM_DecodeFp16(benchmark::State& st, const char* spec) {
  const auto c = bench_codec(spec);
  const int64_t rows = st.range(0) / c->block_rows() * c->block_rows();
  const auto x = gaussian(rows * kDim);
  std::vector<uint8_t> b(static_cast<size_t>(c->encoded_bytes(rows)));
  c->encode(x.data(), rows, b.data());
  std::vector<uint16_t> y(static_cast<size_t>(rows * kDim));
  for (auto _ : st) {
    c->decode_fp16(b.data(), rows, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetItemsProcessed(st.iterations() * rows * kDim);
  st.SetBytesProcessed(st.iterations() * rows * kDim * 2);
}

void BM_DecodeF32(benchmark::State& st, const char* spec) {
  const auto c = bench_codec(spec);
  const int64_t rows = st.range(0) / c->block_rows() * c->block_rows();
  const auto x = gaussian(rows * kDim);
  std::vector<uint8_t> b(static_cast<size_t>(c->encoded_bytes(rows)));
  c->encode(x.data(), rows, b.data());
  std::vector<float> y(static_cast<size_t>(rows * kDim));
  for (auto _ : st) {
    c->decode(b.data(), rows, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetItemsProcessed(st.iterations() * rows * kDim);
  st.SetBytesProcessed(st.iterations() * rows * kDim * 4);
}

// y += decode(codes) (Codec::decode_add: the AQUA-KV rebuild's "prediction + decoded residual").
void BM_DecodeAdd(benchmark::State& st, const char* spec) {
  const auto c = bench_codec(spec);
  const int64_t rows = st.range(0) / c->block_rows() * c->block_rows();
  const auto x = gaussian(rows * kDim);
  std::vector<uint8_t> b(static_cast<size_t>(c->encoded_bytes(rows)));
  c->encode(x.data(), rows, b.data());
  std::vector<float> y = gaussian(rows * kDim);
  for (auto _ : st) {
    c->decode_add(b.data(), rows, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetItemsProcessed(st.iterations() * rows * kDim);
  st.SetBytesProcessed(st.iterations() * rows * kDim * 4);
}

// The AQUA-KV residual codecs (aq2's 2x16 and a bit plan's choices), plain and channel-scaled.
const char* const kDecodeAddSpecs[] = {"higgs:2x16:g192",          "higgs:2x64:g192",          "higgs:2x256:g192",
                                       "higgs:4x16:g192",          "higgs:8x65536:g192",       "higgs:2x64:g192+chscale",
                                       "higgs:4x16:g192+chscale",  "higgs:8x65536:g192+chscale"};

// Stream-like single-core bandwidth on 256 MiB buffers.
constexpr int64_t kStreamFloats = int64_t(64) << 20;

void BM_StreamRead(benchmark::State& st) {
  std::vector<float> a(static_cast<size_t>(kStreamFloats), 1.0f);
  for (auto _ : st) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = 0; i < kStreamFloats; i += 4) {
      s0 += a[size_t(i)]; s1 += a[size_t(i + 1)]; s2 += a[size_t(i + 2)]; s3 += a[size_t(i + 3)];
    }
    benchmark::DoNotOptimize(s0 + s1 + s2 + s3);
  }
  st.SetBytesProcessed(st.iterations() * kStreamFloats * 4);
}

void BM_StreamWrite(benchmark::State& st) {
  std::vector<float> a(static_cast<size_t>(kStreamFloats), 1.0f);
  float v = 0;
  for (auto _ : st) {
    v += 1;
    std::fill(a.begin(), a.end(), v);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * kStreamFloats * 4);
}

void BM_StreamCopy(benchmark::State& st) {
  std::vector<float> a(static_cast<size_t>(kStreamFloats), 1.0f), b(static_cast<size_t>(kStreamFloats));
  for (auto _ : st) {
    std::memcpy(b.data(), a.data(), size_t(kStreamFloats) * 4);
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * kStreamFloats * 8);  // read + write
}

// One layer of the default model (d_model 576, q 576, k 192, v 192, o 576, ffn 3 x 1536) as fp32
// GEMMs over a chunk of tokens, one thread: a lower bound on the layer's prefill time per token
// (attention itself and dequantization of the Q4_1 weights excluded).
void BM_LayerPrefillGemm(benchmark::State& st) {
  set_num_threads(1);
  const int tokens = int(st.range(0));
  const int dm = 576, ff = 1536;
  const auto x = gaussian(int64_t(tokens) * ff);
  const auto w = gaussian(int64_t(dm) * ff);
  std::vector<float> y(static_cast<size_t>(tokens) * ff);
  struct Shape { int k, n; };
  const Shape shapes[] = {{dm, dm}, {dm, 192}, {dm, 192}, {dm, dm}, {dm, ff}, {dm, ff}, {ff, dm}};
  for (auto _ : st) {
    for (const auto& s : shapes) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, s.n, s.k, 1.0f, x.data(), s.k,
                  w.data(), s.k, 0.0f, y.data(), s.n);
    }
    benchmark::DoNotOptimize(y.data());
  }
  st.SetItemsProcessed(st.iterations() * tokens);
}

void register_all() {
  for (const char* s : kSpecs) {
    if (std::string(s) == "higgs:6x4096:g192" && !std::filesystem::exists(eden6_path())) continue;
    benchmark::RegisterBenchmark((std::string("Encode/") + s).c_str(), BM_Encode, s)->Arg(256)->Arg(65536)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("DecodeFp16/") + s).c_str(), BM_DecodeFp16, s)->Arg(256)->Arg(65536)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("DecodeF32/") + s).c_str(), BM_DecodeF32, s)->Arg(256)->Unit(benchmark::kMicrosecond);
  }
  for (const char* s : kDecodeAddSpecs)
    benchmark::RegisterBenchmark((std::string("DecodeAdd/") + s).c_str(), BM_DecodeAdd, s)->Arg(256)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("Stream/read", BM_StreamRead)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Stream/write", BM_StreamWrite)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Stream/copy", BM_StreamCopy)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("LayerPrefillGemm", BM_LayerPrefillGemm)->Arg(128)->Unit(benchmark::kMillisecond);
}

}  // namespace
}  // namespace aquakv

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  aquakv::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
