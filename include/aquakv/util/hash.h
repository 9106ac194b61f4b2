// The one content hash of aquakv: 64-bit FNV-1a (Fowler-Noll-Vo). Owns: the function and its
// published constants. Used for file checksums (adapters, logits files), token-window identities
// and model fingerprints. Not cryptographic: it detects accidental corruption and mix-ups, not
// tampering (docs/SECURITY.md).
#pragma once

#include <cstdint>

namespace aquakv {

// FNV-1a 64: h = offset basis; for each byte b: h = (h xor b) * prime (mod 2^64).
inline constexpr uint64_t kFnv1a64Basis = 14695981039346656037ull;  // 0xcbf29ce484222325
inline constexpr uint64_t kFnv1a64Prime = 1099511628211ull;         // 0x100000001b3
// The start value aquakv used before it was found to be one digit short of the basis above.
// Kept where changing it would break existing files: adapter format version 1 checksums and
// the model fingerprint (engine/fingerprint.h, stored in every adapter file as meta_hash).
inline constexpr uint64_t kFnv1a64LegacyBasis = 1469598103934665603ull;

// Hash of n bytes, continuing from h (pass a previous result to hash a sequence of pieces).
uint64_t fnv1a64(const void* data, int64_t n, uint64_t h = kFnv1a64Basis);

// out[i] = fnv1a64(data[i], n[i]) for `count` buffers. The same values, computed four buffers
// at a time in one loop: FNV-1a is one chain of dependent multiplies per buffer (about 4
// cycles per byte), and four independent chains keep the multiplier busy (about 1 cycle per
// byte). Used to check many sections of a file (kv/session_file.h).
void fnv1a64_many(const void* const* data, const int64_t* n, int64_t count, uint64_t* out);

}  // namespace aquakv
