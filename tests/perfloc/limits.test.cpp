// Limits of a top chunk, from the user's side: max_reserved_bytes is the limit that applies (no hidden count
// of reservations, no meta region below it), every byte given back is usable again by any thread, thread
// caches stay within their documented bound and count in the retain budget, a release hook outlives its top.
//
// The documented constants these tests compute with (README, "How it works"): blocks are 64 KiB << k; the top
// chunk's header takes the first 64 KiB of its first reservation; a thread caches at most 13 free 64 KiB
// blocks, 4 of 128 KiB, 2 of 256 KiB and 1 of 512 KiB per top; a free block given back to the OS goes back
// whole, its header page included.
#define BOOST_TEST_MODULE perfloc.limits
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "death.hpp"
#include "tags.hpp"

import perfloc;

namespace {
constexpr std::size_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB, TiB = 1024 * GiB;
constexpr std::size_t block = 64 * KiB;         // the smallest block
constexpr std::size_t top_header = 64 * KiB;    // the top's header, at the start of its first reservation
constexpr std::size_t meta_first_commit = 64 * KiB;  // the meta region commits this first; counted as reserved
constexpr std::size_t cache_bound = 13 * block + 4 * (2 * block) + 2 * (4 * block) + 1 * (8 * block);

/// Opens chunks that each use a third of a block, so that each takes a block of its own (small first regions
/// hold at most 8 KiB), until the top refuses one; returns how many it took, and releases them, newest first
/// (as nested scopes would). The site learns that first, from one such chunk (README: the chunks a site opens
/// before one of them is released start in a small region).
std::size_t count_one_block_chunks(perfloc::top_chunk& top) {
  std::vector<perfloc::process_chunk> chunks;
  chunks.reserve(1 << 16);
  chunks.emplace_back(top).allocate(block / 3);
  chunks.pop_back();
  try {
    for (;;) chunks.emplace_back(top).allocate(block / 3);
  } catch (const std::bad_alloc&) {
  }
  const std::size_t count = chunks.size();
  while (!chunks.empty()) chunks.pop_back();
  return count;
}

/// Runs `work` on a thread that then stays alive, idle, until the returned object is destroyed: what the
/// thread cached stays in its cache, and only a reclaim can take it.
class idle_thread {
 public:
  explicit idle_thread(std::function<void()> work)
      : thread_([this, work = std::move(work)] {
          work();
          std::unique_lock lock(mutex_);
          worked_ = true;
          changed_.notify_all();
          changed_.wait(lock, [this] { return finish_; });
        }) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return worked_; });
  }
  ~idle_thread() {
    {
      std::lock_guard lock(mutex_);
      finish_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool worked_ = false, finish_ = false;
  std::thread thread_;
};
}  // namespace

// ------------------------------------------------------------------------------------------------------------
// Every byte given back is usable again, by any thread
// ------------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(a_split_block_gives_every_part_back) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * MiB,
                                              .retain_bytes = 1 * MiB}};
  const std::size_t room = count_one_block_chunks(top);
  BOOST_TEST(room == (1 * MiB - top_header) / block);
  for (std::size_t size : {300 * KiB, 100 * KiB, 450 * KiB, 200 * KiB}) {  // big blocks, split again later
    {
      perfloc::process_chunk big{top};
      big.allocate(size);
    }
    BOOST_TEST(count_one_block_chunks(top) == room, "after a chunk of " << size / KiB << " KiB");
  }
}

BOOST_AUTO_TEST_CASE(memory_cached_by_an_idle_thread_serves_another_thread) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * MiB,
                                              .retain_bytes = 1 * MiB}};
  std::size_t room = 0;
  idle_thread cacher([&] { room = count_one_block_chunks(top); });  // 14 of its 15 blocks end in that thread's cache
  BOOST_TEST(room == (1 * MiB - top_header) / block);
  {
    perfloc::process_chunk chunk{top};
    BOOST_CHECK_NO_THROW(chunk.allocate(300 * KiB));
  }
  BOOST_TEST(count_one_block_chunks(top) == room);
  idle_thread again([&] { BOOST_TEST(count_one_block_chunks(top) == room); });
}

