// Tests of LoRC (calib/lorc_fit.h, kv/lorc_plan.h, kv/lorc_cache.h): the SVD against the
// properties that define it (W W^T u = sigma^2 u, orthonormal u, descending sigma, sum sigma^2 =
// ||W||_F^2, exact recovery of a rank-3 matrix's column space); the rank schedule against the
// rule replayed in double; the cache's rows and attention against a float64 projection and
// softmax written here, with a bound derived from the fp16 rounding of the latents; the fused
// attention against the dense reference path with RoPE; dropped rows, saved and truncated
// sequences; the plan file's round trip and its corruptions; bad specs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include "aquakv/calib/lorc_fit.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/kv/lorc_cache.h"
#include "aquakv/kv/lorc_plan.h"
#include "aquakv/util/error.h"
#include "aquakv/util/fp16.h"

#include "kv_spec_checks.h"

namespace aquakv {
namespace {

namespace fs = std::filesystem;

constexpr int kL = 3, kH = 2, kHd = 8, kC = kH * kHd, kQH = 4, kD = 24;

KvShape shape(bool rope = false) {
  KvShape s;
  s.n_layers = kL;
  s.n_kv_heads = kH;
  s.head_dim = kHd;
  s.max_tokens = 512;
  if (rope) {
    s.rope.n_rot = kHd;
    s.rope.freq_base = 10000.0;
  }
  return s;
}

std::vector<float> randn(size_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> g(0.0f, sd);
  std::vector<float> x(n);
  for (auto& e : x) e = g(rng);
  return x;
}

// A plan for shape() with the given ranks per layer (keys, values) and random offsets.
LorcPlan random_plan(const std::vector<std::array<int64_t, 2>>& ranks, uint32_t seed) {
  std::mt19937 rng(seed);
  LorcPlan p;
  p.model.n_layers = kL;
  p.model.n_kv_heads = kH;
  p.model.head_dim = kHd;
  p.model.kv_width = kC;
  for (int l = 0; l < kL; ++l) {
    std::array<LorcStream, 2> st;
    for (int s = 0; s < 2; ++s) {
      const auto w = randn(size_t(kC * kD), rng);
      const auto b = randn(size_t(kC), rng, 0.5f);
      st[size_t(s)] = lorc_stream(lorc_svd(w.data(), kC, kD), ranks[size_t(l)][size_t(s)], b.data());
    }
    p.layers.push_back(st);
  }
  return p;
}

// The reference reconstruction of one row in double: c = (x - o) B (rounded to fp16 as stored),
// x^ = c B^T + o; `bound` gets, per channel, the largest change the fp16 rounding of c (half an
// ulp, relative 2^-11, plus float arithmetic) can make: sum_j |B_ij| |c_j| 2^-10 + 1e-5.
void reference_row(const LorcStream& s, const float* x, double* y, double* bound) {
  const int64_t r = s.rank;
  std::vector<double> c(static_cast<size_t>(r));
  for (int64_t j = 0; j < r; ++j) {
    double a = 0.0;
    for (int64_t i = 0; i < kC; ++i) a += (double(x[i]) - s.offset[size_t(i)]) * s.basis[size_t(i * r + j)];
    c[size_t(j)] = a;
  }
  for (int64_t i = 0; i < kC; ++i) {
    double v = s.offset[size_t(i)], b = 1e-5;
    for (int64_t j = 0; j < r; ++j) {
      v += c[size_t(j)] * s.basis[size_t(i * r + j)];
      b += std::fabs(c[size_t(j)] * s.basis[size_t(i * r + j)]) * std::ldexp(1.0, -10);
    }
    y[i] = v;
    bound[i] = b;
  }
}

TEST(LorcSvd, HasTheDefiningProperties) {
  std::mt19937 rng(1);
  const auto w = randn(size_t(kC * kD), rng);
  const LorcSvd s = lorc_svd(w.data(), kC, kD);
  double fro = 0.0, sum2 = 0.0;
  for (float x : w) fro += double(x) * x;
  for (int64_t j = 0; j < kC; ++j) {
    sum2 += s.sigma[size_t(j)] * s.sigma[size_t(j)];
    if (j > 0) {
      EXPECT_GE(s.sigma[size_t(j - 1)], s.sigma[size_t(j)]);
    }
    // W W^T u_j = sigma_j^2 u_j, computed here from W directly.
    for (int64_t i = 0; i < kC; ++i) {
      double acc = 0.0;
      for (int64_t m = 0; m < kC; ++m) {
        double g = 0.0;
        for (int64_t k = 0; k < kD; ++k) g += double(w[size_t(i * kD + k)]) * w[size_t(m * kD + k)];
        acc += g * s.u[size_t(m * kC + j)];
      }
      EXPECT_NEAR(acc, s.sigma[size_t(j)] * s.sigma[size_t(j)] * s.u[size_t(i * kC + j)], 1e-9 * fro);
    }
    for (int64_t m = 0; m < kC; ++m) {
      double dot = 0.0;
      for (int64_t i = 0; i < kC; ++i) dot += s.u[size_t(i * kC + j)] * s.u[size_t(i * kC + m)];
      EXPECT_NEAR(dot, j == m ? 1.0 : 0.0, 1e-10);
    }
  }
  EXPECT_NEAR(sum2, fro, 1e-9 * fro);
  EXPECT_NEAR(s.condition(), s.sigma.front() / s.sigma.back(), 1e-12);
  EXPECT_NEAR(lorc_energy_kept(s, kC), 1.0, 1e-12);
}

TEST(LorcSvd, RankThreeMatrixIsRecoveredFromThreeComponents) {
  std::mt19937 rng(2);
  const auto a = randn(size_t(kC * 3), rng), b = randn(size_t(3 * kD), rng);
  std::vector<float> w(size_t(kC * kD), 0.0f);
  for (int i = 0; i < kC; ++i)
    for (int k = 0; k < kD; ++k)
      for (int j = 0; j < 3; ++j) w[size_t(i * kD + k)] += a[size_t(i * 3 + j)] * b[size_t(j * kD + k)];
  const LorcSvd s = lorc_svd(w.data(), kC, kD);
  EXPECT_LT(s.sigma[3], 1e-5 * s.sigma[0]);
  EXPECT_NEAR(lorc_energy_kept(s, 3), 1.0, 1e-9);
  // Any output of W (here W x for a random x) is reproduced by its rank-3 projection.
  const LorcStream st = lorc_stream(s, 3, nullptr);
  const auto x = randn(size_t(kD), rng);
  std::vector<float> k(size_t(kC), 0.0f);
  for (int i = 0; i < kC; ++i)
    for (int j = 0; j < kD; ++j) k[size_t(i)] += w[size_t(i * kD + j)] * x[size_t(j)];
  std::vector<double> y(kC), bound(kC);
  reference_row(st, k.data(), y.data(), bound.data());
  for (int i = 0; i < kC; ++i) EXPECT_NEAR(y[size_t(i)], k[size_t(i)], 1e-4 * (1 + std::fabs(k[size_t(i)])));
}

TEST(LorcRanks, FollowTheScheduleReplayedInDouble) {
  const int64_t C = 64;
  const std::vector<double> cond = {160, 20, 25, 30, 18, 40, 22, 35};
  for (double keep : {0.25, 0.5, 0.8, 1.0}) {
    const auto u = lorc_ranks(cond, keep, false, C);
    for (int64_t r : u) EXPECT_EQ(r, std::clamp<int64_t>(std::llround(keep * C), 1, C));
    const auto p = lorc_ranks(cond, keep, true, C);
    // Replay: L_l = sum_{j >= l} ln kappa_j, s_l normalised, shares lo + (hi - lo) s_l.
    const size_t L = cond.size();
    std::vector<double> cum(L);
    for (size_t l = 0; l < L; ++l)
      for (size_t j = l; j < L; ++j) cum[l] += std::log(cond[j]);
    const double mn = *std::min_element(cum.begin(), cum.end()), mx = *std::max_element(cum.begin(), cum.end());
    double mean = 0.0;
    for (double c : cum) mean += (c - mn) / (mx - mn) / double(L);
    double lo = (keep - mean) / (1 - mean), hi = 1.0;
    if (lo < 0) lo = 0, hi = keep / mean;
    double total = 0.0;
    for (size_t l = 0; l < L; ++l) {
      const double share = lo + (hi - lo) * (cum[l] - mn) / (mx - mn);
      EXPECT_EQ(p[l], std::clamp<int64_t>(std::llround(share * C), 1, C)) << "keep " << keep << " layer " << l;
      if (l > 0) {
        EXPECT_LE(p[l], p[l - 1]);  // shallow layers keep the most
      }
      total += double(p[l]);
    }
    EXPECT_NEAR(total / double(L * C), keep, 1.5 / double(C)) << keep;  // rounding and the floor of 1
  }
  EXPECT_EQ(lorc_ranks(cond, 0.5, true, C).front(), C);  // keep >= mean s: the first layer whole
  for (double bad : {0.0, -0.1, 1.5, std::nan("")}) EXPECT_THROW(lorc_ranks(cond, bad, true, C), Error) << bad;
  EXPECT_THROW(lorc_ranks({}, 0.5, true, C), Error);
}

class LorcCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("aquakv_lorc_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string save(LorcPlan&& p, const std::string& name = "p.lorc") { return save(p, name); }
  std::string save(LorcPlan& p, const std::string& name = "p.lorc") {
    const std::string path = (dir_ / name).string();
    save_lorc_plan(p, path);
    return path;
  }
  fs::path dir_;
};

// Mixed ranks (including 1 and C) so every map shape is exercised.
const std::vector<std::array<int64_t, 2>> kRanks = {{{kC, 5}}, {{7, 1}}, {{3, 12}}};

TEST_F(LorcCacheTest, RowsAndAttentionEqualAFloat64Projection) {
  LorcPlan plan = random_plan(kRanks, 11);
  const int64_t P = 2;
  auto cache = make_cache("lorc:" + save(plan) + ",p=" + std::to_string(P), shape());
  const int seq = cache->add_sequence();
  std::mt19937 rng(5);
  std::vector<std::vector<double>> kref(kL), vref(kL), kb(kL), vb(kL);  // reference rows and bounds
  int64_t T = 0;
  for (int64_t n : {1, 4, 1, 9, 2, 1}) {
    cache->begin_step(seq, n);
    for (int l = 0; l < kL; ++l) {
      const auto k = randn(size_t(n * kC), rng, 2.0f), v = randn(size_t(n * kC), rng, 2.0f);
      const auto q = randn(size_t(n * kQH * kHd), rng);
      std::vector<float> out(q.size());
      cache->append(l, k.data(), v.data());
      for (int64_t t = 0; t < n; ++t) {
        std::vector<double> y(kC), b(kC);
        for (int s = 0; s < 2; ++s) {
          const float* x = (s == 0 ? k.data() : v.data()) + t * kC;
          if (T + t < P) {  // a sink: fp16 of the input
            for (int i = 0; i < kC; ++i) y[size_t(i)] = fp16_to_fp32(fp32_to_fp16(x[i])), b[size_t(i)] = 0.0;
          } else {
            reference_row(plan.layers[size_t(l)][size_t(s)], x, y.data(), b.data());
          }
          auto& dst = s == 0 ? kref[size_t(l)] : vref[size_t(l)];
          auto& bd = s == 0 ? kb[size_t(l)] : vb[size_t(l)];
          dst.insert(dst.end(), y.begin(), y.end());
          bd.insert(bd.end(), b.begin(), b.end());
        }
      }
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.out = out.data();
      a.n_heads = kQH;
      a.scale = 0.3f;
      cache->attend(l, a);
      const KvView view = cache->read(l);
      ASSERT_EQ(view.n_tokens, T + n);
      for (int64_t t = 0; t < T + n; ++t) {
        ASSERT_EQ(view.pos[t], t);
        for (int i = 0; i < kC; ++i) {
          const size_t e = size_t(t * kC + i);
          ASSERT_NEAR(static_cast<const float*>(view.k)[e], kref[size_t(l)][e], kb[size_t(l)][e]) << "layer " << l << " row " << t;
          ASSERT_NEAR(static_cast<const float*>(view.v)[e], vref[size_t(l)][e], vb[size_t(l)][e]) << "layer " << l << " row " << t;
        }
      }
      // Attention against a float64 softmax over the reference rows. A key error e moves a score
      // by at most scale * sum |q| |e| = ds; weights then move by a factor within e^(+-2 ds), so
      // the output moves by at most (e^(2 ds) - 1) max|v| + max|dv|.
      for (int64_t i = 0; i < n; ++i)
        for (int qh = 0; qh < kQH; ++qh) {
          const int kh = qh / (kQH / kH);
          const int64_t R = T + i + 1;
          std::vector<double> s(static_cast<size_t>(R));
          double mx = -1e300, z = 0, ds = 0, vmax = 0, dv = 0;
          for (int64_t t = 0; t < R; ++t) {
            double d = 0, e = 0;
            for (int c = 0; c < kHd; ++c) {
              const size_t at = size_t(t * kC + kh * kHd + c);
              const double qc = q[size_t((i * kQH + qh) * kHd + c)];
              d += qc * kref[size_t(l)][at];
              e += std::fabs(qc) * kb[size_t(l)][at];
              vmax = std::max(vmax, std::fabs(vref[size_t(l)][at]));
              dv = std::max(dv, vb[size_t(l)][at]);
            }
            ds = std::max(ds, e * a.scale);
            mx = std::max(mx, s[size_t(t)] = d * a.scale);
          }
          for (auto& e : s) z += (e = std::exp(e - mx));
          const double tol = (std::exp(2 * ds) - 1) * vmax + dv + 1e-5;
          for (int c = 0; c < kHd; ++c) {
            double acc = 0;
            for (int64_t t = 0; t < R; ++t) acc += s[size_t(t)] * vref[size_t(l)][size_t(t * kC + kh * kHd + c)];
            ASSERT_NEAR(out[size_t((i * kQH + qh) * kHd + c)], acc / z, tol) << "layer " << l << " step at " << T;
          }
        }
    }
    cache->end_step();
    T += n;
  }
  // Bytes: sinks fp16 whole, the other rows' latents fp16.
  int64_t want = 0;
  for (int l = 0; l < kL; ++l) want += 2 * (P * 2 * kC + (T - P) * (kRanks[size_t(l)][0] + kRanks[size_t(l)][1]));
  EXPECT_EQ(cache->live_bytes(), want);
  double bits = 0;
  for (const auto& t : cache->bits_report(seq)) bits += t.bits_per_value;
  EXPECT_NEAR(bits, 8.0 * double(want) / double(T * kL * 2 * kC), 1e-12);
}

// Steps of mixed sizes on a RoPE shape: attend() (tiles, threads, RoPE of the reconstructed
// keys at their positions) against attend_reference on the same cache.
TEST_F(LorcCacheTest, FusedAttentionEqualsTheDensePathWithRope) {
  auto cache = make_cache("lorc:" + save(random_plan(kRanks, 12)) + ",p=3", shape(true));
  const int seq = cache->add_sequence();
  std::mt19937 rng(6);
  for (int64_t n : {5, 1, 300, 1, 2}) {
    cache->begin_step(seq, n);
    for (int l = 0; l < kL; ++l) {
      const auto k = randn(size_t(n * kC), rng), v = randn(size_t(n * kC), rng);
      const auto q = randn(size_t(n * kQH * kHd), rng);
      std::vector<float> out(q.size()), ref(q.size());
      cache->append(l, k.data(), v.data());
      KvAttention a;
      a.n = n;
      a.q = q.data();
      a.n_heads = kQH;
      a.scale = 0.35f;
      a.out = out.data();
      cache->attend(l, a);
      a.out = ref.data();
      attend_reference(*cache, l, a);
      for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-5) << "layer " << l << " n " << n;
    }
    cache->end_step();
  }
}

// Rows of a cache that dropped positions equal, bit for bit, the same positions' rows of a cache
// that never dropped anything; a saved sequence continues exactly; truncation keeps a prefix.
TEST_F(LorcCacheTest, DropSaveAndTruncateKeepRowsExact) {
  const std::string path = save(random_plan(kRanks, 13));
  auto a = make_cache("lorc:" + path + ",p=2", shape(true));
  auto b = make_cache("lorc:" + path + ",p=2", shape(true));
  const int sa = a->add_sequence(), sb = b->add_sequence();
  std::mt19937 rng(7);
  auto step = [&](int64_t n) {
    a->begin_step(sa, n);
    b->begin_step(sb, n);
    for (int l = 0; l < kL; ++l) {
      const auto k = randn(size_t(n * kC), rng), v = randn(size_t(n * kC), rng);
      a->append(l, k.data(), v.data());
      b->append(l, k.data(), v.data());
    }
    a->end_step();
    b->end_step();
  };
  step(6);
  step(3);
  ASSERT_TRUE(a->can_drop_rows());
  const std::vector<int32_t> drop = {1, 4, 5, 8};  // a sink, latent rows, the last row
  a->drop_rows(sa, drop);
  step(2);
  EXPECT_EQ(a->n_tokens(sa), 11);
  for (int l = 0; l < kL; ++l) {
    a->begin_step(sa, 0);
    b->begin_step(sb, 0);
    const KvView va = a->read(l), vb = b->read(l);
    ASSERT_EQ(va.n_tokens, 7);
    for (int64_t t = 0; t < va.n_tokens; ++t) {
      const int32_t p = va.pos[t];
      EXPECT_FALSE(std::binary_search(drop.begin(), drop.end(), p));
      EXPECT_EQ(std::memcmp(static_cast<const float*>(va.k) + t * kC, static_cast<const float*>(vb.k) + p * kC, kC * 4), 0);
      EXPECT_EQ(std::memcmp(static_cast<const float*>(va.v) + t * kC, static_cast<const float*>(vb.v) + p * kC, kC * 4), 0);
    }
    a->end_step();
    b->end_step();
  }
  // A sequence with holes is not saved; the full one is, and continues bit for bit.
  struct Mem : KvStateOut, KvStateIn {
    std::map<std::string, std::string> s;
    void put(const std::string& n, const void* d, int64_t bytes) override { s[n].assign(static_cast<const char*>(d), size_t(bytes)); }
    int64_t size(const std::string& n) const override { return s.count(n) ? int64_t(s.at(n).size()) : -1; }
    void get(const std::string& n, void* d, int64_t bytes) const override { std::memcpy(d, s.at(n).data(), size_t(bytes)); }
  } mem;
  EXPECT_THROW(a->save_state(sa, mem), Error);
  b->save_state(sb, mem);
  auto c = make_cache("lorc:" + path + ",p=2", shape(true));
  const int sc = c->add_sequence();
  c->load_state(sc, mem);
  EXPECT_EQ(c->state_format(), b->state_format());
  EXPECT_EQ(c->live_bytes(), b->live_bytes());
  for (int l = 0; l < kL; ++l) {
    b->begin_step(sb, 0);
    c->begin_step(sc, 0);
    const KvView vb = b->read(l), vc = c->read(l);
    ASSERT_EQ(vb.n_tokens, vc.n_tokens);
    EXPECT_EQ(std::memcmp(vb.k, vc.k, size_t(vb.n_tokens * kC * 4)), 0);
    EXPECT_EQ(std::memcmp(vb.v, vc.v, size_t(vb.n_tokens * kC * 4)), 0);
    b->end_step();
    c->end_step();
  }
  EXPECT_EQ(c->truncate(sc, 5), 5);
  EXPECT_EQ(c->n_tokens(sc), 5);
  c->begin_step(sc, 0);
  EXPECT_EQ(c->read(0).n_tokens, 5);
  c->end_step();
  EXPECT_EQ(a->truncate(sa, 5), 0);  // holes: nothing kept
}

TEST_F(LorcCacheTest, PlanFilesRoundTripAndCorruptionsAreRefused) {
  LorcPlan p = random_plan(kRanks, 14);
  p.notes = "{\"x\": 1}";
  const std::string path = save(p);
  const LorcPlan q = load_lorc_plan(path);
  EXPECT_EQ(q.checksum, p.checksum);
  EXPECT_EQ(q.notes, p.notes);
  for (int l = 0; l < kL; ++l)
    for (int s = 0; s < 2; ++s) {
      EXPECT_EQ(q.layers[size_t(l)][size_t(s)].rank, p.layers[size_t(l)][size_t(s)].rank);
      EXPECT_EQ(q.layers[size_t(l)][size_t(s)].basis, p.layers[size_t(l)][size_t(s)].basis);
      EXPECT_EQ(q.layers[size_t(l)][size_t(s)].offset, p.layers[size_t(l)][size_t(s)].offset);
    }
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto parse = [](const std::string& b) {
    return parse_lorc_plan(std::span(reinterpret_cast<const uint8_t*>(b.data()), b.size()), "x");
  };
  for (size_t at = 0; at < bytes.size(); at += 7) {
    std::string b = bytes;
    b[at] = char(b[at] ^ 0x5a);
    EXPECT_THROW(parse(b), Error) << "flipped byte " << at;
  }
  for (size_t n : {size_t(0), size_t(9), bytes.size() / 2, bytes.size() - 1}) EXPECT_THROW(parse(bytes.substr(0, n)), Error) << n;
  // Plans that are well-formed files but not plans: a rank of 0, a basis that is not orthonormal.
  LorcPlan bad = p;
  bad.layers[1][0].basis[0] *= 2.0f;
  EXPECT_THROW(save_lorc_plan(bad, (dir_ / "bad.lorc").string()), Error);
  EXPECT_FALSE(fs::exists(dir_ / "bad.lorc"));
  // A plan for another model is refused by the cache, with one line.
  KvShape other = shape();
  other.n_layers = kL + 1;
  expect_specs_refused({("lorc:" + path).c_str()}, other, "n_layers");
}

TEST_F(LorcCacheTest, BadSpecsAreOneLineErrors) {
  const std::string path = save(random_plan(kRanks, 15));
  const std::string q = "lorc:" + path + ",q=1", neg = "lorc:" + path + ",p=-1", junk = "lorc:" + path + ",p=x";
  const std::string missing = "lorc:" + (dir_ / "none.lorc").string();
  expect_specs_refused({"lorc", "lorc:", "lorc:,p=4", q.c_str(), neg.c_str(), junk.c_str(), missing.c_str()}, shape(), "lorc");
}

}  // namespace
}  // namespace aquakv
