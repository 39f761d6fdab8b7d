// perfloc.asio:entry — the entry frame and spawn state at the start of the chunk they open, and finding the
// chunk from inside the coroutine.
//
//  * The entry-point coroutine has a promise of our own (entry_promise). Its operator new opens the
//    coroutine's chunk and puts [spawn_state | entry frame] at its start; its operator delete releases the
//    chunk. Asio destroys the entry frame exactly when the coroutine's stack goes away — completion,
//    exception, cancellation, or an io_context destroyed with the coroutine suspended — and operator delete
//    is the last step of that destruction (after the promise and the parameter copies, which live in the
//    chunk), so nothing of the chunk is touched after it is released.
//  * use_chunk: as use_awaitable, without a coroutine frame per operation (a frame-less awaiter, see
//    perfloc.asio:shims), with the coroutine's chunk (perfloc.asio:memory) as the handler's associated
//    allocator: no heap call per operation, however many coroutines wait at once.
//  * this_coro::chunk(): a frame-less awaiter that is ready at once. It neither suspends (an operation
//    completing inline would nest the stack once per co_await: a loop of 100 000 overflows 8 MiB) nor
//    allocates, and it is not subject to Asio's cancellation check, so cleanup code of a cancelled coroutine
//    gets its chunk.
module;

#include "perfloc/detail/asio.hpp"

#include <tuple>

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
  /// The spawn's own cancellation signal when emits are forwarded through an executor (spawn_cancellation),
  /// else null: the coroutine's cancellation state lives in it, so the chunk keeps a reference as long as the
  /// coroutine lives (an object made in it, destroyed when the chunk is released, right after the spawn
  /// state), not the spawn state: 16 bytes less in every other coroutine's chunk.
  const std::shared_ptr<asio::cancellation_signal>* forwarded_signal = nullptr;
  spawn_state<Executor>* state = nullptr;
  asio_detail::awaitable_frame<asio_detail::awaitable_thread_entry_point, Executor>* frame = nullptr;
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
  inline entry_promise(spawn_params<Executor>& params, Args&...) noexcept {
    static_assert(alignof(entry_promise) == alignof(frame_type),
                  "Asio's handles to the base promise need its alignment");
    params.frame = this;
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

  /// Right before the frame (open_frame): found from the frame's address, not kept in it.
  inline spawn_state<Executor>* state() const noexcept {
    void* frame = std::coroutine_handle<entry_promise>::from_promise(const_cast<entry_promise&>(*this)).address();
    return reinterpret_cast<spawn_state<Executor>*>(static_cast<std::byte*>(frame) - state_bytes);
  }

 private:
  /// Out of line on purpose: clang 19 reports a stack-use-after-scope (a false positive) when a local of an
  /// operator new inlined into the coroutine ramp, such as this process_chunk handle, is moved from (llvm
  /// issue 124612, fixed by "[Coroutines] Always drop lifetime markers after moving allocas to frame").
  [[gnu::noinline]] static void* open_frame(std::size_t frame_bytes, spawn_params<Executor>& params) {
    // A label takes open_chunk's slow path (a few nanoseconds more): only when one was given.
    process_chunk chunk = params.label.empty() ? process_chunk{*params.top, params.where}
                                               : process_chunk{*params.top, params.label, params.where};
    void* memory = chunk.allocate(state_bytes + frame_bytes, alignof(std::max_align_t));
    if (params.forwarded_signal) chunk.make<std::shared_ptr<asio::cancellation_signal>>(*params.forwarded_signal);
    params.state = ::new (memory) spawn_state<Executor>(std::move(chunk), *params.executor);
    return static_cast<std::byte*>(memory) + state_bytes;
  }
};

