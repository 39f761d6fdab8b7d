// perfloc.asio:spawn — perfloc::co_spawn.
//
// It does not wrap asio::co_spawn: it ports Asio 1.38's initiate_co_spawn, co_spawn_entry_point and
// co_spawn_cancellation_handler (cancellation before the first resume reaches the handler; the handler is
// never called inside co_spawn; a signal destroyed after emit is not read) onto the Asio 1.26 internals, with
// the entry frame of perfloc.asio:entry, which opens the coroutine's chunk.
module;

#include "perfloc/detail/asio.hpp"

#include <algorithm>
#include <cstring>

#include "perfloc/detail/arena.hpp"

export module perfloc.asio:spawn;

import perfloc.top;
import perfloc.process;
import :memory;
import :executor;
import :shims;
import :entry;

namespace perfloc::detail {

template <class F>
struct factory_traits {
  static constexpr bool takes_chunk = std::is_invocable_v<F&, process_chunk&>;
  using awaitable_type =
      typename std::conditional_t<takes_chunk, std::invoke_result<F&, process_chunk&>, std::invoke_result<F&>>::type;
  using value_type = typename awaitable_type::value_type;
  using executor_type = typename awaitable_type::executor_type;
};

template <class F>
inline auto invoke_factory(F& factory, process_chunk& chunk) {
  if constexpr (factory_traits<F>::takes_chunk)
    return factory(chunk);
  else
    return factory();
}

// ---------------------------------------------------------------------------------------------------------
// The entry point and its launch: Asio 1.38's co_spawn, on every Asio perfloc supports
// ---------------------------------------------------------------------------------------------------------

/// Which spawns this thread is launching: the coroutine runs inline from co_spawn until its first suspension,
/// and while it has not suspended its handler must not be called (Asio forbids a completion inside the
/// initiating function). Asio 1.36+ keeps the same record (awaitable_launch_context); Asio 1.26 only had a
/// "has the context switched" flag, which an operation completing inline sets although the coroutine never
/// left co_spawn. A stack of scopes, because a launching coroutine may launch others.
class launch_scope {
 public:
  inline explicit launch_scope(const void* state) noexcept : state_(state), outer_(innermost) { innermost = this; }
  inline ~launch_scope() { innermost = outer_; }
  launch_scope(const launch_scope&) = delete;
  launch_scope& operator=(const launch_scope&) = delete;

  static inline bool launching(const void* state) noexcept {
    for (const launch_scope* scope = innermost; scope; scope = scope->outer_)
      if (scope->state_ == state) return true;
    return false;
  }

 private:
  static inline thread_local launch_scope* innermost = nullptr;
  const void* state_;
  launch_scope* outer_;
};

/// Runs `handler` through the spawn executor with its memory from the chunk: behind a polymorphic executor,
/// through the executor's own type when it is a known one (through any_io_executor, Asio would wrap the
/// function in a second allocation from its per-thread cache).
template <class Executor, class Blocking, class Handler>
inline void execute_in_chunk(spawn_state<Executor>* state, Blocking blocking, Handler&& handler) {
  const operation_allocator<void> memory(state);
  // Untracked first: the state's executor is tracked (it keeps the context's work while the coroutine lives),
  // and each tracked copy the preferences make would count work in and out (two atomic operations each).
  const auto run = [&](const auto& ex) {
    asio::prefer(ex, asio::execution::outstanding_work.untracked, blocking, asio::execution::allocator(memory))
        .execute(std::move(handler));
  };
  if constexpr (polymorphic_executor<typename spawn_state<Executor>::executor_type>) {
    if (visit_known(state->executor, known_executors{}, run)) return;
  }
  run(state->executor);
}

/// The entry point's own waits: its first dispatch and, when the coroutine completes inside its launch, a post
/// through the spawn executor, with the handler's memory from the chunk. Frame-less and small on purpose: each
/// co_await keeps the awaited object, Asio's awaiter (a copy of it) and ours in the entry frame, and with a
/// chunk_operation (type-erased, then 96 bytes inline) those were about 300 bytes per wait in every coroutine's
/// chunk.
/// Empty, and its awaiter holds only the frame (the entry frame, whose spawn state is right before it): every
/// word here is a word of every coroutine's entry frame, twice.
template <class Executor, class Blocking>
struct spawn_resume {
  using perfloc_frame_less = void;
  using handler_type = chunk_op_handler<Executor>;

