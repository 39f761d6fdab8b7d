// bench/heap_calls.hpp — counts heap calls at the malloc level: every function of the malloc family, which
// operator new and Asio's recycling cache (aligned_alloc) both end in, forwarding to glibc's own entry points.
// Defines malloc and its family: include it in exactly one translation unit of an executable, and not under a
// sanitizer (whose runtime owns malloc). The count is a plain load and store, so that it adds no locked
// instruction to anyone's heap calls: exact while one thread allocates at a time.
#pragma once

#include <atomic>
#include <cstddef>

namespace perfloc_heap_calls {

inline std::atomic<long> count{0};

inline void counted() noexcept { count.store(count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }

}  // namespace perfloc_heap_calls

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);

void* malloc(std::size_t n) {
  perfloc_heap_calls::counted();
  return __libc_malloc(n);
}
void* calloc(std::size_t count, std::size_t n) {
  perfloc_heap_calls::counted();
  return __libc_calloc(count, n);
}
void* realloc(void* p, std::size_t n) {
  perfloc_heap_calls::counted();
  return __libc_realloc(p, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
  perfloc_heap_calls::counted();
  return __libc_memalign(alignment, n);
}
void* memalign(std::size_t alignment, std::size_t n) {
  perfloc_heap_calls::counted();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  perfloc_heap_calls::counted();
  void* p = __libc_memalign(alignment, n);
  if (!p) return 12;  // ENOMEM
  *out = p;
  return 0;
}
void free(void* p) { __libc_free(p); }
}