namespace {
/// Runs what it is given on one thread, a call at a time, and stays idle in between: its cache stays as the last
/// call left it, and only a reclaim can take from it.
class worker_thread {
 public:
  worker_thread() : thread_([this] { serve(); }) {}
  ~worker_thread() {
    run({});
    thread_.join();
  }
  /// Runs `work` on the thread (an empty one ends it) and returns once it is done.
  void run(std::function<void()> work) {
    std::unique_lock lock(mutex_);
    work_ = std::move(work);
    pending_ = true;
    changed_.notify_all();
    changed_.wait(lock, [this] { return !pending_; });
  }

 private:
  void serve() {
    for (bool more = true; more;) {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [this] { return pending_; });
      more = static_cast<bool>(work_);
      if (more) work_();
      pending_ = false;
      changed_.notify_all();
    }
  }
  std::mutex mutex_;
  std::condition_variable changed_;
  std::function<void()> work_;
  bool pending_ = false;
  std::thread thread_;
};

/// Every small chunk of these tests is opened here, one call site: after votes_to_shrink releases of chunks that
/// use little (teach_small), its chunks get 1 KiB regions (README, "How it works"). The release of such a chunk
/// parks its region in the thread's cache for the next open of its class.
constexpr int votes_to_shrink = 8;
perfloc::process_chunk small_chunk(perfloc::top_chunk& top) { return perfloc::process_chunk{top}; }
void teach_small(perfloc::top_chunk& top) {
  for (int i = 0; i < votes_to_shrink; ++i) small_chunk(top).allocate(256);
}

/// One-block chunks (as count_one_block_chunks) until the top refuses one, each tagged all through its allocation.
struct tagged_fill {
  static constexpr std::size_t words = block / 3 / sizeof(std::uint32_t);
  std::vector<perfloc::process_chunk> chunks;
  std::vector<std::uint32_t*> tagged;

  explicit tagged_fill(perfloc::top_chunk& top) {
    chunks.reserve(1 << 10);
    tagged.reserve(1 << 10);
    chunks.emplace_back(top).allocate(block / 3);  // the site learns that its chunks take whole blocks
    chunks.pop_back();
    try {
      for (;;) {
        auto* p = static_cast<std::uint32_t*>(chunks.emplace_back(top).allocate(words * sizeof(std::uint32_t)));
        perfloc_test::write_tag(p, words, 1, 0, chunks.size());
        tagged.push_back(p);
      }
    } catch (const std::bad_alloc&) {
      if (chunks.size() > tagged.size()) chunks.pop_back();  // opened, but its allocation was refused
    }
  }
  int overwritten() const { return perfloc_test::overwritten_tags(tagged, words, 1, 0); }
};

/// Opens a small chunk and writes 256 bytes in it while `fill` holds the whole top: either the top refuses it
/// (there is no region left), or it gets a region that is none of the fill's. Returns how many of the fill's
/// tags it overwrote.
int small_chunk_beside(perfloc::top_chunk& top, const tagged_fill& fill) {
  try {
    perfloc::process_chunk chunk = small_chunk(top);
    std::memset(chunk.allocate(256), 0x5a, 256);
  } catch (const std::bad_alloc&) {
  }
  return fill.overwritten();
}
}  // namespace

// The region a thread's cache parked comes back with the rest of an idle thread's cache: a reclaim gives its slab
// (a 64 KiB block) back, so that the whole top serves one-block chunks again. Three ways to leave a cache that
// holds a parked region: its last release, two releases in a row (the second finds the slot taken), and a
// cache that holds nothing else (its first chunk released on another thread), which a reclaim must not skip.
BOOST_AUTO_TEST_CASE(a_small_region_an_idle_thread_released_last_serves_another_thread) {
  for (int how = 0; how < 3; ++how) {
    BOOST_TEST_CONTEXT("way " << how) {
      perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * MiB,
                                                  .retain_bytes = 1 * MiB}};
      worker_thread cacher;
      std::optional<perfloc::process_chunk> first;
      cacher.run([&] {
        if (how == 0) {
          teach_small(top);
          small_chunk(top).allocate(256);
        } else if (how == 1) {
          teach_small(top);
          perfloc::process_chunk a = small_chunk(top), b = small_chunk(top);
          // b is released first (parked), then a (to its slab)
        } else {
          first.emplace(small_chunk(top));  // the site's first chunk: a whole block; the next ones 1.25 KiB regions
          small_chunk(top).allocate(1000);  // more than a 1 KiB region holds: nothing to learn, parked
        }
      });
      first.reset();  // released here: its block stays on this thread
      BOOST_TEST(count_one_block_chunks(top) == (1 * MiB - top_header) / block);
    }
  }
}