  /// Selects Asio's "function taking the frame" overload; never called.
  inline thread_base<Executor>* operator()(frame_base<Executor>*) const noexcept { return nullptr; }

  struct awaiter {
    frame_base<Executor>* frame;

    inline bool await_ready() const noexcept { return false; }
    inline void await_suspend(std::coroutine_handle<>) noexcept {
      // Dispatched after the coroutine has suspended, so that it cannot be resumed before (as use_chunk's).
      frame->after_suspend([](void* self) { static_cast<awaiter*>(self)->dispatch(); }, this);
    }
    inline void await_resume() const noexcept {}

    inline void dispatch() {
      spawn_state<Executor>* state = static_cast<entry_promise<Executor>*>(frame)->state();
      execute_in_chunk(state, Blocking{}, handler_type(frame->detach_thread(), frame, nullptr, state));
    }
  };
  inline awaiter make_awaiter(frame_base<Executor>* frame) const noexcept { return {frame}; }
};

#ifndef NDEBUG
/// Debug builds (issue 14.4): a result or exception that points into the coroutine's chunk would dangle, since
/// the chunk is released before the completion handler can use it. Tells where it can: a word of the result
/// holding an address in the chunk (outside the result object itself, which sits in the entry frame: an
/// in-object buffer moves with it), and an exception's what().
inline void check_outside_chunk(process_chunk& chunk, const std::exception_ptr& e, const void* result,
                                std::size_t result_bytes) noexcept {
  chunk_header* header = std::bit_cast<chunk_ref>(allocator<std::byte>(chunk)).same_meta()->chunk;
  if (e) {
    const char* text = nullptr;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& error) {
      text = error.what();
    } catch (...) {
    }
    if (text && chunk_contains(header, text))
      misuse("perfloc::co_spawn: the coroutine's exception (its what()) refers to memory in its coroutine's chunk, "
             "which is released before the completion handler runs; throw exceptions that own their memory",
             text);
    return;
  }
  if (!result) return;  // a void result
  const auto* begin = static_cast<const std::byte*>(result);
  const std::byte* end = begin + std::min<std::size_t>(result_bytes, 4096);
  for (const std::byte* word = begin; word + sizeof(void*) <= end; word += sizeof(void*)) {
    const std::byte* p;
    std::memcpy(&p, word, sizeof p);
    if (p && (p < begin || p >= begin + result_bytes) && chunk_contains(header, p))
      misuse("perfloc::co_spawn: the coroutine's result refers to memory in its coroutine's chunk, which is "
             "released before the completion handler runs; return values that own their memory",
             p);
  }
}
#endif

/// Whether `Handler` has an executor of its own. Asio 1.38 asks associated_executor's "unspecialised" marker,
/// which Asio 1.26's binders (bind_cancellation_slot) do not pass on: a bound slot would then look like a
/// bound executor and a cancellation emitted before run() would arrive after the coroutine's first resume.
/// Asking with system_executor as the default gives the same answer on every version (a handler bound to
/// system_executor itself runs inline anyway).
template <class Handler>
inline constexpr bool has_own_executor =
    !std::is_same_v<typename asio::associated_executor<Handler, asio::system_executor>::type, asio::system_executor>;

/// The handler's executor, kept busy until the handler has run (Asio's handler_work). A handler without an
/// executor of its own completes through the spawn executor, which the spawn state keeps busy already
/// (perfloc.asio:memory): then this is empty, instead of a second copy of the executor and a second work
/// guard in every coroutine's entry frame (96 bytes with any_io_executor).
template <class Handler, class Executor, bool = has_own_executor<Handler>>
class handler_work_guard {
  using executor_type = asio::associated_executor_t<Handler, Executor>;

