// perfloc/detail/track.hpp — what the memory tools people already run are told about perfloc's memory.
//
// Perfloc hands out memory from its own blocks, so AddressSanitizer and Valgrind cannot know on their own
// which bytes are live. Every place that hands memory out or takes it back calls one of the three hooks
// below, and this file alone maps them onto ASan's manual poisoning, Valgrind's client requests, or nothing
// (the idea of mimalloc's include/mimalloc/track.h). Without a tool the hooks compile to nothing, so the
// allocation fast path pays for them only in instrumented builds.
//
// Included from the global module fragment of the perfloc module units: internal, never exported.
#pragma once

#include <cstddef>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PERFLOC_TRACK_ASAN 1
#endif
#endif
#if !defined(PERFLOC_TRACK_ASAN) && defined(__SANITIZE_ADDRESS__)
#define PERFLOC_TRACK_ASAN 1
#endif

#if defined(PERFLOC_TRACK_ASAN)
#include <sanitizer/asan_interface.h>
#endif
#if defined(PERFLOC_TRACK_VALGRIND)
// Defined by the CMake option PERFLOC_VALGRIND (ON in Debug builds when the header exists).
#if !__has_include(<valgrind/memcheck.h>)
#error "PERFLOC_TRACK_VALGRIND needs <valgrind/memcheck.h> (Debian: valgrind); or configure with -DPERFLOC_VALGRIND=OFF"
#endif
#include <valgrind/memcheck.h>
#endif

namespace perfloc::detail::track {

/// [p, p + n) now belongs to a user: reads and writes are fine (its contents are undefined).
inline void handed_out([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(PERFLOC_TRACK_ASAN)
  __asan_unpoison_memory_region(p, n);
#endif
#if defined(PERFLOC_TRACK_VALGRIND)
  VALGRIND_MAKE_MEM_UNDEFINED(p, n);
#endif
}

/// [p, p + n) belongs to perfloc again: any user access is an error the tool reports.
inline void taken_back([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(PERFLOC_TRACK_ASAN)
  __asan_poison_memory_region(p, n);
#endif
#if defined(PERFLOC_TRACK_VALGRIND)
  VALGRIND_MAKE_MEM_NOACCESS(p, n);
#endif
}

/// [p, p + n) is perfloc's own bookkeeping inside poisoned memory: perfloc reads and writes it, with
/// contents it defined itself.
inline void internal_access([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(PERFLOC_TRACK_ASAN)
  __asan_unpoison_memory_region(p, n);
#endif
#if defined(PERFLOC_TRACK_VALGRIND)
  VALGRIND_MAKE_MEM_DEFINED(p, n);
#endif
}

}  // namespace perfloc::detail::track
