// Tests of perfloc.top: reservations, commit and decommit, the children meta list, thread caches.
#define BOOST_TEST_MODULE perfloc.top
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <thread>
#include <vector>

#include "death.hpp"

import perfloc;

namespace {
constexpr std::size_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
}

// Counts global allocations (the library's own bookkeeping outside the top chunk): a replaced operator new,
// or under ThreadSanitizer, whose runtime defines operator new (a replacement does not link), its malloc
// hook, which sees operator new too.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PERFLOC_TEST_MALLOC_HOOK 1
#endif
#endif
namespace perfloc_test {
std::atomic<std::uint64_t> global_news{0};
}
#if defined(PERFLOC_TEST_MALLOC_HOOK)
extern "C" void __sanitizer_malloc_hook(const volatile void*, std::size_t) {
  perfloc_test::global_news.fetch_add(1, std::memory_order_relaxed);
}
#else
void* operator new(std::size_t bytes) {
  perfloc_test::global_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(bytes ? bytes : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

BOOST_AUTO_TEST_CASE(default_top_is_one_object_for_every_thread_with_the_documented_options) {
  perfloc::top_chunk* seen_elsewhere = nullptr;
  std::thread([&] { seen_elsewhere = &perfloc::default_top(); }).join();
  BOOST_TEST(seen_elsewhere == &perfloc::default_top());
  // top_options' documented defaults: 16 GiB reserved at a time, up to 1 TiB, 64 MiB retained.
  const perfloc::top_options options = perfloc::default_top().options();
  BOOST_TEST(options.reservation_bytes == 16 * GiB);
  BOOST_TEST(options.max_reserved_bytes == 1024 * GiB);
  BOOST_TEST(options.retain_bytes == 64 * MiB);
  BOOST_TEST(!options.on_release);
  // A chunk opened without naming a top, on any thread, is one of default_top()'s: its figures count there.
  const perfloc::top_stats before = perfloc::default_top().stats();
  perfloc::process_chunk here;
  here.allocate(100);
  std::uint64_t live_seen_there = 0;
  std::size_t in_use_seen_there = 0;
  std::thread([&] {
    perfloc::process_chunk there{"opened on another thread"};
    there.allocate(1000);
    live_seen_there = perfloc::default_top().stats().live_chunks;
    in_use_seen_there = perfloc::default_top().stats().in_use_bytes;
  }).join();
  BOOST_TEST(live_seen_there == before.live_chunks + 2);
  BOOST_TEST(in_use_seen_there == before.in_use_bytes + 112 + 1008);
  const perfloc::top_stats after = perfloc::default_top().stats();
  BOOST_TEST(after.live_chunks == before.live_chunks + 1);
  BOOST_TEST(after.in_use_bytes == before.in_use_bytes + 112);
}

BOOST_AUTO_TEST_CASE(options_are_rounded_and_reported) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 3 * MiB + 1, .max_reserved_bytes = 0,
                                              .retain_bytes = 0}};
  const perfloc::top_options options = top.options();
  BOOST_TEST(options.reservation_bytes % (64 * KiB) == 0u);
  BOOST_TEST(options.reservation_bytes >= 3 * MiB + 1);
  BOOST_TEST(options.max_reserved_bytes >= options.reservation_bytes);  // never below one reservation
  // One reservation, plus the meta region's first 64 KiB (committed beside the reservations).
  BOOST_TEST(top.stats().reserved_bytes == options.reservation_bytes + 64 * KiB);
}

