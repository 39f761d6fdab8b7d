// Tests of perfloc.asio: result and exception delivery, one chunk per coroutine, the chunk in nested
// awaitables, frames in chunks, io_context teardown with suspended coroutines, cancellation, operation memory
// (flat over long loops, safe across threads), post, and global operator new counted per coroutine.
#define BOOST_TEST_MODULE perfloc.asio
#include <boost/test/unit_test.hpp>

#include <boost/asio.hpp>
#include <boost/asio/experimental/parallel_group.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

import perfloc;

namespace asio = boost::asio;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------------------
// Counting global operator new (not under ThreadSanitizer: its runtime defines operator new, and a
// replacement does not link)
// ---------------------------------------------------------------------------------------------------------

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PERFLOC_TEST_NO_NEW_COUNT 1
#endif
#endif

#if defined(PERFLOC_TEST_NO_NEW_COUNT)
// Boost 1.81's detail::ref_count_down (a release fetch_sub, then an acquire atomic_thread_fence) is reported as
// a race when a heap-held any_io_executor target dies on another thread: ThreadSanitizer does not model
// fences (asio issue 1760, google/sanitizers 1352; fixed in later Asio with __tsan_acquire). A coroutine on a
// strand holds its executor on the heap (the wrapper is 32 bytes), so the strand test meets it.
extern "C" const char* __tsan_default_suppressions() {
  return "race:boost::asio::execution::detail::shared_target_executor\n"
         "race:boost::asio::detail::ref_count_down\n";
}
#endif

namespace {
std::atomic<long> global_news{0};
#if defined(PERFLOC_TEST_NO_NEW_COUNT)
constexpr bool counting_news = false;
#else
constexpr bool counting_news = true;
#endif
}  // namespace

