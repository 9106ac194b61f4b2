// Session files: a processed sequence (its tokens, the logits after its last token and the
// cache's state, exactly as held in memory) kept on disk and restored without recomputing it.
// Owns: the versioned file format (docs/SESSIONS.md), its atomic writer, and the validating,
// mmap-based reader that hands sections to a cache's load_state. Not: what the sections mean
// (each cache format), moving a state between formats (kv/kv_state.h), the prompt-cache
// workflow (tools/aquakv).
//
// Layout (little-endian): a header (magic, version, model identity, cache format, tokens,
// logits, the section table with every section's FNV-1a 64, then the header's own FNV-1a 64),
// then the sections, each at a 64-byte aligned offset, stored raw or zstd-compressed (kept
// compressed only where that saves at least 3%). Reading maps the file and copies each section
// once, straight from the mapping (or through zstd) into the cache's storage.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aquakv/kv/kv_cache.h"
#include "aquakv/util/file_io.h"

namespace aquakv {

inline constexpr uint32_t kSessionVersion = 1;

enum class SectionCodec : uint32_t { kRaw = 0, kZstd = 1 };

struct SessionSection {
  std::string name;
  SectionCodec codec = SectionCodec::kRaw;
  uint64_t offset = 0;        // from the start of the file
  uint64_t raw_bytes = 0;     // bytes the cache holds
  uint64_t stored_bytes = 0;  // bytes in the file
  uint64_t hash = 0;          // FNV-1a 64 of the stored bytes
};

struct SessionInfo {
  // The model: general.architecture, shape and fingerprint (engine/fingerprint.h).
  std::string arch;
  int64_t n_layers = 0, n_kv_heads = 0, head_dim = 0;
  uint64_t model_hash = 0;
  int64_t n_ctx = 0;          // the context of the cache that saved it (informative)
  std::string kv_spec;        // the saving cache's --kv spelling (name())
  std::string state_format;   // KvCache::state_format() of the saving cache
  uint64_t adapter_checksum = 0;  // AQUA-KV adapter file checksum, 0 = none
  std::vector<int32_t> tokens;    // the sequence's tokens (n_tokens of the cache)
  std::vector<float> logits;      // after the last token (empty when not saved)
};

struct SessionSaveOptions {
  bool zstd = false;    // try zstd per section, keep it where it saves >= 3%
  int zstd_level = 3;
};

struct SessionSaveStats {
  uint64_t file_bytes = 0;
  uint64_t raw_section_bytes = 0;     // what the sections hold in memory
  uint64_t stored_section_bytes = 0;  // what they take in the file
  uint64_t header_bytes = 0;          // header + table + alignment (tokens and logits included)
};

// Writes sequence `seq` of `cache` (between steps) with its tokens (exactly n_tokens(seq) of
// them) and optional logits, atomically (util/file_io.h). `shape` identity comes from the cache.
SessionSaveStats save_session(const std::string& path, const KvCache& cache, int seq,
                              std::span<const int32_t> tokens, std::span<const float> logits,
                              const SessionSaveOptions& opt = {});

// Bits per KV value of `bytes` (a file, or a part of one) holding n_tokens tokens of a model
// with n_layers layers of KV width `width`: 8 bytes / (n_tokens x n_layers x 2 x width), 0 for
// no tokens. Every figure the tool prints about session files uses it.
double session_bits_per_value(uint64_t bytes, int64_t n_tokens, int64_t n_layers, int64_t width);

// A validated session file: header, table and every section's checksum checked at open.
class SessionFile : public KvStateIn {
 public:
  // Maps and validates `path`; errors name the file and the problem (not a session file,
  // version, truncated, corrupted, inconsistent table).
  static std::unique_ptr<SessionFile> open(const std::string& path);
  // The same validation on bytes in memory (`name` for messages; the fuzz target). The bytes
  // must outlive the object.
  static std::unique_ptr<SessionFile> parse(std::span<const uint8_t> bytes, const std::string& name);

  const SessionInfo& info() const { return info_; }
  const std::vector<SessionSection>& sections() const { return sections_; }
  uint64_t file_bytes() const { return bytes_.size(); }
  const std::string& name() const { return name_; }

  // Refuses (one line) a file made for another model than the one `shape` describes.
  void check_model(const KvShape& shape) const;
  // Loads the state into sequence `seq` of `cache`, whose state_format() must equal the file's
  // (otherwise: restore into a cache of info().kv_spec and copy_sequence, kv/kv_state.h).
  void load_into(KvCache& cache, int seq) const;

  int64_t size(const std::string& section) const override;
  void get(const std::string& section, void* dst, int64_t bytes) const override;

 private:
  SessionFile() = default;
  void parse_bytes();

  std::string name_;
  MappedFile map_;
  std::span<const uint8_t> bytes_;
  SessionInfo info_;
  std::vector<SessionSection> sections_;
  std::map<std::string, size_t> index_;
};

}  // namespace aquakv
