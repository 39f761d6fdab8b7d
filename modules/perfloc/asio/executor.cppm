// perfloc.asio:executor — the executor that carries the coroutine's identity.
//
// The coroutine's executor is the spawn executor wrapped in a chunk_executor that also carries the address
// of the entry frame (`owner`). this_coro::chunk() and use_chunk compare that address with the running
// thread's entry_point(): a comparison, never a dereference, so a coroutine started by plain asio::co_spawn
// with an inherited executor (which may run on another thread or outlive the parent) never reaches a chunk
// that is not its own. Executing through the wrapper never reads `owner`, so copies that outlive the
// coroutine are harmless. For io_context and thread_pool executors the wrapper (16 and 24 bytes) fits
// any_io_executor's 24-byte buffer: no allocation.
module;

#include "perfloc/detail/asio.hpp"

export module perfloc.asio:executor;

namespace perfloc::detail {

/// The spawn executor plus the address of the perfloc entry frame that owns the thread of execution.
template <class Inner>
class chunk_executor {
 public:
  inline chunk_executor(Inner inner, const void* owner) noexcept : inner_(std::move(inner)), owner_(owner) {}

  /// The member call, not asio::execution::execute: that customisation point is gone after Asio 1.28, and
  /// every executor kept here (known_executors, any_io_executor) has the member on every supported version.
  template <class Function>
  inline void execute(Function&& f) const {
    inner_.execute(std::forward<Function>(f));
  }

  template <class Property>
    requires asio::can_query<const Inner&, const Property&>::value
  inline decltype(auto) query(const Property& p) const
      noexcept(asio::is_nothrow_query<const Inner&, const Property&>::value) {
    return asio::query(inner_, p);
  }

  template <class Property>
    requires asio::can_require<const Inner&, const Property&>::value
  inline auto require(const Property& p) const {
    using result = std::decay_t<typename asio::require_result<const Inner&, const Property&>::type>;
    return chunk_executor<result>(asio::require(inner_, p), owner_);
  }

  template <class Property>
    requires asio::can_prefer<const Inner&, const Property&>::value
  inline auto prefer(const Property& p) const {
    using result = std::decay_t<typename asio::prefer_result<const Inner&, const Property&>::type>;
    return chunk_executor<result>(asio::prefer(inner_, p), owner_);
  }

  inline const Inner& inner() const noexcept { return inner_; }
  inline const void* owner() const noexcept { return owner_; }

  inline friend bool operator==(const chunk_executor& a, const chunk_executor& b) noexcept {
    return a.owner_ == b.owner_ && a.inner_ == b.inner_;
  }
  inline friend bool operator!=(const chunk_executor& a, const chunk_executor& b) noexcept { return !(a == b); }

 private:
  Inner inner_;
  const void* owner_;  ///< compared, never dereferenced
};

template <class E>
concept polymorphic_executor = requires(const E& e) {
  e.template target<int>();
  e.target_type();
};

template <class E>
struct is_chunk_executor : std::false_type {};
template <class Inner>
struct is_chunk_executor<chunk_executor<Inner>> : std::true_type {};

/// The executors a chunk_executor keeps as their own type. Any other is wrapped as the polymorphic executor,
/// which costs two allocations per spawn (the wrapper does not fit the small buffer, and any_executor's
/// constructor queries `blocking`, which Asio's type erasure answers through `new`). io_context and
/// thread_pool executors make 16- and 24-byte wrappers: no allocation. Strands make 32 bytes: one.
template <class... Executors>
struct executor_list {};
using known_executors = executor_list<asio::io_context::executor_type, asio::thread_pool::executor_type,
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

template <class... Known>
using wrapped_list = executor_list<chunk_executor<Known>...>;
template <class... Known>
wrapped_list<Known...> wrap_list(executor_list<Known...>);
using known_wrapped = decltype(wrap_list(known_executors{}));

/// The spawn executor as the awaitable's executor type, without any chunk wrapper (spawning from inside a
/// perfloc coroutine usually passes `co_await asio::this_coro::executor`).
template <class AwaitableExecutor, class Ex>
inline AwaitableExecutor unwrap_executor(const Ex& ex) {
  if constexpr (is_chunk_executor<Ex>::value) {
    return AwaitableExecutor(ex.inner());
  } else if constexpr (polymorphic_executor<Ex>) {
    AwaitableExecutor result(ex);
    if (!visit_known(ex, known_wrapped{}, [&](const auto& wrapper) { result = AwaitableExecutor(wrapper.inner()); }))
      if (auto* wrapper = ex.template target<chunk_executor<AwaitableExecutor>>()) result = wrapper->inner();
    return result;
  } else {
    return AwaitableExecutor(ex);
  }
}

/// The executor the coroutine runs with: `ex` wrapped with the owner's address.
template <class AwaitableExecutor>
inline AwaitableExecutor wrap_executor(const AwaitableExecutor& ex, const void* owner) {
  static_assert(polymorphic_executor<AwaitableExecutor>,
                "perfloc::co_spawn carries the chunk with the coroutine's executor, so the awaitable's executor type "
                "must be polymorphic (asio::any_io_executor, the default of asio::awaitable<T>)");
  AwaitableExecutor result;
  if (!visit_known(ex, known_executors{}, [&]<class K>(const K& inner) {
        result = AwaitableExecutor(chunk_executor<K>(inner, owner));
      }))
    result = AwaitableExecutor(chunk_executor<AwaitableExecutor>(ex, owner));
  return result;
}

/// The owner address a thread's executor carries, or null.
template <class AwaitableExecutor>
inline const void* owner_of(const AwaitableExecutor& ex) noexcept {
  if constexpr (polymorphic_executor<AwaitableExecutor>) {
    const void* owner = nullptr;
    if (!visit_known(ex, known_wrapped{}, [&](const auto& wrapper) { owner = wrapper.owner(); }))
      if (auto* wrapper = ex.template target<chunk_executor<AwaitableExecutor>>()) owner = wrapper->owner();
    return owner;
  } else {
    return nullptr;
  }
}

template <class E>
concept spawn_executor = asio::execution::is_executor<E>::value || asio::is_executor<E>::value;

}  // namespace perfloc::detail
