// Tests of perfloc.process: allocation, make/destroy, release, the error contract, and a property test of
// random operations against a simple model.
#define BOOST_TEST_MODULE perfloc.process
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory_resource>
#include <new>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "death.hpp"

import perfloc;

namespace {

constexpr std::size_t KiB = 1024;

/// What a request of `bytes` counts in in_use_bytes (README): a multiple of 16, at least 16.
std::size_t footprint(std::size_t bytes) { return ((bytes ? bytes : 1) + 15) & ~std::size_t{15}; }

bool aligned(const void* p, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(p) % alignment == 0;
}

/// Records the order of construction and destruction.
struct tracer {
  std::vector<int>& log;
  int id;
  tracer(std::vector<int>& l, int i) : log(l), id(i) {}
  ~tracer() { log.push_back(id); }
};

struct throws_on_construction {
  static inline int destroyed = 0;
  std::string payload{"long enough to allocate on the global heap, if anything leaked"};
  explicit throws_on_construction(bool fail) {
    if (fail) throw std::runtime_error("constructor failed");
  }
  ~throws_on_construction() { ++destroyed; }
};

struct alignas(64) wide {
  unsigned char bytes[64];
};

}  // namespace

BOOST_AUTO_TEST_CASE(allocate_returns_writable_aligned_non_overlapping_memory_for_every_alignment) {
  perfloc::process_chunk chunk;
  struct range {
    std::size_t bytes;
    unsigned char fill;
  };
  std::map<std::uintptr_t, range> live;  // every allocation stays live: none may overlap another
  unsigned char fill = 1;
  auto take = [&](std::size_t bytes, std::size_t alignment) {
    auto* p = static_cast<unsigned char*>(alignment ? chunk.allocate(bytes, alignment) : chunk.allocate(bytes));
    const auto at = reinterpret_cast<std::uintptr_t>(p);
    BOOST_REQUIRE(p != nullptr);
    const std::size_t expected_alignment = alignment ? alignment : alignof(std::max_align_t);
    BOOST_TEST(aligned(p, expected_alignment), "allocate(" << bytes << ", " << alignment << ")");
    const std::size_t span = std::max<std::size_t>(bytes, 1);  // allocate(0) is distinct too
    auto next = live.lower_bound(at);
    if (next != live.end()) BOOST_REQUIRE_MESSAGE(at + span <= next->first, "overlaps the allocation after it");
    if (next != live.begin()) {
      auto before = std::prev(next);
      BOOST_REQUIRE_MESSAGE(before->first + std::max<std::size_t>(before->second.bytes, 1) <= at,
                            "overlaps the allocation before it");
    }
    std::memset(p, fill, bytes);
    live.emplace(at, range{bytes, fill});
    fill = static_cast<unsigned char>(fill % 250 + 1);
  };
  for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2)
    for (std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{100}, std::size_t{5000}})
      take(bytes, alignment);
  for (std::size_t bytes : {std::size_t{0}, std::size_t{3}, std::size_t{16}, std::size_t{17}}) take(bytes, 0);
  // Everything written is still there: no allocation was handed out twice or written over by another.
  for (const auto& [at, r] : live) {
    const auto* p = reinterpret_cast<const unsigned char*>(at);
    BOOST_TEST(std::all_of(p, p + r.bytes, [&](unsigned char c) { return c == r.fill; }), r.bytes << " bytes at " << at);
  }
}

BOOST_AUTO_TEST_CASE(allocate_zero_gives_distinct_non_null_pointers) {
  perfloc::process_chunk chunk;
  void* a = chunk.allocate(0);
  void* b = chunk.allocate(0);
  BOOST_TEST(a != nullptr);
  BOOST_TEST(b != nullptr);
  BOOST_TEST(a != b);
}

