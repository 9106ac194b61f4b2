// Calibration on self-generated text (`aquakv calibrate` without -f, and what `--kv aquakv`
// runs on first use), needs AQUAKV_MODEL: tiny settings (128 tokens in sequences of 32) so it
// runs in seconds. The same seed gives the same predictors bit for bit (the whole file equal,
// apart from the notes, which record wall times), also when the sequences are decoded in other
// groups (--gen-batch); another seed samples other text and gives other predictors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "aquakv/calib/calibrate.h"
#include "aquakv/kv/adapters.h"

namespace aquakv {
namespace {

namespace fs = std::filesystem;

class SelfCalibrate : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* m = std::getenv("AQUAKV_MODEL");
    if (m == nullptr || *m == '\0') GTEST_SKIP() << "AQUAKV_MODEL is not set";
    model_ = m;
    dir_ = fs::temp_directory_path() / ("aquakv_selfcal_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  Adapters run(uint64_t seed, CalibrateReport* rep = nullptr, int64_t gen_batch = 8) const {
    CalibrateOptions o;
    o.model_path = model_;
    o.gen_tokens = 128;
    o.window = 32;
    o.tokens = 128;
    o.seed = seed;
    o.threads = 2;
    o.gen_batch = gen_batch;
    return calibrate(o, rep);
  }
  // The adapter file's bytes with the notes left out.
  std::string bytes_without_notes(Adapters a, const char* name) const {
    a.notes.clear();
    const std::string p = (dir_ / name).string();
    save_adapters(a, p);
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  std::string model_;
  fs::path dir_;
};

TEST_F(SelfCalibrate, SameSeedSameBytesOtherSeedOtherPredictors) {
  CalibrateReport rep;
  const Adapters a = run(1, &rep);
  EXPECT_EQ(rep.source, "self-generated (128 tokens, temperature 1, seed 1)");
  EXPECT_EQ(rep.windows, 4);
  EXPECT_EQ(rep.train_rows, 3 * 32);  // 4 sequences, round(4 * 0.125) = 1 held out
  EXPECT_EQ(rep.val_rows, 32);
  ASSERT_EQ(a.layers.size(), size_t(a.model.n_layers));
  ASSERT_FALSE(a.layers[1].key.empty());

  // Same seed, the 4 sequences decoded 3 + 1 instead of 4 at once: the same text and records
  // (per-sequence generators; batched decode equals single decode bit for bit).
  const Adapters b = run(1, nullptr, 3);
  const std::string fa = bytes_without_notes(a, "a.aqkv"), fb = bytes_without_notes(b, "b.aqkv");
  EXPECT_GT(fa.size(), size_t(1) << 20);
  EXPECT_TRUE(fa == fb) << "two calibrations with seed 1 (batches of 4 and of 3 + 1) differ";

  const Adapters c = run(2);
  EXPECT_EQ(c.model.meta_hash, a.model.meta_hash);
  EXPECT_FALSE(bytes_without_notes(c, "c.aqkv") == fa) << "seeds 1 and 2 gave the same adapters";
  int differing_layers = 0;
  for (size_t l = 1; l < a.layers.size(); ++l) differing_layers += a.layers[l].key.w != c.layers[l].key.w;
  EXPECT_EQ(differing_layers, int(a.layers.size()) - 1) << "other text should change every key predictor";
}

}  // namespace
}  // namespace aquakv