#if !defined(PERFLOC_TEST_NO_NEW_COUNT)
void* operator new(std::size_t n) {
  global_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace {

#if defined(PERFLOC_TEST_NO_NEW_COUNT)
constexpr int long_loop = 100'000;  // ThreadSanitizer is slow; the footprint is flat long before this
#else
constexpr int long_loop = 1'000'000;
#endif

/// Records the destruction of objects made in chunks.
struct counted {
  static inline std::atomic<int> alive{0};
  counted() { ++alive; }
  ~counted() { --alive; }
};

/// Makes `object` escape, so the optimizer cannot elide a coroutine frame allocation (HALO): an elided frame
/// lives in its caller's frame and never reaches the chunk, which is fine, but invisible to these tests.
template <class T>
void escape(T& object) {
  asm volatile("" : : "r"(&object) : "memory");
}

asio::awaitable<perfloc::process_chunk*> chunk_at_depth(int depth) {
  perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
  if (depth == 0) co_return &chunk;
  perfloc::process_chunk* below = co_await chunk_at_depth(depth - 1);
  co_return below == &chunk ? &chunk : nullptr;
}

asio::awaitable<int> framed(perfloc::process_chunk& chunk, int x) {
  perfloc::process_chunk& mine = co_await perfloc::this_coro::chunk();
  co_return &mine == &chunk ? x + 1 : -1;
}

asio::awaitable<int> framed_outside(perfloc::process_chunk&, int x) { co_return x * 3; }

struct holder {
  int base = 10;
  asio::awaitable<int> member(perfloc::process_chunk&, int x) { co_return base + x; }
};

/// A user coroutine type taking its frame from a chunk through the promise mixin.
template <class T>
struct generator {
  struct promise_type : perfloc::chunk_frame_allocation {
    T value{};
    generator get_return_object() { return generator{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    std::suspend_always yield_value(T v) {
      value = v;
      return {};
    }
    void return_void() {}
    void unhandled_exception() { throw; }
  };
  explicit generator(std::coroutine_handle<promise_type> h) : handle(h) {}
  generator(generator&& other) noexcept : handle(std::exchange(other.handle, {})) {}
  ~generator() {
    if (handle) handle.destroy();
  }
  bool next() {
    handle.resume();
    return !handle.done();
  }
  T value() const { return handle.promise().value; }
  std::coroutine_handle<promise_type> handle;
};

generator<int> numbers(perfloc::process_chunk&, int n) {
  for (int i = 0; i < n; ++i) co_yield i;
}
generator<int> heap_numbers(int n) {
  for (int i = 0; i < n; ++i) co_yield i;
}

/// An operation whose memory traffic happens on four threads at once, through the handler's allocator.
template <class Token>
auto async_allocate_on_threads(asio::thread_pool& pool, Token&& token) {
  return asio::async_initiate<Token, void()>(
      [&pool](auto handler) {
        using handler_type = decltype(handler);
        auto memory = asio::get_associated_allocator(handler);
        using byte_allocator = typename std::allocator_traits<decltype(memory)>::template rebind_alloc<std::byte>;
        auto remaining = std::make_shared<std::atomic<int>>(4);
        auto shared = std::make_shared<handler_type>(std::move(handler));
        for (int t = 0; t < 4; ++t)
          asio::post(pool, [memory, remaining, shared, t] {
            byte_allocator a(memory);
            for (int i = 0; i < 2000; ++i) {
              const std::size_t n = 32 + 64 * ((i + t) % 8);
              std::byte* p = a.allocate(n);
              p[0] = std::byte{1};
              p[n - 1] = std::byte{2};
              a.deallocate(p, n);
            }
            if (remaining->fetch_sub(1) == 1) {
              auto ex = asio::get_associated_executor(*shared);
              asio::dispatch(ex, std::move(*shared));
            }
          });
      },
      token);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// co_spawn: delivery
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(co_spawn_delivers_the_result_through_the_executor_never_inline) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  int value = 0;
  std::exception_ptr error;
  perfloc::co_spawn(top, ctx, []() -> asio::awaitable<int> { co_return 42; },
                    [&](std::exception_ptr e, int v) { error = e, value = v; });
  BOOST_TEST(value == 0);
  ctx.run();
  BOOST_TEST(!error);
  BOOST_TEST(value == 42);

  // Even when started from inside a handler of the same io_context, where the coroutine runs inline.
  ctx.restart();
  bool delivered_inside = false;
  asio::post(ctx, [&] {
    perfloc::co_spawn(top, ctx, []() -> asio::awaitable<int> { co_return 1; },
                      [&](std::exception_ptr, int v) { value = v; });
    delivered_inside = value == 1;
  });
  ctx.run();
  BOOST_TEST(!delivered_inside);
  BOOST_TEST(value == 1);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(co_spawn_delivers_exceptions_void_results_and_move_only_results) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  std::exception_ptr error;
  int value = -1;
  perfloc::co_spawn(top, ctx, []() -> asio::awaitable<int> {
    throw std::runtime_error("boom");
    co_return 1;
  }, [&](std::exception_ptr e, int v) { error = e, value = v; });
  bool factory_threw = false;
  perfloc::co_spawn(top, ctx, []() -> asio::awaitable<int> { throw std::runtime_error("factory"); },
                    [&](std::exception_ptr e, int) { factory_threw = e != nullptr; });
  bool void_done = false;
  perfloc::co_spawn(top, ctx, []() -> asio::awaitable<void> { co_return; },
                    [&](std::exception_ptr e) { void_done = !e; });
  std::unique_ptr<int> moved;
  perfloc::co_spawn(top, ctx, []() -> asio::awaitable<std::unique_ptr<int>> { co_return std::make_unique<int>(5); },
                    [&](std::exception_ptr, std::unique_ptr<int> p) { moved = std::move(p); });
  ctx.run();
  BOOST_REQUIRE(error);
  BOOST_TEST(value == 0);  // T() with the exception, as asio::co_spawn
  BOOST_CHECK_EXCEPTION(std::rethrow_exception(error), std::runtime_error,
                        [](const std::runtime_error& e) { return std::string(e.what()) == "boom"; });
  BOOST_TEST(factory_threw);
  BOOST_TEST(void_done);
  BOOST_TEST((moved && *moved == 5));
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(co_spawn_works_with_other_completion_tokens) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  auto future = perfloc::co_spawn(top, ctx.get_executor(), [](perfloc::process_chunk& chunk) -> asio::awaitable<int> {
    perfloc::process_chunk& same = co_await perfloc::this_coro::chunk();
    co_return &same == &chunk ? 7 : -1;
  }, asio::use_future);
  auto deferred = perfloc::co_spawn(top, ctx, []() -> asio::awaitable<int> { co_return 3; }, asio::deferred);
  BOOST_TEST(top.stats().live_chunks == 1u);  // a deferred operation has not started
  int deferred_value = 0;
  std::move(deferred)([&](std::exception_ptr, int v) { deferred_value = v; });
  int awaited = 0;
  asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    awaited = co_await perfloc::co_spawn(top, ctx, []() -> asio::awaitable<int> { co_return 9; }, asio::use_awaitable);
  }, asio::detached);
  ctx.run();
  BOOST_TEST(future.get() == 7);
  BOOST_TEST(deferred_value == 3);
  BOOST_TEST(awaited == 9);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

// ---------------------------------------------------------------------------------------------------------
// co_spawn: one chunk per coroutine, released with its frame
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(a_hundred_coroutines_alive_at_once_have_a_hundred_chunks) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  asio::steady_timer gate(ctx, asio::steady_timer::time_point::max());
  std::vector<perfloc::process_chunk*> seen;
  int done = 0;
  for (int i = 0; i < 100; ++i)
    perfloc::co_spawn(top, ctx, [&]() -> asio::awaitable<void> {
      perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
      chunk.make<counted>();
      seen.push_back(&chunk);
      boost::system::error_code ec;
      co_await gate.async_wait(asio::redirect_error(perfloc::use_chunk, ec));
    }, [&](std::exception_ptr) { ++done; });
  ctx.poll();
  BOOST_TEST(top.stats().live_chunks == 100u);
  BOOST_TEST(counted::alive == 100);
  std::sort(seen.begin(), seen.end());
  BOOST_TEST(seen.size() == 100u);
  BOOST_TEST((std::adjacent_find(seen.begin(), seen.end()) == seen.end()));
  gate.cancel();
  ctx.run();
  BOOST_TEST(done == 100);
  BOOST_TEST(counted::alive == 0);
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(a_labelled_spawn_labels_its_chunk_even_with_a_deferred_token) {
  asio::io_context ctx;
  std::vector<std::string> released;
  perfloc::top_chunk top{perfloc::top_options{.on_release = [&](const perfloc::chunk_summary& s) {
    released.emplace_back(s.label);
  }}};
  asio::steady_timer gate(ctx, asio::steady_timer::time_point::max());
  auto body = [&]() -> asio::awaitable<void> {
    boost::system::error_code ec;
    co_await gate.async_wait(asio::redirect_error(perfloc::use_chunk, ec));
  };
  perfloc::co_spawn(top, "connection 1", ctx.get_executor(), body, asio::detached);
  auto deferred = [&] {
    const std::string label = "connection " + std::to_string(2);  // gone before the initiation runs
    return perfloc::co_spawn(top, label, ctx.get_executor(), body, asio::deferred);
  }();
  std::move(deferred)(asio::detached);
  ctx.poll();
  std::vector<std::string> live;
  top.for_each_chunk([&](const perfloc::chunk_summary& s) { live.emplace_back(s.label); });
  std::sort(live.begin(), live.end());
  BOOST_TEST(live == (std::vector<std::string>{"connection 1", "connection 2"}), boost::test_tools::per_element());
  gate.cancel();
  ctx.run();
  std::sort(released.begin(), released.end());
  BOOST_TEST(released == (std::vector<std::string>{"connection 1", "connection 2"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(destroying_the_io_context_with_suspended_coroutines_releases_their_chunks) {
  perfloc::top_chunk top;
  {
    asio::io_context ctx;
    for (int i = 0; i < 50; ++i)
      perfloc::co_spawn(top, ctx, [&]() -> asio::awaitable<void> {
        perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
        for (int k = 0; k < 10; ++k) chunk.make<counted>();
        chunk.make<std::vector<int>>(100, 1);
        asio::steady_timer timer(co_await asio::this_coro::executor, 1h);
        co_await timer.async_wait(perfloc::use_chunk);  // operation memory from the chunk, freed at teardown
      }, asio::detached);
    ctx.poll();  // all 50 wait on their timers
    for (int i = 0; i < 50; ++i)
      perfloc::co_spawn(top, ctx, [&]() -> asio::awaitable<void> {
        co_await asio::post(perfloc::use_chunk);
        co_await asio::post(perfloc::use_chunk);
      }, asio::detached);
    ctx.run_one();  // these wait in the scheduler's queue
    BOOST_TEST(top.stats().live_chunks == 100u);
    BOOST_TEST(counted::alive == 500);
  }  // under the asan preset, any touch of a released chunk during teardown is reported here
  BOOST_TEST(counted::alive == 0);
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(destroying_the_io_context_while_a_parent_awaits_a_child_releases_both) {
  perfloc::top_chunk top;
  {
    asio::io_context ctx;
    perfloc::co_spawn(top, ctx, [&]() -> asio::awaitable<void> {
      perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
      chunk.make<counted>();
      co_await perfloc::co_spawn(top, co_await asio::this_coro::executor, [&]() -> asio::awaitable<void> {
        (co_await perfloc::this_coro::chunk()).get().make<counted>();
        asio::steady_timer timer(co_await asio::this_coro::executor, 1h);
        co_await timer.async_wait(perfloc::use_chunk);
      }, perfloc::use_chunk);
    }, asio::detached);
    ctx.run_for(20ms);
    BOOST_TEST(top.stats().live_chunks == 2u);
  }
  BOOST_TEST(counted::alive == 0);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(cancellation_completes_with_operation_aborted_and_releases_the_chunk) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  asio::cancellation_signal signal;
  std::exception_ptr error;
  perfloc::co_spawn(top, ctx, []() -> asio::awaitable<void> {
    asio::steady_timer timer(co_await asio::this_coro::executor, 1h);
    co_await timer.async_wait(perfloc::use_chunk);
  }, asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) { error = e; }));
  ctx.poll();
  BOOST_TEST(top.stats().live_chunks == 1u);
  signal.emit(asio::cancellation_type::terminal);
  ctx.run();
  BOOST_REQUIRE(error);
  BOOST_CHECK_EXCEPTION(std::rethrow_exception(error), boost::system::system_error,
                        [](const boost::system::system_error& e) {
                          return e.code() == asio::error::operation_aborted;
                        });
  BOOST_TEST(top.stats().live_chunks == 0u);
}

// ---------------------------------------------------------------------------------------------------------
// this_coro::chunk
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(nested_awaitables_see_the_same_chunk) {
  asio::io_context ctx;
  bool same = false;
  perfloc::co_spawn(ctx, []() -> asio::awaitable<bool> {
    perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
    co_return co_await chunk_at_depth(6) == &chunk;
  }, [&](std::exception_ptr e, bool r) { same = !e && r; });
  ctx.run();
  BOOST_TEST(same);
}

BOOST_AUTO_TEST_CASE(coroutines_spawned_inside_get_their_own_chunk_and_asio_children_get_none) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  bool different = false, asio_child_threw = false, asio_child_done = false;
  perfloc::co_spawn(top, ctx, [&]() -> asio::awaitable<void> {
    perfloc::process_chunk& parent = co_await perfloc::this_coro::chunk();
    auto ex = co_await asio::this_coro::executor;  // carries the parent's identity
    auto child_factory = []() -> asio::awaitable<perfloc::process_chunk*> {
      co_return &(co_await perfloc::this_coro::chunk()).get();
    };
    perfloc::process_chunk* child = co_await perfloc::co_spawn(top, ex, child_factory, perfloc::use_chunk);
    different = child != &parent;
    // A coroutine started by plain asio::co_spawn inherits the executor but is another thread of execution
    // (it could run elsewhere, or outlive the parent): it must not reach the parent's chunk.
    co_await asio::co_spawn(ex, [&]() -> asio::awaitable<void> {
      try {
        (void)co_await perfloc::this_coro::chunk();
      } catch (const std::logic_error&) {
        asio_child_threw = true;
      }
      co_await asio::post(perfloc::use_chunk);  // falls back to Asio's own operation memory
      asio_child_done = true;
    }, perfloc::use_chunk);
  }, asio::detached);
  ctx.run();
  BOOST_TEST(different);
  BOOST_TEST(asio_child_threw);
  BOOST_TEST(asio_child_done);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(this_coro_chunk_in_a_long_loop_does_not_grow_the_stack) {
  asio::io_context ctx;
  std::uintptr_t first = 0, last = 0;
  perfloc::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 200'000; ++i) {
      perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
      // Would overflow the stack if every call nested the pump (an async operation completing inline does).
      const auto here = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
      (i == 0 ? first : last) = here;
      (void)chunk;
    }
  }, asio::detached);
  ctx.run();
  BOOST_TEST(first == last);
}

BOOST_AUTO_TEST_CASE(this_coro_chunk_outside_perfloc_throws) {
  asio::io_context ctx;
  bool threw = false;
  asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    try {
      (void)co_await perfloc::this_coro::chunk();
    } catch (const std::logic_error&) {
      threw = true;
    }
  }, asio::detached);
  ctx.run();
  BOOST_TEST(threw);
}

// ---------------------------------------------------------------------------------------------------------
// Frames in chunks
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(awaitables_taking_a_chunk_have_their_frame_in_it) {
  asio::io_context ctx;
  std::size_t before = 0, during = 0, after = 0, lambda_during = 0, member_during = 0, after_loop = 0;
  int r1 = 0, r2 = 0, r3 = 0;
  perfloc::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
    before = chunk.stats().in_use_bytes;
    auto a = framed(chunk, 41);
    escape(a);
    during = chunk.stats().in_use_bytes;
    r1 = co_await std::move(a);
    after = chunk.stats().in_use_bytes;
    auto lambda = [](perfloc::process_chunk&, int x) -> asio::awaitable<int> { co_return x * 2; };
    auto b = lambda(chunk, 4);
    escape(b);
    lambda_during = chunk.stats().in_use_bytes;
    r2 = co_await std::move(b);
    holder h;
    auto m = h.member(chunk, 5);
    escape(m);
    member_during = chunk.stats().in_use_bytes;
    r3 = co_await std::move(m);
    for (int i = 0; i < 100'000; ++i) (void)co_await framed(chunk, i);
    after_loop = chunk.stats().in_use_bytes;
  }, asio::detached);
  ctx.run();
  BOOST_TEST(during > before);
  BOOST_TEST(after == before);
  BOOST_TEST(lambda_during > before);
  BOOST_TEST(member_during > before);
  BOOST_TEST(after_loop == before);
  BOOST_TEST(r1 == 42);
  BOOST_TEST(r2 == 8);
  BOOST_TEST(r3 == 15);
}

