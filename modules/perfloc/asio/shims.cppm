// perfloc.asio:shims — the Asio internals perfloc.asio reaches into, in one place.
//
// The awaitable frame's thread (protected in Asio), the promises derived from Asio's awaitable_frame, and the
// co_spawn work guard. perfloc/detail/asio.hpp chooses Boost.Asio or standalone Asio and checks the version
// (1.26 to 1.38); what changed in that range, and what it means here:
//
//  * 1.28.1: co_spawn_entry_point takes a co_spawn_state, its dispatch and post became frame-less awaiters
//    (co_spawn_dispatch, co_spawn_post), and make_co_spawn_work_guard is gone. perfloc has its own entry
//    point (perfloc.asio:spawn) and uses none of them; the work guard class co_spawn_work_guard is the same
//    on every version (make_spawn_work_guard below).
//  * after 1.28: the customisation point asio::execution::execute is gone; chunk_executor (perfloc.asio:executor)
//    calls its inner executor's member execute, which every supported version has.
//  * 1.33: dispositions replace awaitable_frame::set_except. Only Asio's own awaitable_handler (which
//    use_chunk's handler derives from) sets a frame's exception; perfloc never does.
//  * 1.36: awaitable_launch_context, and awaitable_thread_has_context_switched is removed. perfloc keeps its
//    own launch record (launch_scope in perfloc.asio:spawn) and never asks the flag.
//  * 1.38.1: an optional inline version namespace (ASIO_ENABLE_VERSION_NAMESPACE) around asio's contents.
//    perfloc names Asio's entities by qualified name only, and specialises async_result and associator by
//    qualified name, which reaches members of an inline namespace as members of ::asio.
//
// Unchanged over the range, and relied on: awaitable_frame_base's attached_thread_, awaitable_thread's
// entry_point() and get_executor(), detach_thread(), awaitable_handler's constructors and launch(), the
// "function taking the frame" await_transform, awaitable_signature, thread_info_base's recycling allocator.
// A new Asio is checked against this list, then added to the range in perfloc/detail/asio.hpp.
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

/// Keeps an executor's context running while a coroutine of perfloc::co_spawn lives (Asio's own co_spawn does the
/// same). Asio 1.26's make_co_spawn_work_guard is gone in 1.28.1; the class it made is on every version.
template <class Executor>
inline asio_detail::co_spawn_work_guard<Executor> make_spawn_work_guard(const Executor& ex) {
  return asio_detail::co_spawn_work_guard<Executor>(ex);
}

}  // namespace perfloc::detail
