// perfloc.asio:entry — the entry frame and spawn state at the start of the chunk they open, and finding the
// chunk from inside the coroutine.
//
//  * The entry-point coroutine has a promise of our own (entry_promise). Its operator new opens the
//    coroutine's chunk and puts [spawn_state | entry frame] at its start; its operator delete releases the
//    chunk. Asio destroys the entry frame exactly when the coroutine's stack goes away — completion,
//    exception, cancellation, or an io_context destroyed with the coroutine suspended — and operator delete
//    is the last step of that destruction (after the promise and the parameter copies, which live in the
//    chunk), so nothing of the chunk is touched after it is released.
//  * use_chunk: use_awaitable whose handler's associated allocator is the coroutine's operation recycler
//    (perfloc.asio:memory) and whose associated executor is the unwrapped one, so Asio's native io_context
//    fast path still applies.
//  * this_coro::chunk(), a small awaitable coroutine. It reaches the thread through Asio's "function taking
//    the frame" await_transform, which resumes the same frame from the pump loop: an async operation
//    completing inline would nest the stack once per co_await (112 bytes each, measured; a loop of 100 000
//    overflows 8 MiB).
module;

#include "perfloc/detail/asio.hpp"

export module perfloc.asio:entry;

import perfloc.top;
import perfloc.process;
import :memory;
import :executor;
import :shims;

namespace perfloc::detail {

/// On the initiating function's stack; read by the entry frame's operator new and promise constructor.
template <class Executor>
struct spawn_params {
  top_chunk* top;
  const Executor* executor;
  std::source_location where;
  std::string_view label;
  std::shared_ptr<void> forwarded_signal;  ///< moved into the spawn state
  spawn_state<Executor>* state = nullptr;
  const void* owner = nullptr;
};

inline constexpr std::size_t round_to_max_align(std::size_t n) noexcept {
  return (n + alignof(std::max_align_t) - 1) & ~(alignof(std::max_align_t) - 1);
}

template <class Executor>
class entry_promise
    : public derived_frame<asio_detail::awaitable_frame<asio_detail::awaitable_thread_entry_point, Executor>,
                           Executor> {
  using frame_type = asio_detail::awaitable_frame<asio_detail::awaitable_thread_entry_point, Executor>;
  static constexpr std::size_t state_bytes = round_to_max_align(sizeof(spawn_state<Executor>));

 public:
  template <class... Args>
  inline entry_promise(spawn_params<Executor>& params, Args&...) noexcept : state_(params.state) {
    static_assert(alignof(entry_promise) == alignof(frame_type),
                  "Asio's handles to the base promise need its alignment");
    params.owner = static_cast<const void*>(static_cast<frame_type*>(this));
  }

  /// Opens the coroutine's chunk and puts the spawn state and this frame at its start.
  template <class... Args>
  static void* operator new(std::size_t frame_bytes, spawn_params<Executor>& params, Args&...) {
    return open_frame(frame_bytes, params);
  }

  /// The frame is gone: release the chunk, and with it the state, the frame and everything the coroutine
  /// made in it.
  static void operator delete(void* frame, std::size_t) noexcept {
    auto* state = reinterpret_cast<spawn_state<Executor>*>(static_cast<std::byte*>(frame) - state_bytes);
    process_chunk chunk = std::move(state->chunk);
    state->~spawn_state();
  }  // `chunk` is released here; nothing in it is touched afterwards

  inline spawn_state<Executor>* state() const noexcept { return state_; }

 private:
  /// Out of line on purpose: clang 19 reports a stack-use-after-scope (a false positive) when a local of an
  /// operator new inlined into the coroutine ramp, such as this process_chunk handle, is moved from (llvm
  /// issue 124612, fixed by "[Coroutines] Always drop lifetime markers after moving allocas to frame").
  [[gnu::noinline]] static void* open_frame(std::size_t frame_bytes, spawn_params<Executor>& params) {
    // A label takes open_chunk's slow path (a few nanoseconds more): only when one was given.
    process_chunk chunk = params.label.empty() ? process_chunk{*params.top, params.where}
                                               : process_chunk{*params.top, params.label, params.where};
    void* memory = chunk.allocate(state_bytes + frame_bytes, alignof(std::max_align_t));
    params.state = ::new (memory)
        spawn_state<Executor>(std::move(chunk), std::move(params.forwarded_signal), *params.executor);
    return static_cast<std::byte*>(memory) + state_bytes;
  }

  spawn_state<Executor>* state_;
};

/// The spawn state of the perfloc coroutine that `frame` belongs to, or null for a thread perfloc did not
/// start. Compares addresses only, so a stale or inherited executor never leads to a dereference.
template <class Executor>
inline spawn_state<Executor>* state_of(asio_detail::awaitable_frame_base<Executor>* frame) noexcept {
  asio_detail::awaitable_thread<Executor>* thread = frame_access<Executor>::thread_of(frame);
  if (!thread) return nullptr;
  auto* entry = thread->entry_point();
  if (owner_of(thread->get_executor()) != static_cast<const void*>(entry)) return nullptr;
  return static_cast<entry_promise<Executor>*>(entry)->state();
}

}  // namespace perfloc::detail