BOOST_AUTO_TEST_CASE(a_factory_taking_the_chunk_has_its_frame_in_it) {
  asio::io_context ctx;
  std::size_t at_start = 0;
  perfloc::co_spawn(ctx, [&](perfloc::process_chunk& chunk) -> asio::awaitable<void> {
    at_start = chunk.stats().in_use_bytes;  // the spawn state and the entry frame, and this frame
    co_return;
  }, asio::detached);
  std::size_t plain = 0;
  perfloc::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    plain = (co_await perfloc::this_coro::chunk()).get().stats().in_use_bytes;
  }, asio::detached);
  ctx.run();
  BOOST_TEST(at_start > plain);
}

BOOST_AUTO_TEST_CASE(the_promise_mixin_puts_any_coroutine_frame_in_a_chunk) {
  perfloc::process_chunk chunk;
  const std::size_t before = chunk.stats().in_use_bytes;
  int sum = 0;
  {
    auto g = numbers(chunk, 5);
    escape(g);
    BOOST_TEST(chunk.stats().in_use_bytes > before);
    perfloc::process_chunk moved = std::move(chunk);  // the frame refers to the chunk, not to the handle
    while (g.next()) sum += g.value();
    auto h = heap_numbers(3);  // same promise type, no chunk: global heap
    while (h.next()) sum += h.value();
    chunk = std::move(moved);
  }
  BOOST_TEST(sum == 10 + 3);
  BOOST_TEST(chunk.stats().in_use_bytes == before);

  // An asio::awaitable taking a chunk, outside any perfloc coroutine.
  asio::io_context ctx;
  int value = 0;
  asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    auto a = framed_outside(chunk, 4);
    escape(a);
    BOOST_TEST(chunk.stats().in_use_bytes > before);
    value = co_await std::move(a);
  }, asio::detached);
  ctx.run();
  BOOST_TEST(value == 12);
  BOOST_TEST(chunk.stats().in_use_bytes == before);
}

