// RecordingCache: an exact KvCache (f32 storage, what attention reads) that also records every
// appended pre-RoPE key and value row in fp16, per sequence and layer, for calibration. Owns:
// that storage and the records. Not: choosing what to run (calib/calibrate.h).
#pragma once

#include <cstdint>
#include <vector>

#include "aquakv/calib/fit_chain.h"
#include "aquakv/kv/attend.h"
#include "aquakv/kv/kv_cache.h"

namespace aquakv {

class RecordingCache final : public KvCache {
 public:
  explicit RecordingCache(const KvShape& shape);

  const KvShape& shape() const override { return shape_; }
  std::string name() const override { return "recording-f32"; }
  int add_sequence() override;
  int n_seqs() const override { return int(seqs_.size()); }
  void clear(int seq) override;  // drops the tokens, keeps the records
  int64_t n_tokens(int seq) const override;
  void begin_step(int seq, int64_t n) override;
  void append(int layer, const float* k, const float* v) override;
  void attend(int layer, const KvAttention& a) override;
  KvView read(int layer) override;
  void end_step() override;
  int64_t live_bytes() const override;
  std::vector<KvBitsTerm> bits_report(int seq) const override;

  // Rows recorded for sequence `seq` (all its windows so far).
  int64_t recorded_rows(int seq) const;
  // Adds the step's queries to the per-layer query statistics (KvSamples::q2).
  void record_queries(int layer, const KvAttention& a);
  // Moves the records into samples: the sequences in `train` first, then those in `val`; the
  // query statistics (of every sequence) go along, pair-averaged over RoPE pairs.
  KvSamples take_samples(const std::vector<int>& train, const std::vector<int>& val);

 private:
  struct Seq {
    int64_t n_tokens = 0;
    std::vector<std::vector<float>> k, v;        // per layer, (n_tokens, C) exact, keys un-rotated
    std::vector<int32_t> pos;                    // (n_tokens) positions
    std::vector<std::vector<uint16_t>> rk, rv;  // per layer, recorded rows (fp16)
  };
  Seq& at(int seq);
  const Seq& at(int seq) const;

  KvShape shape_;
  std::vector<Seq> seqs_;
  KvRope rope_;
  std::vector<std::vector<double>> q2_;  // per layer (C): see KvSamples::q2 (not yet pair-averaged)
  int64_t q_rows_ = 0;                   // query rows of layer 0 accumulated
  int64_t q_group_ = 0;                  // query heads per KV head (seen at attend)
  int cur_ = 0;
  int64_t step_n_ = 0;
};

}  // namespace aquakv
