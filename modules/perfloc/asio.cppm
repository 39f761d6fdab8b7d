// perfloc.asio — every Asio coroutine and task gets its own process chunk, released when its frame completes.
//
// What this unit owns (the only one that includes Boost.Asio):
//
//  * co_spawn. It does not wrap asio::co_spawn: it ports Asio 1.38's initiate_co_spawn,
//    co_spawn_entry_point and co_spawn_cancellation_handler (cancellation before the first resume reaches
//    the handler; the handler is never called inside co_spawn; a signal destroyed after emit is not read)
//    onto the Asio 1.26 internals, with an entry-point coroutine that has a promise of our own (entry_promise). That
//    promise's operator new opens the coroutine's chunk and puts [spawn_state | entry frame] at its start;
//    its operator delete releases the chunk. Asio destroys the entry frame exactly when the coroutine's stack
//    goes away — completion, exception, cancellation, or an io_context destroyed with the coroutine
//    suspended — and operator delete is the last step of that destruction (after the promise and the
//    parameter copies, which live in the chunk), so nothing of the chunk is touched after it is released.
//  * Finding the chunk. The coroutine's executor is the spawn executor wrapped in a chunk_executor that
//    also carries the address of the entry frame (`owner`). this_coro::chunk() and use_chunk compare that
//    address with the running thread's entry_point(): a comparison, never a dereference, so a coroutine
//    started by plain asio::co_spawn with an inherited executor (which may run on another thread or
//    outlive the parent) never reaches a chunk that is not its own. Executing through the wrapper never
//    reads `owner`, so copies that outlive the coroutine are harmless. For io_context and thread_pool
//    executors the wrapper (16 and 24 bytes) fits any_io_executor's 24-byte buffer: no allocation.
//  * this_coro::chunk(), a small awaitable coroutine. It reaches the thread through Asio's
//    "function taking the frame" await_transform, which resumes the same frame from the pump loop: an async
//    operation completing inline would nest the stack once per co_await (112 bytes each, measured; a loop of
//    100 000 overflows 8 MiB).
//  * use_chunk: use_awaitable whose handler's associated allocator is a per-coroutine recycler of operation
//    memory (size classes, refilled from the chunk, under the chunk's lock: Asio frees operation memory on
//    the completing thread) and whose associated executor is the unwrapped one, so Asio's native io_context
//    fast path still applies.
//  * Frames in a chunk: a std::coroutine_traits specialisation for asio::awaitable coroutines whose first
//    parameter (after the object, for lambdas and member functions) is a process_chunk&, and the promise
//    mixin chunk_frame_allocation for any coroutine type. Frames are made and freed under the chunk's lock
//    (lock_of): parallel children free theirs on their own threads.
//  * post: a plain task with a chunk of its own, keeping the task's associated executor, allocator and slot.
//
// All of this relies on Asio 1.26 internals (awaitable_frame, awaitable_thread, awaitable_handler, the
// co_spawn helpers), hence the static_assert on BOOST_ASIO_VERSION. Porting to another Asio means checking
// each use of boost::asio::detail below against that version. The evidence for each choice is in the
// closing notes of issue 4.
module;

#include <atomic>
#include <bit>
#include <concepts>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <source_location>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include <boost/asio/version.hpp>

static_assert(BOOST_ASIO_VERSION == 102600,
              "perfloc.asio is built on Boost.Asio 1.26 (Boost 1.81) internals: awaitable_frame, awaitable_thread, "
              "awaitable_handler and the co_spawn entry point. This Boost has another Asio version; perfloc.asio "
              "must be ported to it (see the comment at the top of modules/perfloc/asio.cppm) before it is used.");

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/associator.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "perfloc/detail/track.hpp"

export module perfloc.asio;

import perfloc.top;
import perfloc.process;

