// Moving a sequence's state: the section helpers every format's save_state/load_state uses, and
// copying a sequence between caches of different formats. Owns: typed sections with size
// checks, the "meta" record of counters, and copy_sequence. Not: the session file
// (kv/session_file.h) or any format's storage (the formats).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aquakv/kv/kv_cache.h"
#include "aquakv/util/error.h"

namespace aquakv {

template <typename T, typename A>
void put_section(KvStateOut& out, const std::string& name, const std::vector<T, A>& v) {
  out.put(name, v.data(), int64_t(v.size() * sizeof(T)));
}

// Reads section `name` into v: it must exist and hold a whole number of T; when want >= 0, it
// must hold exactly `want` elements. Errors name the format and the section.
template <typename T, typename A>
void get_section(const KvStateIn& in, const std::string& format, const std::string& name,
                 std::vector<T, A>& v, int64_t want = -1) {
  const int64_t bytes = in.size(name);
  if (bytes < 0) fail("saved {} state: section '{}' missing", format, name);
  if (bytes % int64_t(sizeof(T)) != 0 || (want >= 0 && bytes != want * int64_t(sizeof(T))))
    fail("saved {} state: section '{}' holds {} bytes, expected {}", format, name, bytes,
         want >= 0 ? want * int64_t(sizeof(T)) : bytes - bytes % int64_t(sizeof(T)));
  v.resize(size_t(bytes / int64_t(sizeof(T))));
  in.get(name, v.data(), bytes);
}

// Checks saved positions: n of them, p[i] = i (formats that keep every position in order).
void check_dense_positions(const std::vector<int32_t>& pos, int64_t n, const std::string& format);

// For drop_rows: a flag per held row (positions `held`, ascending) that is 1 where the row's
// position is in `drop`. `drop` must be ascending and every position held; errors name the format.
std::vector<uint8_t> rows_to_drop(std::span<const int32_t> held, std::span<const int32_t> drop,
                                  const std::string& format);

// Copies sequence sseq of `src` (between steps) into sequence dseq of `dst`, replacing dseq's
// content: one step of n_tokens(sseq) rows appended to dst layer by layer from src's dense rows
// (keys rotated back to before RoPE where src stores them rotated). This is how a session
// saved in one format is restored into another: an AQUA-KV state into fp16 pays the
// predictor rebuild once; an fp16 state into a compressed format is encoded on the way in.
// Rows src no longer holds (outside a sliding window) must be ones no later query sees.
void copy_sequence(KvCache& src, int sseq, KvCache& dst, int dseq);

}  // namespace aquakv
