// Tests of perfloc.asio, second part (issue 14): heap calls per spawned coroutine counted at the malloc level,
// this_coro::chunk() in a cancelled coroutine, and results or exceptions that point into the chunk being
// released. A separate executable from asio.test.cpp, because it replaces the malloc family.
#define BOOST_TEST_MODULE perfloc.asio_v2
#include <boost/test/unit_test.hpp>

// Boost.Asio, or standalone Asio when perfloc is built with PERFLOC_STANDALONE_ASIO (as asio.test.cpp).
#if defined(PERFLOC_STANDALONE_ASIO)
#include <asio.hpp>
#else
#include <boost/asio.hpp>
#endif

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define PERFLOC_TEST_UNDER_SANITIZER 1
#endif
#endif

#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <future>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <malloc.h>  // memalign, valloc, pvalloc

#include "death.hpp"
#include "perfloc/detail/asio_entry_kinds.hpp"  // the table behind perfloc::co_spawn's entry kinds, filled small here
#if !defined(PERFLOC_TEST_UNDER_SANITIZER)
#include "../../bench/heap_calls.hpp"  // defines malloc and its family, counting each call
#endif

import perfloc;

#if defined(PERFLOC_STANDALONE_ASIO)
namespace sys = ::asio;
#else
namespace asio = boost::asio;
namespace sys = boost::system;
#endif
using namespace std::chrono_literals;

// Heap calls are counted at the malloc level by bench/heap_calls.hpp, which replaces the malloc family. Under a
// sanitizer, whose runtime owns malloc (and whose malloc hook does not see aligned_alloc), the count is not
// taken.

namespace {

template <class T>
void escape(T& object) {
  asm volatile("" : : "r"(&object) : "memory");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// 14.8: heap calls per spawned coroutine
// ---------------------------------------------------------------------------------------------------------

#if !defined(PERFLOC_TEST_UNDER_SANITIZER)
namespace {

constexpr int alive_at_once = 2000;

/// Heap calls of one round of `alive_at_once` spawns, all spawned before run() (so all are alive at once,
/// each waiting on its timer), after two rounds that warm every cache and pool.
template <class Spawn>
long heap_calls_per_round(asio::io_context& ctx, Spawn spawn) {
  for (int warm = 0; warm < 2; ++warm) {
    for (int i = 0; i < alive_at_once; ++i) spawn();
    ctx.run();
    ctx.restart();
  }
  const long before = perfloc_heap_calls::count.load();
  for (int i = 0; i < alive_at_once; ++i) spawn();
  ctx.run();
  ctx.restart();
  return perfloc_heap_calls::count.load() - before;
}

}  // namespace
#endif

BOOST_AUTO_TEST_CASE(no_heap_call_per_coroutine_with_two_thousand_alive_waiting_on_timers_with_use_chunk) {
#if defined(PERFLOC_TEST_UNDER_SANITIZER)
  BOOST_TEST_MESSAGE("not counted under a sanitizer: its runtime owns malloc");
#else
  {  // the counter sees operator new and aligned_alloc, or the comparison below would hold vacuously
    const long before = perfloc_heap_calls::count.load();
    auto* probe = new int(1);
    escape(probe);
    delete probe;
    void* aligned = std::aligned_alloc(64, 64);
    escape(aligned);
    std::free(aligned);
    BOOST_REQUIRE(perfloc_heap_calls::count.load() == before + 2);
  }
  asio::io_context ctx(1);
  perfloc::top_chunk top;
  int completed = 0;
  const long asio_calls = heap_calls_per_round(ctx, [&] {
    asio::co_spawn(ctx, [&]() -> asio::awaitable<void> {
      asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::min());
      co_await timer.async_wait(asio::use_awaitable);
      ++completed;
    }, asio::detached);
  });
  BOOST_TEST(completed == 3 * alive_at_once);
  const long perfloc_calls = heap_calls_per_round(ctx, [&] {
    perfloc::co_spawn(top, ctx, [&](perfloc::process_chunk&) -> asio::awaitable<void> {
      asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::min());
      co_await timer.async_wait(perfloc::use_chunk);
      ++completed;
    }, asio::detached);
  });
  BOOST_TEST(completed == 6 * alive_at_once);
  BOOST_TEST_MESSAGE("heap calls per coroutine, " << alive_at_once << " alive: asio::co_spawn "
                                                  << double(asio_calls) / alive_at_once << ", perfloc::co_spawn "
                                                  << double(perfloc_calls) / alive_at_once);
  BOOST_TEST(asio_calls >= alive_at_once);  // Asio's caches hold a few blocks: 2 000 at once exceed them
  BOOST_TEST(perfloc_calls == 0);
  BOOST_TEST(top.stats().live_chunks == 0u);
#endif
}