namespace perfloc::detail {
namespace asio = boost::asio;
namespace asio_detail = boost::asio::detail;

// ---------------------------------------------------------------------------------------------------------
// Operation memory: a per-coroutine recycler, safe against completions on other threads
// ---------------------------------------------------------------------------------------------------------

class spin_lock {
 public:
  inline void lock() noexcept {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      while (locked_.load(std::memory_order_relaxed)) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
    }
  }
  inline void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

/// The lock of what perfloc itself does to a chunk from threads other than its owner's: frames of parallel
/// children (`co_await (step(chunk, 1) && step(chunk, 2))` on a thread pool) made and freed where the children
/// run, operation memory given back where operations complete. The chunk's own allocation path assumes one
/// owner and the chunk header has no room for a lock (it is the core's), so the locks are a fixed table of
/// cache-line-sized spin locks indexed by the chunk's identity (its child_meta address, which allocator<>
/// holds): one uncontended exchange on the single-threaded path; unrelated chunks rarely share a lock.
struct alignas(64) padded_spin_lock {
  spin_lock lock;
};
inline constexpr unsigned chunk_lock_count = 64;
inline padded_spin_lock chunk_locks[chunk_lock_count];

inline spin_lock& lock_of(allocator<std::byte> chunk) noexcept {
  static_assert(sizeof(allocator<std::byte>) == sizeof(std::uintptr_t));
  // child_metas are 192 bytes apart: drop the low bits, then spread with a multiplicative hash.
  const auto identity = std::bit_cast<std::uintptr_t>(chunk) >> 6;
  return chunk_locks[(identity * 0x9E3779B97F4A7C15ull) >> (64 - 6)].lock;
}
static_assert(chunk_lock_count == 1u << 6);

/// Free lists of operation memory in size classes of 64 B to 4 KiB, refilled from the chunk. Asio gives
/// operation memory back before it runs the handler, on whichever thread completed the operation, and
/// operations running in parallel may allocate and free at the same time: every access is under the chunk's
/// lock (lock_of). In steady state only the free lists are touched, so a coroutine looping over operations
/// stays at a constant footprint. The chunk itself is touched here (under the lock) only while the coroutine
/// is suspended on the operation asking for memory, so it never races with the coroutine's own use of it.
class op_recycler {
 public:
  inline explicit op_recycler(spin_lock& lock) noexcept : lock_(&lock) {}

  static constexpr unsigned class_count = 7;
  static constexpr std::size_t min_bytes = 64;
  static constexpr std::size_t max_bytes = min_bytes << (class_count - 1);

  inline void* allocate(process_chunk& chunk, std::size_t bytes, std::size_t alignment) {
    if (bytes <= max_bytes && alignment <= alignof(std::max_align_t)) [[likely]] {
      const unsigned size_class = class_of(bytes);
      std::lock_guard guard(*lock_);
      if (node* n = free_[size_class]) {
        free_[size_class] = n->next;
        track::handed_out(n, bytes_of(size_class));
        return n;
      }
      return chunk.allocate(bytes_of(size_class), alignof(std::max_align_t));
    }
    std::lock_guard guard(*lock_);
    return chunk.allocate(bytes, alignment);
  }

  inline void deallocate(process_chunk& chunk, void* p, std::size_t bytes, std::size_t alignment) noexcept {
    if (bytes <= max_bytes && alignment <= alignof(std::max_align_t)) [[likely]] {
      const unsigned size_class = class_of(bytes);
      auto* n = static_cast<node*>(p);
      std::lock_guard guard(*lock_);
      n->next = free_[size_class];
      free_[size_class] = n;
      // The link stays readable; the rest is reported if used after Asio gave it back.
      track::taken_back(reinterpret_cast<std::byte*>(n) + sizeof(node), bytes_of(size_class) - sizeof(node));
      return;
    }
    std::lock_guard guard(*lock_);
    chunk.deallocate(p, bytes, alignment);
  }

 private:
  struct node {
    node* next;
  };
  static constexpr unsigned class_of(std::size_t bytes) noexcept {
    unsigned size_class = 0;
    while ((min_bytes << size_class) < bytes) ++size_class;
    return size_class;
  }
  static constexpr std::size_t bytes_of(unsigned size_class) noexcept { return min_bytes << size_class; }

  spin_lock* lock_;  ///< the chunk's (lock_of), shared with frames in the chunk
  node* free_[class_count] = {};
};

/// What a perfloc coroutine keeps beside its entry frame, at the start of its own chunk.
struct spawn_state_base {
  inline spawn_state_base(process_chunk&& c, std::shared_ptr<void> signal) noexcept
      : chunk(std::move(c)), operations(lock_of(allocator<std::byte>(chunk))), forwarded_signal(std::move(signal)) {}

