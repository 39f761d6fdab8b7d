// bench/workload.hpp — the workloads every competitor runs, written once.
//
// Each workload is a function template over a *competitor* (a scope policy), so glibc, jemalloc, APR,
// perfloc and the bump-pointer limit execute literally the same loop; only the policy's few inline
// calls differ. Nothing here depends on Google Benchmark: harness.hpp wraps these in benchmarks, and
// icount.hpp runs them bare under Callgrind.
//
// A competitor C provides:
//
//   struct C::context   built once per benchmark run, outside the timed loop (a reused buffer, a parent
//                       pool, a shared pool resource...). Default-constructible.
//   class  C::scope     opened at the start of each scope, released when it is destroyed:
//     explicit scope(context&);
//     void* allocate(std::size_t n);                     // at least 8-byte aligned, n in [16, 256]
//     void  deallocate(void* p, std::size_t n);          // needed only when !frees_at_end
//     template <class T, class... A> T* make(A&&...);     // construct a T in scope memory
//     template <class T> void release(T* p);              // end one object early: destructor, and give
//                                                         // its memory back if the competitor can
//     static constexpr bool frees_at_end;       // ending the scope gives back every allocation
//     static constexpr bool runs_destructors;   // ending the scope runs the destructors of make<T> objects
//     static constexpr bool frees_individually; // release() exists (free_reuse workload is run)
//     static constexpr bool has_scope_object;   // opening a scope does something (open_release is run)
//
// When a competitor cannot end its scope by itself (malloc/free, a shared pool), the workload keeps the
// pointers in a preallocated array and frees them one by one at scope end: that bookkeeping is what a
// user of such an allocator pays too, and it is skipped (if constexpr) for competitors that do not need it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace perfloc_bench {

// ---------------------------------------------------------------------------------------------------
// Keeping the optimizer honest: empty asm statements like benchmark::DoNotOptimize and
// benchmark::ClobberMemory, here so that the icount executables need no benchmark library. They emit
// no instruction; they make `value` (and all memory) observable, so no allocation, touch or
// destructor can be deleted. Unlike benchmark::DoNotOptimize, a pointer is kept with "+r" alone:
// clang resolves "+r,m" to the memory alternative and spills the pointer to the stack on every call,
// a store per allocation that is no part of any allocator.
// ---------------------------------------------------------------------------------------------------

template <class T>
[[gnu::always_inline]] inline void keep(T& value) {
  if constexpr (std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(void*)) {
    asm volatile("" : "+r"(value) : : "memory");
  } else {
    asm volatile("" : "+m"(value) : : "memory");
  }
}

[[gnu::always_inline]] inline void clobber() { asm volatile("" : : : "memory"); }

// ---------------------------------------------------------------------------------------------------
// The object sizes: a fixed pseudo-random sequence in [16, 256] bytes, generated once (splitmix64 with
// a fixed seed), the same for every competitor and every run. Scope i of size K uses sizes[0..K).
// ---------------------------------------------------------------------------------------------------

inline constexpr std::size_t max_objects = 4096;
inline constexpr std::size_t min_size = 16;
inline constexpr std::size_t max_size = 256;

inline const std::array<std::uint32_t, max_objects>& sizes() {
  static const std::array<std::uint32_t, max_objects> table = [] {
    std::array<std::uint32_t, max_objects> result{};
    std::uint64_t state = 0x5045'5246'4c4f'4321ull;  // fixed seed
    for (auto& size : result) {
      state += 0x9e37'79b9'7f4a'7c15ull;
      std::uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xbf58'476d'1ce4'e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d0'49bb'1331'11ebull;
      z ^= z >> 31;
      size = static_cast<std::uint32_t>(min_size + z % (max_size - min_size + 1));
    }
    return result;
  }();
  return table;
}

/// The touch: one 8-byte store at the start of each object (every object is at least 16 bytes).
[[gnu::always_inline]] inline void touch(void* object, std::uint64_t value) {
  std::memcpy(object, &value, sizeof value);
}

// ---------------------------------------------------------------------------------------------------
// Workload 1 — per scope: open a scope, allocate K objects of 16–256 B, touch each, end the scope.
// `pointers` has room for K entries (used only by competitors that free one by one).
// ---------------------------------------------------------------------------------------------------