// The same when the thread exits: its cache gives the parked region back with the rest.
BOOST_AUTO_TEST_CASE(a_small_region_an_exited_thread_released_last_serves_another_thread) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * MiB,
                                              .retain_bytes = 1 * MiB}};
  std::thread([&] {
    teach_small(top);
    small_chunk(top).allocate(256);
  }).join();
  BOOST_TEST(count_one_block_chunks(top) == (1 * MiB - top_header) / block);
}

// A region taken back from the slot (a reclaim, the thread's exit, a cache refilled from the top) is gone from it:
// it is handed out once from its slab, and not at all once the slab went back to the top.
BOOST_AUTO_TEST_CASE(a_parked_region_taken_back_by_a_reclaim_is_handed_out_once) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * MiB,
                                              .retain_bytes = 1 * MiB}};
  worker_thread owner;
  std::optional<perfloc::process_chunk> kept;
  owner.run([&] {
    teach_small(top);
    kept.emplace(small_chunk(top));  // keeps the slab of the region parked below with the thread
    small_chunk(top).allocate(256);
  });
  count_one_block_chunks(top);  // the top runs out: the reclaim puts the parked region back on its slab
  int overwritten = -1;
  owner.run([&] {
    perfloc::process_chunk a = small_chunk(top), b = small_chunk(top);  // the region, and another one
    std::vector<std::uint32_t*> tagged;
    for (perfloc::process_chunk* chunk : {&a, &b}) {
      tagged.push_back(static_cast<std::uint32_t*>(chunk->allocate(256)));
      perfloc_test::write_tag(tagged.back(), 64, 2, 0, tagged.size());
    }
    overwritten = perfloc_test::overwritten_tags(tagged, 64, 2, 0);
    kept.reset();
  });
  BOOST_TEST(overwritten == 0);
}
BOOST_AUTO_TEST_CASE(a_parked_region_of_an_exited_thread_is_not_handed_out_once_its_slab_went_back) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * MiB,
                                              .retain_bytes = 1 * MiB}};
  std::thread([&] {
    perfloc::process_chunk first = small_chunk(top);  // a whole block; the next ones 1.25 KiB regions
    small_chunk(top).allocate(1000);                   // parked
  }).join();  // the thread's exit gives the region's slab back to the top
  int overwritten = -1;
  std::size_t first_kept = 0;
  std::thread([&] {  // adopts the exited thread's cache
    perfloc::process_chunk first = small_chunk(top);  // the site's next chunks take 1.25 KiB regions again
    auto* written = static_cast<unsigned char*>(first.allocate(block / 3));
    std::memset(written, 0x11, block / 3);
    const tagged_fill fill(top);  // holds every other block, the slab's among them
    overwritten = small_chunk_beside(top, fill);
    first_kept = static_cast<std::size_t>(std::count(written, written + block / 3, 0x11));
  }).join();
  BOOST_TEST(overwritten == 0);
  BOOST_TEST(first_kept == block / 3);
}
BOOST_AUTO_TEST_CASE(a_parked_region_of_a_cache_refilled_from_the_top_is_not_handed_out_once_its_slab_went_back) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * MiB,
                                              .retain_bytes = 1 * MiB}};
  teach_small(top);
  small_chunk(top).allocate(256);  // parked
  const tagged_fill fill(top);  // runs the top out: this thread's cache goes back to it, the region's slab too
  BOOST_TEST(small_chunk_beside(top, fill) == 0);
}

