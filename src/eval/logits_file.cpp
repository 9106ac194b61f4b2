// The base-logits file (format and rationale in include/aquakv/eval/logits_file.h).
#include "aquakv/eval/logits_file.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "aquakv/util/binary_io.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"

namespace aquakv::eval {
namespace {

constexpr char kMagic[8] = {'A', 'Q', 'K', 'V', 'L', 'G', 'T', 'S'};
constexpr uint32_t kVersion = 1;

}  // namespace

uint64_t hash_tokens(const int32_t* ids, int64_t n) {
  uint64_t h = kFnv1a64Basis;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(ids[i]);
    const unsigned char b[4] = {uint8_t(u), uint8_t(u >> 8), uint8_t(u >> 16), uint8_t(u >> 24)};
    h = fnv1a64(b, 4, h);
  }
  return h;
}

LogitsFile::LogitsFile(LogitsRunInfo info, int k_max, double mass_eps)
    : info_(std::move(info)), k_max_(k_max), mass_eps_(mass_eps) {}

void LogitsFile::add_row(const float* logits, int64_t target) {
  rows_.push_back(compact_row(logits, info_.n_vocab, target, k_max_, mass_eps_));
}

void LogitsFile::add_row(CompactRow row) { rows_.push_back(std::move(row)); }

NllStats LogitsFile::base_nll(int64_t n) const {
  NllStats s;
  for (int64_t i = 0; i < n && i < n_rows(); ++i) s.add(double(rows_[size_t(i)].base_nll));
  return s;
}

void LogitsFile::save(const std::string& path) const {
  const int64_t want = int64_t(info_.window_hashes.size()) * info_.rows_per_window;
  if (want != n_rows())
    fail("logits file {}: {} rows for {} windows x {} positions", path, n_rows(),
         info_.window_hashes.size(), info_.rows_per_window);
  ByteWriter w;
  w.append(kMagic, 8);
  w.put(kVersion);
  w.put(uint32_t(k_max_));
  w.put(mass_eps_);
  w.put(uint64_t(info_.n_vocab));
  w.put(uint64_t(info_.ctx));
  w.put(uint64_t(info_.rows_per_window));
  w.put(uint64_t(info_.window_hashes.size()));
  w.put(info_.model_fingerprint);
  w.str(info_.model);
  w.str(info_.kv_spec);
  w.str(info_.text);
  for (uint64_t h : info_.window_hashes) w.put(h);
  for (const CompactRow& r : rows_) {
    w.put(r.base_nll);
    w.put(r.p_rest);
    w.put(uint16_t(r.top.size()));
    for (const auto& [id, lp] : r.top) {
      w.put(id);
      w.put(lp);
    }
  }
  w.put(fnv1a64(w.bytes().data(), int64_t(w.bytes().size())));
  write_file_atomic(path, w.bytes(), "logits file");
}

LogitsFile LogitsFile::load(const std::string& path) {
  return parse(read_file(path, "logits file", ReadKind::kData), path);
}