// ---------------------------------------------------------------------------------------------------------
// use_chunk: operation memory
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(operation_memory_comes_from_the_chunk_also_through_token_adapters) {
  asio::io_context ctx;
  std::size_t grew_plain = 0, grew_tuple = 0, grew_redirect = 0, grew_awaitable = 0;
  auto spawn = [&](std::size_t& grew, auto wait) {
    perfloc::co_spawn(ctx, [&grew, wait]() -> asio::awaitable<void> {
      perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
      asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::min());
      const std::size_t before = chunk.stats().in_use_bytes;
      co_await wait(timer);  // the wait's memory stays in the chunk's recycler afterwards
      grew = chunk.stats().in_use_bytes - before;
    }, asio::detached);
  };
  spawn(grew_plain, [](asio::steady_timer& t) { return t.async_wait(perfloc::use_chunk); });
  spawn(grew_tuple, [](asio::steady_timer& t) -> asio::awaitable<void> {
    auto [ec] = co_await t.async_wait(asio::as_tuple(perfloc::use_chunk));
    (void)ec;
  });
  spawn(grew_redirect, [](asio::steady_timer& t) -> asio::awaitable<void> {
    boost::system::error_code ec;
    co_await t.async_wait(asio::redirect_error(perfloc::use_chunk, ec));
  });
  spawn(grew_awaitable, [](asio::steady_timer& t) { return t.async_wait(asio::use_awaitable); });
  ctx.run();
  BOOST_TEST(grew_plain > 0u);
  BOOST_TEST(grew_tuple > 0u);
  BOOST_TEST(grew_redirect > 0u);
  BOOST_TEST(grew_awaitable == 0u);  // use_awaitable: Asio's own per-thread memory
}

