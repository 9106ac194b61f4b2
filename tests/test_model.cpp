// Model loading and the forward pass on small synthetic GGUFs built here byte by byte: llama
// (adjacent-pair RoPE, tied output), qwen2 (NeoX RoPE, q/k/v biases, separate output, rope
// frequency factors) and gemma3 (embedding scale, QK-norm, post-norms, GeGLU, sliding-window
// and global layers with their RoPE bases, soft-cap), checked against a float64 forward pass
// written out below; and refusal of unsupported architectures, MoE tensors, attention
// soft-capping, wrong shapes and missing tensors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "aquakv/engine/forward.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

struct Tensor {
  std::vector<int64_t> shape;  // ggml order
  std::vector<float> data;
};

struct Spec {
  std::string arch = "llama";
  int d = 32, heads = 2, kv = 1, ff = 48, layers = 2, vocab = 40;
  bool bias = false, tied = true, freqs = false;
  int window = 0;           // gemma3: attention.sliding_window (0: key absent)
  float softcap = 0.0f;     // gemma3: final_logit_softcapping (0: key absent)
  float attn_softcap = 0.0f;  // gemma3: attn_logit_softcapping (0: key absent)
  bool gemma() const { return arch == "gemma3"; }
  std::map<std::string, Tensor> t;
  std::vector<std::string> drop;                     // tensors to leave out
  std::map<std::string, std::vector<int64_t>> bad;   // tensors written with another shape
};

class Bytes {
 public:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void pad(size_t a) {
    while (b.size() % a) b.push_back(0);
  }
  std::vector<uint8_t> b;
};

void fill(Spec& s) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  auto mk = [&](const std::string& n, std::vector<int64_t> shape, float base = 0.0f) {
    Tensor t{shape, {}};
    int64_t c = 1;
    for (auto x : shape) c *= x;
    for (int64_t i = 0; i < c; ++i) t.data.push_back(base + nd(rng));
    s.t[n] = t;
  };
  const int hd = s.d / s.heads;
  mk("token_embd.weight", {s.d, s.vocab});
  mk("output_norm.weight", {s.d}, 1.0f);
  if (!s.tied) mk("output.weight", {s.d, s.vocab});
  if (s.freqs) {
    Tensor f{{hd / 2}, {}};
    for (int i = 0; i < hd / 2; ++i) f.data.push_back(1.0f + 0.5f * float(i % 3));
    s.t["rope_freqs.weight"] = f;
  }
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    mk(p + "attn_norm.weight", {s.d}, 1.0f);
    if (s.gemma()) {
      mk(p + "attn_q_norm.weight", {hd}, 1.0f);
      mk(p + "attn_k_norm.weight", {hd}, 1.0f);
      mk(p + "post_attention_norm.weight", {s.d}, 1.0f);
      mk(p + "post_ffw_norm.weight", {s.d}, 1.0f);
    }
    mk(p + "attn_q.weight", {s.d, s.heads * hd});
    mk(p + "attn_k.weight", {s.d, s.kv * hd});
    mk(p + "attn_v.weight", {s.d, s.kv * hd});
    mk(p + "attn_output.weight", {s.heads * hd, s.d});
    if (s.bias) {
      mk(p + "attn_q.bias", {s.heads * hd});
      mk(p + "attn_k.bias", {s.kv * hd});
      mk(p + "attn_v.bias", {s.kv * hd});
    }
    mk(p + "ffn_norm.weight", {s.d}, 1.0f);
    mk(p + "ffn_gate.weight", {s.d, s.ff});
    mk(p + "ffn_up.weight", {s.d, s.ff});
    mk(p + "ffn_down.weight", {s.ff, s.d});
  }
}