/// The spawn state of the perfloc coroutine that `frame` belongs to, or null for a thread perfloc did not
/// start (its bottom frame is not one of perfloc's entry points: entry_kinds).
template <class Executor>
inline spawn_state<Executor>* state_of(asio_detail::awaitable_frame_base<Executor>* frame) noexcept {
  asio_detail::awaitable_thread<Executor>* thread = frame_access<Executor>::thread_of(frame);
  if (!thread) return nullptr;
  auto* entry = thread->entry_point();
  if (!entry_kinds::contains(destroy_function_of(frame_access<Executor>::coroutine_of(entry)))) return nullptr;
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

/// The handler of a frame-less operation: it owns the coroutine's stack while the operation is pending, hands
/// the completion's arguments to the awaiter (on its own stack: the awaiter reads them while this handler
/// resumes the coroutine) and has the chunk's operation memory as its associated allocator. Its associated
/// executor and cancellation slot are the coroutine's, as use_awaitable's handlers' are. (Asio's own
/// awaitable_async_op_handler does the same, but 1.26's does not compile for void(exception_ptr, T).)
template <class Executor, class... Args>
class chunk_op_handler : public thread_base<Executor> {
 public:
  using allocator_type = operation_allocator<void>;
  using result_type = std::tuple<Args...>*;

  /// `result` may be null for a completion without arguments (nothing is handed over then).
  inline chunk_op_handler(thread_base<Executor>* thread, frame_base<Executor>* frame, result_type* result,
                          spawn_state<Executor>* state)
      : thread_base<Executor>(std::move(*thread)), frame_(frame), result_(result), state_(state) {}

  inline void operator()(Args... args) {
    std::tuple<Args...> values(std::move(args)...);
    if constexpr (sizeof...(Args) != 0) *result_ = &values;
    frame_->attach_thread(this);
    frame_->clear_cancellation_slot();
    this->pump();
  }

  inline allocator_type get_allocator() const noexcept { return allocator_type(state_); }

  /// What `co_await` gives, as with use_awaitable: an error_code or exception_ptr first is thrown if set and
  /// dropped otherwise; then nothing, the one value, or a tuple of the values.
  static inline decltype(auto) resume(result_type values) {
    if constexpr (sizeof...(Args) == 0) {
      return;
    } else {
      using first = std::tuple_element_t<0, std::tuple<Args...>>;
      if constexpr (std::is_same_v<first, asio_error_code>) {
        if (std::get<0>(*values)) asio_detail::throw_error(std::get<0>(*values), "co_await");
        return from<1>(*values);
      } else if constexpr (std::is_same_v<first, std::exception_ptr>) {
        if (std::get<0>(*values)) std::rethrow_exception(std::get<0>(*values));
        return from<1>(*values);
      } else {
        return from<0>(*values);
      }
    }
  }

 private:
  template <std::size_t skip>
  static inline auto from(std::tuple<Args...>& values) {
    constexpr std::size_t count = sizeof...(Args) - skip;
    if constexpr (count == 0)
      return;
    else if constexpr (count == 1)
      return std::move(std::get<skip>(values));
    else
      return [&]<std::size_t... i>(std::index_sequence<i...>) {
        return std::tuple<std::tuple_element_t<skip + i, std::tuple<Args...>>...>(std::move(std::get<skip + i>(values))...);
      }(std::make_index_sequence<count>{});
  }

  frame_base<Executor>* frame_;  ///< the coroutine's top frame, suspended on the operation
  result_type* result_;
  spawn_state<Executor>* state_;  ///< alive as long as this handler owns the coroutine's stack
};

/// An asynchronous operation awaited without a frame: the initiation and its arguments, type-erased (Asio
/// 1.26's token adapters, redirect_error and as_tuple among them, name the operation's type through
/// async_result<Token, Signature>::return_type, which cannot depend on the initiation), in place up to
/// inline_bytes and on the heap beyond. The awaiting coroutine's frame keeps two of these per co_await (the
/// operand, and Asio's awaiter's copy of it), so every byte here costs two in each frame: 80 bytes in all, with
/// room in place for Asio's largest common operations (a post or dispatch to a strand of any_io_executor, or
/// asio::co_spawn with an any_io_executor: 72 bytes; a socket read or write: 24 to 32; a timer wait: 8).
template <class Executor, class Signature>
class chunk_operation;

template <class Executor, class... Results>
class chunk_operation<Executor, void(Results...)> {
  using handler_type = chunk_op_handler<Executor, Results...>;

 public:
  using perfloc_frame_less = void;

  /// An operation of use_chunk: its coroutine's spawn state is looked up from the frame, and a cancelled
  /// coroutine that throws on cancellation stops here with operation_aborted, as Asio's await_transform does
  /// for operations and awaitables.
  template <class Initiation, class... Args>
  inline explicit chunk_operation(Initiation&& initiation, Args&&... args) {
    emplace(std::forward<Initiation>(initiation), std::forward<Args>(args)...);
  }

  inline chunk_operation(chunk_operation&& other) noexcept : ops_(other.ops_) {
    ops_->move(other.storage_, storage_);
  }
  chunk_operation& operator=(chunk_operation&&) = delete;
  inline ~chunk_operation() { ops_->destroy(storage_); }

  /// Selects Asio's "function taking the frame" overload; never called.
  inline thread_base<Executor>* operator()(frame_base<Executor>*) const noexcept { return nullptr; }

  /// Lives in the co_await expression beside Asio's awaiter, which holds this operation.
  class awaiter {
   public:
    inline awaiter(chunk_operation* op, frame_base<Executor>* frame) noexcept : op_(op), frame_(frame) {}

    inline bool await_ready() const noexcept { return false; }
    inline void await_suspend(std::coroutine_handle<>) noexcept {
      // As Asio's operations: initiated after the coroutine has suspended, so that a completion on another
      // thread cannot resume it before.
      frame_->after_suspend([](void* self) { static_cast<awaiter*>(self)->initiate(); }, this);
    }
    inline decltype(auto) await_resume() { return handler_type::resume(result_); }

   private:
    inline void initiate() {
      spawn_state<Executor>* state = state_of(frame_);
      op_->ops_->start(op_->storage_, handler_type(frame_->detach_thread(), frame_, &result_, state));
    }

    chunk_operation* op_;
    frame_base<Executor>* frame_;
    typename handler_type::result_type result_ = nullptr;
  };

  inline awaiter make_awaiter(frame_base<Executor>* frame) {
    thread_base<Executor>* thread = frame_access<Executor>::thread_of(frame);
    if (thread->throw_if_cancelled() && !!thread->get_cancellation_state().cancelled())
      asio_detail::throw_error(asio::error::operation_aborted, "co_await");
    return awaiter(this, frame);
  }

 private:
  static constexpr std::size_t inline_bytes = 72;

  struct operations {
    void (*start)(void* storage, handler_type&& handler);
    void (*move)(void* from, void* to) noexcept;
    void (*destroy)(void* storage) noexcept;
  };

  template <class Bound>
  static inline void start_bound(Bound& bound, handler_type&& handler) {
    std::apply([&](auto& initiation, auto&... args) { std::move(initiation)(std::move(handler), std::move(args)...); },
               bound);
  }
  template <class Bound>
  static constexpr operations in_place{
      [](void* storage, handler_type&& handler) { start_bound(*static_cast<Bound*>(storage), std::move(handler)); },
      [](void* from, void* to) noexcept { ::new (to) Bound(std::move(*static_cast<Bound*>(from))); },
      [](void* storage) noexcept { static_cast<Bound*>(storage)->~Bound(); }};
  template <class Bound>
  static constexpr operations on_heap{
      [](void* storage, handler_type&& handler) { start_bound(**static_cast<Bound**>(storage), std::move(handler)); },
      [](void* from, void* to) noexcept {
        *static_cast<Bound**>(to) = std::exchange(*static_cast<Bound**>(from), nullptr);
      },
      [](void* storage) noexcept { delete *static_cast<Bound**>(storage); }};

  template <class... Parts>
  inline void emplace(Parts&&... parts) {
    using bound = std::tuple<std::decay_t<Parts>...>;
    if constexpr (sizeof(bound) <= inline_bytes && alignof(bound) <= alignof(std::max_align_t) &&
                  std::is_nothrow_move_constructible_v<bound>) {
      ::new (static_cast<void*>(storage_)) bound(std::forward<Parts>(parts)...);
      ops_ = &in_place<bound>;
    } else {
      ::new (static_cast<void*>(storage_)) bound*(new bound(std::forward<Parts>(parts)...));
      ops_ = &on_heap<bound>;
    }
  }

  // The storage first: aligned for max_align_t at offset 0, then the pointer, and no padding (80 bytes).
  alignas(std::max_align_t) std::byte storage_[inline_bytes];
  const operations* ops_ = nullptr;
};

}  // namespace perfloc::detail

