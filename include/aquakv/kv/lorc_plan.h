// LoRC low-rank plans: per layer, the rank and orthonormal basis onto which keys and values are
// projected before they are stored (the file `aquakv calibrate --method lorc` writes, docs/
// REDUCTION.md "LoRC"). Owns: the plan's in-memory form, its versioned checksummed file and the
// validating loader. Not: how the bases are derived from the model's weights (calib/lorc_fit.h),
// the cache that stores the latents (kv/lorc_cache.h).
//
// After Zhang et al. 2024 ("LoRC: low-rank compression for LLMs KV cache with a progressive
// compression strategy"): K = X W_k^T with W_k (C x d_model) of rank <= C; its truncated SVD
// W_k ~ U_r S_r V_r^T gives K ~ (X V_r S_r) U_r^T, a latent of r values per token. Since
// X V_r S_r = K U_r exactly (U_r's columns are orthonormal left singular vectors), the latent is
// the projection of the key on U_r, and the cache can compute it from the key itself: basis =
// U_r (C x r), latent c = (k - offset) U_r, reconstruction k^ = c U_r^T + offset (offset: the
// projection's bias, zero for models without K/V biases). Values likewise with W_v.
//
// File layout: magic "AQKVLORC", u32 version, u64 file length, model fingerprint
// (kv/file_envelope.h), per layer and stream (key, value): i64 rank r, f64 condition number of
// the weight matrix, f32 basis (C x r, row-major), f32 offset (C); str notes (the fit's settings
// and per-layer table, JSON), u64 FNV-1a 64 of every byte before.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aquakv/kv/adapters.h"

namespace aquakv {

struct LorcStream {
  int64_t rank = 0;              // r, 1 <= r <= C
  double condition = 0.0;        // sigma_max / sigma_min of the projection weights (reported)
  std::vector<float> basis;      // (C, r) row-major, orthonormal columns
  std::vector<float> offset;     // (C)
};

struct LorcPlan {
  ModelFingerprint model;
  std::vector<std::array<LorcStream, 2>> layers;  // [layer][0 = keys, 1 = values]
  std::string notes;
  uint64_t checksum = 0;  // the file's checksum (set by the loader and by save)

  // Stored values per token over all layers and both streams (sum of ranks).
  int64_t latent_width() const;
};

inline constexpr uint32_t kLorcPlanVersion = 1;

// Error naming `what` unless every stream has 1 <= rank <= C, a basis of C x rank finite values
// with orthonormal columns (|B^T B - I| <= 1e-3 elementwise) and a finite offset of C values.
void check_lorc_plan(const LorcPlan& plan, const std::string& what);

// Writes atomically; sets plan.checksum. Loads: validates structure, checksum and the plan.
void save_lorc_plan(LorcPlan& plan, const std::string& path);
LorcPlan load_lorc_plan(const std::string& path);
LorcPlan parse_lorc_plan(std::span<const uint8_t> bytes, const std::string& name);

}  // namespace aquakv