  process_chunk chunk;  ///< the handle; it never moves (this object lives in the chunk it owns)
  op_recycler operations;
  /// The spawn's own cancellation signal when emits are forwarded through an executor (spawn_cancellation):
  /// the coroutine's cancellation state lives in it, so it lives as long as the coroutine too.
  std::shared_ptr<void> forwarded_signal;

  inline void* allocate_operation(std::size_t bytes, std::size_t alignment) {
    return operations.allocate(chunk, bytes, alignment);
  }
  inline void deallocate_operation(void* p, std::size_t bytes, std::size_t alignment) noexcept {
    operations.deallocate(chunk, p, bytes, alignment);
  }
};

template <class Executor>
struct spawn_state : spawn_state_base {
  inline spawn_state(process_chunk&& c, std::shared_ptr<void> signal, const Executor& ex)
      : spawn_state_base(std::move(c), std::move(signal)), executor(ex) {}
  Executor executor;  ///< the spawn executor without the chunk wrapper; use_chunk handlers report this one
};

/// The associated allocator of use_chunk handlers. Without a state (a coroutine perfloc did not start) it
/// does what use_awaitable's handlers get: Asio's per-thread recycling.
template <class T>
class operation_allocator {
 public:
  using value_type = T;
  template <class U>
  struct rebind {
    using other = operation_allocator<U>;
  };

  inline explicit operation_allocator(spawn_state_base* state) noexcept : state_(state) {}
  template <class U>
  inline operation_allocator(const operation_allocator<U>& other) noexcept : state_(other.state()) {}

  inline T* allocate(std::size_t n) {
    if (state_) return static_cast<T*>(state_->allocate_operation(sizeof(T) * n, alignof(T)));
    return static_cast<T*>(asio_detail::thread_info_base::allocate(
        asio_detail::thread_info_base::default_tag(), asio_detail::thread_context::top_of_thread_call_stack(),
        sizeof(T) * n, alignof(T)));
  }
  inline void deallocate(T* p, std::size_t n) noexcept {
    if (state_) return state_->deallocate_operation(p, sizeof(T) * n, alignof(T));
    asio_detail::thread_info_base::deallocate(asio_detail::thread_info_base::default_tag(),
                                              asio_detail::thread_context::top_of_thread_call_stack(), p,
                                              sizeof(T) * n);
  }

  inline spawn_state_base* state() const noexcept { return state_; }
  template <class U>
  inline friend bool operator==(const operation_allocator& a, const operation_allocator<U>& b) noexcept {
    return a.state_ == b.state();
  }

 private:
  spawn_state_base* state_;
};

// ---------------------------------------------------------------------------------------------------------
// The executor that carries the coroutine's identity
// ---------------------------------------------------------------------------------------------------------

/// The spawn executor plus the address of the perfloc entry frame that owns the thread of execution.
template <class Inner>
class chunk_executor {
 public:
  inline chunk_executor(Inner inner, const void* owner) noexcept : inner_(std::move(inner)), owner_(owner) {}