std::vector<uint8_t> write(const Spec& s) {
  Bytes h;
  h.put<uint32_t>(0x46554747);
  h.put<uint32_t>(3);
  std::vector<std::pair<std::string, const Tensor*>> ts;
  for (const auto& [n, t] : s.t) {
    if (std::find(s.drop.begin(), s.drop.end(), n) == s.drop.end()) ts.push_back({n, &t});
  }
  h.put<uint64_t>(ts.size());
  h.put<uint64_t>(8 + (s.window > 0) + (s.softcap > 0) + (s.attn_softcap > 0));
  auto kv_str = [&](const std::string& k, const std::string& v) { h.str(k); h.put<uint32_t>(8); h.str(v); };
  auto kv_u32 = [&](const std::string& k, uint32_t v) { h.str(k); h.put<uint32_t>(4); h.put<uint32_t>(v); };
  auto kv_f32 = [&](const std::string& k, float v) { h.str(k); h.put<uint32_t>(6); h.put<float>(v); };
  const std::string a = s.arch;
  kv_str("general.architecture", a);
  kv_u32(a + ".block_count", uint32_t(s.layers));
  kv_u32(a + ".embedding_length", uint32_t(s.d));
  kv_u32(a + ".feed_forward_length", uint32_t(s.ff));
  kv_u32(a + ".attention.head_count", uint32_t(s.heads));
  kv_u32(a + ".attention.head_count_kv", uint32_t(s.kv));
  kv_f32(a + ".rope.freq_base", s.gemma() ? 70000.0f : 10000.0f);
  kv_f32(a + ".attention.layer_norm_rms_epsilon", 1e-6f);
  if (s.window > 0) kv_u32(a + ".attention.sliding_window", uint32_t(s.window));
  if (s.softcap > 0) kv_f32(a + ".final_logit_softcapping", s.softcap);
  if (s.attn_softcap > 0) kv_f32(a + ".attn_logit_softcapping", s.attn_softcap);
  uint64_t off = 0;
  for (const auto& [n, t] : ts) {
    const auto it = s.bad.find(n);
    const auto& shape = it != s.bad.end() ? it->second : t->shape;
    h.str(n);
    h.put<uint32_t>(uint32_t(shape.size()));
    for (auto x : shape) h.put<uint64_t>(uint64_t(x));
    h.put<uint32_t>(0);  // F32
    h.put<uint64_t>(off);
    off += (t->data.size() * 4 + 31) / 32 * 32;
  }
  h.pad(32);
  for (const auto& [n, t] : ts) {
    const auto* p = reinterpret_cast<const uint8_t*>(t->data.data());
    h.b.insert(h.b.end(), p, p + t->data.size() * 4);
    h.pad(32);
  }
  return h.b;
}

std::unique_ptr<Model> load(const Spec& s, std::vector<uint8_t>& keep) {
  keep = write(s);
  return Model::from_gguf(GgufFile::from_memory(keep, "tiny.gguf"));
}