template <class C>
[[gnu::always_inline]] inline void per_scope(typename C::context& context, std::size_t k, void** pointers) {
  using scope_t = typename C::scope;
  const std::uint32_t* size = sizes().data();
  scope_t scope(context);
  for (std::size_t i = 0; i < k; ++i) {
    void* p = scope.allocate(size[i]);
    touch(p, i);
    keep(p);
    if constexpr (!scope_t::frees_at_end) pointers[i] = p;
  }
  if constexpr (!scope_t::frees_at_end) {
    for (std::size_t i = 0; i < k; ++i) scope.deallocate(pointers[i], size[i]);
  }
}

// ---------------------------------------------------------------------------------------------------
// Workload 2 — objects with destructors: K objects of a 48-byte type whose destructor has an
// observable effect, made in the scope; every destructor must have run when the scope is over.
// perfloc make<T>, APR cleanups and talloc destructors run them at scope end; new/delete, pmr and
// mi_heap need the workload to end each object itself.
// ---------------------------------------------------------------------------------------------------

struct tracked {
  tracked(std::uint64_t* sink, std::uint64_t id) noexcept : sink_(sink), id_(id) {}
  tracked(const tracked&) = delete;
  tracked& operator=(const tracked&) = delete;
  ~tracked() { *sink_ += id_; }

  std::uint64_t* sink_;
  std::uint64_t id_;
  std::uint64_t payload_[4];
};
static_assert(sizeof(tracked) == 48);

/// The sink's expected growth for one scope of k objects: 0 + 1 + ... + (k - 1).
constexpr std::uint64_t tracked_sum(std::size_t k) { return std::uint64_t{k} * (k - 1) / 2; }

template <class C>
[[gnu::always_inline]] inline void destructors(typename C::context& context, std::size_t k, void** pointers,
                                               std::uint64_t* sink) {
  using scope_t = typename C::scope;
  scope_t scope(context);
  for (std::size_t i = 0; i < k; ++i) {
    tracked* object = scope.template make<tracked>(sink, i);
    keep(object);
    if constexpr (!scope_t::runs_destructors) pointers[i] = object;
  }
  if constexpr (!scope_t::runs_destructors) {
    for (std::size_t i = 0; i < k; ++i) {
      auto* object = static_cast<tracked*>(pointers[i]);
      if constexpr (scope_t::frees_at_end) {
        object->~tracked();  // the memory goes with the scope
      } else {
        scope.release(object);  // delete: destructor and free
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Workload 3 — individual frees with reuse: inside one scope, K objects made in turn, at most
// `free_window` alive: before making object i, object i - 16 is released. The object types cycle
// through 32, 64, 128 and 256 bytes (period 4, so branch predictors see no randomness), and the slot
// being freed always held the same type as the one being made: ideal reuse for a free list.
// ---------------------------------------------------------------------------------------------------

template <std::size_t N>
struct blob {
  explicit blob(std::uint64_t id) noexcept { words[0] = id; }  // the touch
  std::uint64_t words[N / 8];
};

inline constexpr std::size_t free_window = 16;

template <class T, class Scope>
[[gnu::always_inline]] inline void free_step(Scope& scope, void** ring, std::size_t i) {
  void*& slot = ring[i % free_window];
  if (i >= free_window) scope.release(static_cast<T*>(slot));
  T* object = scope.template make<T>(i);
  keep(object);
  slot = object;
}

template <class C>
[[gnu::always_inline]] inline void free_reuse(typename C::context& context, std::size_t k, void** ring) {
  using scope_t = typename C::scope;
  static_assert(free_window % 4 == 0);
  scope_t scope(context);
  std::size_t i = 0;
  for (; i + 4 <= k; i += 4) {
    free_step<blob<32>>(scope, ring, i);
    free_step<blob<64>>(scope, ring, i + 1);
    free_step<blob<128>>(scope, ring, i + 2);
    free_step<blob<256>>(scope, ring, i + 3);
  }
  if constexpr (!scope_t::frees_at_end) {
    for (std::size_t j = (i > free_window ? i - free_window : 0); j < i; ++j) {
      void* slot = ring[j % free_window];
      switch (j % 4) {
        case 0: scope.release(static_cast<blob<32>*>(slot)); break;
        case 1: scope.release(static_cast<blob<64>*>(slot)); break;
        case 2: scope.release(static_cast<blob<128>*>(slot)); break;
        default: scope.release(static_cast<blob<256>*>(slot)); break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Workload 4 — open and release a scope, nothing in it.
// ---------------------------------------------------------------------------------------------------

template <class C>
[[gnu::always_inline]] inline void open_release(typename C::context& context) {
  typename C::scope scope(context);
  clobber();
}

}  // namespace perfloc_bench