BOOST_AUTO_TEST_CASE(a_request_larger_than_any_free_block_is_served_from_blocks_an_idle_thread_cached) {
  // A 2 MiB top filled with one-block chunks by a thread that then stays idle: its cache keeps the 13 it
  // released first, the newest (the top's last 832 KiB), the top the other 18. A request for 600 KiB needs a
  // block of 1 MiB, the top's second half: only the cached blocks, taken back and merged with their free
  // neighbours, can make one.
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 2 * MiB, .max_reserved_bytes = 2 * MiB,
                                              .retain_bytes = 2 * MiB}};
  std::size_t room = 0;
  idle_thread cacher([&] { room = count_one_block_chunks(top); });
  BOOST_TEST(room == (2 * MiB - top_header) / block);
  {
    perfloc::process_chunk chunk{top};
    void* p = nullptr;
    BOOST_CHECK_NO_THROW(p = chunk.allocate(600 * KiB));
    if (p) std::memset(p, 0x5a, 600 * KiB);
    BOOST_TEST(chunk.stats().held_bytes == block + 16 * block);  // its first block and a block of 1 MiB
  }
  BOOST_TEST(count_one_block_chunks(top) == room);  // and every block is usable again
}

BOOST_AUTO_TEST_CASE(blocks_reclaimed_from_a_thread_at_work_are_never_handed_out_twice) {
  // Two threads fill a 1 MiB top with chunks until it refuses, write their own pattern into each, check it
  // and release them all, round after round. Each release fills the thread's cache, so the other thread's
  // next fill can succeed only by taking blocks back from that cache (a reclaim), often while its owner is
  // in the middle of opening or releasing a chunk of it. A block taken from a cache its owner is editing
  // would belong to both: two chunks in one block, one thread's pattern over the other's (or a broken list).
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * MiB,
                                              .retain_bytes = 1 * MiB}};
  constexpr int rounds = 8000;
  constexpr std::size_t words = 1024;  // 4 KiB written in each chunk
  std::atomic<int> overwritten{0};
  std::atomic<std::size_t> chunks_filled{0};
  auto fill_and_check = [&](std::uint32_t me) {
    std::vector<perfloc::process_chunk> chunks;
    std::vector<std::uint32_t*> patterns;
    chunks.reserve(64);
    patterns.reserve(64);
    for (std::uint32_t round = 0; round < rounds; ++round) {
      try {
        for (;;) {
          perfloc::process_chunk& chunk = chunks.emplace_back(top);
          auto* p = static_cast<std::uint32_t*>(chunk.allocate(words * sizeof(std::uint32_t)));
          perfloc_test::write_tag(p, words, me, round, chunks.size());
          patterns.push_back(p);
        }
      } catch (const std::bad_alloc&) {
        if (chunks.size() > patterns.size()) chunks.pop_back();  // opened, but its allocation was refused
      }
      overwritten += perfloc_test::overwritten_tags(patterns, words, me, round);
      chunks_filled += patterns.size();
      patterns.clear();
      while (!chunks.empty()) chunks.pop_back();
    }
  };
  std::thread a(fill_and_check, 1), b(fill_and_check, 2);
  a.join();
  b.join();
  BOOST_TEST_MESSAGE(chunks_filled.load() << " chunks filled in " << 2 * rounds << " rounds");
  BOOST_TEST(overwritten.load() == 0);
  BOOST_TEST(chunks_filled.load() > 0u);
  // Every block came back: one thread alone fills the whole top again.
  BOOST_TEST(count_one_block_chunks(top) == (1 * MiB - top_header) / block);
}

// ------------------------------------------------------------------------------------------------------------
// max_reserved_bytes is the limit
// ------------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(small_reservations_reach_max_reserved_bytes) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * TiB,
                                              .retain_bytes = 0}};
  perfloc::process_chunk chunk{top};
  for (int i = 0; i < 1024; ++i) BOOST_REQUIRE_NO_THROW(chunk.allocate(1 * MiB));  // 1 GiB, never touched
  BOOST_TEST(chunk.stats().held_bytes >= 1 * GiB);
  BOOST_TEST(top.stats().reserved_bytes >= 1 * GiB);
  BOOST_TEST(top.stats().reserved_bytes <= 1 * TiB);
}