// ---------------------------------------------------------------------------------------------------------
// The counter itself (bench/heap_calls.hpp): every allocating function of the malloc family counts once, and
// its replacements keep the C and POSIX contracts of the functions they replace
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(every_allocating_function_of_the_malloc_family_is_counted_once) {
#if defined(PERFLOC_TEST_UNDER_SANITIZER)
  BOOST_TEST_MESSAGE("not counted under a sanitizer: its runtime owns malloc");
#else
  const auto counted = [](auto call) {
    const long before = perfloc_heap_calls::count.load();
    void* p = call();
    escape(p);
    const long calls = perfloc_heap_calls::count.load() - before;
    std::free(p);
    return calls;
  };
  BOOST_TEST(counted([] { return std::malloc(24); }) == 1);
  BOOST_TEST(counted([] { return std::calloc(3, 8); }) == 1);
  BOOST_TEST(counted([] { return std::realloc(nullptr, 24); }) == 1);
  BOOST_TEST(counted([] { return ::reallocarray(nullptr, 3, 8); }) == 1);
  BOOST_TEST(counted([] { return std::aligned_alloc(64, 64); }) == 1);
  BOOST_TEST(counted([] { return ::memalign(64, 24); }) == 1);
  BOOST_TEST(counted([] { return ::valloc(24); }) == 1);
  BOOST_TEST(counted([] { return ::pvalloc(24); }) == 1);
  BOOST_TEST(counted([] {
    void* p = nullptr;
    BOOST_TEST(::posix_memalign(&p, 64, 24) == 0);
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(p) % 64 == 0u);
    return p;
  }) == 1);
#endif
}

BOOST_AUTO_TEST_CASE(posix_memalign_answers_einval_for_a_bad_alignment_and_enomem_when_out_of_memory) {
#if defined(PERFLOC_TEST_UNDER_SANITIZER)
  BOOST_TEST_MESSAGE("the sanitizer's own posix_memalign: not the counter's");
#else
  static int marker;
  void* const untouched = &marker;
  for (const std::size_t alignment : {std::size_t{0}, std::size_t{3}, sizeof(void*) / 2, sizeof(void*) * 3}) {
    void* p = untouched;
    BOOST_TEST(::posix_memalign(&p, alignment, 24) == EINVAL, "alignment " << alignment);
    BOOST_TEST(p == untouched);
  }
  void* p = untouched;
  BOOST_TEST(::posix_memalign(&p, 64, SIZE_MAX - 4096) == ENOMEM);
  BOOST_TEST(p == untouched);
  volatile std::size_t three = 3;  // not a constant: the compiler would warn about it
  errno = 0;
  BOOST_TEST(std::aligned_alloc(three, 24) == nullptr);  // C11: not a power of two
  BOOST_TEST(errno == EINVAL);
#endif
}

// ---------------------------------------------------------------------------------------------------------
// 14.6: I/O objects made from the coroutine's executor keep Asio's native io_context path
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(the_coroutines_executor_is_the_spawn_executor_itself) {
  asio::io_context ctx;
  auto strand = asio::make_strand(ctx);
  bool native = false, on_strand = false;
  perfloc::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    // Asio's handler_work takes its native path only when the I/O object's executor holds exactly this type.
    native = ex.target<asio::io_context::executor_type>() != nullptr && ex == asio::any_io_executor(ctx.get_executor());
  }, asio::detached);
  perfloc::co_spawn(strand, [&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    on_strand = ex.target<asio::strand<asio::io_context::executor_type>>() != nullptr && ex == asio::any_io_executor(strand);
  }, asio::detached);
  ctx.run();
  BOOST_TEST(native);
  BOOST_TEST(on_strand);
}

// ---------------------------------------------------------------------------------------------------------
// 14.7: this_coro::chunk() once the coroutine has been cancelled
// ---------------------------------------------------------------------------------------------------------

namespace {

asio::awaitable<std::string> label_below() {
  perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
  co_return std::string(chunk.label());
}

}  // namespace