// float64 forward pass of the Spec, written from the architecture's definition.
std::vector<double> reference(const Spec& s, const std::vector<int32_t>& ids) {
  const int n = int(ids.size()), d = s.d, hd = d / s.heads, grp = s.heads / s.kv;
  auto W = [&](const std::string& name) -> const std::vector<float>& { return s.t.at(name).data; };
  auto mv = [&](const std::string& name, const std::vector<double>& x, int rows) {
    std::vector<double> y(static_cast<size_t>(rows));
    const auto& w = W(name);
    const size_t cols = x.size();
    for (int r = 0; r < rows; ++r) for (size_t c = 0; c < cols; ++c) y[size_t(r)] += double(w[r * cols + c]) * x[c];
    return y;
  };
  auto norm = [&](const std::vector<double>& x, const std::string& name) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / double(x.size()) + 1e-6);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * W(name)[i];
    return y;
  };
  // gemma3: layer l is global when l % 6 == 5 (base from the file), else a sliding-window
  // layer (base 10000) whose queries see the last `window` positions, themselves included.
  auto swa = [&](int l) { return s.gemma() && s.window > 0 && l % 6 != 5; };
  auto rope = [&](std::vector<double>& v, int nh, int pos, double base) {
    const bool neox = s.arch == "qwen2" || s.gemma();
    for (int h = 0; h < nh; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        double th = pos * std::pow(base, -2.0 * i / hd);
        if (s.freqs) th /= W("rope_freqs.weight")[size_t(i)];
        const int a = neox ? i : 2 * i, b = neox ? i + hd / 2 : 2 * i + 1;
        const double x0 = v[size_t(h * hd + a)], x1 = v[size_t(h * hd + b)];
        v[size_t(h * hd + a)] = x0 * std::cos(th) - x1 * std::sin(th);
        v[size_t(h * hd + b)] = x0 * std::sin(th) + x1 * std::cos(th);
      }
    }
  };
  std::vector<std::vector<double>> x(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) {
    x[size_t(t)].resize(size_t(d));
    for (int i = 0; i < d; ++i) x[size_t(t)][size_t(i)] = W("token_embd.weight")[size_t(ids[size_t(t)] * d + i)];
    if (s.gemma()) for (auto& e : x[size_t(t)]) e *= std::sqrt(double(d));
  }
  auto head_norm = [&](std::vector<double>& v, int nh, const std::string& name) {
    for (int h = 0; h < nh; ++h) {
      std::vector<double> part(v.begin() + h * hd, v.begin() + (h + 1) * hd);
      part = norm(part, name);
      std::copy(part.begin(), part.end(), v.begin() + h * hd);
    }
  };
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    std::vector<std::vector<double>> q(static_cast<size_t>(n)), k(static_cast<size_t>(n)), v(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) {
      const auto xn = norm(x[size_t(t)], p + "attn_norm.weight");
      q[size_t(t)] = mv(p + "attn_q.weight", xn, s.heads * hd);
      k[size_t(t)] = mv(p + "attn_k.weight", xn, s.kv * hd);
      v[size_t(t)] = mv(p + "attn_v.weight", xn, s.kv * hd);
      if (s.bias) {
        for (size_t i = 0; i < q[size_t(t)].size(); ++i) q[size_t(t)][i] += W(p + "attn_q.bias")[i];
        for (size_t i = 0; i < k[size_t(t)].size(); ++i) k[size_t(t)][i] += W(p + "attn_k.bias")[i];
        for (size_t i = 0; i < v[size_t(t)].size(); ++i) v[size_t(t)][i] += W(p + "attn_v.bias")[i];
      }
      if (s.gemma()) {
        head_norm(q[size_t(t)], s.heads, p + "attn_q_norm.weight");
        head_norm(k[size_t(t)], s.kv, p + "attn_k_norm.weight");
      }
      const double base = !s.gemma() ? 10000.0 : swa(l) ? 10000.0 : 70000.0;  // file: 70000
      rope(q[size_t(t)], s.heads, t, base);
      rope(k[size_t(t)], s.kv, t, base);
    }
    for (int t = 0; t < n; ++t) {
      std::vector<double> att(static_cast<size_t>(s.heads * hd));
      for (int h = 0; h < s.heads; ++h) {
        const int g = h / grp;
        std::vector<double> sc(static_cast<size_t>(t + 1));
        double mx = -1e300, z = 0;
        const int first = swa(l) ? std::max(0, t - s.window + 1) : 0;
        for (int u = 0; u < first; ++u) sc[size_t(u)] = -INFINITY;
        for (int u = first; u <= t; ++u) {
          double dd = 0;
          for (int j = 0; j < hd; ++j) dd += q[size_t(t)][size_t(h * hd + j)] * k[size_t(u)][size_t(g * hd + j)];
          sc[size_t(u)] = dd / std::sqrt(double(hd));
          mx = std::max(mx, sc[size_t(u)]);
        }
        for (auto& e : sc) z += (e = std::exp(e - mx));
        for (int u = 0; u <= t; ++u) {
          for (int j = 0; j < hd; ++j) att[size_t(h * hd + j)] += sc[size_t(u)] / z * v[size_t(u)][size_t(g * hd + j)];
        }
      }
      auto o = mv(p + "attn_output.weight", att, d);
      if (s.gemma()) o = norm(o, p + "post_attention_norm.weight");
      for (int i = 0; i < d; ++i) x[size_t(t)][size_t(i)] += o[size_t(i)];
      const auto xn = norm(x[size_t(t)], p + "ffn_norm.weight");
      const auto g = mv(p + "ffn_gate.weight", xn, s.ff), u = mv(p + "ffn_up.weight", xn, s.ff);
      std::vector<double> hh(static_cast<size_t>(s.ff));
      for (int i = 0; i < s.ff; ++i) {
        const double z = g[size_t(i)];
        hh[size_t(i)] = s.gemma() ? 0.5 * z * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (z + 0.044715 * z * z * z))) * u[size_t(i)]
                                  : z / (1 + std::exp(-z)) * u[size_t(i)];
      }
      auto dn = mv(p + "ffn_down.weight", hh, d);
      if (s.gemma()) dn = norm(dn, p + "post_ffw_norm.weight");
      for (int i = 0; i < d; ++i) x[size_t(t)][size_t(i)] += dn[size_t(i)];
    }
  }
  std::vector<double> out;
  for (int t = 0; t < n; ++t) {
    auto lo = mv(s.tied ? "token_embd.weight" : "output.weight", norm(x[size_t(t)], "output_norm.weight"), s.vocab);
    if (s.softcap > 0) for (auto& e : lo) e = s.softcap * std::tanh(e / s.softcap);
    out.insert(out.end(), lo.begin(), lo.end());
  }
  return out;
}