// Asio's async_result for use_chunk, specialised by qualified name: its namespace is boost::asio or ::asio
// (perfloc/detail/asio.hpp), with Asio 1.38.1's optional inline version namespace inside.

template <class Executor, class R, class... Args>
class perfloc::detail::asio::async_result<perfloc::use_chunk_t<Executor>, R(Args...)> {
 public:
  using return_type = perfloc::detail::chunk_operation<Executor, void(std::decay_t<Args>...)>;

  template <class Initiation, class... InitArgs>
  static inline return_type initiate(Initiation&& initiation, perfloc::use_chunk_t<Executor>, InitArgs&&... args) {
    return return_type(std::forward<Initiation>(initiation), std::forward<InitArgs>(args)...);
  }
};

// ---------------------------------------------------------------------------------------------------------
// this_coro::chunk
// ---------------------------------------------------------------------------------------------------------

namespace perfloc::detail {

/// What this_coro::chunk() returns: a frame-less object whose awaiter is ready at once, so neither a
/// coroutine frame, a suspension nor Asio's cancellation check (cleanup code of a cancelled coroutine wants
/// its chunk too).
template <class Executor>
struct chunk_query {
  using perfloc_frame_less = void;

  /// Selects Asio's "function taking the frame" overload; never called.
  inline thread_base<Executor>* operator()(frame_base<Executor>*) const noexcept { return nullptr; }

