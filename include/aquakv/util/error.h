// aquakv::Error: the one exception type for bad user input (files, flags, texts).
// Owns: the error type and the helpers that format its one-line message. Not: exit codes
// (only tools/aquakv/main.cpp turns an Error into an exit status). Invariants of our own code
// are AQUAKV_CHECKs (util/check.h), not Errors.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace aquakv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Throws Error with a fmt-formatted one-line message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace aquakv
