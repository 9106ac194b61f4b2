// Which inputs would make AQUA-KV's cross-layer predictors better (issue 11, item 4): for each
// candidate input set, a ridge predictor (calib/ridge.h, the calibration's own fit) per layer
// from the captured rows of the calibration texts, and its relative MSE on the held-out rows,
// averaged over layers 2..L-1. Inputs are the exact captured rows (not reconstructions): a
// screening of what each input adds before the chain is refitted with it (`aquakv calibrate
// --predictor-inputs`), with the multiply-adds per token of each map.
//
// "per head" candidates predict each KV head's slice of the target from its own slice of each
// input marked so (the others full): a block-diagonal map, hd columns per head, that costs
// sum over inputs of (marked ? hd : C) * hd * H multiply-adds instead of C per input column.
//
//   build/bench_predictor_inputs MODEL TEXT [TEXT...]     (16 windows of 1024 tokens, seed 1)
//   AQUAKV_HEAD_DIM=N selects the head width of the per-head rows (default 64, SmolLM2's)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "aquakv/calib/calibrate.h"
#include "aquakv/calib/ridge.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

namespace {

using namespace aquakv;

std::vector<float> rows_of(const std::vector<uint16_t>& h, int64_t r0, int64_t r1, int64_t C) {
  std::vector<float> f(static_cast<size_t>((r1 - r0) * C));
  for (size_t i = 0; i < f.size(); ++i) f[i] = fp16_to_fp32(h[size_t(r0 * C) + i]);
  return f;
}

struct Input {
  char stream;  // 'k' or 'v'
  int offset;   // layer offset: 0, -1, -2
  bool head = false;  // per-head candidates: only the predicted head's slice of this input
};
struct Candidate {
  const char* name;
  std::vector<Input> in;
  char target;
  bool per_head = false;  // one map per KV head (block structure), else one map for all columns
  int64_t rank = 0;       // reduced-rank map (x U) V of this rank; 0 = full rank (not per head)
};

// Multiply-adds per token of candidate c's map(s): C outputs, hd per head when per_head.
int64_t cost(const Candidate& c, int64_t C, int64_t hd) {
  int64_t in = 0;
  for (const Input& x : c.in) in += (c.per_head && x.head) ? hd : C;
  if (c.rank > 0) return c.rank * (in + C);
  return c.per_head ? in * hd * (C / hd) : in * C;
}

// Validation relMSE of one layer's predictor of `c` (layer l >= 2): one ridge map for all of
// the target's columns, or with per_head one per slice [h hd, (h + 1) hd) of them.
double layer_error(const KvSamples& s, int64_t l, const Candidate& c, int64_t hd) {
  const int64_t C = s.width, nt = s.n_train, nv = s.n_val;
  std::vector<std::vector<float>> xt, xv;
  for (const Input& x : c.in) {
    const auto& src = x.stream == 'k' ? s.k[size_t(l + x.offset)] : s.v[size_t(l + x.offset)];
    xt.push_back(rows_of(src, 0, nt, C));
    xv.push_back(rows_of(src, nt, nt + nv, C));
  }
  const auto& y = c.target == 'k' ? s.k[size_t(l)] : s.v[size_t(l)];
  const auto yt = rows_of(y, 0, nt, C), yv = rows_of(y, nt, nt + nv, C);
  std::vector<float> pred(static_cast<size_t>(nv * C)), scratch;
  const int64_t n_maps = c.per_head ? C / hd : 1, out = c.per_head ? hd : C;
  for (int64_t h = 0; h < n_maps; ++h) {
    std::vector<AffineInput> it, iv;
    int64_t in = 0;
    for (size_t j = 0; j < xt.size(); ++j) {
      const bool slice = c.per_head && c.in[j].head;
      const int64_t off = slice ? h * hd : 0, k = slice ? hd : C;
      it.push_back({xt[j].data() + off, C, k});
      iv.push_back({xv[j].data() + off, C, k});
      in += k;
    }
    NormalEquations ne(in, out);
    ne.add(nt, it.data(), int(it.size()), yt.data() + h * out, C);
    const RidgeFit f = fit_ridge(ne, {RidgeOptions{}.damping, c.rank});
    f.map.apply(nv, iv.data(), int(iv.size()), pred.data() + h * out, C, scratch);
  }
  ErrorStats e;
  e.add(nv, pred.data(), C, yv.data(), C, C);
  return e.rel_mse();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL TEXT [TEXT...]\n", argv[0]);
    return 2;
  }
  try {
    CalibrateOptions o;
    o.model_path = argv[1];
    for (int i = 2; i < argc; ++i) o.text_files.push_back(argv[i]);
    CalibrateReport rep;
    const KvSamples s = capture_samples(o, &rep, {});
    const int64_t C = s.width;
    const char* hd_env = std::getenv("AQUAKV_HEAD_DIM");
    const int64_t hd = hd_env ? std::atoll(hd_env) : 64;
    if (hd < 1 || C % hd != 0) fail("head width must divide C");
    if (s.n_layers < 3 || s.n_val < 1) fail("need >= 3 layers and validation rows");
    std::printf("%lld train rows, %lld validation rows, C = %lld, layers 2..%lld\n", (long long)s.n_train,
                (long long)s.n_val, (long long)C, (long long)s.n_layers - 1);
    const std::vector<Candidate> cands = {
        {"keys   <- K_{l-1} (today)", {{'k', -1}}, 'k'},
        {"keys   <- [K_{l-1}; V_{l-1}]", {{'k', -1}, {'v', -1}}, 'k'},
        {"keys   <- [K_{l-1}; K_{l-2}]", {{'k', -1}, {'k', -2}}, 'k'},
        {"values <- V_{l-1}", {{'v', -1}}, 'v'},
        {"values <- [K_l; V_{l-1}] (today)", {{'k', 0}, {'v', -1}}, 'v'},
        {"values <- [K_l; V_{l-1}; K_{l-1}]", {{'k', 0}, {'v', -1}, {'k', -1}}, 'v'},
        {"values <- [K_l; V_{l-1}; V_{l-2}]", {{'k', 0}, {'v', -1}, {'v', -2}}, 'v'},
        // Reduced rank: the wide inputs at (or under) the narrow maps' 3C^2 per token and layer.
        {"keys   <- [K_{l-1}; V_{l-1}], rank 48", {{'k', -1}, {'v', -1}}, 'k', false, 48},
        {"keys   <- [K_{l-1}; V_{l-1}], rank 64", {{'k', -1}, {'v', -1}}, 'k', false, 64},
        {"keys   <- [K_{l-1}; V_{l-1}], rank 96", {{'k', -1}, {'v', -1}}, 'k', false, 96},
        {"values <- [K_l; V_{l-1}], rank 128", {{'k', 0}, {'v', -1}}, 'v', false, 128},
        {"values <- [K_l; V_{l-1}; K_{l-1}], rank 96", {{'k', 0}, {'v', -1}, {'k', -1}}, 'v', false, 96},
        {"values <- [K_l; V_{l-1}; K_{l-1}], rank 108", {{'k', 0}, {'v', -1}, {'k', -1}}, 'v', false, 108},
        {"values <- [K_l; V_{l-1}; K_{l-1}], rank 128", {{'k', 0}, {'v', -1}, {'k', -1}}, 'v', false, 128},
        // Block-diagonal (per-head) variants: the same inputs at a fraction of the cost.
        {"keys   <- K_{l-1}, per head", {{'k', -1, true}}, 'k', true},
        {"keys   <- [K_{l-1}; V_{l-1}], per head", {{'k', -1, true}, {'v', -1, true}}, 'k', true},
        {"values <- [K_l; V_{l-1}], per head", {{'k', 0, true}, {'v', -1, true}}, 'v', true},
        {"values <- [K_l; V_{l-1}; K_{l-1}], per head", {{'k', 0, true}, {'v', -1, true}, {'k', -1, true}}, 'v', true},
        {"values <- [K_l all; V_{l-1}; K_{l-1}], per head", {{'k', 0}, {'v', -1, true}, {'k', -1, true}}, 'v', true},
        {"values <- [K_l all; V_{l-1} all; K_{l-1}], per head", {{'k', 0}, {'v', -1}, {'k', -1, true}}, 'v', true},
    };
    std::printf("| inputs | multiply-adds per token | held-out relMSE, mean over layers |\n|---|--:|--:|\n");
    for (const Candidate& c : cands) {
      double sum = 0;
      for (int64_t l = 2; l < s.n_layers; ++l) sum += layer_error(s, l, c, hd);
      std::printf("| %s | %lld | %.4f |\n", c.name, (long long)cost(c, C, hd), sum / double(s.n_layers - 2));
      std::fflush(stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