BOOST_AUTO_TEST_CASE(a_long_loop_of_operations_stays_at_a_constant_footprint) {
  asio::io_context ctx;
  std::size_t early = 0, late = 0;
  perfloc::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (int i = 0; i < long_loop; ++i) {
      if (i % 16) {  // timer waits re-arm the reactor's timerfd: a system call each, so fewer of them
        co_await asio::post(perfloc::use_chunk);
      } else {
        timer.expires_at(asio::steady_timer::time_point::min());
        co_await timer.async_wait(perfloc::use_chunk);
      }
      if (i == 1000) early = chunk.stats().in_use_bytes;
    }
    late = chunk.stats().in_use_bytes;
  }, asio::detached);
  ctx.run();
  BOOST_TEST(early > 0u);
  BOOST_TEST(late == early);
}

BOOST_AUTO_TEST_CASE(operation_memory_comes_from_the_chunk_for_sockets_too) {
  asio::io_context ctx;
  asio::local::stream_protocol::socket a(ctx), b(ctx);
  asio::local::connect_pair(a, b);
  std::string got;
  bool eof = false;
  std::size_t early = 0, late = 0;
  perfloc::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
    char buffer[64];
    for (int i = 0; i < 2000; ++i) {
      co_await asio::async_write(a, asio::buffer("ping", 4), perfloc::use_chunk);
      const std::size_t n = co_await b.async_read_some(asio::buffer(buffer), perfloc::use_chunk);
      if (i == 10) early = chunk.stats().in_use_bytes;
      if (i == 1999) got.assign(buffer, n);
    }
    late = chunk.stats().in_use_bytes;
    a.close();
    try {
      co_await b.async_read_some(asio::buffer(buffer), perfloc::use_chunk);
    } catch (const boost::system::system_error& e) {  // errors arrive as exceptions, as with use_awaitable
      eof = e.code() == asio::error::eof;
    }
  }, asio::detached);
  ctx.run();
  BOOST_TEST(got == "ping");
  BOOST_TEST(eof);
  BOOST_TEST(early > 0u);
  BOOST_TEST(late == early);
}