void check_forward(Spec s) {
  fill(s);
  std::vector<uint8_t> keep;
  const auto m = load(s, keep);
  EXPECT_EQ(m->config().tied_output, s.tied);
  EXPECT_EQ(m->config().has_qkv_bias, s.bias);
  EXPECT_EQ(m->config().rope.type, s.arch == "llama" ? RopeType::kNormal : RopeType::kNeox);
  const std::vector<int32_t> ids = {3, 17, 0, 39, 5, 5, 22};
  const auto ref = reference(s, ids);
  for (int64_t step : {7, 3, 1}) {
    Forward fwd(*m, 2);
    auto cache = make_cache("f32", m->kv_shape(16));
    cache->add_sequence();
    std::vector<float> lo(ids.size() * size_t(s.vocab));
    for (size_t i = 0; i < ids.size(); i += size_t(step)) {
      const size_t k = std::min(ids.size() - i, size_t(step));
      fwd.eval(*cache, 0, std::span<const int32_t>(ids.data() + i, k), lo.data() + i * size_t(s.vocab), true);
    }
    // F32 weights: f32 rounding only on the gemm path; steps of 1 take the float dot path.
    for (size_t i = 0; i < lo.size(); ++i) ASSERT_NEAR(lo[i], ref[i], 2e-4) << s.arch << " step " << step << " i " << i;
  }
}

TEST(Model, LlamaTiedMatchesFloat64) { check_forward(Spec{}); }

TEST(Model, Qwen2BiasesNeoxSeparateOutputFreqFactorsMatchFloat64) {
  Spec s;
  s.arch = "qwen2";
  s.bias = true;
  s.tied = false;
  s.freqs = true;
  s.heads = 4;
  s.kv = 2;
  check_forward(s);
}

// gemma3 with 7 layers: layers 0-4 and 6 slide (window 3 of the 7 tokens, RoPE base 10000),
// layer 5 is global (the file's base 70000); one file also declares a final soft-cap.
TEST(Model, Gemma3MatchesFloat64) {
  Spec s;
  s.arch = "gemma3";
  s.layers = 7;
  s.heads = 4;
  s.kv = 1;
  s.window = 3;
  check_forward(s);
  s.softcap = 2.5f;
  s.tied = false;
  check_forward(s);
}

TEST(Model, Gemma3Config) {
  Spec s;
  s.arch = "gemma3";
  s.layers = 13;
  s.window = 5;
  s.softcap = 30.0f;
  fill(s);
  std::vector<uint8_t> keep;
  const auto m = load(s, keep);
  const ModelConfig& c = m->config();
  EXPECT_FLOAT_EQ(c.embd_scale, std::sqrt(32.0f));
  EXPECT_TRUE(c.qk_norm && c.post_norms && c.gelu_ffn);
  EXPECT_FLOAT_EQ(c.final_logit_softcap, 30.0f);
  EXPECT_FLOAT_EQ(c.attn_scale, 1.0f / 4.0f);  // 1/sqrt(head_dim 16)
  ASSERT_EQ(c.window.size(), 13u);
  for (int l = 0; l < 13; ++l) EXPECT_EQ(c.window[size_t(l)], l == 5 || l == 11 ? 0 : 5) << l;
  EXPECT_EQ(c.rope.freq_base, 70000.0);
  EXPECT_EQ(c.rope_swa.freq_base, 10000.0);
  EXPECT_EQ(c.layer_rope(5).freq_base, 70000.0);
  EXPECT_EQ(c.layer_rope(4).freq_base, 10000.0);
  Spec g;  // without attention.sliding_window every layer is global
  g.arch = "gemma3";
  fill(g);
  EXPECT_TRUE(load(g, keep)->config().window.empty());
}

void expect_refused(Spec s, const std::string& needle) {
  fill(s);
  std::vector<uint8_t> keep;
  try {
    load(s, keep);
    ADD_FAILURE() << "loaded; expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Model, RefusesWhatItCannotRun) {
  Spec arch;
  arch.arch = "gpt2";
  expect_refused(arch, "gpt2");
  Spec missing;
  missing.drop = {"blk.1.ffn_up.weight"};
  expect_refused(missing, "blk.1.ffn_up.weight");
  Spec shape;
  shape.bad["blk.0.attn_k.weight"] = {32, 32};
  expect_refused(shape, "blk.0.attn_k.weight");
  Spec moe;
  moe.t["blk.0.ffn_gate_inp.weight"] = Tensor{{32, 4}, std::vector<float>(128, 0.0f)};
  expect_refused(moe, "mixture-of-experts");
  Spec capped;
  capped.arch = "gemma3";
  capped.attn_softcap = 50.0f;
  expect_refused(capped, "attention logit soft-capping");
  Spec no_qk_norm;
  no_qk_norm.arch = "gemma3";
  no_qk_norm.drop = {"blk.1.attn_k_norm.weight"};
  expect_refused(no_qk_norm, "blk.1.attn_k_norm.weight");
}

}  // namespace
}  // namespace aquakv