BOOST_AUTO_TEST_CASE(this_coro_chunk_in_a_cancelled_coroutine_returns_the_chunk) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  asio::cancellation_signal signal;
  bool cancelled_wait = false;
  std::string label_here, label_nested;
  std::exception_ptr error;
  bool done = false;
  perfloc::co_spawn(top, "cleanup", ctx.get_executor(), [&]() -> asio::awaitable<void> {
    asio::steady_timer timer(co_await asio::this_coro::executor, 1h);
    try {
      co_await timer.async_wait(perfloc::use_chunk);
    } catch (const sys::system_error& e) {
      cancelled_wait = e.code() == asio::error::operation_aborted;
    }
    // Cleanup code: the coroutine is cancelled (and throws on co_await by default), yet wants its chunk.
    perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
    label_here = std::string(chunk.label());
    auto* note = chunk.make<int>(7);
    escape(note);
  }, asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
    error = e;
    done = true;
  }));
  ctx.poll();
  BOOST_TEST(top.stats().live_chunks == 1u);
  signal.emit(asio::cancellation_type::terminal);
  ctx.run();
  BOOST_TEST(cancelled_wait);
  BOOST_TEST(done);
  BOOST_TEST(!error);  // the coroutine caught the cancellation and completed normally
  BOOST_TEST(label_here == "cleanup");
  BOOST_TEST(top.stats().live_chunks == 0u);
  // A plain co_await of an awaitable after the cancellation still throws, as in Asio.
  done = false;
  perfloc::co_spawn(top, "nested", ctx.get_executor(), [&]() -> asio::awaitable<void> {
    asio::steady_timer timer(co_await asio::this_coro::executor, 1h);
    try {
      co_await timer.async_wait(perfloc::use_chunk);
    } catch (const sys::system_error&) {
    }
    perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
    label_here = std::string(chunk.label());
    label_nested = co_await label_below();  // throws operation_aborted: Asio's rule for awaitables
  }, asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e) {
    error = e;
    done = true;
  }));
  ctx.restart();
  ctx.poll();
  signal.emit(asio::cancellation_type::terminal);
  ctx.run();
  BOOST_TEST(done);
  BOOST_TEST(label_here == "nested");
  BOOST_TEST(label_nested.empty());
  BOOST_REQUIRE(error);
  BOOST_CHECK_EXCEPTION(std::rethrow_exception(error), sys::system_error,
                        [](const sys::system_error& e) { return e.code() == asio::error::operation_aborted; });
  BOOST_TEST(top.stats().live_chunks == 0u);
}

// ---------------------------------------------------------------------------------------------------------
// 14.4: results and exceptions that point into the chunk being released
// ---------------------------------------------------------------------------------------------------------

