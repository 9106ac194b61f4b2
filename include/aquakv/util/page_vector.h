// Storage that grows with the context: PageVector<T>, a std::vector whose large buffers live in
// their own anonymous memory mappings. Owns: that allocator and its threshold. Not: what is
// stored (the KV cache formats, kv/).
//
// Why: a KV cache grows a buffer per layer as tokens arrive. Through malloc, every doubling
// frees the old buffer into the heap, where glibc keeps it (and raises its mmap threshold to
// the freed size, so later buffers land in the heap too): peak RSS grew by tens of MiB over
// what the cache holds. A buffer of at least kPageVectorMapBytes gets a mapping of its own
// instead: pages count as resident only once written (the unused capacity of a doubled
// buffer costs nothing), and a freed buffer goes back to the system at once. Smaller buffers
// come from the heap, so a cache with many tiny buffers does not use up mappings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace aquakv {

// Buffers of at least this many bytes are mapped (below it: operator new).
inline constexpr size_t kPageVectorMapBytes = size_t(64) << 10;

// Allocates `bytes` (mapped at or above kPageVectorMapBytes); throws std::bad_alloc on failure.
void* page_alloc(size_t bytes);
// Frees what page_alloc(bytes) returned (the same byte count).
void page_free(void* p, size_t bytes) noexcept;

template <typename T>
struct PageAllocator {
  using value_type = T;
  PageAllocator() = default;
  template <typename U>
  PageAllocator(const PageAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(page_alloc(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { page_free(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const PageAllocator<U>&) const noexcept { return true; }
};

template <typename T>
using PageVector = std::vector<T, PageAllocator<T>>;

}  // namespace aquakv