// ---------------------------------------------------------------------------------------------------------
// use_chunk
// ---------------------------------------------------------------------------------------------------------

export namespace perfloc {

/// A completion token like asio::use_awaitable: `co_await timer.async_wait(perfloc::use_chunk);`. The
/// operation's memory comes from the coroutine's chunk and is reused operation after operation, so a loop
/// over operations stays at a constant footprint. Completions on other threads are safe. In a coroutine that
/// perfloc::co_spawn did not start, it behaves exactly like use_awaitable.
template <class Executor = detail::asio::any_io_executor>
struct use_chunk_t {
  constexpr use_chunk_t() noexcept = default;

  /// Adapts an executor type to this token (asio::use_awaitable_t's rebind_executor, for io objects).
  template <class OtherExecutor>
  struct rebind_executor {
    using other = use_chunk_t<OtherExecutor>;
  };
};

/// The token for coroutines of asio::awaitable<T> (executor any_io_executor).
inline constexpr use_chunk_t<> use_chunk{};

}  // namespace perfloc

namespace perfloc::detail {

/// use_awaitable's handler, plus an allocator drawing from the coroutine's chunk and the unwrapped executor
/// (Asio's handler_work runs completions directly only for the native io_context executor type).
template <class Executor, class... Ts>
class chunk_handler : public asio_detail::awaitable_handler<Executor, Ts...> {
  using base = asio_detail::awaitable_handler<Executor, Ts...>;

 public:
  using allocator_type = operation_allocator<void>;
  using executor_type = Executor;

  inline chunk_handler(asio_detail::awaitable_thread<Executor>* thread, spawn_state<Executor>* state)
      : base(thread), state_(state) {}

  inline allocator_type get_allocator() const noexcept { return allocator_type(state_); }
  inline executor_type get_executor() const noexcept { return state_ ? state_->executor : base::get_executor(); }

 private:
  spawn_state<Executor>* state_;  ///< alive as long as this handler owns the coroutine's stack
};

}  // namespace perfloc::detail

namespace perfloc::detail {

/// The token of the entry point's own waits: it knows its state, so it skips the lookup.
template <class Executor>
struct spawn_token {
  spawn_state<Executor>* state;
};

/// use_awaitable's async_result (impl/use_awaitable.hpp), with chunk_handler. `state_for(frame)` gives the
/// coroutine's spawn state, or null.
template <class Executor, class Signature>
struct chunk_async_result;

template <class Executor, class R, class... Args>
struct chunk_async_result<Executor, R(Args...)> {
  using handler_type = chunk_handler<Executor, std::decay_t<Args>...>;
  using return_type = typename handler_type::awaitable_type;