BOOST_AUTO_TEST_CASE(live_chunks_and_in_use_follow_the_children_meta_list) {
  perfloc::top_chunk top;
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
  {
    perfloc::process_chunk a{top, "a"};
    perfloc::process_chunk b{top, "b"};
    a.allocate(100);
    b.allocate(1000);
    b.allocate(24);
    const perfloc::top_stats stats = top.stats();
    BOOST_TEST(stats.live_chunks == 2u);
    BOOST_TEST(stats.in_use_bytes == a.stats().in_use_bytes + b.stats().in_use_bytes);
    BOOST_TEST(stats.in_use_bytes == 112u + 1008u + 32u);
    {
      perfloc::process_chunk c{top};
      BOOST_TEST(top.stats().live_chunks == 3u);
    }
    BOOST_TEST(top.stats().live_chunks == 2u);
  }
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(memory_is_committed_as_it_grows_and_returned_above_the_watermark) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * GiB, .retain_bytes = 0}};
  const std::size_t before = top.stats().committed_bytes;
  {
    perfloc::process_chunk chunk{top};
    for (int i = 0; i < 64; ++i) std::memset(chunk.allocate(1 * MiB), 0xab, 1 * MiB);
    BOOST_TEST(top.stats().committed_bytes >= before + 64 * MiB);
  }
  // With nothing retained, all goes back to the OS, header pages included, but what the thread cache keeps
  // (README: at most 13 blocks of 64 KiB, 4 of 128 KiB, 2 of 256 KiB, 1 of 512 KiB).
  constexpr std::size_t cache_bound = 13 * 64 * KiB + 4 * 128 * KiB + 2 * 256 * KiB + 512 * KiB;
  BOOST_TEST(top.stats().committed_bytes <= before + cache_bound);
  BOOST_TEST(top.stats().peak_committed_bytes >= before + 64 * MiB);
}

BOOST_AUTO_TEST_CASE(peak_committed_is_never_below_any_committed_figure_seen_and_never_falls) {
  // peak_committed_bytes is "the most committed_bytes ever was": checked against the largest committed_bytes
  // this test itself saw, after each step of chunks growing by whole MiBs and being released, nested and not.
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * GiB, .retain_bytes = 0}};
  std::size_t most_seen = 0, last_peak = 0;
  int steps = 0;
  auto check = [&] {
    const perfloc::top_stats stats = top.stats();
    most_seen = std::max(most_seen, stats.committed_bytes);
    BOOST_TEST(stats.peak_committed_bytes >= most_seen, "step " << steps);
    BOOST_TEST(stats.peak_committed_bytes >= last_peak, "step " << steps);
    last_peak = stats.peak_committed_bytes;
    ++steps;
  };
  check();
  for (int round = 1; round <= 3; ++round) {
    {
      perfloc::process_chunk outer{top};
      for (int i = 0; i < 8 * round; ++i) {
        std::memset(outer.allocate(1 * MiB), 0xab, 1 * MiB);
        check();
      }
      perfloc::process_chunk inner{top};
      for (int i = 0; i < 4; ++i) {
        std::memset(inner.allocate(2 * MiB), 0xcd, 2 * MiB);
        check();
      }
    }
    check();  // released: committed falls (nothing retained), the peak stays
  }
  BOOST_TEST(most_seen >= 24 * MiB + 8 * MiB);  // the largest round was seen whole
  BOOST_TEST(top.stats().committed_bytes < most_seen);
}

BOOST_AUTO_TEST_CASE(retained_memory_is_reused_without_growing) {
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = 256 * MiB}};
  for (int round = 0; round < 3; ++round) {
    perfloc::process_chunk chunk{top};
    for (int i = 0; i < 32; ++i) chunk.allocate(1 * MiB);
  }
  const std::size_t settled = top.stats().committed_bytes;
  for (int round = 0; round < 10; ++round) {
    perfloc::process_chunk chunk{top};
    for (int i = 0; i < 32; ++i) chunk.allocate(1 * MiB);
  }
  BOOST_TEST(top.stats().committed_bytes == settled);
}