BOOST_AUTO_TEST_CASE(operation_memory_given_back_on_several_threads_at_once_is_safe) {
  asio::thread_pool pool(4);
  asio::io_context ctx;
  std::size_t before = 0, after = 0;
  perfloc::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
    before = chunk.stats().in_use_bytes;
    for (int i = 0; i < 50; ++i) co_await async_allocate_on_threads(pool, perfloc::use_chunk);
    after = chunk.stats().in_use_bytes;
  }, asio::detached);
  ctx.run();
  pool.join();
  // Reused, not grown: each of 4 threads holds at most one block of each class used (64..512 B) at a time.
  BOOST_TEST(after > before);
  BOOST_TEST(after - before <= 4u * (64 + 128 + 256 + 512) + 1024);
}

BOOST_AUTO_TEST_CASE(thousands_of_coroutines_on_a_multi_threaded_io_context) {
  perfloc::top_chunk top;
  asio::io_context ctx(4);
  std::atomic<int> done{0}, wrong{0};
  constexpr int coroutines = 3000;
  for (int i = 0; i < coroutines; ++i)
    perfloc::co_spawn(top, ctx, [&, i]() -> asio::awaitable<void> {
      perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
      auto ex = co_await asio::this_coro::executor;
      asio::steady_timer timer(ex);
      for (int k = 0; k < 10; ++k) {
        int* p = chunk.make<int>(k);
        timer.expires_after(std::chrono::microseconds((i * 7 + k) % 50));
        co_await timer.async_wait(perfloc::use_chunk);
        co_await asio::post(ex, perfloc::use_chunk);  // may resume on another thread
        if (*p != k || &(co_await perfloc::this_coro::chunk()).get() != &chunk) ++wrong;
      }
      // Operations in parallel, completing on different threads.
      asio::steady_timer a(ex, 10us), b(ex, 20us);
      auto [order, ea, eb] = co_await asio::experimental::make_parallel_group(a.async_wait(asio::deferred),
                                                                              b.async_wait(asio::deferred))
                                 .async_wait(asio::experimental::wait_for_all(), perfloc::use_chunk);
      if (ea || eb) ++wrong;
      (void)order;
      ++done;
    }, asio::detached);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&] { ctx.run(); });
  for (auto& t : threads) t.join();
  BOOST_TEST(done == coroutines);
  BOOST_TEST(wrong == 0);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(thread_pool_and_strand_executors) {
  asio::thread_pool pool(2);
  perfloc::top_chunk top;
  std::atomic<int> done{0};
  auto strand = asio::make_strand(pool.get_executor());
  for (int i = 0; i < 200; ++i) {
    perfloc::co_spawn(top, pool.get_executor(), [&]() -> asio::awaitable<void> {
      (co_await perfloc::this_coro::chunk()).get().make<int>(1);
      co_await asio::post(perfloc::use_chunk);
      ++done;
    }, asio::detached);
    perfloc::co_spawn(top, strand, [&]() -> asio::awaitable<void> {
      (co_await perfloc::this_coro::chunk()).get().make<int>(1);
      co_await asio::post(perfloc::use_chunk);
      ++done;
    }, asio::detached);
  }
  pool.join();
  BOOST_TEST(done == 400);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

// ---------------------------------------------------------------------------------------------------------
// post
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(post_runs_a_task_with_its_own_chunk_released_when_it_returns) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  std::uint64_t live_inside = 0;
  std::size_t used = 0;
  perfloc::post(top, ctx.get_executor(), [&](perfloc::process_chunk& chunk) {
    live_inside = top.stats().live_chunks;
    chunk.make<counted>();
    chunk.make<std::vector<int>>(10);
    used = chunk.stats().in_use_bytes;
  });
  perfloc::post(top, ctx, [&](perfloc::process_chunk& chunk) {
    chunk.make<counted>();
    throw std::runtime_error("task failed");
  });
  BOOST_TEST(top.stats().live_chunks == 0u);  // opened when the task runs
  ctx.run_one();
  BOOST_TEST(live_inside == 1u);
  BOOST_TEST(used > 0u);
  BOOST_TEST(counted::alive == 0);
  BOOST_CHECK_THROW(ctx.run(), std::runtime_error);  // as with asio::post: out of run()
  BOOST_TEST(counted::alive == 0);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

// ---------------------------------------------------------------------------------------------------------
// Costs
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(global_new_per_coroutine_is_no_more_than_asio_co_spawn) {
  if (!counting_news) {
    BOOST_TEST_MESSAGE("operator new is not counted under ThreadSanitizer");
    return;
  }
  asio::io_context ctx;
  auto news_per_100 = [&](auto spawn) {
    for (int warm = 0; warm < 3; ++warm) {
      for (int i = 0; i < 100; ++i) spawn();
      ctx.run();
      ctx.restart();
    }
    const long before = global_news.load();
    for (int round = 0; round < 10; ++round) {
      for (int i = 0; i < 10; ++i) spawn();
      ctx.run();
      ctx.restart();
    }
    return global_news.load() - before;
  };
  const long asio_empty = news_per_100([&] {
    asio::co_spawn(ctx, []() -> asio::awaitable<void> { co_return; }, asio::detached);
  });
  const long perfloc_empty = news_per_100([&] {
    perfloc::co_spawn(ctx, []() -> asio::awaitable<void> { co_return; }, asio::detached);
  });
  const long asio_operations = news_per_100([&] {
    asio::co_spawn(ctx, []() -> asio::awaitable<void> {
      asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::min());
      co_await timer.async_wait(asio::use_awaitable);
      co_await asio::post(asio::use_awaitable);
    }, asio::detached);
  });
  const long perfloc_operations = news_per_100([&] {
    perfloc::co_spawn(ctx, [](perfloc::process_chunk& chunk) -> asio::awaitable<void> {
      for (int i = 0; i < 8; ++i) chunk.make<std::array<char, 100>>();  // 8 allocations, none from new
      asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::min());
      co_await timer.async_wait(perfloc::use_chunk);
      co_await asio::post(perfloc::use_chunk);
    }, asio::detached);
  });
  BOOST_TEST_MESSAGE("global new per 100 coroutines: empty asio " << asio_empty << ", perfloc " << perfloc_empty
                                                                   << "; with operations asio " << asio_operations
                                                                   << ", perfloc " << perfloc_operations);
  BOOST_TEST(perfloc_empty <= asio_empty);
  BOOST_TEST(perfloc_operations <= asio_operations);
  BOOST_TEST(perfloc_empty == 0);
}
