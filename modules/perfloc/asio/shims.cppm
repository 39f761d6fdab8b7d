// perfloc.asio:shims — the Asio internals perfloc.asio reaches into, in one place.
//
// The awaitable frame's thread and coroutine (protected in Asio), the promises derived from Asio's
// awaitable_frame, which threads perfloc started (entry_kinds), and frame-less awaiters (perfloc's operator
// co_await in asio::detail). These are Asio internals (see perfloc/detail/asio.hpp for the version check):
// porting perfloc.asio to another Asio starts here. The members used are the same in Asio 1.26 to 1.38:
// awaitable_frame_base's attached_thread_, coro_, after_suspend(), attach_thread(), detach_thread(),
// clear_cancellation_slot(); awaitable_thread's entry_point(), pump(), throw_if_cancelled(),
// get_cancellation_state(); the `function_` and `this_` members of await_transform's awaiter for a function
// taking the frame.
module;

#include "perfloc/detail/asio.hpp"

export module perfloc.asio:shims;

namespace perfloc::detail {

template <class Executor>
struct frame_access : asio_detail::awaitable_frame_base<Executor> {
  /// The thread a frame is attached to: protected in Asio, read through a member pointer of a derived class.
  static inline asio_detail::awaitable_thread<Executor>* thread_of(
      asio_detail::awaitable_frame_base<Executor>* frame) noexcept {
    return frame->*(&frame_access::attached_thread_);
  }
  /// The coroutine of a frame: protected in Asio.
  static inline std::coroutine_handle<> coroutine_of(asio_detail::awaitable_frame_base<Executor>* frame) noexcept {
    return frame->*(&frame_access::coro_);
  }
};

template <class Executor>
using frame_base = asio_detail::awaitable_frame_base<Executor>;
template <class Executor>
using thread_base = asio_detail::awaitable_thread<Executor>;

// ---------------------------------------------------------------------------------------------------------
// Which threads of execution perfloc started
// ---------------------------------------------------------------------------------------------------------

/// The destroy functions of perfloc's entry-point coroutines (one per instantiation of spawn_entry), in an
/// insert-only open-addressing table. Every C++ compiler lays a coroutine frame out as [resume function |
/// destroy function | promise ...] (coroutine_handle::from_promise relies on it), so the destroy function of
/// a thread's bottom frame tells, reading nothing outside that frame, whether perfloc's entry point is at
/// the bottom of the thread: the coroutine then owns a chunk. A coroutine that asio::co_spawn started with an
/// inherited executor has Asio's entry point at its bottom, and never finds a chunk.
class entry_kinds {
 public:
  static inline void add(const void* destroy) {
    std::lock_guard guard(adding_);
    for (std::size_t i = hash(destroy);; i = (i + 1) % capacity) {
      const void* here = slots_[i].load(std::memory_order_relaxed);
      if (here == destroy) return;
      if (!here) {
        if (++count_ > capacity / 2)
          throw std::length_error("perfloc::co_spawn: more than 4096 distinct factory and handler types");
        slots_[i].store(destroy, std::memory_order_release);
        return;
      }
    }
  }
  static inline bool contains(const void* destroy) noexcept {
    for (std::size_t i = hash(destroy);; i = (i + 1) % capacity) {
      const void* here = slots_[i].load(std::memory_order_acquire);
      if (here == destroy) return true;
      if (!here) return false;
    }
  }

 private:
  static constexpr std::size_t capacity = 8192;
  static inline std::size_t hash(const void* p) noexcept {
    return static_cast<std::size_t>((std::bit_cast<std::uintptr_t>(p) * 0x9E3779B97F4A7C15ull) >> 51);
  }
  static_assert(capacity == std::size_t{1} << (64 - 51));
  static inline std::atomic<const void*> slots_[capacity] = {};
  static inline std::size_t count_ = 0;
  static inline std::mutex adding_;
};

/// The destroy function of a coroutine (see entry_kinds).
inline const void* destroy_function_of(std::coroutine_handle<> coroutine) noexcept {
  return static_cast<const void* const*>(coroutine.address())[1];
}

// ---------------------------------------------------------------------------------------------------------
// Frame-less awaiters
// ---------------------------------------------------------------------------------------------------------
//
// Asio's promise takes every co_await through await_transform, whose overloads for awaitables and async
// operations check for cancellation first, and whose use_awaitable operations cost a coroutine frame from a
// per-thread cache (a heap call once a few thousand coroutines wait at once). One overload does neither: a
// "function taking the frame", for which await_transform returns a small local awaiter holding the function
// (`function_`) and the frame (`this_`). perfloc's awaitable objects (this_coro::chunk(), use_chunk's
// operations, the entry point's own waits) are such functions, never called: perfloc's operator co_await
// below, found by argument-dependent lookup in asio::detail (the local awaiter's namespace), replaces Asio's
// awaiter with the object's own, made by `make_awaiter(frame)`.

/// An object perfloc's operator co_await takes over.
template <class T>
concept frame_less = requires { typename T::perfloc_frame_less; };

}  // namespace perfloc::detail

export namespace boost::asio::detail {

/// Takes over Asio's awaiter only for perfloc's frame-less objects (see above). Asio's awaiter, which holds
/// the object, lives in the co_await expression as long as perfloc's.
template <class AsioAwaiter>
  requires perfloc::detail::frame_less<std::remove_cvref_t<decltype(std::declval<AsioAwaiter&>().function_)>>
inline auto operator co_await(AsioAwaiter&& asio_awaiter) {
  return asio_awaiter.function_.make_awaiter(asio_awaiter.this_);
}

}  // namespace boost::asio::detail

namespace perfloc::detail {

/// Asio's awaitable::await_suspend takes coroutine_handle<awaitable_frame<U, Executor>>, which the handle of
/// a derived promise does not convert to. This awaiter hands Asio the handle of the base promise: same
/// address (the base is at offset 0) and same alignment, as Asio's own get_return_object does.
template <class U, class Executor, class Frame>
struct derived_frame_awaiter {
  asio::awaitable<U, Executor> awaitable;
  Frame* frame;
  inline bool await_ready() const noexcept { return false; }
  inline void await_suspend(std::coroutine_handle<>) {
    awaitable.await_suspend(std::coroutine_handle<Frame>::from_promise(*frame));
  }
  inline U await_resume() { return awaitable.await_resume(); }
};

/// Base of the promises derived from Asio's awaitable_frame<T, Executor>.
template <class Frame, class Executor>
class derived_frame : public Frame {
 public:
  using Frame::await_transform;
  template <class U>
  inline auto await_transform(asio::awaitable<U, Executor> a) {
    return derived_frame_awaiter<U, Executor, Frame>{Frame::await_transform(std::move(a)), this};
  }
};

}  // namespace perfloc::detail
