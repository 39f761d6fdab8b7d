// examples/http/malloc_count.cpp — counts heap allocations at the malloc level, for the demo's "heap calls
// per request".
//
// The executable defines malloc, calloc, realloc, free and the aligned variants, which glibc lets a program
// replace; each forwards to glibc's own (__libc_malloc and the like), so memory is the same and only the
// count is added. operator new, std::string, Asio's and Beast's allocations all end here, whatever made them.
// Counting is off until http::count_heap_calls(true): a branch per call, nothing else.
//
// Sanitizer builds keep their own interceptors (they replace malloc themselves): there the count stays 0
// and http::heap_calls_counted() says false.
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace http {
std::atomic<bool> counting{false};
std::atomic<std::uint64_t> allocations{0};
}  // namespace http

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define PERFLOC_HTTP_NO_MALLOC_COUNT 1
#endif
#endif

#ifndef PERFLOC_HTTP_NO_MALLOC_COUNT
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);

namespace {
inline void count() noexcept {
  if (http::counting.load(std::memory_order_relaxed)) http::allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

void* malloc(std::size_t n) {
  count();
  return __libc_malloc(n);
}
void* calloc(std::size_t n, std::size_t size) {
  count();
  return __libc_calloc(n, size);
}
void* realloc(void* p, std::size_t n) {
  count();
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
void* memalign(std::size_t alignment, std::size_t n) {
  count();
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(std::size_t alignment, std::size_t n) { return memalign(alignment, n); }
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* p = memalign(alignment, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
}
#endif

namespace http {
void count_heap_calls(bool on) { counting.store(on, std::memory_order_relaxed); }
std::uint64_t heap_calls() { return allocations.load(std::memory_order_relaxed); }
bool heap_calls_counted() {
#ifdef PERFLOC_HTTP_NO_MALLOC_COUNT
  return false;
#else
  return counting.load(std::memory_order_relaxed);
#endif
}
}  // namespace http
