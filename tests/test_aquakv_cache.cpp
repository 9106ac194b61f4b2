// Tests of the compressed cache (kv/aquakv_cache.h) with small test codecs defined here, so the
// cache's bookkeeping is checked independently of quant/: exactness with quantization off and
// zero predictors, decoder == an independent per-token encoder bit for bit, independence of
// chunk boundaries, exact sinks and buffer, live bytes == formula, out-of-order reads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "aquakv/kv/aquakv_cache.h"
#include "aquakv/ops/affine_rows.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"
#include "test_codecs.h"

namespace aquakv {
namespace {

constexpr int kL = 4, kH = 2, kHd = 8, kC = kH * kHd;

KvShape shape(int64_t max_tokens = 1024) {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = max_tokens;
  return s;
}

AffineMap rand_map(int64_t in, int64_t out, int64_t rank, std::mt19937& rng, float scale) {
  std::normal_distribution<float> g(0, scale / std::sqrt(float(in)));
  AffineMap m;
  m.in = in;
  m.out = out;
  m.rank = rank;
  if (rank == 0) m.w.resize(size_t(in * out)); else { m.u.resize(size_t(in * rank)); m.v.resize(size_t(rank * out)); }
  m.bias.resize(size_t(out));
  for (auto* v : {&m.w, &m.u, &m.v, &m.bias})
    for (auto& e : *v) e = g(rng);
  return m;
}

std::shared_ptr<Adapters> rand_adapters(int64_t rank, float scale, bool zero = false) {
  std::mt19937 rng(5);
  auto a = std::make_shared<Adapters>();
  a->model = {"test", kL, kH, kHd, kC, 1};
  a->layers.resize(kL);
  for (int l = 1; l < kL; ++l) {
    a->layers[size_t(l)].key = rand_map(kC, kC, rank, rng, zero ? 0.f : scale);
    a->layers[size_t(l)].value = rand_map(2 * kC, kC, rank, rng, zero ? 0.f : scale);
  }
  return a;
}

// Token t's K (or V) at layer l: smooth in l so predictors have something to predict.
std::vector<float> tokens(int64_t T, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0, 1);
  std::vector<float> x(size_t(T * kL * 2 * kC));  // [t][l][k|v][C]
  for (auto& e : x) e = g(rng);
  return x;
}
const float* kv_at(const std::vector<float>& x, int64_t t, int l, int which) {
  return x.data() + ((t * kL + l) * 2 + which) * kC;
}

struct Trace {
  std::vector<std::vector<float>> k, v;  // per layer, final step's view (T, C)
  std::vector<int64_t> live;             // live bytes after every step
  std::vector<std::vector<KvBitsTerm>> bits;
};

// Feeds T tokens in steps of `step` (the last one shorter), reading every layer each step.
Trace feed(KvCache& cache, const std::vector<float>& x, int64_t T, int64_t step, int read_from = 0) {
  Trace run;
  const int seq = cache.add_sequence();
  std::vector<float> k, v;
  for (int64_t t0 = 0; t0 < T; t0 += step) {
    const int64_t n = std::min(step, T - t0);
    cache.begin_step(seq, n);
    run.k.assign(kL, {});
    run.v.assign(kL, {});
    for (int l = 0; l < kL; ++l) {
      k.resize(size_t(n * kC));
      v.resize(size_t(n * kC));
      for (int64_t i = 0; i < n; ++i) {
        std::memcpy(&k[size_t(i * kC)], kv_at(x, t0 + i, l, 0), kC * 4);
        std::memcpy(&v[size_t(i * kC)], kv_at(x, t0 + i, l, 1), kC * 4);
      }
      cache.append(l, k.data(), v.data());
      if (l < read_from) continue;
      const KvView view = cache.read(l);
      EXPECT_EQ(view.n_tokens, t0 + n);
      EXPECT_EQ(view.dtype, KvDtype::F32);
      for (int64_t i = 0; i < view.n_tokens; ++i) {
        const float* kr = static_cast<const float*>(view.k) + i * view.row_stride;
        const float* vr = static_cast<const float*>(view.v) + i * view.row_stride;
        run.k[size_t(l)].insert(run.k[size_t(l)].end(), kr, kr + kC);
        run.v[size_t(l)].insert(run.v[size_t(l)].end(), vr, vr + kC);
      }
    }
    cache.end_step();
    run.live.push_back(cache.live_bytes());
    run.bits.push_back(cache.bits_report(seq));
  }
  return run;
}

float h(float x) { return fp16_to_fp32(fp32_to_fp16(x)); }
uint32_t bits_of(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// Independent per-token encoder: the AQUA-KV recurrence for one token, with the scalar affine
// reference and one-row codec calls.
void reference_token(const std::vector<float>& x, int64_t t, const Adapters* a, const Codec& kq,
                     const Codec& vq, const Codec& k0, const Codec& v0, float* out_k /*(L,C)*/, float* out_v) {
  std::vector<uint8_t> codes(size_t(std::max(kq.block_bytes(), vq.block_bytes()) + 64));
  std::vector<float> pred(kC), res(kC), target(kC), dec(kC);
  for (int l = 0; l < kL; ++l) {
    for (int which = 0; which < 2; ++which) {
      const Codec& q = l == 0 ? (which ? v0 : k0) : (which ? vq : kq);
      const AffineMap* m = nullptr;
      if (l > 0 && a) m = which ? &a->layers[size_t(l)].value : &a->layers[size_t(l)].key;
      const float* src = kv_at(x, t, l, which);
      for (int j = 0; j < kC; ++j) target[size_t(j)] = h(src[j]);
      float* out = (which ? out_v : out_k) + l * kC;
      if (m && !m->empty()) {
        AffineInput in[2] = {{which ? out_k + l * kC : out_k + (l - 1) * kC, kC, kC}, {out_v + (l - 1) * kC, kC, kC}};
        if (m->rank == 0) {
          affine_rows_ref(1, in, which ? 2 : 1, m->w.data(), kC, m->bias.data(), pred.data(), kC);
        } else {
          std::vector<float> mid(size_t(m->rank));
          affine_rows_ref(1, in, which ? 2 : 1, m->u.data(), m->rank, nullptr, mid.data(), m->rank);
          const AffineInput mi{mid.data(), m->rank, m->rank};
          affine_rows_ref(1, &mi, 1, m->v.data(), kC, m->bias.data(), pred.data(), kC);
        }
        for (int j = 0; j < kC; ++j) res[size_t(j)] = target[size_t(j)] - pred[size_t(j)];
        q.encode(res.data(), 1, codes.data());
        q.decode(codes.data(), 1, dec.data());
        for (int j = 0; j < kC; ++j) out[j] = pred[size_t(j)] + dec[size_t(j)];
      } else {
        q.encode(target.data(), 1, codes.data());
        q.decode(codes.data(), 1, out);
      }
    }
  }
}

CompressedCacheOptions opts(std::shared_ptr<const Codec> kq, std::shared_ptr<const Codec> vq,
                            std::shared_ptr<const Adapters> a, int64_t p, int64_t b) {
  CompressedCacheOptions o;
  o.name = "test";
  o.sinks = p;
  o.buffer = b;
  o.key_codec = kq;
  o.value_codec = vq;
  o.adapters = a;
  return o;
}

TEST(CompressedCache, QuantizationOffAndZeroPredictorsIsExactFp16) {
  auto half = std::make_shared<HalfCodec>(kC);
  const auto x = tokens(300, 1);
  for (auto a : {std::shared_ptr<Adapters>(), rand_adapters(0, 0, true)}) {
    auto cache = make_compressed_cache(shape(), opts(half, half, a, 4, 16));
    const Trace run = feed(*cache, x, 300, 7);
    for (int l = 0; l < kL; ++l)
      for (int64_t t = 0; t < 300; ++t)
        for (int j = 0; j < kC; ++j) {
          ASSERT_EQ(run.k[size_t(l)][size_t(t * kC + j)], h(kv_at(x, t, l, 0)[j])) << l << " " << t;
          ASSERT_EQ(run.v[size_t(l)][size_t(t * kC + j)], h(kv_at(x, t, l, 1)[j])) << l << " " << t;
        }
  }
}

// Compressed tokens equal the per-token reference bit for bit; sinks and buffer are exact fp16.
void check_against_reference(int64_t rank, int64_t step, int64_t p, int64_t b, bool l0_exact) {
  auto kq = std::make_shared<CoarseCodec>(kC, 4);
  auto vq = std::make_shared<CoarseCodec>(kC, 3);
  auto half = std::make_shared<HalfCodec>(kC);
  auto a = rand_adapters(rank, 0.8f);
  CompressedCacheOptions o = opts(kq, vq, a, p, b);
  if (l0_exact) o.layer0_key_codec = o.layer0_value_codec = half;
  auto cache = make_compressed_cache(shape(), o);
  const int64_t T = 333;
  const auto x = tokens(T, 2);
  const Trace run = feed(*cache, x, T, step);
  // The views are those of the last step's read, before its end_step: exact are the sinks, the
  // buffer left by the previous step and the last step's tokens.
  const int64_t row = 2 * 2 * kC * kL;
  const int64_t last_n = (T - 1) % step + 1, T_prev = T - last_n;
  int64_t n_buf = last_n;
  if (run.bits.size() >= 2)
    n_buf += std::llround(run.bits[run.bits.size() - 2][3].bits_per_value * double(T_prev * kL * 2 * kC) / 8 / row);
  const int64_t n_sinks = std::min<int64_t>(p, T);
  ASSERT_LT(n_buf, b + 2 * step);
  ASSERT_GT(T - n_buf - n_sinks, 100) << "too few compressed tokens to test";
  std::vector<float> rk(kL * kC), rv(kL * kC);
  int64_t mismatches = 0;
  for (int64_t t = 0; t < T; ++t) {
    const bool exact = t < n_sinks || t >= T - n_buf;
    const Codec& k0 = l0_exact ? static_cast<const Codec&>(*half) : *kq;
    const Codec& v0 = l0_exact ? static_cast<const Codec&>(*half) : *vq;
    if (!exact) reference_token(x, t, a.get(), *kq, *vq, k0, v0, rk.data(), rv.data());
    for (int l = 0; l < kL; ++l)
      for (int j = 0; j < kC; ++j) {
        const float wk = exact ? h(kv_at(x, t, l, 0)[j]) : rk[size_t(l * kC + j)];
        const float wv = exact ? h(kv_at(x, t, l, 1)[j]) : rv[size_t(l * kC + j)];
        if (mismatches < 3 && bits_of(run.k[size_t(l)][size_t(t * kC + j)]) != bits_of(wk)) printf("t=%ld l=%d j=%d got %g want %g exact=%d\n", long(t), l, j, run.k[size_t(l)][size_t(t * kC + j)], wk, int(exact));
        mismatches += bits_of(run.k[size_t(l)][size_t(t * kC + j)]) != bits_of(wk);
        mismatches += bits_of(run.v[size_t(l)][size_t(t * kC + j)]) != bits_of(wv);
      }
  }
  EXPECT_EQ(mismatches, 0) << "rank " << rank << " step " << step << " p " << p << " b " << b;
}

TEST(CompressedCache, DecoderEqualsPerTokenEncoderBitForBit) {
  check_against_reference(0, 32, 4, 128, false);
  check_against_reference(0, 1, 4, 16, true);
  check_against_reference(3, 5, 0, 9, false);
  check_against_reference(0, 50, 2, 1, true);
}

TEST(CompressedCache, ReconstructionDoesNotDependOnChunkBoundaries) {
  auto kq = std::make_shared<CoarseCodec>(kC, 3);
  auto a = rand_adapters(0, 0.8f);
  const auto x = tokens(200, 3);
  // Same sinks, different steps and buffer sizes -> different chunk boundaries.
  auto c1 = make_compressed_cache(shape(), opts(kq, kq, a, 4, 16));
  auto c2 = make_compressed_cache(shape(), opts(kq, kq, a, 4, 50));
  const Trace r1 = feed(*c1, x, 200, 3);
  const Trace r2 = feed(*c2, x, 200, 11);
  // Tokens compressed in both runs: from the sinks up to the smaller compressed prefix.
  for (int l = 0; l < kL; ++l)
    for (int64_t t = 4; t < 150; ++t)
      for (int j = 0; j < kC; ++j) {
        ASSERT_EQ(bits_of(r1.k[size_t(l)][size_t(t * kC + j)]), bits_of(r2.k[size_t(l)][size_t(t * kC + j)])) << l << " " << t;
        ASSERT_EQ(bits_of(r1.v[size_t(l)][size_t(t * kC + j)]), bits_of(r2.v[size_t(l)][size_t(t * kC + j)])) << l << " " << t;
      }
  // And they are really compressed (lossy), not exact copies.
  EXPECT_NE(r1.k[1][size_t(20 * kC)], h(kv_at(x, 20, 1, 0)[0]));
}

TEST(CompressedCache, LiveBytesEqualTheFormula) {
  auto kq = std::make_shared<CoarseCodec>(kC, 4);
  auto vq = std::make_shared<HalfCodec>(kC);
  auto half = std::make_shared<HalfCodec>(kC);
  CompressedCacheOptions o = opts(kq, vq, rand_adapters(0, 0.5f), 4, 128);
  o.layer0_key_codec = o.layer0_value_codec = half;
  auto cache = make_compressed_cache(shape(), o);
  const auto x = tokens(700, 4);
  const Trace run = feed(*cache, x, 700, 32);
  // Reference protocol: chunks of 156, 128, 128, ... once the buffer holds >= 128 tokens.
  int64_t compressed = 0, exact = 0;
  for (size_t s = 0; s < run.live.size(); ++s) {
    const int64_t T = std::min<int64_t>(700, int64_t(s + 1) * 32);
    const int64_t buf = T - std::min<int64_t>(T, 4) - compressed;
    if (buf >= 128) compressed += buf;
    exact = T - compressed;
    const int64_t per_tok_exact = kL * 2 * kC * 2;
    const int64_t per_tok_codes = (kC + 4) * (kL - 1) + 2 * kC * (kL - 1) + 2 * 2 * kC;  // K coarse, V half, layer 0 half
    ASSERT_EQ(run.live[s], exact * per_tok_exact + compressed * per_tok_codes) << "step " << s;
    double sum = 0;
    for (const auto& term : run.bits[s]) sum += term.bits_per_value;
    ASSERT_NEAR(sum * double(T * kL * 2 * kC) / 8, double(run.live[s]), 1e-6) << s;
  }
  EXPECT_EQ(compressed, 668);
  EXPECT_EQ(cache->fixed_bytes(), (kL - 1) * (3 * kC * kC + 2 * kC) * 4);
}

TEST(CompressedCache, OutOfOrderReadRebuildsFromLayerZero) {
  auto kq = std::make_shared<CoarseCodec>(kC, 3);
  auto a = rand_adapters(0, 0.8f);
  const auto x = tokens(100, 6);
  auto c1 = make_compressed_cache(shape(), opts(kq, kq, a, 4, 16));
  auto c2 = make_compressed_cache(shape(), opts(kq, kq, a, 4, 16));
  const Trace all = feed(*c1, x, 100, 10);
  const Trace last = feed(*c2, x, 100, 10, kL - 1);  // reads only the last layer
  EXPECT_EQ(all.k[kL - 1], last.k[kL - 1]);
  EXPECT_EQ(all.v[kL - 1], last.v[kL - 1]);
}

TEST(CompressedCache, BlockCodecsCompressWholeBlocks) {
  auto blk = std::make_shared<CoarseCodec>(kC, 4, 8);
  auto cache = make_compressed_cache(shape(), opts(blk, blk, nullptr, 0, 20));
  const auto x = tokens(50, 7);
  const Trace run = feed(*cache, x, 50, 10);
  // Steps: 10, 20 -> 16 compressed (4 left), 14, 24 -> +24 = 40, 10.
  const int64_t tok_codes = 8 * (kC + 4) / 8 * 2 * kL;  // bytes per token of codes
  const int64_t tok_exact = kL * 2 * kC * 2;
  EXPECT_EQ(run.live[1], 16 * tok_codes + 4 * tok_exact);
  EXPECT_EQ(run.live[4], 40 * tok_codes + 10 * tok_exact);
}

TEST(CompressedCache, RejectsBadUse) {
  auto half = std::make_shared<HalfCodec>(kC);
  auto wrong = std::make_shared<HalfCodec>(kC + 1);
  EXPECT_THROW(make_compressed_cache(shape(), opts(wrong, half, nullptr, 4, 8)), Error);
  auto cache = make_compressed_cache(shape(8), opts(half, half, nullptr, 4, 8));
  const int s = cache->add_sequence();
  EXPECT_THROW(cache->begin_step(s, 9), Error);
  EXPECT_THROW(cache->begin_step(s + 1, 1), Error);
  cache->begin_step(s, 2);
  EXPECT_THROW(cache->read(0), Error);  // read before append
  std::vector<float> k(2 * kC, 1.f);
  cache->append(0, k.data(), k.data());
  EXPECT_THROW(cache->append(0, k.data(), k.data()), Error);
  EXPECT_THROW(cache->append(kL, k.data(), k.data()), Error);
}

}  // namespace
}  // namespace aquakv