  template <class Function>
  inline void execute(Function&& f) const {
    asio::execution::execute(inner_, std::forward<Function>(f));
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
                "must be polymorphic (boost::asio::any_io_executor, the default of asio::awaitable<T>)");
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

// ---------------------------------------------------------------------------------------------------------
// Asio 1.26 frame internals
// ---------------------------------------------------------------------------------------------------------

template <class Executor>
struct frame_access : asio_detail::awaitable_frame_base<Executor> {
  /// The thread a frame is attached to: protected in Asio, read through a member pointer of a derived class.
  static inline asio_detail::awaitable_thread<Executor>* thread_of(
      asio_detail::awaitable_frame_base<Executor>* frame) noexcept {
    return frame->*(&frame_access::attached_thread_);
  }
};

template <class Executor>
class entry_promise;

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

// ---------------------------------------------------------------------------------------------------------
// The entry point: frame and spawn state at the start of the chunk they open
// ---------------------------------------------------------------------------------------------------------

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

}  // namespace perfloc::detail

// ---------------------------------------------------------------------------------------------------------
// use_chunk
// ---------------------------------------------------------------------------------------------------------

export namespace perfloc {

/// A completion token like asio::use_awaitable: `co_await timer.async_wait(perfloc::use_chunk);`. The
/// operation's memory comes from the coroutine's chunk and is reused operation after operation, so a loop
/// over operations stays at a constant footprint. Completions on other threads are safe. In a coroutine that
/// perfloc::co_spawn did not start, it behaves exactly like use_awaitable.
template <class Executor = boost::asio::any_io_executor>
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

namespace boost::asio {

template <class Executor, class R, class... Args>
class async_result<perfloc::use_chunk_t<Executor>, R(Args...)>
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
class async_result<perfloc::detail::spawn_token<Executor>, R(Args...)>
    : public perfloc::detail::chunk_async_result<Executor, R(Args...)> {
  using base = perfloc::detail::chunk_async_result<Executor, R(Args...)>;

 public:
  template <class Initiation, class... InitArgs>
  static typename base::return_type initiate(Initiation initiation, perfloc::detail::spawn_token<Executor> token,
                                             InitArgs... args) {
    return base::initiate([state = token.state](auto*) { return state; }, std::move(initiation), std::move(args)...);
  }
};

}  // namespace boost::asio

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
template <class Executor = boost::asio::any_io_executor>
boost::asio::awaitable<std::reference_wrapper<process_chunk>, Executor> chunk() {
  detail::spawn_state_base* state = nullptr;
  // Asio runs a function taking the frame right after suspending, then resumes this frame from its pump loop:
  // no recursion and no post.
  co_await [&state](boost::asio::detail::awaitable_frame_base<Executor>* frame)
      -> boost::asio::detail::awaitable_thread<Executor>* {
    state = detail::state_of(frame);
    return nullptr;
  };
  if (!state)
    throw std::logic_error("perfloc::this_coro::chunk(): this coroutine was not started by perfloc::co_spawn");
  co_return std::ref(state->chunk);
}

}  // namespace perfloc::this_coro

// ---------------------------------------------------------------------------------------------------------
// co_spawn
// ---------------------------------------------------------------------------------------------------------

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

/// Asio 1.38's co_spawn_entry_point, with the chunk. The factory's coroutine is awaited inside the try
/// block, so a cancellation that arrives before its first resume (Asio's await_transform throws
/// operation_aborted when it is co_awaited) reaches the handler like any other error. A coroutine still
/// inside its launch leaves co_spawn's call first (one post), after turning off throw-on-cancellation: a
/// cancellation that arrived meanwhile must not make that post throw out of the pump (out of
/// io_context::run(), or std::terminate on a thread pool). The result or exception then goes through the
/// handler's associated executor.
template <class T, class Executor, class F, class Handler>
asio::awaitable<asio_detail::awaitable_thread_entry_point, Executor> spawn_entry(spawn_params<Executor>& params,
                                                                                 F factory, Handler handler) {
  // The body starts inside launch(), while `params` is alive.
  spawn_state<Executor>* state = params.state;
  auto spawn_work = asio_detail::make_co_spawn_work_guard(state->executor);
  auto handler_work = asio_detail::make_co_spawn_work_guard(asio::get_associated_executor(handler, state->executor));

  (void)co_await asio::dispatch(spawn_token<Executor>{state});

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
  if (launch_scope::launching(state)) {
    co_await asio::this_coro::throw_if_cancelled(false);
    (void)co_await asio::post(spawn_token<Executor>{state});
  }
  if constexpr (std::is_void_v<T>)
    asio::dispatch(handler_work.get_executor(), [handler = std::move(handler), e]() mutable { std::move(handler)(e); });
  else if (e)
    asio::dispatch(handler_work.get_executor(),
                   [handler = std::move(handler), e]() mutable { std::move(handler)(e, T()); });
  else
    asio::dispatch(handler_work.get_executor(), [handler = std::move(handler), t = std::move(*result)]() mutable {
      std::move(handler)(std::exception_ptr(), std::move(t));
    });
}

/// The handler placed in the caller's cancellation slot: it forwards to the spawn's own signal, whose slot
/// holds the coroutine's cancellation state. As Asio 1.38's co_spawn_cancellation_handler: for a handler
/// without an associated executor the emit is forwarded at once; otherwise it is dispatched through the
/// spawn executor, and the signal is shared by that dispatched emit, this handler and the coroutine (the
/// spawn state keeps a reference), so a caller's signal destroyed right after emit leaves nothing dangling
/// (Asio 1.26 kept the signal inside this handler: asio issue 1332).
template <class Handler, class Executor, class = void>
class spawn_cancellation {
 public:
  inline spawn_cancellation(const Handler&, const Executor& ex)
      : signal_(std::make_shared<asio::cancellation_signal>()), executor_(ex) {}

