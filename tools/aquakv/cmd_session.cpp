// `aquakv session`: session files (docs/SESSIONS.md).
//   session inspect FILE        header, tokens, format, bits per value and size breakdown
//   session bench -f TEXT ...   per format and prompt length: file bytes, bits per value, save
//                               and restore times (same format and into fp16) against a fresh
//                               prefill of the same prompt, all in one run
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>

#include "aquakv/engine/forward.h"
#include "aquakv/engine/model.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/eval/engine_runner.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/kv_state.h"
#include "aquakv/kv/session_file.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/hash.h"
#include "aquakv/util/parallel.h"
#include "command.h"
#include "self_adapters.h"

namespace aquakv::cli {
namespace {

using clock_type = std::chrono::steady_clock;
double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// What a section holds, from its name's prefix (the formats' section names, kv/*.cpp).
std::string section_kind(const std::string& name) {
  static const std::map<std::string, std::string> kinds = {
      {"k", "rows (keys)"},           {"v", "rows (values)"},
      {"sk", "exact sinks (keys)"},   {"sv", "exact sinks (values)"},
      {"bk", "exact buffer (keys)"},  {"bv", "exact buffer (values)"},
      {"ck", "codes+scales (keys)"},  {"cv", "codes+scales (values)"}};
  const auto it = kinds.find(name.substr(0, name.find('.')));
  return it == kinds.end() ? "positions and counters" : it->second;
}

int inspect(const std::string& path) {
  const auto f = SessionFile::open(path);
  const SessionInfo& in = f->info();
  const int64_t C = in.n_kv_heads * in.head_dim;
  const double values = double(in.tokens.size()) * double(in.n_layers) * 2.0 * double(C);
  auto bpv = [&](uint64_t b) { return session_bits_per_value(b, int64_t(in.tokens.size()), in.n_layers, C); };
  std::printf("session file   %s\n", path.c_str());
  std::printf("version        %u\n", kSessionVersion);
  std::printf("model          %s, %lld layers x %lld KV heads x %lld, model hash %016llx\n", in.arch.c_str(),
              (long long)in.n_layers, (long long)in.n_kv_heads, (long long)in.head_dim,
              (unsigned long long)in.model_hash);
  std::printf("format         %s\n", in.kv_spec.c_str());
  std::printf("state format   %s\n", in.state_format.c_str());
  if (in.adapter_checksum != 0) std::printf("adapters       checksum %016llx\n", (unsigned long long)in.adapter_checksum);
  std::printf("tokens         %zu (context %lld when saved), token hash %016llx\n", in.tokens.size(),
              (long long)in.n_ctx, (unsigned long long)fnv1a64(in.tokens.data(), int64_t(in.tokens.size() * 4)));
  std::printf("logits         %s\n", in.logits.empty() ? "not saved" : fmt::format("{} (after the last token)", in.logits.size()).c_str());
  std::printf("file bytes     %llu (%.2f MiB), %.3f bits per value (every byte of the file over %.0f values)\n\n",
              (unsigned long long)f->file_bytes(), double(f->file_bytes()) / 1048576.0, bpv(f->file_bytes()), values);
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_kind;  // raw, stored
  uint64_t stored = 0;
  int zstd = 0;
  for (const SessionSection& s : f->sections()) {
    auto& k = by_kind[section_kind(s.name)];
    k.first += s.raw_bytes;
    k.second += s.stored_bytes;
    stored += s.stored_bytes;
    zstd += s.codec == SectionCodec::kZstd;
  }
  std::printf("%-26s %14s %14s %10s\n", "part", "bytes", "in memory", "bits/value");
  for (const auto& [kind, b] : by_kind)
    std::printf("%-26s %14llu %14llu %10.3f\n", kind.c_str(), (unsigned long long)b.second,
                (unsigned long long)b.first, bpv(b.second));
  const uint64_t header = f->file_bytes() - stored;
  std::printf("%-26s %14llu %14s %10.3f\n", "header, tokens, logits", (unsigned long long)header, "-", bpv(header));
  std::printf("\n%zu sections, %d zstd-compressed\n", f->sections().size(), zstd);
  return 0;
}

struct BenchOpts {
  std::string model, file, dir = "/tmp";
  std::vector<std::string> kv;
  std::vector<int64_t> tokens = {2048};
  int reps = 3, threads = 0;
  bool zstd = false;
  SelfCalibration self_calib;
};

struct BenchRow {
  std::string kv;
  int64_t n = 0;
  uint64_t bytes = 0, zstd_bytes = 0;
  double bpv = 0, prefill = 0, save = 0, restore = 0, restore_fp16 = 0;
};

BenchRow bench_one(Forward& fwd, const Model& model, const std::string& label, const std::string& spec,
                   std::span<const int32_t> ids, const BenchOpts& o) {
  BenchRow row;
  row.kv = label;
  row.n = int64_t(ids.size());
  const KvShape shape = model.kv_shape(row.n + 1);
  const std::string path = o.dir + "/aquakv-session-bench-" + std::to_string(::getpid()) + ".aqss";
  auto cache = make_cache(spec, shape);
  const int seq = cache->add_sequence();
  std::vector<float> logits(size_t(model.config().n_vocab));
  auto t0 = clock_type::now();
  fwd.eval(*cache, seq, ids, logits.data(), false);
  row.prefill = since(t0);
  std::vector<double> save, restore, to_fp16;
  for (int r = 0; r < o.reps; ++r) {
    t0 = clock_type::now();
    const SessionSaveStats st = save_session(path, *cache, seq, ids, logits);
    save.push_back(since(t0));
    row.bytes = st.file_bytes;
    // Restore into the same format: caches are built before the clock starts (building an
    // AQUA-KV cache reads its adapter file, which a long-running process does once).
    auto same = make_cache(spec, shape);
    const int s1 = same->add_sequence();
    t0 = clock_type::now();
    SessionFile::open(path)->load_into(*same, s1);
    restore.push_back(since(t0));
    auto src = make_cache(spec, shape);
    auto fp16 = make_cache("fp16", shape);
    const int s2 = src->add_sequence(), s3 = fp16->add_sequence();
    t0 = clock_type::now();
    SessionFile::open(path)->load_into(*src, s2);
    copy_sequence(*src, s2, *fp16, s3);
    to_fp16.push_back(since(t0));
    if (fp16->n_tokens(s3) != row.n || same->n_tokens(s1) != row.n) fail("session bench: restored sequence has the wrong length");
  }
  if (o.zstd) {
    SessionSaveOptions z;
    z.zstd = true;
    row.zstd_bytes = save_session(path, *cache, seq, ids, logits, z).file_bytes;
  }
  std::remove(path.c_str());
  row.save = median(save);
  row.restore = median(restore);
  row.restore_fp16 = median(to_fp16);
  row.bpv = session_bits_per_value(row.bytes, row.n, shape.n_layers, shape.width());
  return row;
}

int bench(const BenchOpts& o) {
  if (o.file.empty()) fail("session bench: -f TEXT is required (the prompt is its first N tokens)");
  if (o.reps < 1) fail("-r: expected >= 1 repetitions, got {}", o.reps);
  for (int64_t n : o.tokens)
    if (n < 1) fail("--tokens: expected counts >= 1, got {}", n);
  check_output_path(o.dir + "/aquakv-session-bench-probe", "--dir");
  const std::string text = eval::read_text_file(o.file, "-f");
  const auto model = Model::load(o.model);
  const Tokenizer tok = Tokenizer::from_gguf(model->gguf());
  const std::vector<TokenId> all = tok.encode(text, true, false);
  const int64_t longest = *std::max_element(o.tokens.begin(), o.tokens.end());
  if (int64_t(all.size()) < longest) fail("-f {}: {} tokens, --tokens asks for {}", o.file, all.size(), longest);
  Forward fwd(*model, o.threads);
  SelfCalibration sc = o.self_calib;
  sc.threads = o.threads;
  std::vector<std::pair<std::string, std::string>> kvs;
  for (const std::string& k : o.kv.empty() ? std::vector<std::string>{"fp16"} : o.kv)
    kvs.emplace_back(k, resolve_kv_spec(k, *model, sc));
  std::printf("| kv | tokens | file MiB | bits/value |%s save ms | restore ms | restore->fp16 ms | prefill s | "
              "prefill/restore | prefill/restore->fp16 |\n",
              o.zstd ? " zstd ratio |" : "");
  std::printf("|---|---:|---:|---:|%s---:|---:|---:|---:|---:|---:|\n", o.zstd ? "---:|" : "");
  for (int64_t n : o.tokens) {
    const std::span<const int32_t> ids(all.data(), size_t(n));
    for (const auto& [label, spec] : kvs) {
      const BenchRow r = bench_one(fwd, *model, label, spec, ids, o);
      std::printf("| %s | %lld | %.2f | %.3f |%s %.1f | %.1f | %.1f | %.2f | %.0fx | %.0fx |\n", r.kv.c_str(),
                  (long long)r.n, double(r.bytes) / 1048576.0, r.bpv,
                  o.zstd ? fmt::format(" {:.3f} |", double(r.zstd_bytes) / double(r.bytes)).c_str() : "",
                  1e3 * r.save, 1e3 * r.restore, 1e3 * r.restore_fp16, r.prefill, r.prefill / r.restore,
                  r.prefill / r.restore_fp16);
      std::fflush(stdout);
    }
  }
  std::printf("\nthreads %d; times are medians of %d (prefill: one run); restore = open, check every "
              "checksum, load; ->fp16 adds moving the rows into an fp16 cache\n", num_threads(), o.reps);
  return 0;
}

const CommandRegistrar reg{"session", "inspect and benchmark session files (saved prompt caches)", [](CLI::App& sub) {
  sub.require_subcommand(1);
  auto path = std::make_shared<std::string>();
  auto* ins = sub.add_subcommand("inspect", "print a session file's header, format, bits per value and size breakdown");
  ins->add_option("file", *path, "session file (generate --prompt-cache FILE)")->required();
  auto o = std::make_shared<BenchOpts>();
  o->model = default_model_path();
  auto* b = sub.add_subcommand("bench", "save/restore times and file sizes against a fresh prefill, per --kv format");
  b->add_option("-m,--model", o->model, "GGUF model file")->capture_default_str();
  b->add_option("-f,--file", o->file, "text whose first N tokens are the prompt")->required();
  b->add_option("--kv", o->kv, "cache format (repeatable; default fp16)");
  b->add_option("--tokens", o->tokens, "prompt lengths (repeatable or comma-separated)")->delimiter(',')->capture_default_str();
  b->add_option("-r,--repetitions", o->reps, "save/restore repetitions (medians)")->capture_default_str();
  b->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  b->add_option("--dir", o->dir, "directory for the temporary session file")->capture_default_str();
  b->add_flag("--zstd", o->zstd, "also save with zstd and report the size ratio");
  add_self_adapter_flags(*b, o->self_calib);
  return RunFn([ins, path, o] {
    if (ins->parsed()) return inspect(*path);
    return bench(*o);
  });
}};

}  // namespace
}  // namespace aquakv::cli
