// The perplexity / KL evaluation loop (see include/aquakv/eval/perplexity.h).
#include "aquakv/eval/perplexity.h"

#include <algorithm>
#include <chrono>

#include "aquakv/util/error.h"

namespace aquakv::eval {

std::vector<std::vector<int32_t>> make_windows(const std::vector<int32_t>& tokens, int64_t ctx,
                                               int64_t max_windows) {
  if (ctx < 2) fail("-c {}: a window needs at least 2 tokens", ctx);
  const int64_t n_full = int64_t(tokens.size()) / ctx;
  if (n_full == 0)
    fail("the text has {} tokens, fewer than one window of -c {}", tokens.size(), ctx);
  const int64_t n = max_windows > 0 ? std::min(n_full, max_windows) : n_full;
  std::vector<std::vector<int32_t>> w(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    w[size_t(i)].assign(tokens.begin() + i * ctx, tokens.begin() + (i + 1) * ctx);
  return w;
}

PerplexityResult run_perplexity(LogitsModel& model,
                                const std::vector<std::vector<int32_t>>& windows,
                                const PerplexityOptions& opt) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const int64_t V = model.n_vocab();
  PerplexityResult res;
  res.n_windows = int64_t(windows.size());
  KlAccumulator kl;
  NllStats base, delta;
  int64_t tokens_total = 0, row = 0;
  int64_t rows_total = 0;
  for (const auto& w : windows) tokens_total += int64_t(w.size()), rows_total += int64_t(w.size()) - 1;
  if (opt.kl_base && opt.kl_base->n_rows() < rows_total)
    fail("--kl-base: has {} scored positions, this run needs {}", opt.kl_base->n_rows(), rows_total);
  std::vector<float> logits;
  for (size_t wi = 0; wi < windows.size(); ++wi) {
    const auto& win = windows[wi];
    const int64_t ctx = int64_t(win.size());
    const int64_t step = opt.step > 0 ? opt.step : ctx;
    model.reset();
    NllStats window_nll;
    for (int64_t s = 0; s < ctx; s += step) {
      const int64_t n = std::min(step, ctx - s);
      logits.resize(size_t(n * V));
      model.forward(win.data() + s, n, logits.data());
      res.tokens_fed += n;
      for (int64_t j = 0; j < n && s + j + 1 < ctx; ++j) {
        const float* l = logits.data() + j * V;
        const int64_t target = win[size_t(s + j + 1)];
        const double nll = token_nll(l, V, target);
        res.nll.add(nll);
        window_nll.add(nll);
        if (opt.save_logits) opt.save_logits->add_row(l, target);
        if (opt.kl_base) {
          const CompactRow& b = opt.kl_base->row(row);
          kl.add(kl_divergence_compact(b, l, V), int64_t(b.top[0].first) == argmax(l, V),
                 double(b.p_rest));
          base.add(double(b.base_nll));
          delta.add(nll - double(b.base_nll));
        }
        ++row;
      }
      if (opt.progress) {
        PerplexityProgress p;
        p.window = int64_t(wi);
        p.n_windows = res.n_windows;
        p.tokens_done = res.tokens_fed;
        p.tokens_total = tokens_total;
        p.seconds = std::chrono::duration<double>(clock::now() - t0).count();
        p.window_done = s + n >= ctx;
        p.nll = &res.nll;
        opt.progress(p);
      }
    }
    res.window_ppl.push_back(window_nll.ppl());
  }
  if (opt.kl_base) {
    res.kl = kl.summary();
    res.base_nll = base;
    res.delta_nll = delta;
  }
  res.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return res;
}

}  // namespace aquakv::eval
