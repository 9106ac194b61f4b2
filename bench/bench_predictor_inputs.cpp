// Which inputs would make AQUA-KV's cross-layer predictors better (issue 11, item 4): for each
// candidate input set, a ridge predictor (calib/ridge.h, the calibration's own fit) per layer
// from the captured rows of the calibration texts, and its relative MSE on the held-out rows,
// averaged over layers 2..L-1. Inputs are the exact captured rows (not reconstructions): a
// screening of what each input adds before the chain is refitted with it (`aquakv calibrate
// --predictor-inputs`), with the multiply-adds per token of each map.
//
//   build/bench_predictor_inputs MODEL TEXT [TEXT...]     (16 windows of 1024 tokens, seed 1)
#include <cstdio>
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
};
struct Candidate {
  const char* name;
  std::vector<Input> in;
  char target;
};

// Validation relMSE of one layer's predictor of `c` (layer l >= 2).
double layer_error(const KvSamples& s, int64_t l, const Candidate& c) {
  const int64_t C = s.width, nt = s.n_train, nv = s.n_val;
  std::vector<std::vector<float>> xt, xv;
  std::vector<AffineInput> it, iv;
  for (const Input& x : c.in) {
    const auto& src = x.stream == 'k' ? s.k[size_t(l + x.offset)] : s.v[size_t(l + x.offset)];
    xt.push_back(rows_of(src, 0, nt, C));
    xv.push_back(rows_of(src, nt, nt + nv, C));
  }
  for (size_t j = 0; j < xt.size(); ++j) {
    it.push_back({xt[j].data(), C, C});
    iv.push_back({xv[j].data(), C, C});
  }
  const auto& y = c.target == 'k' ? s.k[size_t(l)] : s.v[size_t(l)];
  const auto yt = rows_of(y, 0, nt, C), yv = rows_of(y, nt, nt + nv, C);
  NormalEquations ne(C * int64_t(xt.size()), C);
  ne.add(nt, it.data(), int(it.size()), yt.data(), C);
  const RidgeFit f = fit_ridge(ne);
  std::vector<float> pred(static_cast<size_t>(nv * C)), scratch;
  f.map.apply(nv, iv.data(), int(iv.size()), pred.data(), C, scratch);
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
    };
    std::printf("| inputs | multiply-adds per token | held-out relMSE, mean over layers |\n|---|--:|--:|\n");
    for (const Candidate& c : cands) {
      double sum = 0;
      for (int64_t l = 2; l < s.n_layers; ++l) sum += layer_error(s, l, c);
      std::printf("| %s | %lld | %.4f |\n", c.name, (long long)(C * C * int64_t(c.in.size())), sum / double(s.n_layers - 2));
      std::fflush(stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