  inline asio::cancellation_slot slot() noexcept { return signal_->slot(); }
  inline std::shared_ptr<void> shared_signal() const noexcept { return signal_; }

  inline void operator()(asio::cancellation_type_t type) {
    asio::dispatch(executor_, [signal = signal_, type] { signal->emit(type); });
  }

 private:
  std::shared_ptr<asio::cancellation_signal> signal_;
  Executor executor_;
};

/// Whether `Handler` has an executor of its own. Asio 1.38 asks associated_executor's "unspecialised" marker,
/// which Asio 1.26's binders (bind_cancellation_slot) do not pass on: a bound slot would then look like a
/// bound executor and a cancellation emitted before run() would arrive after the coroutine's first resume.
/// Asking with system_executor as the default gives the same answer on every version (a handler bound to
/// system_executor itself runs inline anyway).
template <class Handler>
inline constexpr bool has_own_executor =
    !std::is_same_v<typename asio::associated_executor<Handler, asio::system_executor>::type, asio::system_executor>;

template <class Handler, class Executor>
class spawn_cancellation<Handler, Executor, std::enable_if_t<!has_own_executor<Handler>>> {
 public:
  inline spawn_cancellation(const Handler&, const Executor&) noexcept {}

  inline asio::cancellation_slot slot() noexcept { return signal_.slot(); }
  inline std::shared_ptr<void> shared_signal() const noexcept { return nullptr; }

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
      : top_(&top), executor_(unwrap_executor<AwaitableExecutor>(ex)), where_(where) {
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
    launch_scope launching(params.state);
    asio_detail::awaitable_handler<AwaitableExecutor, void>(std::move(entry), wrap_executor(executor_, params.owner),
                                                            proxy_slot, cancel_state)
        .launch();
  }

