// perfloc.asio:post — perfloc::post, a plain task with a chunk of its own, keeping the task's associated
// executor, allocator and cancellation slot.
module;

#include "perfloc/detail/asio.hpp"

export module perfloc.asio:post;

import perfloc.top;
import perfloc.process;
import :executor;

namespace perfloc::detail {

/// perfloc::post's task: opens the chunk when it runs. Its associations are f's (the associator below).
template <class F>
struct chunk_task {
  top_chunk* top;
  F f;
  std::source_location where;

  inline void operator()() {
    process_chunk chunk{*top, where};
    f(chunk);
  }
};

}  // namespace perfloc::detail

/// chunk_task has the associated executor, allocator and cancellation slot of its function, as Asio's own
/// handler wrappers (detail::binder0) do.
template <template <class, class> class Associator, class F, class DefaultCandidate>
struct perfloc::detail::asio::associator<Associator, perfloc::detail::chunk_task<F>, DefaultCandidate>
    : Associator<F, DefaultCandidate> {
  static inline typename Associator<F, DefaultCandidate>::type get(const perfloc::detail::chunk_task<F>& task) noexcept {
    return Associator<F, DefaultCandidate>::get(task.f);
  }
  static inline auto get(const perfloc::detail::chunk_task<F>& task, const DefaultCandidate& candidate) noexcept
      -> decltype(Associator<F, DefaultCandidate>::get(task.f, candidate)) {
    return Associator<F, DefaultCandidate>::get(task.f, candidate);
  }
};

export namespace perfloc {

/// Runs `f(chunk)` on `ex` with a process chunk of its own from `top`, released right after f returns or
/// throws. The chunk is opened when the task runs, so a queued task holds none. The task keeps f's associated
/// executor, allocator and cancellation slot: `perfloc::post(ex, asio::bind_executor(strand, f))` runs f on
/// the strand, as asio::post does.
template <class Executor, class F>
  requires detail::spawn_executor<Executor> && std::is_invocable_v<std::decay_t<F>&, process_chunk&>
inline void post(top_chunk& top, const Executor& ex, F&& f,
                 std::source_location where = std::source_location::current()) {
  detail::asio::post(ex, detail::chunk_task<std::decay_t<F>>{&top, std::forward<F>(f), where});
}

/// As above, with the chunk from default_top().
template <class Executor, class F>
  requires detail::spawn_executor<Executor> && std::is_invocable_v<std::decay_t<F>&, process_chunk&>
inline void post(const Executor& ex, F&& f, std::source_location where = std::source_location::current()) {
  perfloc::post(default_top(), ex, std::forward<F>(f), where);
}

/// As above, on an execution context's executor.
template <class ExecutionContext, class F>
  requires std::is_convertible_v<ExecutionContext&, detail::asio::execution_context&> &&
           std::is_invocable_v<std::decay_t<F>&, process_chunk&>
inline void post(ExecutionContext& ctx, F&& f, std::source_location where = std::source_location::current()) {
  perfloc::post(default_top(), ctx.get_executor(), std::forward<F>(f), where);
}

template <class ExecutionContext, class F>
  requires std::is_convertible_v<ExecutionContext&, detail::asio::execution_context&> &&
           std::is_invocable_v<std::decay_t<F>&, process_chunk&>
inline void post(top_chunk& top, ExecutionContext& ctx, F&& f,
                 std::source_location where = std::source_location::current()) {
  perfloc::post(top, ctx.get_executor(), std::forward<F>(f), where);
}

}  // namespace perfloc