BOOST_AUTO_TEST_CASE(every_reservations_tail_is_used) {
  constexpr std::size_t limit = 4 * MiB;
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = limit,
                                              .retain_bytes = limit}};
  std::vector<perfloc::process_chunk> chunks;
  chunks.emplace_back(top).allocate(block / 3);  // the site learns that its chunks take whole blocks
  chunks.pop_back();
  try {  // 512 KiB blocks first, then whatever 64 KiB blocks are left
    for (;;) chunks.emplace_back(top).allocate(300 * KiB);
  } catch (const std::bad_alloc&) {
  }
  try {
    for (;;) chunks.emplace_back(top);
  } catch (const std::bad_alloc&) {
  }
  std::size_t held = 0;
  for (const perfloc::process_chunk& chunk : chunks) held += chunk.stats().held_bytes;
  BOOST_TEST(top.stats().reserved_bytes == limit);  // the reservations and the meta region's committed part
  BOOST_TEST(held == limit - top_header - meta_first_commit);
}

BOOST_AUTO_TEST_CASE(a_hundred_thousand_chunks_live_at_once_on_a_small_reservation_top) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1 * MiB, .max_reserved_bytes = 1 * TiB}};
  constexpr std::size_t count = 100'000;
  std::vector<perfloc::process_chunk> chunks;
  chunks.reserve(count);
  chunks.emplace_back(top).allocate(block / 3);  // the site learns that its chunks take whole blocks
  chunks.pop_back();
  for (std::size_t i = 0; i < count; ++i) BOOST_REQUIRE_NO_THROW(chunks.emplace_back(top).make<std::size_t>(i));
  BOOST_TEST(top.stats().live_chunks == count);
  BOOST_TEST(top.stats().reserved_bytes >= count * block);
  chunks.clear();
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(a_big_chunk_reuses_the_address_space_of_a_burst_of_small_ones) {
  // Free blocks merge again: the 64 KiB blocks of a burst of 10 000 small chunks, all released, serve a chunk
  // that then grows to 1 GiB in 4 MiB blocks, within a limit that does not hold both (640 MiB + 1 GiB).
  constexpr std::size_t limit = 1 * GiB + 128 * MiB;
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 64 * MiB, .max_reserved_bytes = limit}};
  {
    std::vector<perfloc::process_chunk> burst;
    for (int i = 0; i < 10'000; ++i) std::memset(burst.emplace_back(top).allocate(1 * KiB), 1, 1 * KiB);
  }
  const perfloc::top_stats after_burst = top.stats();
  BOOST_TEST_MESSAGE("after the burst: reserved " << after_burst.reserved_bytes / MiB << " MiB, committed "
                                                  << after_burst.committed_bytes / KiB << " KiB");
  {
    perfloc::process_chunk big{top};
    std::size_t taken = 0;
    try {
      for (; taken < 1 * GiB; taken += 200 * KiB) big.allocate(200 * KiB);  // never touched
    } catch (const std::bad_alloc&) {
    }
    const perfloc::top_stats stats = top.stats();
    BOOST_TEST_MESSAGE("the big chunk took " << taken / MiB << " MiB: reserved " << stats.reserved_bytes / MiB
                                             << " MiB, committed " << stats.committed_bytes / KiB << " KiB");
    BOOST_TEST(taken >= 1 * GiB);
  }
  const perfloc::top_stats after = top.stats();
  BOOST_TEST_MESSAGE("after both: reserved " << after.reserved_bytes / MiB << " MiB, committed "
                                             << after.committed_bytes / KiB << " KiB, peak committed "
                                             << after.peak_committed_bytes / KiB << " KiB");
}

// ------------------------------------------------------------------------------------------------------------
// Thread caches: remote releases drained, a documented bound, counted in the retain budget
// ------------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(chunks_released_on_another_thread_are_reused_by_their_home_thread) {
  perfloc::top_chunk top;  // retains 64 MiB: the blocks themselves come back from the top without a commit
  constexpr int count = 1000;
  std::vector<perfloc::process_chunk> round;
  for (int i = 0; i < count; ++i) round.emplace_back(top);
  const std::size_t committed = top.stats().committed_bytes;
  std::thread([&] { round.clear(); }).join();
  for (int i = 0; i < count; ++i) round.emplace_back(top);
  // The metas of the first round, handed back to this thread, serve the second: no new meta slots.
  BOOST_TEST(top.stats().committed_bytes == committed);
  BOOST_TEST(top.stats().live_chunks == static_cast<std::size_t>(count));
}