 public:
  inline handler_work_guard(const Handler& handler, const Executor& spawn_executor)
      : executor_(asio::get_associated_executor(handler, spawn_executor)), work_(make_spawn_work_guard(executor_)) {}
  inline const executor_type& executor(const Executor&) const noexcept { return executor_; }

 private:
  executor_type executor_;
  decltype(make_spawn_work_guard(std::declval<const executor_type&>())) work_;
};

template <class Handler, class Executor>
class handler_work_guard<Handler, Executor, false> {
 public:
  inline handler_work_guard(const Handler&, const Executor&) noexcept {}
  inline const Executor& executor(const Executor& spawn_executor) const noexcept { return spawn_executor; }
};

/// Hands the coroutine's result or exception to its handler through the handler's executor. Out of line on
/// purpose: inlined into spawn_entry, the dispatch's locals (executor copies, Asio's operation pointers, the
/// bound handler: 176 bytes of the HTTP example's connections) were laid out in the entry frame, which every
/// coroutine's chunk keeps as long as the coroutine lives; here they are on the stack of its last resume.
template <class T, class HandlerExecutor, class Handler, class Result>
[[gnu::noinline]] void complete_spawn(const HandlerExecutor& handler_executor, Handler&& handler, std::exception_ptr e,
                                      Result& result) {
  if constexpr (std::is_void_v<T>)
    dispatch_known(handler_executor, [handler = std::move(handler), e]() mutable { std::move(handler)(e); });
  else if (e)
    dispatch_known(handler_executor,
                   [handler = std::move(handler), e]() mutable { std::move(handler)(e, T()); });
  else
    dispatch_known(handler_executor, [handler = std::move(handler), t = std::move(*result)]() mutable {
      std::move(handler)(std::exception_ptr(), std::move(t));
    });
}

/// Asio 1.38's co_spawn_entry_point, with the chunk. The factory's coroutine is awaited inside the try
/// block, so a cancellation that arrives before its first resume (Asio's await_transform throws
/// operation_aborted when it is co_awaited) reaches the handler like any other error. A coroutine still
/// inside its launch leaves co_spawn's call first (one post). The first dispatch and that post are frame-less
/// waits that Asio's cancellation check does not see (a cancellation that arrived meanwhile must not throw out
/// of the pump: out of io_context::run(), or std::terminate on a thread pool), with their operation memory in
/// the chunk (issue 14.8: no heap call per coroutine). The result or exception then goes through the
/// handler's associated executor; debug builds first stop a result or exception that points into the chunk.
template <class T, class Executor, class F, class Handler>
asio::awaitable<asio_detail::awaitable_thread_entry_point, Executor> spawn_entry(spawn_params<Executor>& params,
                                                                                 F factory, Handler handler) {
  // The body starts inside launch(), while `params` is alive.
  spawn_state<Executor>* state = params.state;  // its executor keeps the context's work (spawn_state)
  const handler_work_guard<Handler, typename spawn_state<Executor>::executor_type> handler_work(handler,
                                                                                              state->executor);

  co_await spawn_resume<Executor, asio::execution::blocking_t::possibly_t>{};

  std::exception_ptr e = nullptr;
  std::optional<std::conditional_t<std::is_void_v<T>, std::monostate, T>> result;
  try {
    if constexpr (std::is_void_v<T>)
      co_await invoke_factory(factory, state->chunk);
    else
      result.emplace(co_await invoke_factory(factory, state->chunk));
  } catch (...) {
    e = std::current_exception();
  }
  if (launch_scope::launching(state)) co_await spawn_resume<Executor, asio::execution::blocking_t::never_t>{};
#ifndef NDEBUG
  if constexpr (std::is_void_v<T>)
    check_outside_chunk(state->chunk, e, nullptr, 0);
  else
    check_outside_chunk(state->chunk, e, result ? std::addressof(*result) : nullptr, result ? sizeof(T) : 0);
#endif
  complete_spawn<T>(handler_work.executor(state->executor), std::move(handler), e, result);
}

