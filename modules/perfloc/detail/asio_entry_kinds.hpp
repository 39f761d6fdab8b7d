// perfloc/detail/asio_entry_kinds.hpp — the set of destroy-function pointers behind perfloc.asio:shims'
// entry_kinds (which threads of execution perfloc started). In a header of its own so that a test can fill a
// small one. Internal, never exported.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <utility>

namespace perfloc::detail {

/// An insert-only set of pointers, read without a lock from any thread. The fast path is an open-addressing
/// table kept at most half full (short probe runs, every probe ends at an empty slot). Past that, entries go
/// to an overflow list, also read without a lock: the set never refuses an entry and never answers wrong, it
/// only gets slower (a miss walks the list) once more than Capacity / 2 entries exist. Adds take a lock;
/// nothing is ever removed, so a reader sees an entry either whole or not yet, and the list's nodes live as
/// long as the set (here: the program).
template <std::size_t Capacity>
class pointer_set {
 public:
  constexpr pointer_set() = default;
  pointer_set(const pointer_set&) = delete;
  pointer_set& operator=(const pointer_set&) = delete;
  inline ~pointer_set() {
    for (const node* n = overflow_.load(std::memory_order_relaxed); n;) delete std::exchange(n, n->next);
  }

  /// Adds p (a no-op if present). Throws std::bad_alloc only, and then leaves the set as it was.
  inline void add(const void* p) {
    std::lock_guard guard(adding_);
    if (contains(p)) return;
    if (count_ < Capacity / 2) {
      for (std::size_t i = hash(p);; i = (i + 1) % Capacity) {
        if (!slots_[i].load(std::memory_order_relaxed)) {
          ++count_;
          slots_[i].store(p, std::memory_order_release);
          return;
        }
      }
    }
    overflow_.store(new node{p, overflow_.load(std::memory_order_relaxed)}, std::memory_order_release);
  }

  inline bool contains(const void* p) const noexcept {
    for (std::size_t i = hash(p);; i = (i + 1) % Capacity) {
      const void* here = slots_[i].load(std::memory_order_acquire);
      if (here == p) return true;
      if (!here) break;
    }
    for (const node* n = overflow_.load(std::memory_order_acquire); n; n = n->next) {
      if (n->p == p) return true;
    }
    return false;
  }

 private:
  struct node {
    const void* p;
    const node* next;
  };
  static_assert(std::has_single_bit(Capacity) && Capacity >= 4);
  static inline std::size_t hash(const void* p) noexcept {
    return static_cast<std::size_t>((std::bit_cast<std::uintptr_t>(p) * 0x9E3779B97F4A7C15ull) >>
                                    (64 - std::countr_zero(Capacity)));
  }
  std::atomic<const void*> slots_[Capacity] = {};
  std::atomic<const node*> overflow_{nullptr};
  std::size_t count_ = 0;  // entries in slots_, under adding_
  std::mutex adding_;
};

/// A T that is constructed at compile time and whose destructor never runs.
template <class T>
union never_destroyed {
  T value;
  constexpr never_destroyed() : value() {}
  constexpr ~never_destroyed() {}
};

}  // namespace perfloc::detail