BOOST_AUTO_TEST_CASE(more_reservations_are_taken_when_one_is_exhausted) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 2 * MiB, .max_reserved_bytes = 64 * MiB}};
  const std::size_t first = top.stats().reserved_bytes;
  {
    perfloc::process_chunk chunk{top};
    for (int i = 0; i < 8; ++i) std::memset(chunk.allocate(1 * MiB), i, 1 * MiB);
    BOOST_TEST(top.stats().reserved_bytes > first);
    BOOST_TEST(top.stats().reserved_bytes <= 64 * MiB);
  }
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(an_exhausted_top_throws_bad_alloc_and_every_chunk_stays_usable) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 2 * MiB, .max_reserved_bytes = 2 * MiB}};
  perfloc::process_chunk keeper{top, "keeper"};
  std::size_t taken = 0;
  auto* kept = static_cast<unsigned char*>(keeper.allocate(4000));
  std::memset(kept, 0x5a, 4000);
  {
    perfloc::process_chunk greedy{top, "greedy"};
    BOOST_CHECK_THROW(
        for (;;) {
          greedy.allocate(200 * KiB);
          taken += 200 * KiB;
        },
        std::bad_alloc);
    BOOST_TEST(taken > 0u);
    BOOST_TEST(taken < 2 * MiB);
    const std::size_t in_use = greedy.stats().in_use_bytes;
    BOOST_CHECK_THROW(greedy.allocate(1 * MiB), std::bad_alloc);
    BOOST_TEST(greedy.stats().in_use_bytes == in_use);  // a failed request leaves nothing behind
    greedy.allocate(64);                               // small requests still fit in the current block
  }
  for (int i = 0; i < 4000; ++i) BOOST_REQUIRE(kept[i] == 0x5a);
  // What the greedy chunk took is back: a new chunk can take it again.
  perfloc::process_chunk again{top};
  for (std::size_t i = 0; i < taken / (200 * KiB); ++i) BOOST_CHECK_NO_THROW(again.allocate(200 * KiB));
  BOOST_TEST(top.stats().live_chunks == 2u);
}

BOOST_AUTO_TEST_CASE(requests_beyond_what_the_top_can_ever_give_throw_bad_alloc) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 4 * MiB, .max_reserved_bytes = 64 * MiB}};
  perfloc::process_chunk chunk{top};
  BOOST_CHECK_THROW(chunk.allocate(1 * GiB), std::bad_alloc);
  BOOST_CHECK_THROW(chunk.allocate(std::size_t(-1)), std::bad_alloc);
  BOOST_CHECK_THROW(chunk.allocate(std::size_t(-1) - 15), std::bad_alloc);
  BOOST_CHECK_THROW(chunk.allocate(std::size_t(-1) / 2, 4096), std::bad_alloc);
  BOOST_TEST(chunk.stats().in_use_bytes == 0u);
  BOOST_CHECK_NO_THROW(chunk.allocate(100));
}