 private:
  top_chunk* top_;
  AwaitableExecutor executor_;
  std::source_location where_;
  char label_[47];  // what a process_chunk keeps of a label
  std::size_t label_size_ = 0;
};

template <class E>
concept spawn_executor = asio::execution::is_executor<E>::value || asio::is_executor<E>::value;

template <class F>
concept spawn_factory = requires { typename factory_traits<std::decay_t<F>>::awaitable_type; };

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
struct boost::asio::associator<Associator, perfloc::detail::chunk_task<F>, DefaultCandidate>
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

/// Starts the coroutine that `factory()` — or `factory(chunk)` — returns, on `ex`, with a process chunk of
/// its own taken from `top`, and delivers its result or exception to `token` exactly as asio::co_spawn does
/// (completion signature void(std::exception_ptr, T), or void(std::exception_ptr) for awaitable<void>).
/// The chunk is released when the coroutine's stack is destroyed: on completion, by an exception, by
/// cancellation, or when the io_context is destroyed with the coroutine suspended. Inside, the chunk is
/// `co_await perfloc::this_coro::chunk()` (or the factory's parameter); operations awaited with
/// perfloc::use_chunk take their memory from it. Executors of io_context and thread_pool cost no
/// allocation; a strand costs one (the executor wrapper does not fit any_io_executor's small buffer).
/// `where` (the caller's location) identifies the chunk in statistics and leak reports.
template <class Executor, class F, class CompletionToken>
  requires detail::spawn_executor<Executor> && detail::spawn_factory<F>
inline auto co_spawn(top_chunk& top, const Executor& ex, F&& factory, CompletionToken&& token,
                     std::source_location where = std::source_location::current()) {
  using traits = detail::factory_traits<std::decay_t<F>>;
  using signature = typename boost::asio::detail::awaitable_signature<typename traits::awaitable_type>::type;
  return boost::asio::async_initiate<CompletionToken, signature>(
      detail::initiate_spawn<typename traits::executor_type>(top, ex, where), token, std::forward<F>(factory));
}

/// As above, with a label for the coroutine's chunk (up to 47 bytes, copied), which statistics, reports,
/// the release hook and leak reports show: `perfloc::co_spawn(top, "connection", ex, factory, token)`.
template <class Executor, class F, class CompletionToken>
  requires detail::spawn_executor<Executor> && detail::spawn_factory<F>
inline auto co_spawn(top_chunk& top, std::string_view label, const Executor& ex, F&& factory,
                     CompletionToken&& token, std::source_location where = std::source_location::current()) {
  using traits = detail::factory_traits<std::decay_t<F>>;
  using signature = typename boost::asio::detail::awaitable_signature<typename traits::awaitable_type>::type;
  return boost::asio::async_initiate<CompletionToken, signature>(
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
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> && detail::spawn_factory<F>
inline auto co_spawn(top_chunk& top, ExecutionContext& ctx, F&& factory, CompletionToken&& token,
                     std::source_location where = std::source_location::current()) {
  return perfloc::co_spawn(top, ctx.get_executor(), std::forward<F>(factory), std::forward<CompletionToken>(token),
                           where);
}

template <class ExecutionContext, class F, class CompletionToken>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> && detail::spawn_factory<F>
inline auto co_spawn(ExecutionContext& ctx, F&& factory, CompletionToken&& token,
                     std::source_location where = std::source_location::current()) {
  return perfloc::co_spawn(default_top(), ctx.get_executor(), std::forward<F>(factory),
                           std::forward<CompletionToken>(token), where);
}

// ---------------------------------------------------------------------------------------------------------
// post: a plain task with its own chunk
// ---------------------------------------------------------------------------------------------------------

/// Runs `f(chunk)` on `ex` with a process chunk of its own from `top`, released right after f returns or
/// throws. The chunk is opened when the task runs, so a queued task holds none. The task keeps f's associated
/// executor, allocator and cancellation slot: `perfloc::post(ex, asio::bind_executor(strand, f))` runs f on
/// the strand, as asio::post does.
template <class Executor, class F>
  requires detail::spawn_executor<Executor> && std::is_invocable_v<std::decay_t<F>&, process_chunk&>
inline void post(top_chunk& top, const Executor& ex, F&& f,
                 std::source_location where = std::source_location::current()) {
  boost::asio::post(ex, detail::chunk_task<std::decay_t<F>>{&top, std::forward<F>(f), where});
}

/// As above, with the chunk from default_top().
template <class Executor, class F>
  requires detail::spawn_executor<Executor> && std::is_invocable_v<std::decay_t<F>&, process_chunk&>
inline void post(const Executor& ex, F&& f, std::source_location where = std::source_location::current()) {
  perfloc::post(default_top(), ex, std::forward<F>(f), where);
}

/// As above, on an execution context's executor.
template <class ExecutionContext, class F>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> &&
           std::is_invocable_v<std::decay_t<F>&, process_chunk&>
inline void post(ExecutionContext& ctx, F&& f, std::source_location where = std::source_location::current()) {
  perfloc::post(default_top(), ctx.get_executor(), std::forward<F>(f), where);
}

template <class ExecutionContext, class F>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> &&
           std::is_invocable_v<std::decay_t<F>&, process_chunk&>
inline void post(top_chunk& top, ExecutionContext& ctx, F&& f,
                 std::source_location where = std::source_location::current()) {
  perfloc::post(top, ctx.get_executor(), std::forward<F>(f), where);
}

// ---------------------------------------------------------------------------------------------------------
// Frames in a chunk
// ---------------------------------------------------------------------------------------------------------

/// A promise mixin: a coroutine whose first parameter is a `process_chunk&` (for a member function or a
/// lambda, the first after the object) has its frame allocated in that chunk; a coroutine of the same type
/// without one gets its frame from the global heap. The chunk must outlive the frame; the handle may move.
///
///     template <class T> struct generator {
///       struct promise_type : perfloc::chunk_frame_allocation { /* ... as usual ... */ };
///       // ...
///     };
///     generator<int> numbers(perfloc::process_chunk& chunk, int n) { for (int i = 0; i < n; ++i) co_yield i; }
///
/// asio::awaitable<T> coroutines get this without a mixin: `asio::awaitable<int> step(perfloc::process_chunk&,
/// int x)` has its frame in the chunk.
struct chunk_frame_allocation {
  template <class... Args>
  static inline void* operator new(std::size_t bytes, process_chunk& chunk, Args&...) {
    return allocate(allocator<std::byte>(chunk), bytes);
  }
  template <class Object, class... Args>
    requires(!std::is_same_v<std::remove_cvref_t<Object>, process_chunk>)
  static inline void* operator new(std::size_t bytes, Object&, process_chunk& chunk, Args&...) {
    return allocate(allocator<std::byte>(chunk), bytes);
  }
  static inline void* operator new(std::size_t bytes) {
    auto* header = static_cast<std::byte*>(::operator new(header_bytes + bytes));
    ::new (static_cast<void*>(header)) frame_header{};
    return header + header_bytes;
  }

  /// Frames of parallel children are freed on the threads the children finish on, at the same time: under the
  /// chunk's lock, as their creation is.
  static inline void operator delete(void* frame, std::size_t bytes) noexcept {
    auto* header = reinterpret_cast<frame_header*>(static_cast<std::byte*>(frame) - header_bytes);
    if (header->chunk) {
      allocator<std::byte> chunk = *header->chunk;
      std::lock_guard guard(detail::lock_of(chunk));
      chunk.deallocate(reinterpret_cast<std::byte*>(header), header_bytes + bytes);
    } else {
      ::operator delete(header, header_bytes + bytes);
    }
  }

 private:
  /// Before the frame: the chunk itself (perfloc::allocator holds the chunk, not the handle, so the handle
  /// may move while the frame lives), or the global heap.
  struct frame_header {
    std::optional<allocator<std::byte>> chunk;
  };
  static constexpr std::size_t header_bytes = alignof(std::max_align_t);
  static_assert(sizeof(frame_header) <= header_bytes);

  static inline void* allocate(allocator<std::byte> chunk, std::size_t bytes) {
    std::byte* header;
    {
      std::lock_guard guard(detail::lock_of(chunk));
      header = chunk.allocate(header_bytes + bytes);
    }
    ::new (static_cast<void*>(header)) frame_header{chunk};
    return header + header_bytes;
  }
};

}  // namespace perfloc

namespace perfloc::detail {

/// The promise of an asio::awaitable coroutine whose frame lives in a chunk.
template <class T, class Executor>
class chunk_frame : public derived_frame<asio_detail::awaitable_frame<T, Executor>, Executor>,
                    public chunk_frame_allocation {
 public:
  inline chunk_frame() noexcept {
    static_assert(alignof(chunk_frame) == alignof(asio_detail::awaitable_frame<T, Executor>),
                  "Asio's handles to the base promise need its alignment");
  }
  using chunk_frame_allocation::operator new;
  using chunk_frame_allocation::operator delete;
};

}  // namespace perfloc::detail

// Reachable from importers (specialisations need not, and cannot, be exported).
template <class T, class Executor, class... Args>
struct std::coroutine_traits<boost::asio::awaitable<T, Executor>, perfloc::process_chunk&, Args...> {
  using promise_type = perfloc::detail::chunk_frame<T, Executor>;
};

template <class T, class Executor, class Object, class... Args>
  requires(!std::is_same_v<std::remove_cvref_t<Object>, perfloc::process_chunk>)
struct std::coroutine_traits<boost::asio::awaitable<T, Executor>, Object, perfloc::process_chunk&, Args...> {
  using promise_type = perfloc::detail::chunk_frame<T, Executor>;
};

template <class Executor, class... Args>
struct std::coroutine_traits<boost::asio::awaitable<boost::asio::detail::awaitable_thread_entry_point, Executor>,
                             perfloc::detail::spawn_params<Executor>&, Args...> {
  using promise_type = perfloc::detail::entry_promise<Executor>;
};
