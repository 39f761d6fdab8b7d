// bench/heap_calls.hpp — counts heap calls at the malloc level: every allocating function of the malloc family
// (malloc, calloc, realloc, reallocarray, aligned_alloc, memalign, posix_memalign, valloc, pvalloc), which
// operator new, Asio's recycling cache (aligned_alloc) and Beast all end in, whatever made them. Each forwards
// to glibc's own entry point (__libc_malloc and the like), which glibc lets a program replace: the memory is the
// same, only the count is added. free is replaced too, so that no pointer meets a foreign free.
//
// Defines malloc and its family: include it in exactly one translation unit of an executable. Used by
// bench/asio_bench.cpp, tests/perfloc/asio_v2.test.cpp and examples/http/server.cpp (perfloc-http's
// --count-heap-calls, the demo's heap calls per request).
//
// The switches, one for each kind of user:
// - PERFLOC_HEAP_CALLS_ATOMIC, defined before the include: the count is one atomic add, exact while several
//   threads allocate at once (perfloc-http --threads N). Without it the count is a plain load and store, so
//   that it adds no locked instruction to a timed heap call: exact while one thread allocates at a time.
// - perfloc_heap_calls::counting (on unless the program turns it off): while off, a call costs one branch and
//   is not counted. perfloc-http turns it on only with --count-heap-calls.
// - PERFLOC_HEAP_CALLS_TRACE=1 in the environment: each counted call also writes its number and its backtrace
//   to stderr (glibc's backtrace_symbols_fd; symbolize the addresses with llvm-symbolizer), so that a heap
//   call seen in a steady state can be traced to its source.
// - Under a sanitizer, whose runtime owns malloc, nothing is replaced: perfloc_heap_calls::available is false
//   and the count stays 0.
#pragma once

#include <atomic>
#include <cstddef>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define PERFLOC_HEAP_CALLS_UNDER_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PERFLOC_HEAP_CALLS_UNDER_SANITIZER 1
#endif

namespace perfloc_heap_calls {

#ifdef PERFLOC_HEAP_CALLS_UNDER_SANITIZER
inline constexpr bool available = false;
#else
inline constexpr bool available = true;
#endif

inline std::atomic<long> count{0};
inline std::atomic<bool> counting{true};

}  // namespace perfloc_heap_calls

#ifndef PERFLOC_HEAP_CALLS_UNDER_SANITIZER
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <execinfo.h>
#include <unistd.h>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void* __libc_valloc(std::size_t);
void* __libc_pvalloc(std::size_t);
void __libc_free(void*);
}

namespace perfloc_heap_calls::detail {

/// PERFLOC_HEAP_CALLS_TRACE, read at the first counted call: -1 not read yet, 0 off, 1 on.
inline std::atomic<int> trace{-1};

/// The number and backtrace of heap call `n`, on stderr. Neither backtrace() (which loads libgcc_s, allocating,
/// at its first call) nor the formatting may count or trace themselves: a per-thread guard.
[[gnu::noinline]] inline void write_trace(long n) noexcept {
  static thread_local bool inside = false;
  if (inside) return;
  inside = true;
  char line[64];
  const int length = std::snprintf(line, sizeof line, "heap call %ld:\n", n);
  if (length > 0) (void)!::write(STDERR_FILENO, line, static_cast<std::size_t>(length));
  void* frames[32];
  const int depth = ::backtrace(frames, 32);
  ::backtrace_symbols_fd(frames + 1, depth - 1, STDERR_FILENO);  // from the replaced function's caller
  inside = false;
}

inline void counted() noexcept {
  if (!counting.load(std::memory_order_relaxed)) return;
#ifdef PERFLOC_HEAP_CALLS_ATOMIC
  const long n = count.fetch_add(1, std::memory_order_relaxed) + 1;
#else
  const long n = count.load(std::memory_order_relaxed) + 1;
  count.store(n, std::memory_order_relaxed);
#endif
  int tracing = trace.load(std::memory_order_relaxed);
  if (tracing < 0) {
    const char* value = std::getenv("PERFLOC_HEAP_CALLS_TRACE");
    tracing = value != nullptr && value[0] == '1';
    trace.store(tracing, std::memory_order_relaxed);
  }
  if (tracing) [[unlikely]]
    write_trace(n);
}

/// A valid alignment for posix_memalign: a power of two and a multiple of sizeof(void*).
inline bool posix_alignment(std::size_t alignment) noexcept {
  return alignment >= sizeof(void*) && (alignment & (alignment - 1)) == 0;
}

}  // namespace perfloc_heap_calls::detail

extern "C" {
void* malloc(std::size_t n) {
  perfloc_heap_calls::detail::counted();
  return __libc_malloc(n);
}
void* calloc(std::size_t count, std::size_t n) {
  perfloc_heap_calls::detail::counted();
  return __libc_calloc(count, n);
}
void* realloc(void* p, std::size_t n) {
  perfloc_heap_calls::detail::counted();
  return __libc_realloc(p, n);
}
void* reallocarray(void* p, std::size_t count, std::size_t n) {
  std::size_t bytes = 0;
  if (__builtin_mul_overflow(count, n, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, bytes);
}
void* memalign(std::size_t alignment, std::size_t n) {
  perfloc_heap_calls::detail::counted();
  return __libc_memalign(alignment, n);
}
/// C11: the alignment must be a power of two (glibc 2.38 and later check it the same way).
void* aligned_alloc(std::size_t alignment, std::size_t n) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    errno = EINVAL;
    return nullptr;
  }
  return memalign(alignment, n);
}
/// POSIX: EINVAL for an alignment that is not a power of two multiple of sizeof(void*), ENOMEM when out of
/// memory, `*out` untouched on failure.
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
  if (!perfloc_heap_calls::detail::posix_alignment(alignment)) return EINVAL;
  void* p = memalign(alignment, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
void* valloc(std::size_t n) {
  perfloc_heap_calls::detail::counted();
  return __libc_valloc(n);
}
void* pvalloc(std::size_t n) {
  perfloc_heap_calls::detail::counted();
  return __libc_pvalloc(n);
}
void free(void* p) { __libc_free(p); }
}
#endif