  struct awaiter {
    frame_base<Executor>* frame;
    inline bool await_ready() const noexcept { return true; }
    inline void await_suspend(std::coroutine_handle<>) const noexcept {}
    inline std::reference_wrapper<process_chunk> await_resume() const {
      spawn_state<Executor>* state = state_of(frame);
      if (!state) [[unlikely]]
        throw std::logic_error("perfloc::this_coro::chunk(): this coroutine was not started by perfloc::co_spawn");
      return std::ref(state->chunk);
    }
  };
  inline awaiter make_awaiter(frame_base<Executor>* frame) const noexcept { return {frame}; }
};

}  // namespace perfloc::detail

export namespace perfloc::this_coro {

/// The process chunk of the running perfloc coroutine, also inside the awaitables it co_awaits:
/// `perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();`. It neither suspends nor allocates
/// (a few nanoseconds), and it gives the chunk also once the coroutine has been cancelled. Throws
/// std::logic_error in a coroutine perfloc::co_spawn did not start (one started by asio::co_spawn from inside a
/// perfloc coroutine included: it gets no chunk; start it with perfloc::co_spawn to give it one). The chunk
/// lives as long as the coroutine: do not move from it or release it.
template <class Executor = detail::asio::any_io_executor>
inline detail::chunk_query<Executor> chunk() noexcept {
  return {};
}

}  // namespace perfloc::this_coro

// Reachable from importers (specialisations need not, and cannot, be exported).
template <class Executor, class... Args>
struct std::coroutine_traits<perfloc::detail::asio::awaitable<perfloc::detail::asio_detail::awaitable_thread_entry_point, Executor>,
                             perfloc::detail::spawn_params<Executor>&, Args...> {
  using promise_type = perfloc::detail::entry_promise<Executor>;
};