BOOST_AUTO_TEST_CASE(an_alignment_that_is_not_a_power_of_two_is_invalid_argument) {
  perfloc::process_chunk chunk;
  const std::size_t before = chunk.stats().in_use_bytes;
  for (std::size_t alignment : {std::size_t{0}, std::size_t{3}, std::size_t{24}, std::size_t{48}, std::size_t{1000}})
    BOOST_CHECK_THROW(chunk.allocate(16, alignment), std::invalid_argument);
  BOOST_TEST(chunk.stats().in_use_bytes == before);
  BOOST_TEST(chunk.allocate(16, 32) != nullptr);
}

BOOST_AUTO_TEST_CASE(in_use_counts_requests_padding_and_headers_and_returns_at_release) {
  perfloc::top_chunk top;
  {
    perfloc::process_chunk chunk{top};
    BOOST_TEST(chunk.stats().in_use_bytes == 0u);
    chunk.allocate(1);
    BOOST_TEST(chunk.stats().in_use_bytes == 16u);
    chunk.allocate(17);
    BOOST_TEST(chunk.stats().in_use_bytes == 48u);
    int* i = chunk.make<int>(5);  // 8-byte header + int, rounded to 16
    BOOST_TEST(chunk.stats().in_use_bytes == 64u);
    BOOST_TEST(*i == 5);
    BOOST_TEST(top.stats().in_use_bytes == 64u);
    BOOST_TEST(chunk.stats().held_bytes >= 64 * KiB);
    perfloc::destroy(i);
    BOOST_TEST(chunk.stats().in_use_bytes == 48u);
  }
  BOOST_TEST(top.stats().in_use_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(made_objects_are_destroyed_newest_first_at_release) {
  std::vector<int> log;
  {
    perfloc::process_chunk chunk;
    for (int i = 0; i < 100; ++i) chunk.make<tracer>(log, i);
    BOOST_TEST(log.empty());
  }
  std::vector<int> expected(100);
  for (int i = 0; i < 100; ++i) expected[i] = 99 - i;
  BOOST_TEST(log == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(destroy_runs_the_destructor_once_and_release_skips_it) {
  std::vector<int> log;
  {
    perfloc::process_chunk chunk;
    tracer* a = chunk.make<tracer>(log, 1);
    chunk.make<tracer>(log, 2);
    tracer* c = chunk.make<tracer>(log, 3);
    perfloc::destroy(a);
    perfloc::destroy(c);
    BOOST_TEST(log == (std::vector<int>{1, 3}), boost::test_tools::per_element());
  }
  BOOST_TEST(log == (std::vector<int>{1, 3, 2}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(destroy_of_nullptr_does_nothing) {
  std::vector<int> log;
  perfloc::top_chunk top;
  {
    perfloc::process_chunk chunk{top};
    chunk.make<tracer>(log, 1);
    const perfloc::chunk_stats before = chunk.stats();
    perfloc::destroy(static_cast<int*>(nullptr));
    perfloc::destroy(static_cast<const tracer*>(nullptr));
    const perfloc::chunk_stats after = chunk.stats();
    BOOST_TEST(after.in_use_bytes == before.in_use_bytes);
    BOOST_TEST(after.objects_destroyed == 0u);
    BOOST_TEST(log.empty());  // no destructor ran
    BOOST_TEST(top.stats().in_use_bytes == footprint(8 + 24 + sizeof(tracer)));
  }
  BOOST_TEST(log == (std::vector<int>{1}), boost::test_tools::per_element());  // the one made, destroyed once
}

BOOST_AUTO_TEST_CASE(destroyed_memory_is_reused_by_the_chunk) {
  std::vector<int> log;  // declared first: the chunk's release runs destructors that write to it
  perfloc::top_chunk top;  // a new site: its first chunk has a whole block, where all of this fits
  perfloc::process_chunk chunk{top};
  tracer* first = chunk.make<tracer>(log, 1);
  chunk.make<tracer>(log, 2);  // so the first is not the latest allocation
  perfloc::destroy(first);
  tracer* again = chunk.make<tracer>(log, 3);
  BOOST_TEST(static_cast<void*>(again) == static_cast<void*>(first));

  void* raw = chunk.allocate(200);
  chunk.allocate(8);
  chunk.deallocate(raw, 200);
  BOOST_TEST(chunk.allocate(200) == raw);
  // A span bigger than needed is split: two small requests come out of a freed big one.
  void* big = chunk.allocate(1024);
  chunk.allocate(8);
  chunk.deallocate(big, 1024);
  void* piece = chunk.allocate(100);
  BOOST_TEST(piece == big);  // the remainder stays free for later requests
}

BOOST_AUTO_TEST_CASE(the_latest_allocation_is_given_back_by_stepping_the_bump_back) {
  perfloc::process_chunk chunk;
  void* a = chunk.allocate(48);
  chunk.deallocate(a, 48);
  BOOST_TEST(chunk.allocate(48) == a);
  BOOST_TEST(chunk.stats().in_use_bytes == 48u);
}

// The handle, its allocator<T> copies, the pmr resource and destroy all move the one cursor in the chunk's
// meta: after any of them moved it (forward, or a step back) the handle goes on from where it is, handing
// out no byte twice, skipping none, and in_use stays exact. A handle that kept a copy of the cursor (to
// bump from a register) would have to check it against the meta's at every allocation.
BOOST_AUTO_TEST_CASE(the_handle_allocators_resource_and_destroy_move_one_cursor) {
  perfloc::process_chunk chunk;
  std::vector<std::pair<std::byte*, std::size_t>> spans;
  std::size_t in_use = 0;
  auto took = [&](void* p, std::size_t bytes) {
    auto* start = static_cast<std::byte*>(p);
    for (const auto& [other, n] : spans) BOOST_TEST((start + footprint(bytes) <= other || other + n <= start));
    spans.emplace_back(start, footprint(bytes));
    in_use += footprint(bytes);
    BOOST_TEST(chunk.stats().in_use_bytes == in_use);
  };
  perfloc::allocator<std::byte> bytes{chunk};
  std::pmr::memory_resource* resource = chunk.resource();
  void* last = nullptr;
  for (int round = 0; round < 3; ++round) {
    took(chunk.allocate(32), 32);
    void* a = bytes.allocate(48);
    took(a, 48);
    last = chunk.allocate(16);
    took(last, 16);
    BOOST_TEST(static_cast<std::byte*>(last) == static_cast<std::byte*>(a) + 48);  // right after, no gap
    took(resource->allocate(64, 16), 64);
    took(chunk.allocate(80), 80);
  }
  // A destroy that steps the bump back (the latest allocation): the handle takes the same bytes again.
  int* made = bytes.make<int>(7);
  void* start = reinterpret_cast<std::byte*>(made) - 8;  // after its 8-byte header
  in_use += 16;
  BOOST_TEST(chunk.stats().in_use_bytes == in_use);
  perfloc::destroy(made);
  in_use -= 16;
  BOOST_TEST(chunk.stats().in_use_bytes == in_use);
  void* again = chunk.allocate(16);
  BOOST_TEST(again == start);
  took(again, 16);
  // The handle's own step back, then a move: the moved-to handle goes on from the same cursor.
  void* latest = chunk.allocate(128);
  chunk.deallocate(latest, 128);
  BOOST_TEST(chunk.stats().in_use_bytes == in_use);
  perfloc::process_chunk moved = std::move(chunk);
  void* after_move = moved.allocate(128);
  BOOST_TEST(after_move == latest);
  in_use += 128;
  BOOST_TEST(moved.stats().in_use_bytes == in_use);
  BOOST_TEST(bytes.allocate(16) == static_cast<std::byte*>(after_move) + 128);
  in_use += 16;
  BOOST_TEST(moved.stats().in_use_bytes == in_use);
}

BOOST_AUTO_TEST_CASE(large_requests_get_their_own_block_and_give_it_back) {
  perfloc::process_chunk chunk;
  const std::size_t held = chunk.stats().held_bytes;
  void* big = chunk.allocate(1024 * KiB);
  std::memset(big, 1, 1024 * KiB);
  BOOST_TEST(chunk.stats().held_bytes == held + 1024 * KiB);  // a power of two fits a block exactly
  BOOST_TEST(chunk.stats().in_use_bytes == 1024 * KiB);
  chunk.deallocate(big, 1024 * KiB);
  BOOST_TEST(chunk.stats().held_bytes == held);
  BOOST_TEST(chunk.stats().in_use_bytes == 0u);
  for (std::size_t alignment : {std::size_t{4096}, std::size_t{64 * KiB}}) {
    void* aligned_big = chunk.allocate(300 * KiB, alignment);
    BOOST_TEST(aligned(aligned_big, alignment));
    std::memset(aligned_big, 2, 300 * KiB);
    chunk.deallocate(aligned_big, 300 * KiB, alignment);
    BOOST_TEST(chunk.stats().held_bytes == held);
  }
}

BOOST_AUTO_TEST_CASE(blocks_grow_as_the_chunk_fills) {
  perfloc::process_chunk chunk;
  std::vector<std::pair<unsigned char*, int>> blocks;
  for (int i = 0; i < 20000; ++i) {
    auto* p = static_cast<unsigned char*>(chunk.allocate(100));
    std::memset(p, i & 0xff, 100);
    blocks.emplace_back(p, i & 0xff);
  }
  for (auto& [p, value] : blocks) BOOST_REQUIRE(p[0] == value && p[99] == value);
  BOOST_TEST(chunk.stats().in_use_bytes == 20000u * 112u);
  // Geometric growth: ~2.2 MB in far fewer than 2.2 MB / 64 KiB blocks' worth of overhead.
  BOOST_TEST(chunk.stats().held_bytes < 2 * chunk.stats().in_use_bytes);
}

BOOST_AUTO_TEST_CASE(a_throwing_constructor_in_make_leaks_nothing) {
  perfloc::process_chunk chunk;
  chunk.make<int>(1);
  const std::size_t before = chunk.stats().in_use_bytes;
  throws_on_construction::destroyed = 0;
  BOOST_CHECK_THROW(chunk.make<throws_on_construction>(true), std::runtime_error);
  BOOST_TEST(chunk.stats().in_use_bytes == before);
  BOOST_TEST(throws_on_construction::destroyed == 0);
  auto* ok = chunk.make<throws_on_construction>(false);
  BOOST_TEST(ok->payload.size() > 20u);
  chunk.release();
  BOOST_TEST(throws_on_construction::destroyed == 1);  // only the one that was made
}

BOOST_AUTO_TEST_CASE(over_aligned_types_are_made_aligned) {
  perfloc::process_chunk chunk;
  for (int i = 0; i < 10; ++i) {
    wide* w = chunk.make<wide>();
    BOOST_TEST(aligned(w, 64));
    std::memset(w->bytes, i, sizeof w->bytes);
    if (i % 2) perfloc::destroy(w);
  }
}

BOOST_AUTO_TEST_CASE(a_moved_chunk_keeps_its_objects_and_the_moved_from_owns_nothing) {
  perfloc::top_chunk top;
  std::vector<int> log;
  perfloc::process_chunk a{top, "a"};
  int* value = a.make<int>(42);
  a.make<tracer>(log, 7);
  perfloc::process_chunk b = std::move(a);
  BOOST_TEST(!a);
  BOOST_TEST(static_cast<bool>(b));
  BOOST_TEST(*value == 42);
  BOOST_TEST(b.label() == "a");
  a.release();  // releasing a moved-from chunk does nothing
  BOOST_TEST(log.empty());
  BOOST_TEST(top.stats().live_chunks == 1u);
  perfloc::process_chunk c{top};
  c = std::move(b);  // c's own chunk is released, b's is taken over
  BOOST_TEST(top.stats().live_chunks == 1u);
  perfloc::destroy(value);
  c.release();
  BOOST_TEST(log == (std::vector<int>{7}), boost::test_tools::per_element());
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(many_chunks_alive_at_once_released_in_any_order) {
  perfloc::top_chunk top;
  std::vector<perfloc::process_chunk> chunks;
  std::vector<int*> values;
  for (int i = 0; i < 1000; ++i) {
    chunks.emplace_back(top, "chunk " + std::to_string(i));
    values.push_back(chunks.back().make<int>(i));
  }
  BOOST_TEST(top.stats().live_chunks == 1000u);
  for (int i = 0; i < 1000; ++i) BOOST_REQUIRE(*values[i] == i);
  std::mt19937 random(7);
  std::shuffle(chunks.begin(), chunks.end(), random);
  BOOST_TEST(chunks[10].label().starts_with("chunk "));
  while (!chunks.empty()) chunks.pop_back();
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(destructors_may_use_the_chunk_while_it_is_released) {
  struct owner {
    perfloc::process_chunk& chunk;
    int* child;
    std::vector<int>& log;
    ~owner() {
      perfloc::destroy(child);          // frees memory of the chunk being released
      chunk.make<tracer>(log, 99);      // and makes a last object, whose destructor also runs
    }
  };
  std::vector<int> log;
  {
    perfloc::process_chunk chunk;
    chunk.make<owner>(chunk, chunk.make<int>(3), log);
  }
  BOOST_TEST(log == (std::vector<int>{99}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(an_exception_unwinding_through_nested_scopes_leaks_nothing) {
  perfloc::top_chunk top;
  std::vector<int> log;
  auto nest = [&](auto& self, int depth) -> void {
    perfloc::process_chunk chunk{top};
    chunk.make<tracer>(log, depth);
    chunk.allocate(1000);
    if (depth == 20) throw std::runtime_error("deep");
    self(self, depth + 1);
  };
  BOOST_CHECK_THROW(nest(nest, 0), std::runtime_error);
  BOOST_TEST(log.size() == 21u);
  BOOST_TEST(log.front() == 20);
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(the_pmr_resource_allocates_from_the_chunk) {
  perfloc::process_chunk chunk;
  std::pmr::memory_resource* resource = chunk.resource();
  perfloc::process_chunk other;
  // Equal only to itself: not to another chunk's resource (either way round), not to the global heap's.
  BOOST_TEST(!resource->is_equal(*other.resource()));
  BOOST_TEST(!other.resource()->is_equal(*resource));
  BOOST_TEST(!resource->is_equal(*std::pmr::new_delete_resource()));
  BOOST_TEST(!std::pmr::new_delete_resource()->is_equal(*resource));
  BOOST_TEST((std::pmr::polymorphic_allocator<int>{resource} != std::pmr::polymorphic_allocator<int>{other.resource()}));
  {
    std::pmr::vector<int> numbers{resource};
    for (int i = 0; i < 1000; ++i) numbers.push_back(i);
    // std::vector grows its buffer by doubling from 1: the live buffer holds 1024 ints, the rest went back.
    BOOST_TEST(numbers.capacity() == 1024u);
    BOOST_TEST(chunk.stats().in_use_bytes == 1024 * sizeof(int));
    perfloc::process_chunk moved = std::move(chunk);  // the resource stays valid while the handle moves
    BOOST_TEST(moved.resource() == resource);
    numbers.push_back(1000);
    BOOST_TEST(numbers[1000] == 1000);
    chunk = std::move(moved);
  }
  BOOST_TEST(chunk.stats().in_use_bytes == 0u);  // every buffer was given back
}

BOOST_AUTO_TEST_CASE(pmr_containers_of_different_chunks_copy_on_move_assignment) {
  // Resources of different chunks are not equal, so a std::pmr container moved into one of another chunk
  // must copy its elements into its own chunk, not steal a buffer that dies with the other chunk.
  perfloc::process_chunk mine;
  perfloc::process_chunk theirs;
  std::pmr::vector<std::uint64_t> target{mine.resource()};
  {
    std::pmr::vector<std::uint64_t> source{theirs.resource()};
    source.reserve(64);
    for (std::uint64_t i = 0; i < 64; ++i) source.push_back(i * 7);
    BOOST_TEST(theirs.stats().in_use_bytes == 64 * sizeof(std::uint64_t));
    target = std::move(source);
    BOOST_TEST(mine.stats().in_use_bytes == 64 * sizeof(std::uint64_t));  // a buffer of its own, in its chunk
    // target's elements are in `mine`: after `theirs` is released, they are still there.
  }
  theirs.release();
  BOOST_REQUIRE(target.size() == 64u);
  for (std::uint64_t i = 0; i < 64; ++i) BOOST_REQUIRE(target[i] == i * 7);
  BOOST_TEST(target.get_allocator().resource() == mine.resource());
}

BOOST_AUTO_TEST_CASE(a_chunk_can_be_released_on_another_thread) {
  perfloc::top_chunk top;
  std::vector<int> log;
  perfloc::process_chunk chunk{top};
  chunk.make<tracer>(log, 1);
  std::thread([c = std::move(chunk)]() mutable { c.release(); }).join();
  BOOST_TEST(log == (std::vector<int>{1}), boost::test_tools::per_element());
  BOOST_TEST(top.stats().live_chunks == 0u);
}

// ------------------------------------------------------------------------------------------------------------
// Property test: random operations against a model of live allocations.
// ------------------------------------------------------------------------------------------------------------

namespace {

struct counted {
  static inline long alive = 0;
  std::uint64_t check;
  explicit counted(std::uint64_t c) : check(c) { ++alive; }
  ~counted() { --alive; }
};

struct model_allocation {
  std::size_t bytes, alignment;
  unsigned char fill;
};

bool intact(const unsigned char* p, std::size_t bytes, unsigned char fill) {
  return std::all_of(p, p + bytes, [fill](unsigned char c) { return c == fill; });
}

}  // namespace

BOOST_AUTO_TEST_CASE(random_operations_agree_with_a_model) {
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = 1 << 20}};
  std::mt19937_64 random(12345);
  for (int round = 0; round < 30; ++round) {
    counted::alive = 0;
    perfloc::process_chunk chunk{top};
    std::map<std::uintptr_t, model_allocation> live;  // address -> allocation
    std::vector<std::pair<counted*, std::uint64_t>> objects;
    std::size_t model_in_use = 0;
    const std::size_t object_bytes = footprint(8 + sizeof(counted) + 24);  // header + cleanup record + object

    auto check_no_overlap = [&](std::uintptr_t at, std::size_t bytes) {
      auto next = live.lower_bound(at);
      if (next != live.end()) BOOST_REQUIRE(at + std::max<std::size_t>(bytes, 1) <= next->first);
      if (next != live.begin()) {
        auto before = std::prev(next);
        BOOST_REQUIRE(before->first + std::max<std::size_t>(before->second.bytes, 1) <= at);
      }
    };

    for (int step = 0; step < 3000; ++step) {
      const unsigned op = random() % 10;
      if (op < 4) {  // allocate
        const std::size_t bytes = random() % 32 == 0 ? random() % (1 << 20) : random() % 4 == 0 ? random() % 40000
                                                                                                  : random() % 300;
        const std::size_t alignment = std::size_t{1} << (random() % 4 == 0 ? random() % 13 : 4);
        auto* p = static_cast<unsigned char*>(chunk.allocate(bytes, alignment));
        const auto at = reinterpret_cast<std::uintptr_t>(p);
        BOOST_REQUIRE(at % alignment == 0);
        check_no_overlap(at, bytes);
        const auto fill = static_cast<unsigned char>(random());
        std::memset(p, fill, bytes);
        live[at] = {bytes, alignment, fill};
        model_in_use += footprint(bytes);
      } else if (op < 7 && !live.empty()) {  // deallocate a random live allocation, checking its contents
        auto it = live.begin();
        std::advance(it, random() % live.size());
        auto* p = reinterpret_cast<unsigned char*>(it->first);
        BOOST_REQUIRE(intact(p, it->second.bytes, it->second.fill));
        chunk.deallocate(p, it->second.bytes, it->second.alignment);
        model_in_use -= footprint(it->second.bytes);
        live.erase(it);
      } else if (op < 9) {  // make
        const std::uint64_t check = random();
        counted* c = chunk.make<counted>(check);
        BOOST_REQUIRE(reinterpret_cast<std::uintptr_t>(c) % alignof(counted) == 0);
        objects.emplace_back(c, check);
        model_in_use += object_bytes;
      } else if (!objects.empty()) {  // destroy
        const std::size_t i = random() % objects.size();
        BOOST_REQUIRE(objects[i].first->check == objects[i].second);
        perfloc::destroy(objects[i].first);
        objects.erase(objects.begin() + static_cast<std::ptrdiff_t>(i));
        model_in_use -= object_bytes;
      }
      BOOST_REQUIRE(chunk.stats().in_use_bytes == model_in_use);
      BOOST_REQUIRE(counted::alive == static_cast<long>(objects.size()));
    }
    for (auto& [at, allocation] : live) {
      BOOST_REQUIRE(intact(reinterpret_cast<unsigned char*>(at), allocation.bytes, allocation.fill));
    }
    for (auto& [object, check] : objects) BOOST_REQUIRE(object->check == check);
    BOOST_REQUIRE(top.stats().in_use_bytes == model_in_use);
    chunk.release();
    BOOST_REQUIRE(counted::alive == 0);
    BOOST_REQUIRE(top.stats().in_use_bytes == 0u);
    BOOST_REQUIRE(top.stats().live_chunks == 0u);
  }
}

// ------------------------------------------------------------------------------------------------------------
// Misuse, caught in debug builds
// ------------------------------------------------------------------------------------------------------------

#ifndef NDEBUG
BOOST_AUTO_TEST_CASE(a_second_destroy_is_reported) {
  const auto death = perfloc_test::run_in_child([] {
    perfloc::process_chunk chunk;
    int* p = chunk.make<int>(1);
    chunk.make<int>(2);
    perfloc::destroy(p);
    perfloc::destroy(p);
  });
  BOOST_TEST(death.died);
  // ASan builds see the poisoned header first; plain debug builds print perfloc's own message.
  BOOST_TEST((death.output.find("destroy was called twice") != std::string::npos ||
              death.output.find("use-after-poison") != std::string::npos),
             death.output);
}

BOOST_AUTO_TEST_CASE(destroy_of_a_pointer_make_did_not_return_is_reported) {
  const auto death = perfloc_test::run_in_child([] {
    auto* p = new long[4]{};
    perfloc::destroy(p + 2);
  });
  BOOST_TEST(death.died);
  BOOST_TEST(death.output.find("did not return") != std::string::npos, death.output);
}

BOOST_AUTO_TEST_CASE(use_of_a_moved_from_chunk_is_reported) {
  const auto death = perfloc_test::run_in_child([] {
    perfloc::process_chunk a;
    perfloc::process_chunk b = std::move(a);
    a.allocate(8);
  });
  BOOST_TEST(death.died);
  BOOST_TEST(death.output.find("moved-from or released process_chunk") != std::string::npos, death.output);
}
#endif
