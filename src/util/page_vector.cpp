// Mapped buffers for PageVector (util/page_vector.h).
#include "aquakv/util/page_vector.h"

#include <sys/mman.h>

#include <new>

namespace aquakv {

void* page_alloc(size_t bytes) {
  if (bytes < kPageVectorMapBytes) return ::operator new(bytes);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  // Where transparent huge pages are "always" on, a touched byte would make a whole 2 MiB page
  // resident: the capacity past a cache's rows would count again. Small pages keep RSS at what
  // is used (advice only: a kernel without THP ignores it).
  (void)madvise(p, bytes, MADV_NOHUGEPAGE);
  return p;
}

void page_free(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  if (bytes < kPageVectorMapBytes) return ::operator delete(p);
  munmap(p, bytes);
}

}  // namespace aquakv
