// perfloc.asio:memory — the memory of Asio operations, taken from the coroutine's chunk.
//
// use_chunk handlers carry operation_allocator, whose memory comes from the coroutine's chunk and goes back to
// it. Asio frees operation memory on the completing thread, and frames of parallel children are made and freed
// on the threads they run on, so everything perfloc does to a chunk from another thread is under the chunk's
// lock (lock_of). The spawn state (what a perfloc coroutine keeps beside its entry frame, at the start of its
// chunk) owns the chunk handle.
module;

#include "perfloc/detail/asio.hpp"

export module perfloc.asio:memory;

import perfloc.top;
import perfloc.process;
import :executor;

namespace perfloc::detail {

class spin_lock {
 public:
  inline void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      while (locked_.load(std::memory_order_relaxed)) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
    }
  }
  inline void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

/// The lock of what perfloc itself does to a chunk from threads other than its owner's: frames of parallel
/// children (`co_await (step(chunk, 1) && step(chunk, 2))` on a thread pool) made and freed where the children
/// run, operation memory given back where operations complete. The chunk's own allocation path assumes one
/// owner and the chunk header has no room for a lock (it is the core's), so the locks are a fixed table of
/// cache-line-sized spin locks indexed by the chunk's identity (its child_meta address, which allocator<>
/// holds): one uncontended exchange on the single-threaded path; unrelated chunks rarely share a lock.
struct alignas(64) padded_spin_lock {
  spin_lock lock;
};
inline constexpr unsigned chunk_lock_count = 64;
inline padded_spin_lock chunk_locks[chunk_lock_count];

inline spin_lock& lock_of(allocator<std::byte> chunk) noexcept {
  static_assert(sizeof(allocator<std::byte>) == sizeof(std::uintptr_t));
  // child_metas are 192 bytes apart: drop the low bits, then spread with a multiplicative hash.
  const auto identity = std::bit_cast<std::uintptr_t>(chunk) >> 6;
  return chunk_locks[(identity * 0x9E3779B97F4A7C15ull) >> (64 - 6)].lock;
}
static_assert(chunk_lock_count == 1u << 6);

/// What a perfloc coroutine keeps beside its entry frame, at the start of its own chunk.
struct spawn_state_base {
  inline explicit spawn_state_base(process_chunk&& c) noexcept : chunk(std::move(c)) {}

  process_chunk chunk;  ///< the handle; it never moves (this object lives in the chunk it owns)

  /// Operation memory, from the chunk and given back to it: the chunk steps its bump back over the latest
  /// allocation (an operation awaited alone: the next one, or whatever the coroutine allocates next, takes the
  /// same bytes) and reuses other freed spans at their sizes, so a coroutine looping over operations stays at
  /// a constant footprint. No free lists of our own: an idle coroutine (one operation outstanding, the entry
  /// point's first dispatch given back) would keep their heads, 64 bytes, and the dispatch's 64 bytes, in its
  /// chunk. Asio gives operation memory back before it runs the handler, on whichever thread completed the
  /// operation, and operations running in parallel may allocate and free at the same time: every access is
  /// under the chunk's lock (lock_of), and the chunk is touched from here only while the coroutine is
  /// suspended on operations (it resumes through their handlers), so never at once with its own use of it.
  /// The lock is found from the chunk each time (lock_of), not kept: a word less in every coroutine's chunk.
  inline void* allocate_operation(std::size_t bytes, std::size_t alignment) {
    std::lock_guard guard(lock_of(allocator<std::byte>(chunk)));
    return chunk.allocate(bytes, alignment);
  }
  inline void deallocate_operation(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    std::lock_guard guard(lock_of(allocator<std::byte>(chunk)));
    chunk.deallocate(p, bytes, alignment);
  }
};

template <class Executor>
struct spawn_state : spawn_state_base {
  using executor_type = tracked<Executor>;
  inline spawn_state(process_chunk&& c, const Executor& ex)
      : spawn_state_base(std::move(c)), executor(asio::prefer(ex, asio::execution::outstanding_work.tracked)) {}
  /// The spawn executor, the coroutine's own: launch operations and, for a handler without an executor of its
  /// own, the completion run through it. Tracked, it is also the coroutine's work guard: its context's run()
  /// does not return while the coroutine lives (Asio's co_spawn keeps a tracked copy for that in its entry
  /// frame beside the untracked one: 56 bytes more in every chunk with any_io_executor). It goes with the
  /// state, when the entry frame is destroyed, right after the coroutine's last step.
  executor_type executor;
};

/// The associated allocator of use_chunk handlers. Without a state (a coroutine perfloc did not start) it
/// does what use_awaitable's handlers get: Asio's per-thread recycling.
template <class T>
class operation_allocator {
 public:
  using value_type = T;
  template <class U>
  struct rebind {
    using other = operation_allocator<U>;
  };

  inline explicit operation_allocator(spawn_state_base* state) noexcept : state_(state) {}
  template <class U>
  inline operation_allocator(const operation_allocator<U>& other) noexcept : state_(other.state()) {}

  inline T* allocate(std::size_t n) {
    if (state_) return static_cast<T*>(state_->allocate_operation(sizeof(T) * n, alignof(T)));
    return static_cast<T*>(asio_detail::thread_info_base::allocate(
        asio_detail::thread_info_base::default_tag(), asio_detail::thread_context::top_of_thread_call_stack(),
        sizeof(T) * n, alignof(T)));
  }
  inline void deallocate(T* p, std::size_t n) noexcept {
    if (state_) return state_->deallocate_operation(p, sizeof(T) * n, alignof(T));
    asio_detail::thread_info_base::deallocate(asio_detail::thread_info_base::default_tag(),
                                              asio_detail::thread_context::top_of_thread_call_stack(), p,
                                              sizeof(T) * n);
  }

  inline spawn_state_base* state() const noexcept { return state_; }
  template <class U>
  inline friend bool operator==(const operation_allocator& a, const operation_allocator<U>& b) noexcept {
    return a.state_ == b.state();
  }

 private:
  spawn_state_base* state_;
};

}  // namespace perfloc::detail
