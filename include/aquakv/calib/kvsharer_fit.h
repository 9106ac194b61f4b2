// KVSharer's calibration search: which layers share another layer's KV cache. Owns: the ranking
// of layer pairs by the distance of their averaged caches, the greedy acceptance walk with an
// output-similarity check, and the run on a model that measures both on calibration text. Not:
// the plan file or the sharing cache (kv/layer_share.h).
//
// After Yang et al. 2024 ("KVSharer"). The rule, as implemented here:
//   m_l = mean over every calibration token of [K_l ; V_l] (pre-RoPE keys, 2C values, double);
//   pairs (i, j), i < j, that may share (same RoPE and window), ranked by ||m_i - m_j||_2,
//   largest first (the paper's finding: sharing the most DISSIMILAR caches hurts least); equal
//   distances: smaller i, then smaller j;
//   walk the ranking with plan P (all layers own rows): a pair is a candidate when j stores its
//   own rows and is no other layer's source, and i stores its own rows; the candidate P + (j
//   reads i) is accepted when similarity(P + (j reads i)) >= threshold; stop once `target`
//   layers are shared, after max_trials candidates (0: no limit) or at the end of the ranking.
//   similarity = mean over the calibration positions of cos(logits with P, logits with no
//   sharing) -- the paper compares final hidden states; logits are their linear image (the
//   output projection after the final norm).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "aquakv/calib/calibrate.h"
#include "aquakv/kv/layer_share.h"

namespace aquakv {

struct KvSharerSearchOptions {
  int target = 4;            // shared layers wanted
  double threshold = 0.95;   // minimum mean cosine similarity of the outputs
  int64_t max_trials = 0;    // candidates evaluated at most (0: every pair)
};

struct KvSharerTrial {
  int i = 0, j = 0;          // j would read i
  double distance = 0, similarity = 0;
  bool accepted = false;
};

struct KvSharerSearch {
  std::vector<int32_t> source;  // the plan (kv/layer_share.h)
  std::vector<KvSharerTrial> trials;
  int n_shared() const;
};

// Pairs (i, j), i < j, with compatible(i, j), ranked as above, with their distances.
std::vector<KvSharerTrial> kvsharer_rank_pairs(const std::vector<std::vector<double>>& means,
                                               const std::function<bool(int, int)>& compatible);

// The walk above over `ranked` (from kvsharer_rank_pairs); similarity(plan) evaluates a plan.
KvSharerSearch kvsharer_search(int n_layers, const std::vector<KvSharerTrial>& ranked, const KvSharerSearchOptions& opt,
                               const std::function<double(const std::vector<int32_t>&)>& similarity);

struct KvSharerFitOptions {
  KvSharerSearchOptions search;
  int64_t logit_stride = 4;  // positions compared: every stride-th of each window (memory)
};

// On a model: samples calibration windows as `aquakv calibrate` does (opt.tokens, opt.window,
// opt.seed, opt.text_files; text is required), runs them once with fp16 rows to get the means and
// the reference logits, searches, and returns the plan (notes: settings and the trial log as
// JSON). progress("search", trials done, pairs).
LayerSharePlan fit_kvsharer(const CalibrateOptions& opt, const KvSharerFitOptions& fit, KvSharerSearch* search,
                            const std::function<void(const char*, int64_t, int64_t)>& progress = {});

}  // namespace aquakv
