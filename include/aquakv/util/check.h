// AQUAKV_CHECK: invariants of aquakv's own code, checked in every build type (Release too).
// Owns: the check macro and its failure report. Not: bad user input, which throws aquakv::Error
// (util/error.h) with a one-line message; a failed CHECK is a bug in aquakv, never the user's.
// On failure it prints "aquakv: internal check failed: FILE:LINE: CONDITION (MESSAGE)" to
// stderr and aborts (so a core dump or a debugger sees the state). The condition costs one
// predictable branch; keep CHECKs out of the innermost loops of kernels.
#pragma once

namespace aquakv::detail {
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const char* msg);
}  // namespace aquakv::detail

// AQUAKV_CHECK(cond) or AQUAKV_CHECK(cond, "what the invariant means")
#define AQUAKV_CHECK(cond, ...)                                                              \
  do {                                                                                       \
    if (__builtin_expect(!(cond), 0))                                                        \
      ::aquakv::detail::check_failed(__FILE__, __LINE__, #cond, "" __VA_ARGS__);             \
  } while (0)