/// The handler placed in the caller's cancellation slot: it forwards to the spawn's own signal, whose slot
/// holds the coroutine's cancellation state. As Asio 1.38's co_spawn_cancellation_handler: for a handler
/// without an associated executor the emit is forwarded at once; otherwise it is dispatched through the
/// spawn executor, and the signal is shared by that dispatched emit, this handler and the coroutine (its
/// chunk keeps a reference: spawn_params), so a caller's signal destroyed right after emit leaves nothing
/// dangling (Asio 1.26 kept the signal inside this handler: asio issue 1332).
template <class Handler, class Executor, class = void>
class spawn_cancellation {
 public:
  inline spawn_cancellation(const Handler&, const Executor& ex)
      : signal_(std::make_shared<asio::cancellation_signal>()), executor_(ex) {}

  inline asio::cancellation_slot slot() noexcept { return signal_->slot(); }
  inline const std::shared_ptr<asio::cancellation_signal>* shared_signal() const noexcept { return &signal_; }

  inline void operator()(asio::cancellation_type_t type) {
    asio::dispatch(executor_, [signal = signal_, type] { signal->emit(type); });
  }

 private:
  std::shared_ptr<asio::cancellation_signal> signal_;
  Executor executor_;
};

template <class Handler, class Executor>
class spawn_cancellation<Handler, Executor, std::enable_if_t<!has_own_executor<Handler>>> {
 public:
  inline spawn_cancellation(const Handler&, const Executor&) noexcept {}

  inline asio::cancellation_slot slot() noexcept { return signal_.slot(); }
  inline const std::shared_ptr<asio::cancellation_signal>* shared_signal() const noexcept { return nullptr; }

  inline void operator()(asio::cancellation_type_t type) { signal_.emit(type); }

 private:
  asio::cancellation_signal signal_;
};

template <class AwaitableExecutor>
class initiate_spawn {
 public:
  using executor_type = AwaitableExecutor;

  template <class Ex>
  inline initiate_spawn(top_chunk& top, const Ex& ex, std::source_location where, std::string_view label = {})
      : top_(&top), executor_(ex), where_(where) {
    // A copy: with a deferred token the initiation runs after the caller's string may be gone.
    label_size_ = label.copy(label_, sizeof label_);
  }

  inline executor_type get_executor() const noexcept { return executor_; }

  /// Asio 1.38's initiate_co_spawn, launching our entry point.
  template <class Handler, class F>
  void operator()(Handler&& handler, F&& factory) const {
    using traits = factory_traits<std::decay_t<F>>;
    using handler_type = std::decay_t<Handler>;
    using cancel_handler_type = spawn_cancellation<handler_type, AwaitableExecutor>;

    auto slot = asio::get_associated_cancellation_slot(handler);
    cancel_handler_type* cancel_handler =
        slot.is_connected() ? &slot.template emplace<cancel_handler_type>(handler, executor_) : nullptr;
    asio::cancellation_slot proxy_slot(cancel_handler ? cancel_handler->slot() : asio::cancellation_slot());
    asio::cancellation_state cancel_state(proxy_slot);

    spawn_params<AwaitableExecutor> params{top_, &executor_, where_, std::string_view(label_, label_size_)};
    if (cancel_handler) params.forwarded_signal = cancel_handler->shared_signal();
    auto entry = spawn_entry<typename traits::value_type, AwaitableExecutor>(params, std::forward<F>(factory),
                                                                            std::forward<Handler>(handler));
    // Once per instantiation, before its first coroutine can run.
    static const bool known = (entry_kinds::add(destroy_function_of(frame_access<AwaitableExecutor>::coroutine_of(
                                   static_cast<asio_detail::awaitable_frame_base<AwaitableExecutor>*>(params.frame)))),
                               true);
    (void)known;
    launch_scope launching(params.state);
    asio_detail::awaitable_handler<AwaitableExecutor, void>(std::move(entry), executor_, proxy_slot, cancel_state)
        .launch();
  }

 private:
  top_chunk* top_;
  AwaitableExecutor executor_;
  std::source_location where_;
  char label_[47];  // what a process_chunk keeps of a label
  std::size_t label_size_ = 0;
};