  template <class StateFor, class Initiation, class... InitArgs>
  static handler_type* do_init(asio_detail::awaitable_frame_base<Executor>* frame, StateFor state_for,
                               Initiation& initiation, InitArgs&... args) {
    spawn_state<Executor>* state = state_for(frame);
    handler_type handler(frame->detach_thread(), state);
    std::move(initiation)(std::move(handler), std::move(args)...);
    return nullptr;
  }

  /// As use_awaitable's: the initiation runs after the coroutine has suspended.
  template <class StateFor, class Initiation, class... InitArgs>
  static return_type initiate(StateFor state_for, Initiation initiation, InitArgs... args) {
    co_await [&](auto* frame) { return do_init(frame, state_for, initiation, args...); };
    for (;;) {
    }  // never reached: the handler resumes the calling frame
  }
};

}  // namespace perfloc::detail

// Asio's async_result for the two tokens, specialised by qualified name: its namespace is boost::asio or ::asio
// (perfloc/detail/asio.hpp), with Asio 1.38.1's optional inline version namespace inside.

template <class Executor, class R, class... Args>
class perfloc::detail::asio::async_result<perfloc::use_chunk_t<Executor>, R(Args...)>
    : public perfloc::detail::chunk_async_result<Executor, R(Args...)> {
  using base = perfloc::detail::chunk_async_result<Executor, R(Args...)>;

 public:
  template <class Initiation, class... InitArgs>
  static typename base::return_type initiate(Initiation initiation, perfloc::use_chunk_t<Executor>, InitArgs... args) {
    return base::initiate([](auto* frame) { return perfloc::detail::state_of(frame); }, std::move(initiation),
                          std::move(args)...);
  }
};

template <class Executor, class R, class... Args>
class perfloc::detail::asio::async_result<perfloc::detail::spawn_token<Executor>, R(Args...)>
    : public perfloc::detail::chunk_async_result<Executor, R(Args...)> {
  using base = perfloc::detail::chunk_async_result<Executor, R(Args...)>;

 public:
  template <class Initiation, class... InitArgs>
  static typename base::return_type initiate(Initiation initiation, perfloc::detail::spawn_token<Executor> token,
                                             InitArgs... args) {
    return base::initiate([state = token.state](auto*) { return state; }, std::move(initiation), std::move(args)...);
  }
};

// ---------------------------------------------------------------------------------------------------------
// this_coro::chunk
// ---------------------------------------------------------------------------------------------------------

export namespace perfloc::this_coro {

/// The process chunk of the running perfloc coroutine, also inside the awaitables it co_awaits:
/// `perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();` (about 20 ns: call it once and
/// keep the reference, or let the factory take the chunk as its parameter). Throws std::logic_error in a
/// coroutine perfloc::co_spawn did not start (one started by asio::co_spawn from inside a perfloc coroutine
/// included: it gets no chunk; start it with perfloc::co_spawn to give it one). The chunk lives as long as
/// the coroutine: do not move from it or release it.
template <class Executor = detail::asio::any_io_executor>
detail::asio::awaitable<std::reference_wrapper<process_chunk>, Executor> chunk() {
  detail::spawn_state_base* state = nullptr;
  // Asio runs a function taking the frame right after suspending, then resumes this frame from its pump loop:
  // no recursion and no post.
  co_await [&state](detail::asio_detail::awaitable_frame_base<Executor>* frame)
      -> detail::asio_detail::awaitable_thread<Executor>* {
    state = detail::state_of(frame);
    return nullptr;
  };
  if (!state)
    throw std::logic_error("perfloc::this_coro::chunk(): this coroutine was not started by perfloc::co_spawn");
  co_return std::ref(state->chunk);
}

}  // namespace perfloc::this_coro

// Reachable from importers (specialisations need not, and cannot, be exported).
template <class Executor, class... Args>
struct std::coroutine_traits<perfloc::detail::asio::awaitable<perfloc::detail::asio_detail::awaitable_thread_entry_point, Executor>,
                             perfloc::detail::spawn_params<Executor>&, Args...> {
  using promise_type = perfloc::detail::entry_promise<Executor>;
};
