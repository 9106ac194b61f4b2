// Checks on --kv spellings shared by the cache-format tests: that each bad spec is refused with
// one line (an Error, no newline; optionally naming `must_name`).
#pragma once

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"

namespace aquakv {

inline void expect_specs_refused(std::initializer_list<const char*> bad_specs, const KvShape& shape,
                                 const char* must_name = nullptr) {
  for (const char* bad : bad_specs) {
    try {
      make_cache(bad, shape);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
      if (must_name != nullptr) {
        EXPECT_NE(m.find(must_name), std::string::npos) << m;
      }
    }
  }
}

}  // namespace aquakv
