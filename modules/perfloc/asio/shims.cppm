// perfloc.asio:shims — the Asio internals perfloc.asio reaches into, in one place.
//
// The awaitable frame's thread (protected in Asio) and the promises derived from Asio's awaitable_frame.
// These are Asio 1.26 internals (see perfloc/detail/asio.hpp for the version check): porting perfloc.asio to
// another Asio starts here.
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
};

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