namespace {
/// On a thread that stays alive (an exiting thread gives its cache back): chunks holding blocks of every
/// cached class, one more of each than the cache keeps (the extra one goes to the top), all released.
std::unique_ptr<idle_thread> release_blocks_of_every_cached_class(perfloc::top_chunk& top) {
  return std::make_unique<idle_thread>([&top] {
    std::vector<perfloc::process_chunk> chunks;
    auto open = [&](std::size_t bytes, std::size_t held) {
      perfloc::process_chunk& chunk = chunks.emplace_back(top);
      if (bytes) chunk.allocate(bytes);
      BOOST_TEST(chunk.stats().held_bytes == held);  // the setup itself: the blocks this test means
    };
    chunks.emplace_back(top).allocate(block / 3);  // the site learns that its chunks take whole blocks
    chunks.pop_back();
    for (int i = 0; i < 5; ++i) open(100 * KiB, block + 2 * block);  // 128 KiB blocks: 4 cached
    for (int i = 0; i < 3; ++i) open(200 * KiB, block + 4 * block);  // 256 KiB: 2 cached
    for (int i = 0; i < 2; ++i) open(300 * KiB, block + 8 * block);  // 512 KiB (its own block): 1 cached
    open(600 * KiB, block + 16 * block);                              // 1 MiB: not cached
    while (chunks.size() < 15) open(0, block);                        // 64 KiB: 13 cached
  });
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_thread_cache_holds_exactly_its_documented_bound) {
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = 0}};
  const std::size_t before = top.stats().committed_bytes;
  const auto cacher = release_blocks_of_every_cached_class(top);
  const std::size_t after = top.stats().committed_bytes;
  // The cache keeps its bound for free blocks committed; the top keeps nothing of what it got back. (The rest
  // of the documented 3 MiB, one slab per small region class, is scale.test's released_small_chunks_give_
  // their_slabs_back: these chunks all take whole blocks.)
  BOOST_TEST(after == before + cache_bound);
}

BOOST_AUTO_TEST_CASE(thread_caches_count_in_the_retain_budget) {
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = cache_bound}};
  const std::size_t before = top.stats().committed_bytes;
  const auto cacher = release_blocks_of_every_cached_class(top);
  // The cache fills the whole budget: what the top got back goes to the OS.
  BOOST_TEST(top.stats().committed_bytes == before + cache_bound);
}

BOOST_AUTO_TEST_CASE(a_second_cache_filling_the_budget_sends_what_the_top_retained_back_to_the_os) {
  // A budget of two full caches. The first thread's cache leaves room for the top to keep the extra blocks
  // it got back; once a second thread's cache holds as much, the caches alone fill the budget, and what
  // the top retained earlier goes back to the OS too, whole.
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = 2 * cache_bound}};
  const std::size_t before = top.stats().committed_bytes;
  const auto first = release_blocks_of_every_cached_class(top);
  const auto second = release_blocks_of_every_cached_class(top);
  BOOST_TEST(top.stats().committed_bytes == before + 2 * cache_bound);
}

// ------------------------------------------------------------------------------------------------------------
// The release hook belongs to the top's state, which outlives a top destroyed with live chunks
// ------------------------------------------------------------------------------------------------------------

#ifdef NDEBUG  // a debug build aborts when a top dies with live chunks
BOOST_AUTO_TEST_CASE(a_release_hook_is_still_called_for_a_chunk_that_outlives_its_top) {
  const perfloc_test::death death = perfloc_test::run_in_child([] {
    static int calls = 0;
    alignas(perfloc::top_chunk) static unsigned char storage[sizeof(perfloc::top_chunk)];
    const std::string label(100, 'x');  // a capture on the heap: the function is not trivially copied
    auto* top = ::new (storage) perfloc::top_chunk{perfloc::top_options{
        .on_release = [label](const perfloc::chunk_summary&) { calls += label.size() == 100 ? 1 : 100; }}};
    auto* survivor = new perfloc::process_chunk{*top, "survivor"};
    top->~top_chunk();                          // prints a leak report and keeps the memory mapped
    std::memset(storage, 0xff, sizeof storage);  // whatever the top object held is gone
    delete survivor;
    if (calls != 1) std::_Exit(1);
  });
  BOOST_TEST(!death.died, death.output);
}
#endif