template <class F>
concept spawn_factory = requires { typename factory_traits<std::decay_t<F>>::awaitable_type; };

}  // namespace perfloc::detail

export namespace perfloc {

/// Starts the coroutine that `factory()` — or `factory(chunk)` — returns, on `ex`, with a process chunk of
/// its own taken from `top`, and delivers its result or exception to `token` exactly as asio::co_spawn does
/// (completion signature void(std::exception_ptr, T), or void(std::exception_ptr) for awaitable<void>).
/// The chunk is released when the coroutine's stack is destroyed: on completion, by an exception, by
/// cancellation, or when the io_context is destroyed with the coroutine suspended. Inside, the chunk is
/// `co_await perfloc::this_coro::chunk()` (or the factory's parameter); operations awaited with
/// perfloc::use_chunk take their memory from it. The coroutine runs with `ex` itself (no wrapper), so I/O
/// objects made from `co_await asio::this_coro::executor` keep Asio's native io_context fast path.
/// `where` (the caller's location) identifies the chunk in statistics and leak reports.
template <class Executor, class F, class CompletionToken>
  requires detail::spawn_executor<Executor> && detail::spawn_factory<F>
inline auto co_spawn(top_chunk& top, const Executor& ex, F&& factory, CompletionToken&& token,
                     std::source_location where = std::source_location::current()) {
  using traits = detail::factory_traits<std::decay_t<F>>;
  using signature = typename detail::asio_detail::awaitable_signature<typename traits::awaitable_type>::type;
  return detail::asio::async_initiate<CompletionToken, signature>(
      detail::initiate_spawn<typename traits::executor_type>(top, ex, where), token, std::forward<F>(factory));
}

/// As above, with a label for the coroutine's chunk (up to 47 bytes, copied), which statistics, reports,
/// the release hook and leak reports show: `perfloc::co_spawn(top, "connection", ex, factory, token)`.
template <class Executor, class F, class CompletionToken>
  requires detail::spawn_executor<Executor> && detail::spawn_factory<F>
inline auto co_spawn(top_chunk& top, std::string_view label, const Executor& ex, F&& factory,
                     CompletionToken&& token, std::source_location where = std::source_location::current()) {
  using traits = detail::factory_traits<std::decay_t<F>>;
  using signature = typename detail::asio_detail::awaitable_signature<typename traits::awaitable_type>::type;
  return detail::asio::async_initiate<CompletionToken, signature>(
      detail::initiate_spawn<typename traits::executor_type>(top, ex, where, label), token,
      std::forward<F>(factory));
}

/// As above, with the chunk from default_top().
template <class Executor, class F, class CompletionToken>
  requires detail::spawn_executor<Executor> && detail::spawn_factory<F>
inline auto co_spawn(const Executor& ex, F&& factory, CompletionToken&& token,
                     std::source_location where = std::source_location::current()) {
  return perfloc::co_spawn(default_top(), ex, std::forward<F>(factory), std::forward<CompletionToken>(token), where);
}

/// As above, on an execution context's executor (`perfloc::co_spawn(io_context, factory, token)`).
template <class ExecutionContext, class F, class CompletionToken>
  requires std::is_convertible_v<ExecutionContext&, detail::asio::execution_context&> && detail::spawn_factory<F>
inline auto co_spawn(top_chunk& top, ExecutionContext& ctx, F&& factory, CompletionToken&& token,
                     std::source_location where = std::source_location::current()) {
  return perfloc::co_spawn(top, ctx.get_executor(), std::forward<F>(factory), std::forward<CompletionToken>(token),
                           where);
}

template <class ExecutionContext, class F, class CompletionToken>
  requires std::is_convertible_v<ExecutionContext&, detail::asio::execution_context&> && detail::spawn_factory<F>
inline auto co_spawn(ExecutionContext& ctx, F&& factory, CompletionToken&& token,
                     std::source_location where = std::source_location::current()) {
  return perfloc::co_spawn(default_top(), ctx.get_executor(), std::forward<F>(factory),
                           std::forward<CompletionToken>(token), where);
}

}  // namespace perfloc