namespace {

/// An exception whose message lives in a chunk.
struct chunk_error : std::exception {
  std::pmr::string text;
  explicit chunk_error(std::pmr::string t) : text(std::move(t)) {}
  const char* what() const noexcept override { return text.c_str(); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(results_and_exceptions_outside_the_chunk_are_delivered) {
  asio::io_context ctx;
  perfloc::top_chunk top;
  auto heap_string = perfloc::co_spawn(top, ctx, [](perfloc::process_chunk& chunk) -> asio::awaitable<std::pmr::string> {
    std::pmr::string scratch(300, 'y', chunk.resource());  // in the chunk, but not the result
    escape(scratch);
    co_return std::pmr::string(300, 'x');
  }, asio::use_future);
  auto failure = perfloc::co_spawn(top, ctx, [](perfloc::process_chunk&) -> asio::awaitable<int> {
    throw std::runtime_error(std::string(300, 'z'));
    co_return 0;
  }, asio::use_future);
  ctx.run();
  BOOST_TEST(heap_string.get() == std::pmr::string(300, 'x'));
  BOOST_CHECK_THROW(failure.get(), std::runtime_error);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

#ifndef NDEBUG
namespace {

bool stopped_for_the_chunk(const perfloc_test::death& death, std::string_view what) {
  const auto has = [&](std::string_view text) { return death.output.find(text) != std::string::npos; };
  return death.died && has(what) && has("refers to memory in its coroutine's chunk") && has("released");
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_result_pointing_into_the_chunk_being_released_is_stopped_in_debug_builds) {
  const auto death = perfloc_test::run_in_child([] {
    asio::io_context ctx;
    auto result = perfloc::co_spawn(ctx, [](perfloc::process_chunk& chunk) -> asio::awaitable<std::pmr::string> {
      co_return std::pmr::string(300, 'x', chunk.resource());
    }, asio::use_future);
    ctx.run();
    (void)result.get();
  });
  BOOST_TEST(stopped_for_the_chunk(death, "result"), death.output);
}

BOOST_AUTO_TEST_CASE(an_exception_pointing_into_the_chunk_being_released_is_stopped_in_debug_builds) {
  const auto death = perfloc_test::run_in_child([] {
    asio::io_context ctx;
    auto result = perfloc::co_spawn(ctx, []() -> asio::awaitable<void> {
      perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
      throw chunk_error(std::pmr::string(300, 'e', chunk.resource()));
    }, asio::use_future);
    ctx.run();
    try {
      result.get();
    } catch (...) {
    }
  });
  BOOST_TEST(stopped_for_the_chunk(death, "exception"), death.output);
}
#endif

// ---------------------------------------------------------------------------------------------------------
// The table of perfloc's entry points (perfloc.asio:shims, entry_kinds): one destroy function per
// instantiation of perfloc::co_spawn's entry point, 8 192 slots kept at most half full. Reaching 4 097
// instantiations takes 4 097 factory and handler types, too many to compile here, so these tests fill a
// table of 16 slots (the same class). The promise: every type added is found, none other is, past the
// table's half too (and not an exception out of perfloc::co_spawn).
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(entry_point_table_past_its_half_still_finds_every_type_and_no_other) {
  perfloc::detail::pointer_set<16> table;
  static const char members[100] = {};
  static const char strangers[100] = {};
  for (std::size_t added = 0; added < 100; ++added) {
    BOOST_REQUIRE_NO_THROW(table.add(&members[added]));
    table.add(&members[added / 2]);  // again: no change
    for (std::size_t i = 0; i < 100; ++i) {
      BOOST_TEST_REQUIRE(table.contains(&members[i]) == (i <= added), "member " << i << " after " << added + 1);
      BOOST_TEST_REQUIRE(!table.contains(&strangers[i]));
    }
  }
}

BOOST_AUTO_TEST_CASE(entry_point_table_is_read_while_types_are_added_on_other_threads) {
  // Four threads add 64 entries each (past the table's half), two read: an entry whose add() returned is
  // found by every thread from then on. Under ThreadSanitizer this also checks the lock-free reads.
  perfloc::detail::pointer_set<16> table;
  static const char members[4][64] = {};
  std::atomic<std::size_t> added[4] = {};
  std::vector<std::thread> threads;
  for (std::size_t w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (std::size_t i = 0; i < 64; ++i) {
        table.add(&members[w][i]);
        added[w].store(i + 1, std::memory_order_release);
      }
    });
  }
  std::atomic<bool> missed{false};
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      for (int pass = 0; pass < 200; ++pass) {
        for (std::size_t w = 0; w < 4; ++w) {
          const std::size_t n = added[w].load(std::memory_order_acquire);
          for (std::size_t i = 0; i < n; ++i) {
            if (!table.contains(&members[w][i])) missed = true;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  BOOST_TEST(!missed.load());
  for (std::size_t w = 0; w < 4; ++w) {
    for (std::size_t i = 0; i < 64; ++i) BOOST_TEST_REQUIRE(table.contains(&members[w][i]));
  }
}

// The chunk of a perfloc coroutine starts with its spawn state and its entry frame (README, "perfloc.asio"):
// with io_context's executor and a detached handler, at most 368 bytes (368 in a debug build, Boost 1.81; in a
// release build 288 for perfloc-bench-asio's idle coroutine; the sanitizers pad the frame, so 768 there). It
// took 1 152 in the debug build when the entry point's own two waits (its first dispatch, the post of a
// coroutine completing inside its launch) were use_chunk operations, ~300 bytes of awaiter each, 704 while a
// handler without an executor of its own still had a second copy of the spawn executor and a second work guard
// in the frame, 608 (560 in a release build) while the spawn state kept the executor untracked and the entry
// frame a tracked copy of it as the work guard, the completion's dispatch was inlined into the entry frame (its
// locals laid out there) and the op recycler kept its lock's address, and 544 (448 in release for the idle
// coroutine) while operation memory went through a recycler of our own: its eight free-list heads (64 bytes)
// were in the spawn state, and it kept the entry point's first dispatch (64 bytes) after it ran, which the
// chunk now takes back and reuses; then 416 (320) while the spawn state kept a forwarded cancellation signal
// (16 bytes, now an object in the chunk when there is one), the entry promise a pointer to the spawn state
// and the entry point's own waits the state and an unused result slot in their awaiters.
BOOST_AUTO_TEST_CASE(a_coroutines_chunk_starts_with_a_small_spawn_state_and_entry_frame) {
  asio::io_context ctx;
  std::size_t at_start = 0;
  perfloc::co_spawn(ctx, [&]() -> asio::awaitable<void> {
    at_start = (co_await perfloc::this_coro::chunk()).get().stats().in_use_bytes;
  }, asio::detached);
  ctx.run();
  BOOST_TEST_MESSAGE("in use at the coroutine's start: " << at_start << " B");
  BOOST_TEST(at_start > 0u);
#if defined(PERFLOC_TEST_UNDER_SANITIZER)
  BOOST_TEST(at_start <= 768u);
#else
  BOOST_TEST(at_start <= 368u);
#endif
}

// What a co_await with use_chunk keeps in the awaiting coroutine's frame until the operation completes: the
// operation object it returns, and Asio's awaiter's copy of it (README, "perfloc.asio"). At most 80 bytes each;
// each was 112 (96 bytes in place for the operation), 224 per co_await in every frame.
BOOST_AUTO_TEST_CASE(an_operation_awaited_with_use_chunk_keeps_at_most_80_bytes_in_the_frame) {
  asio::io_context ctx;
  asio::steady_timer timer(ctx);
  char bytes[16];
  asio::ip::tcp::socket socket(ctx);
  const std::size_t sizes[] = {sizeof(decltype(timer.async_wait(perfloc::use_chunk))),
                               sizeof(decltype(asio::post(perfloc::use_chunk))),
                               sizeof(decltype(socket.async_read_some(asio::buffer(bytes), perfloc::use_chunk))),
                               sizeof(decltype(asio::async_write(socket, asio::buffer(bytes), perfloc::use_chunk)))};
  for (const std::size_t size : sizes) BOOST_TEST(size <= 80u);
}

namespace {
/// An initiation as large as the largest common ones of Asio's (72 bytes) that posts its handler.
struct large_initiation {
  asio::any_io_executor executor;
  std::array<char, 16> payload;
  template <class Handler>
  void operator()(Handler&& handler) const {
    asio::post(executor, std::forward<Handler>(handler));
  }
};
}  // namespace

// The largest common initiations stay in place in the operation object (no heap call per operation): 72 bytes,
// what a post or dispatch to a strand of any_io_executor or asio::co_spawn with an any_io_executor carries, here
// an operation of the test's own whose initiation is that large and posts its handler; and a post to an
// any_io_executor (56 bytes).
BOOST_AUTO_TEST_CASE(operations_with_initiations_up_to_72_bytes_awaited_with_use_chunk_make_no_heap_call) {
#if defined(PERFLOC_TEST_UNDER_SANITIZER)
  BOOST_TEST_MESSAGE("not counted under a sanitizer: its runtime owns malloc");
#else
  asio::io_context ctx(1);
  perfloc::top_chunk top;
  const asio::any_io_executor plain = ctx.get_executor();
  static_assert(sizeof(large_initiation) == 72);
  auto large_operation = [&](auto token) {
    return asio::async_initiate<decltype(token), void()>(large_initiation{plain, {}}, token);
  };
  constexpr int rounds = 1000;
  long calls = -1;
  int awaited = 0;
  perfloc::co_spawn(top, ctx, [&](perfloc::process_chunk&) -> asio::awaitable<void> {
    for (int warm = 0; warm < 2; ++warm) {  // the operation memory's free lists
      co_await large_operation(perfloc::use_chunk);
      co_await asio::post(plain, perfloc::use_chunk);
    }
    const long before = perfloc_heap_calls::count.load();
    for (int i = 0; i < rounds; ++i) {
      co_await large_operation(perfloc::use_chunk);
      co_await asio::post(plain, perfloc::use_chunk);
      awaited += 2;
    }
    calls = perfloc_heap_calls::count.load() - before;
  }, asio::detached);
  ctx.run();
  BOOST_TEST(awaited == 2 * rounds);
  BOOST_TEST(calls == 0);
  BOOST_TEST(top.stats().live_chunks == 0u);
#endif
}
