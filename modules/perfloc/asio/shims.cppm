// perfloc.asio:shims — the Asio internals perfloc.asio reaches into, in one place.
//
// The awaitable frame's thread and coroutine (protected in Asio), the promises derived from Asio's
// awaitable_frame, which threads perfloc started (entry_kinds), frame-less awaiters (perfloc's operator
// co_await in asio::detail) and the co_spawn work guard. perfloc/detail/asio.hpp chooses Boost.Asio or
// standalone Asio and checks the version (1.26 to 1.38); what changed in that range, and what it means here:
//
//  * 1.28.1: co_spawn_entry_point takes a co_spawn_state, its dispatch and post became frame-less awaiters
//    (co_spawn_dispatch, co_spawn_post), and make_co_spawn_work_guard is gone. perfloc has its own entry
//    point and frame-less waits (perfloc.asio:spawn, :entry) and uses none of them; the work guard class
//    co_spawn_work_guard is the same on every version (make_spawn_work_guard below).
//  * after 1.28: the customisation point asio::execution::execute is gone; perfloc calls executors' member
//    execute, which every supported version has.
//  * 1.33: dispositions replace awaitable_frame::set_except. perfloc never sets a frame's exception; use_chunk's
//    handler (chunk_op_handler) throws an error_code or exception_ptr as use_awaitable does.
//  * 1.36: awaitable_launch_context, and awaitable_thread_has_context_switched is removed. perfloc keeps its
//    own launch record (launch_scope in perfloc.asio:spawn) and never asks the flag.
//  * 1.38.1: an optional inline version namespace (ASIO_ENABLE_VERSION_NAMESPACE) around asio's contents.
//    perfloc names Asio's entities by qualified name only, specialises async_result and associator by
//    qualified name, and reopens asio::detail for its operator co_await (PERFLOC_ASIO_DETAIL_NAMESPACE),
//    which both reach the members of an inline namespace.
//
// Unchanged over the range, and relied on: awaitable_frame_base's attached_thread_, coro_, after_suspend(),
// attach_thread(), detach_thread(), clear_cancellation_slot(); awaitable_thread's entry_point(),
// get_executor(), pump(), throw_if_cancelled(), get_cancellation_state(); awaitable_handler's constructors
// and launch(); the "function taking the frame" await_transform and the `function_` and `this_` members of
// its awaiter; awaitable_signature; thread_info_base's recycling allocator. A new Asio is checked against
// this list, then added to the range in perfloc/detail/asio.hpp.
module;

#include "perfloc/detail/asio.hpp"
#include "perfloc/detail/asio_entry_kinds.hpp"

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
/// insert-only set read without a lock (pointer_set: 4 096 in its table, any more in a slower overflow list;
/// never an error). Each instantiation adds its own once, before its first coroutine runs. Every C++ compiler lays a coroutine frame out as [resume function |
/// destroy function | promise ...] (coroutine_handle::from_promise relies on it), so the destroy function of
/// a thread's bottom frame tells, reading nothing outside that frame, whether perfloc's entry point is at
/// the bottom of the thread: the coroutine then owns a chunk. A coroutine that asio::co_spawn started with an
/// inherited executor has Asio's entry point at its bottom, and never finds a chunk.
class entry_kinds {
 public:
  static inline void add(const void* destroy) { table_.value.add(destroy); }
  static inline bool contains(const void* destroy) noexcept { return table_.value.contains(destroy); }

 private:
  /// Constant-initialized and never destroyed: a coroutine may be spawned or run during static destruction.
  static constinit inline never_destroyed<pointer_set<8192>> table_;
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

export namespace PERFLOC_ASIO_DETAIL_NAMESPACE {

/// Takes over Asio's awaiter only for perfloc's frame-less objects (see above). Asio's awaiter, which holds
/// the object, lives in the co_await expression as long as perfloc's.
template <class AsioAwaiter>
  requires perfloc::detail::frame_less<std::remove_cvref_t<decltype(std::declval<AsioAwaiter&>().function_)>>
inline auto operator co_await(AsioAwaiter&& asio_awaiter) {
  return asio_awaiter.function_.make_awaiter(asio_awaiter.this_);
}

}  // namespace PERFLOC_ASIO_DETAIL_NAMESPACE

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

/// Keeps a handler's executor's context running until the handler has run (perfloc.asio:spawn's
/// handler_work_guard; the coroutine's own context is kept running by its spawn state). Asio 1.26's
/// make_co_spawn_work_guard is gone in 1.28.1; the class it made is on every version.
template <class Executor>
inline asio_detail::co_spawn_work_guard<Executor> make_spawn_work_guard(const Executor& ex) {
  return asio_detail::co_spawn_work_guard<Executor>(ex);
}

}  // namespace perfloc::detail
