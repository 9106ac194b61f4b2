// Evaluation statistics: per-token NLL, perplexity with its standard error, KL divergence
// between a base and a test distribution (from full logits or from a compact base row),
// percentiles and agreement rates. Owns: the math, in double precision. Not: running models
// (eval/perplexity.h), file formats (eval/logits_file.h).
//
// Perplexity and its standard error (the way llama.cpp's `perplexity` reports it):
//   x_i = -log p(token_{i+1} | tokens_{<=i}), i over the N scored positions,
//   m = mean(x), PPL = exp(m).
//   The standard error of m is s/sqrt(N) with s^2 = sum (x_i - m)^2 / (N-1) the sample variance
//   (llama.cpp writes it as sqrt((E[x^2] - E[x]^2) / (N-1)), which is the same number).
//   PPL = f(m) with f = exp, so by the delta method se(PPL) ~= |f'(m)| se(m) = PPL * se(m).
//   Positions are treated as independent; neighbouring tokens are correlated, so this is a
//   lower bound on the true uncertainty, as it is in llama.cpp.
//
// KL divergence per position, base P (16-bit cache), test Q (the cache under study):
//   KL(P || Q) = sum_v p_v (log p_v - log q_v), in nats.
// Compact base rows keep only a set S of the most probable tokens (log-probs) plus the mass
// p_rest = 1 - sum_{v in S} p_v of the others. The KL we can compute from that is the KL of the
// two distributions coarsened to S + one "rest" bucket:
//   KL_S = sum_{v in S} p_v log(p_v / q_v) + p_rest log(p_rest / q_rest).
// By the chain rule of KL divergence, KL(P||Q) = KL_S + p_rest * KL(P_rest || Q_rest), where
// P_rest, Q_rest are P and Q renormalised on the tail; so KL_S is a lower bound and the error is
// exactly p_rest times the within-tail KL. Keeping S until p_rest <= eps bounds the error by
// eps * KL(P_rest||Q_rest) (see logits_file.h for the numbers used).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace aquakv::eval {

// log(sum_v exp(logits[v])), max-shifted, accumulated in double.
double log_sum_exp(const float* logits, int64_t n_vocab);

// -log softmax(logits)[target] = lse - logits[target]. Requires 0 <= target < n_vocab.
double token_nll(const float* logits, int64_t n_vocab, int64_t target);

// Index of the largest logit (the first one on ties).
int64_t argmax(const float* logits, int64_t n_vocab);

// KL(P || Q) for P = softmax(base), Q = softmax(test), exact in double.
double kl_divergence_full(const float* base_logits, const float* test_logits, int64_t n_vocab);

// Entropy of softmax(logits) in nats (double).
double entropy(const float* logits, int64_t n_vocab);

// A base distribution reduced to its most probable tokens (see the header comment).
struct CompactRow {
  float base_nll = 0;    // -log p(target) under the base, exact from the full row
  float p_rest = 0;      // mass of the tokens not in `top`
  std::vector<std::pair<uint32_t, float>> top;  // (token id, log p), log p decreasing
};

// Keeps tokens in decreasing probability until the remaining mass is <= mass_eps or k_max
// tokens are kept (at least 1). `target` is the token that actually came next.
CompactRow compact_row(const float* logits, int64_t n_vocab, int64_t target, int k_max,
                       double mass_eps);

// KL_S(P || Q) of the compact base row against the test's full logits (see the header comment).
// Token ids in `base.top` must be < n_vocab (the loader checks).
double kl_divergence_compact(const CompactRow& base, const float* test_logits, int64_t n_vocab);

// Mean, variance and standard error of a running sum of per-token NLLs, in double (Welford).
class NllStats {
 public:
  void add(double nll);
  int64_t count() const { return n_; }
  double mean() const { return mean_; }
  double sum() const { return mean_ * double(n_); }
  double sample_variance() const;  // sum (x - mean)^2 / (n - 1); 0 when n < 2
  double mean_stderr() const;      // sqrt(sample_variance / n)
  double ppl() const;              // exp(mean)
  double ppl_stderr() const;       // ppl * mean_stderr (delta method)

 private:
  int64_t n_ = 0;
  double mean_ = 0;
  double m2_ = 0;  // sum of squared deviations from the running mean
};

// Percentile q in [0, 100] of `values` by linear interpolation between closest ranks
// (Hyndman-Fan type 7, numpy's default): sort x_0 <= ... <= x_{N-1}, h = (N-1) q/100,
// result = x_floor(h) + (h - floor(h)) (x_floor(h)+1 - x_floor(h)). Requires a non-empty set.
double percentile(std::vector<double> values, double q);

// Summary of KL divergences and top-token agreement over a run.
struct KlSummary {
  int64_t n = 0;
  double mean = 0, mean_stderr = 0, median = 0, p99 = 0, p999 = 0, max = 0;
  double same_top_rate = 0;   // fraction of positions whose argmax agrees with the base
  double mean_p_rest = 0;     // mean tail mass of the compact base rows (the KL lower-bound gap)
};

class KlAccumulator {
 public:
  void add(double kl, bool same_top, double p_rest);
  KlSummary summary() const;
  int64_t count() const { return int64_t(kl_.size()); }

 private:
  std::vector<double> kl_;
  int64_t same_top_ = 0;
  double p_rest_sum_ = 0;
};

}  // namespace aquakv::eval
