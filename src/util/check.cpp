// Failure report of AQUAKV_CHECK (util/check.h).
#include "aquakv/util/check.h"

#include <cstdio>
#include <cstdlib>

namespace aquakv::detail {

void check_failed(const char* file, int line, const char* cond, const char* msg) {
  if (msg != nullptr && *msg != '\0') {
    std::fprintf(stderr, "aquakv: internal check failed: %s:%d: %s (%s)\n", file, line, cond, msg);
  } else {
    std::fprintf(stderr, "aquakv: internal check failed: %s:%d: %s\n", file, line, cond);
  }
  std::fflush(stderr);
  std::abort();
}

}  // namespace aquakv::detail
