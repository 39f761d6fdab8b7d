// perfloc.asio:executor — the executor types perfloc.asio works with.
//
// The coroutine runs with the spawn executor itself, unwrapped: Asio's native io_context fast path applies to
// I/O objects made from `co_await asio::this_coro::executor` (issue 14.6), and no executor copy allocates.
// Which thread of execution perfloc started is told by its bottom frame instead (entry_kinds, in
// perfloc.asio:shims). Behind any_io_executor, perfloc's own launch operations and completions go through the
// executor's own type when it is one of the known ones: through the polymorphic executor, Asio wraps every
// function in a second allocation from its per-thread cache.
module;

#include "perfloc/detail/asio.hpp"

export module perfloc.asio:executor;

namespace perfloc::detail {

template <class E>
concept polymorphic_executor = requires(const E& e) {
  e.template target<int>();
  e.target_type();
};

/// The executor types perfloc reaches behind a polymorphic executor, each also in its form that keeps its
/// context's outstanding work (a coroutine's spawn state keeps its executor so: perfloc.asio:memory).
template <class... Executors>
struct executor_list {};
/// The type of an executor that keeps its context's outstanding work (asio::execution::outstanding_work.tracked).
template <class Executor>
using tracked = std::decay_t<decltype(asio::prefer(std::declval<const Executor&>(),
                                                   asio::execution::outstanding_work.tracked))>;
// The tracked forms first: a coroutine's own executor is one of them (each type tried costs a type_info
// comparison behind the polymorphic executor).
using known_executors = executor_list<tracked<asio::io_context::executor_type>,
                                      tracked<asio::strand<asio::io_context::executor_type>>,
                                      tracked<asio::thread_pool::executor_type>,
                                      tracked<asio::strand<asio::thread_pool::executor_type>>,
                                      asio::io_context::executor_type, asio::thread_pool::executor_type,
                                      asio::strand<asio::io_context::executor_type>,
                                      asio::strand<asio::thread_pool::executor_type>>;

/// Calls `f(*target)` for the first type in `list` that `ex` holds; returns whether one did.
template <class Polymorphic, class... Known, class Function>
inline bool visit_known(const Polymorphic& ex, executor_list<Known...>, Function&& f) {
  return ([&]<class K>() {
    if (const K* target = ex.template target<K>()) {
      f(*target);
      return true;
    }
    return false;
  }.template operator()<Known>() || ...);
}

/// asio::dispatch through the executor's own type when it is a known one: through any_io_executor, even a
/// function run inline costs an allocation from Asio's per-thread cache.
template <class Ex, class Function>
inline void dispatch_known(const Ex& ex, Function&& f) {
  if constexpr (polymorphic_executor<Ex>) {
    // Untracked: copies of a tracked executor count work in and out (the handler's work is kept elsewhere).
    const auto run = [&](const auto& known) {
      asio::dispatch(asio::prefer(known, asio::execution::outstanding_work.untracked), std::move(f));
    };
    if (visit_known(ex, known_executors{}, run)) return;
  }
  asio::dispatch(ex, std::move(f));
}

template <class E>
concept spawn_executor = asio::execution::is_executor<E>::value || asio::is_executor<E>::value;

}  // namespace perfloc::detail
