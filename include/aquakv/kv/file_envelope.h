// The envelope of the single-version calibration files (quantizer tables, layer-sharing plans,
// low-rank plans): 8-byte magic, u32 version, u64 file length, the body, u64 FNV-1a 64 of every
// byte before it; and the model fingerprint each of them records first in its body. Owns:
// writing and checking those fields. Not: the rest of the bodies (their files), the adapter and
// session files (versioned readers of their own, kv/adapters.h, kv/session_file.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "aquakv/kv/adapters.h"
#include "aquakv/kv/kv_cache.h"
#include "aquakv/util/binary_io.h"

namespace aquakv {

// Starts a file: magic, version, a length to be patched; returns where the length is.
size_t begin_envelope(ByteWriter& w, const char (&magic)[8], uint32_t version);
// Patches the length and appends the checksum (returned).
uint64_t end_envelope(ByteWriter& w, size_t length_at);

// Checks magic, version, length and checksum of `bytes`, leaving `r` after the length; returns
// the checksum. Errors: "{what}: not a {kind} (bad magic)", "{what}: version V (this build reads
// N)", "{what}: header says X bytes, the file has Y", "{what}: checksum mismatch (file corrupted)".
uint64_t check_envelope(ByteReader& r, std::span<const uint8_t> bytes, const char (&magic)[8], uint32_t version,
                        const std::string& what, const std::string& kind);

// The model fingerprint as the files store it: str arch, i64 n_layers, n_kv_heads, head_dim,
// kv_width, u64 meta_hash. The reader refuses impossible dimensions ("{what}: bad model
// dimensions (...)").
void write_fingerprint(ByteWriter& w, const ModelFingerprint& m);
ModelFingerprint read_fingerprint(ByteReader& r, const std::string& what);

// Error "{what}: made for a model with FIELD X, this model has Y" unless the file's fingerprint
// fits the cache's shape (layers, KV heads, head size; architecture and model hash when the
// shape knows them).
void check_fingerprint(const ModelFingerprint& m, const KvShape& shape, const std::string& what);

}  // namespace aquakv
