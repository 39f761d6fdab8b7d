// perfloc.asio:frames — coroutine frames in a chunk.
//
// A std::coroutine_traits specialisation for asio::awaitable coroutines whose first parameter (after the
// object, for lambdas and member functions) is a process_chunk&, and the promise mixin chunk_frame_allocation
// for any coroutine type. Frames are made and freed under the chunk's lock (lock_of): parallel children free
// theirs on their own threads.
module;

#include "perfloc/detail/asio.hpp"

export module perfloc.asio:frames;

import perfloc.process;
import :memory;
import :shims;

export namespace perfloc {

/// A promise mixin: a coroutine whose first parameter is a `process_chunk&` (for a member function or a
/// lambda, the first after the object) has its frame allocated in that chunk; a coroutine of the same type
/// without one gets its frame from the global heap. The chunk must outlive the frame; the handle may move.
///
///     template <class T> struct generator {
///       struct promise_type : perfloc::chunk_frame_allocation { /* ... as usual ... */ };
///       // ...
///     };
///     generator<int> numbers(perfloc::process_chunk& chunk, int n) { for (int i = 0; i < n; ++i) co_yield i; }
///
/// asio::awaitable<T> coroutines get this without a mixin: `asio::awaitable<int> step(perfloc::process_chunk&,
/// int x)` has its frame in the chunk.
struct chunk_frame_allocation {
  template <class... Args>
  static inline void* operator new(std::size_t bytes, process_chunk& chunk, Args&...) {
    return allocate(allocator<std::byte>(chunk), bytes);
  }
  template <class Object, class... Args>
    requires(!std::is_same_v<std::remove_cvref_t<Object>, process_chunk>)
  static inline void* operator new(std::size_t bytes, Object&, process_chunk& chunk, Args&...) {
    return allocate(allocator<std::byte>(chunk), bytes);
  }
  static inline void* operator new(std::size_t bytes) {
    auto* header = static_cast<std::byte*>(::operator new(header_bytes + bytes));
    ::new (static_cast<void*>(header)) frame_header{};
    return header + header_bytes;
  }

  /// Frames of parallel children are freed on the threads the children finish on, at the same time: under the
  /// chunk's lock, as their creation is.
  static inline void operator delete(void* frame, std::size_t bytes) noexcept {
    auto* header = reinterpret_cast<frame_header*>(static_cast<std::byte*>(frame) - header_bytes);
    if (header->chunk) {
      allocator<std::byte> chunk = *header->chunk;
      std::lock_guard guard(detail::lock_of(chunk));
      chunk.deallocate(reinterpret_cast<std::byte*>(header), header_bytes + bytes);
    } else {
      ::operator delete(header, header_bytes + bytes);
    }
  }

 private:
  /// Before the frame: the chunk itself (perfloc::allocator holds the chunk, not the handle, so the handle
  /// may move while the frame lives), or the global heap.
  struct frame_header {
    std::optional<allocator<std::byte>> chunk;
  };
  static constexpr std::size_t header_bytes = alignof(std::max_align_t);
  static_assert(sizeof(frame_header) <= header_bytes);

  static inline void* allocate(allocator<std::byte> chunk, std::size_t bytes) {
    std::byte* header;
    {
      std::lock_guard guard(detail::lock_of(chunk));
      header = chunk.allocate(header_bytes + bytes);
    }
    ::new (static_cast<void*>(header)) frame_header{chunk};
    return header + header_bytes;
  }
};

}  // namespace perfloc

namespace perfloc::detail {

/// The promise of an asio::awaitable coroutine whose frame lives in a chunk.
template <class T, class Executor>
class chunk_frame : public derived_frame<asio_detail::awaitable_frame<T, Executor>, Executor>,
                    public chunk_frame_allocation {
 public:
  inline chunk_frame() noexcept {
    static_assert(alignof(chunk_frame) == alignof(asio_detail::awaitable_frame<T, Executor>),
                  "Asio's handles to the base promise need its alignment");
  }
  using chunk_frame_allocation::operator new;
  using chunk_frame_allocation::operator delete;
};

}  // namespace perfloc::detail

// Reachable from importers (specialisations need not, and cannot, be exported).
template <class T, class Executor, class... Args>
struct std::coroutine_traits<perfloc::detail::asio::awaitable<T, Executor>, perfloc::process_chunk&, Args...> {
  using promise_type = perfloc::detail::chunk_frame<T, Executor>;
};

template <class T, class Executor, class Object, class... Args>
  requires(!std::is_same_v<std::remove_cvref_t<Object>, perfloc::process_chunk>)
struct std::coroutine_traits<perfloc::detail::asio::awaitable<T, Executor>, Object, perfloc::process_chunk&, Args...> {
  using promise_type = perfloc::detail::chunk_frame<T, Executor>;
};