LogitsFile LogitsFile::parse(std::string_view data, const std::string& path) {
  if (data.size() < 8 + 8 || std::memcmp(data.data(), kMagic, 8) != 0)
    fail("logits file {}: not an aquakv logits file (bad magic)", path);
  const size_t body = data.size() - 8;
  uint64_t stored;
  std::memcpy(&stored, data.data() + body, 8);
  ByteReader r({reinterpret_cast<const uint8_t*>(data.data()), body}, "logits file " + path);
  r.get<uint64_t>("magic");
  const uint32_t version = r.get<uint32_t>("version");
  if (version != kVersion)
    fail("logits file {}: version {} not supported (expected {})", path, version, kVersion);
  const uint64_t actual = fnv1a64(data.data(), int64_t(body));
  if (actual != stored)
    fail("logits file {}: checksum mismatch (stored {:016x}, computed {:016x}): file is corrupt",
         path, stored, actual);
  LogitsFile f;
  f.k_max_ = int(r.get<uint32_t>("k_max"));
  f.mass_eps_ = r.get<double>("mass_eps");
  if (!(f.mass_eps_ >= 0 && f.mass_eps_ < 1))
    fail("logits file {}: mass_eps {} is not in [0, 1)", path, f.mass_eps_);
  LogitsRunInfo& in = f.info_;
  const uint64_t vocab = r.get<uint64_t>("n_vocab"), ctx = r.get<uint64_t>("ctx");
  const uint64_t rpw = r.get<uint64_t>("rows_per_window"), nw = r.get<uint64_t>("n_windows");
  if (vocab == 0 || vocab > (uint64_t(1) << 32) || ctx == 0 || ctx > (uint64_t(1) << 32) ||
      rpw > ctx || f.k_max_ < 1 || f.k_max_ > 65535)
    fail("logits file {}: implausible header (n_vocab {}, ctx {}, rows_per_window {}, k_max {})",
         path, vocab, ctx, rpw, f.k_max_);
  in.n_vocab = int64_t(vocab);
  in.ctx = int64_t(ctx);
  in.rows_per_window = int64_t(rpw);
  in.model_fingerprint = r.get<uint64_t>("model_fingerprint");
  in.model = r.str("model");
  in.kv_spec = r.str("kv_spec");
  in.text = r.str("text", 256u << 20);
  r.need(nw * 8, "window_hash");  // before allocating
  for (uint64_t w = 0; w < nw; ++w) in.window_hashes.push_back(r.get<uint64_t>("window_hash"));
  const uint64_t n_rows = nw * rpw;
  r.need(n_rows * 10, "rows");  // each row has at least 10 bytes
  f.rows_.resize(size_t(n_rows));
  for (uint64_t i = 0; i < n_rows; ++i) {
    CompactRow& row = f.rows_[size_t(i)];
    row.base_nll = r.get<float>("row.base_nll");
    row.p_rest = r.get<float>("row.p_rest");
    // Numeric sanity: a checksum only proves the bytes are the ones written; a NaN or a
    // positive log-probability would make every KL after it meaningless.
    if (!std::isfinite(row.base_nll) || row.base_nll < 0)
      fail("logits file {}: row {} base NLL {} is not a finite value >= 0", path, i, row.base_nll);
    if (!(row.p_rest >= 0 && row.p_rest <= 1))
      fail("logits file {}: row {} rest mass {} is not in [0, 1]", path, i, row.p_rest);
    const uint16_t n = r.get<uint16_t>("row.n_top");
    if (n == 0 || n > f.k_max_)
      fail("logits file {}: row {} keeps {} tokens (expected 1..{})", path, i, n, f.k_max_);
    row.top.resize(n);
    for (auto& [id, lp] : row.top) {
      id = r.get<uint32_t>("row.id");
      lp = r.get<float>("row.logp");
      if (id >= vocab) fail("logits file {}: row {} token id {} >= n_vocab {}", path, i, id, vocab);
      if (!std::isfinite(lp) || lp > 0)
        fail("logits file {}: row {} token {} log-probability {} is not a finite value <= 0",
             path, i, id, lp);
    }
  }
  if (r.pos() != body)
    fail("logits file {}: {} unexpected bytes after the rows", path, body - r.pos());
  return f;
}

void LogitsFile::check_compatible(const LogitsRunInfo& run, const std::string& path) const {
  const LogitsRunInfo& b = info_;
  if (run.model_fingerprint != b.model_fingerprint)
    fail("--kl-base {}: made with model {} but this run uses {} (model files differ)", path,
         b.model, run.model);
  if (run.n_vocab != b.n_vocab)
    fail("--kl-base {}: n_vocab {} but this model has {}", path, b.n_vocab, run.n_vocab);
  if (run.ctx != b.ctx) fail("--kl-base {}: ctx {} but this run uses -c {}", path, b.ctx, run.ctx);
  if (run.rows_per_window != b.rows_per_window)
    fail("--kl-base {}: {} scored positions per window but this run scores {}", path,
         b.rows_per_window, run.rows_per_window);
  if (run.window_hashes.size() > b.window_hashes.size())
    fail("--kl-base {}: has {} windows but this run evaluates {} (use --chunks <= {})", path,
         b.window_hashes.size(), run.window_hashes.size(), b.window_hashes.size());
  for (size_t w = 0; w < run.window_hashes.size(); ++w) {
    if (run.window_hashes[w] != b.window_hashes[w])
      fail("--kl-base {}: token ids of window {} differ (base text {}, this run {}; different "
           "text, tokenizer or BOS)", path, w, b.text, run.text);
  }
}

}  // namespace aquakv::eval