BOOST_AUTO_TEST_CASE(chunks_open_and_release_from_many_threads_while_stats_are_read) {
  perfloc::top_chunk top;
  std::atomic<bool> done{false};
  std::atomic<int> walks{0};
  std::atomic<std::size_t> most_in_use{0};
  std::thread reader([&] {  // walks the live lists while their owners edit them (the tsan preset checks this)
    while (!done.load()) {
      most_in_use = std::max(most_in_use.load(), top.stats().in_use_bytes);
      ++walks;
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t)
    workers.emplace_back([&top, t] {
      for (int round = 0; round < 2000; ++round) {
        std::vector<perfloc::process_chunk> open;
        for (int i = 0; i < 8; ++i) {
          open.emplace_back(top);
          auto* p = static_cast<int*>(open.back().allocate(sizeof(int) * 16));
          for (int k = 0; k < 16; ++k) p[k] = t * 1000 + k;
        }
      }
    });
  for (auto& w : workers) w.join();
  done = true;
  reader.join();
  BOOST_TEST(walks.load() > 0);
  BOOST_TEST(most_in_use.load() <= 3u * 8u * 64u);  // each worker holds at most 8 chunks of 64 bytes
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(a_chunk_released_on_another_thread_goes_back_to_its_home) {
  perfloc::top_chunk top;
  std::vector<perfloc::process_chunk> moved;
  for (int i = 0; i < 100; ++i) {
    moved.emplace_back(top, "travelling");
    moved.back().make<int>(i);
  }
  BOOST_TEST(top.stats().live_chunks == 100u);
  std::thread elsewhere([&] { moved.clear(); });
  elsewhere.join();
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
  // The home thread keeps opening chunks, reusing the metas handed back to it.
  for (int i = 0; i < 1000; ++i) {
    perfloc::process_chunk chunk{top};
    chunk.allocate(8);
  }
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(exited_threads_leave_their_cache_to_the_next_thread) {
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = 0}};
  auto work = [&top] {
    for (int i = 0; i < 100; ++i) {
      perfloc::process_chunk chunk{top};
      chunk.allocate(10 * KiB);
    }
  };
  std::thread(work).join();
  const std::size_t after_one = top.stats().committed_bytes;
  for (int t = 0; t < 50; ++t) std::thread(work).join();
  // Fifty more threads adopt the same orphaned cache instead of each committing a new one.
  BOOST_TEST(top.stats().committed_bytes <= after_one + 128 * KiB);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(a_chunk_alive_when_its_thread_exits_is_still_released_correctly) {
  perfloc::top_chunk top;
  perfloc::process_chunk survivor{top};  // moved out of a thread that then exits
  std::thread([&] {
    perfloc::process_chunk opened_here{top, "outlives its thread"};
    *opened_here.make<int>() = 7;
    survivor = std::move(opened_here);
  }).join();
  BOOST_TEST(top.stats().live_chunks == 1u);
  survivor.release();
  BOOST_TEST(top.stats().live_chunks == 0u);
  std::thread([&] {  // the next thread adopts the orphaned cache, with the meta handed back to it
    perfloc::process_chunk chunk{top};
    BOOST_TEST(top.stats().live_chunks == 1u);
  }).join();
  BOOST_TEST(top.stats().live_chunks == 0u);
}

#ifndef NDEBUG
BOOST_AUTO_TEST_CASE(a_top_destroyed_with_live_chunks_names_them_and_aborts) {
  const perfloc_test::death death = perfloc_test::run_in_child([] {
    auto* top = new perfloc::top_chunk{};
    auto* leaked = new perfloc::process_chunk{*top, "GET /users"};
    leaked->allocate(100);
    delete top;
  });
  BOOST_TEST(death.died);
  BOOST_TEST(death.output.find("1 process chunk(s) are alive") != std::string::npos, death.output);
  BOOST_TEST(death.output.find("GET /users") != std::string::npos, death.output);
  BOOST_TEST(death.output.find("top.test.cpp") != std::string::npos, death.output);  // where it was opened
}
#endif

BOOST_AUTO_TEST_CASE(a_new_top_at_a_destroyed_tops_address_is_told_apart_from_it) {
  // Tops made and destroyed one after another land at the same address (the OS hands the same range out
  // again): the thread's cache of the old top must not be taken for one of the new top. Seen from outside,
  // a chunk of the new top counts in the new top, and the first object of each top's first chunk lands at
  // the same place in its block when the range is the same.
  std::uintptr_t previous = 0;
  int same_address = 0;
  for (int i = 0; i < 100; ++i) {
    perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 2 * MiB}};
    perfloc::process_chunk chunk{top, "short-lived top"};
    int* value = chunk.make<int>(i);
    *value += 1;
    const auto at = reinterpret_cast<std::uintptr_t>(value);
    same_address += at == previous;
    previous = at;
    BOOST_REQUIRE(*value == i + 1);
    const perfloc::top_stats stats = top.stats();
    BOOST_REQUIRE(stats.live_chunks == 1u);
    BOOST_REQUIRE(stats.in_use_bytes == 16u);  // an 8-byte header and the int
  }
  BOOST_TEST(same_address > 0, "no top landed where the one before it was: the case was not exercised");
}

BOOST_AUTO_TEST_CASE(a_thread_that_makes_many_tops_forgets_the_caches_of_destroyed_ones) {
  // What the thread keeps per top it used must not grow with the number of tops it has seen: after a
  // warm-up, a thousand more short-lived tops make no global allocation at all.
  auto one_top = [](int i) {
    perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 2 * MiB}};
    perfloc::process_chunk chunk{top, "short-lived top"};
    *chunk.make<int>(i) += 1;
    return top.stats().live_chunks == 1;
  };
  const std::uint64_t probe = perfloc_test::global_news.load();
  static std::vector<int>* volatile sink;  // volatile: the allocation may not be elided
  sink = new std::vector<int>(100);
  delete sink;
  BOOST_REQUIRE(perfloc_test::global_news.load() > probe);  // the counter sees global allocations
  bool counted = true;
  for (int i = 0; i < 100; ++i) counted &= one_top(i);
  const std::uint64_t before = perfloc_test::global_news.load();
  for (int i = 0; i < 1000; ++i) counted &= one_top(i);
  const std::uint64_t news = perfloc_test::global_news.load() - before;
  BOOST_TEST(counted);
  BOOST_TEST(news == 0u);
}
