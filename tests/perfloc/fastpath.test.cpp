// Tests of the allocation fast path's edges: requests that fit a block exactly or miss it by one byte,
// allocations right after a span that is not the latest is freed, and every alignment from 1 to 4096 at the
// end of a block. Each test keeps every live range in a std::map and checks, after every request, that it
// overlaps no other live range, lies inside a block the chunk holds and keeps its alignment; contents are
// written and read back.
//
// Where the blocks are comes from documented constants, not from perfloc's code: a block is 64 KiB << k
// (a chunk's first block 64 KiB, the next ones 128 KiB, 256 KiB, ... up to 4 MiB), it starts with a 64-byte
// header, and the first allocation of a block taken for a request of alignment <= 16 starts right after
// that header. A new block shows as held_bytes growing by its size. The end of a chunk's first block is
// found from its first allocation: blocks start page-aligned and the chunk header before that allocation
// takes less than a page. Every bump allocation is a multiple of 16 (in_use_bytes counts
// ((n ? n : 1) + 15) & ~15 bytes per request), so a request of the footprint left ends exactly there.
#define BOOST_TEST_MODULE perfloc.fastpath
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <utility>
#include <vector>

import perfloc;

namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t block_header_bytes = 64;
constexpr std::size_t first_block_bytes = 64 * KiB;
constexpr std::size_t page_bytes = 4096;

constexpr std::size_t footprint(std::size_t bytes) { return ((bytes ? bytes : 1) + 15) & ~std::size_t{15}; }

/// A process chunk under watch: every live allocation, every block it holds, its in-use bytes by the model.
class watched_chunk {
 public:
  explicit watched_chunk(perfloc::top_chunk& top) : chunk_(top) {
    held_ = chunk_.stats().held_bytes;
    BOOST_REQUIRE(held_ == first_block_bytes);
    // The first block: blocks start page-aligned, and the chunk's header before its first allocation takes
    // less than a page. The probe is the latest allocation: giving it back steps the bump back.
    auto* probe = static_cast<std::byte*>(chunk_.allocate(16));
    const auto start = reinterpret_cast<std::uintptr_t>(probe) & ~std::uintptr_t{page_bytes - 1};
    chunk_.deallocate(probe, 16);
    blocks_.emplace(start, first_block_bytes);
    first_block_end_ = reinterpret_cast<std::byte*>(start + first_block_bytes);
    first_free_ = probe;
    BOOST_REQUIRE(chunk_.stats().in_use_bytes == 0u);
  }

  /// Allocates, then checks the result against the model and fills it.
  std::byte* allocate(std::size_t bytes, std::size_t alignment = 16) {
    auto* p = static_cast<std::byte*>(chunk_.allocate(bytes, alignment));
    const auto at = reinterpret_cast<std::uintptr_t>(p);
    BOOST_REQUIRE(p != nullptr);
    BOOST_REQUIRE_MESSAGE(at % alignment == 0, "allocate(" << bytes << ", " << alignment << ") is misaligned");
    BOOST_REQUIRE_MESSAGE(at % 16 == 0, "a bump allocation is 16-aligned");
    const std::size_t held = chunk_.stats().held_bytes;
    if (held != held_) {  // a new block: the request is the first in it
      BOOST_REQUIRE(held > held_);
      const std::size_t block = held - held_;
      const std::size_t expected = first_block_bytes << std::min<std::size_t>(blocks_.size(), 6);
      BOOST_TEST(block == expected, "block " << blocks_.size() << " of " << block << " bytes, expected " << expected);
      // Its first allocation: right after the header, or at the first multiple of the alignment past it
      // (a block starts page-aligned).
      const std::uintptr_t start = at - std::max(alignment, block_header_bytes);
      BOOST_REQUIRE_MESSAGE(!inside_known_block(start), "a new block overlaps one the chunk holds");
      blocks_.emplace(start, block);
      held_ = held;
    }
    const std::size_t n = footprint(bytes);
    BOOST_REQUIRE_MESSAGE(inside_one_block(at, n), "[" << p << ", +" << n << ") is not inside a block the chunk holds");
    check_no_overlap(at, n);
    const auto fill = static_cast<unsigned char>(next_fill_++ | 1);
    std::memset(p, fill, bytes);
    live_.emplace(at, live_range{bytes, alignment, fill});
    in_use_ += n;
    BOOST_REQUIRE(chunk_.stats().in_use_bytes == in_use_);
    return p;
  }

  void deallocate(std::byte* p) {
    const auto it = live_.find(reinterpret_cast<std::uintptr_t>(p));
    BOOST_REQUIRE(it != live_.end());
    check_contents(it->first, it->second);
    chunk_.deallocate(p, it->second.bytes, it->second.alignment);
    in_use_ -= footprint(it->second.bytes);
    live_.erase(it);
    BOOST_REQUIRE(chunk_.stats().in_use_bytes == in_use_);
  }

  /// Every live range still holds what was written into it.
  void check_all() const {
    for (const auto& [at, range] : live_) check_contents(at, range);
    BOOST_REQUIRE(chunk_.stats().in_use_bytes == in_use_);
  }

  std::byte* first_block_end() const { return first_block_end_; }
  std::byte* first_free() const { return first_free_; }
  std::size_t held_bytes() const { return held_; }
  std::size_t blocks() const { return blocks_.size(); }
  perfloc::process_chunk& chunk() { return chunk_; }

 private:
  struct live_range {
    std::size_t bytes, alignment;
    unsigned char fill;
  };

  static void check_contents(std::uintptr_t at, const live_range& range) {
    const auto* p = reinterpret_cast<const unsigned char*>(at);
    const bool intact = std::all_of(p, p + range.bytes, [&](unsigned char c) { return c == range.fill; });
    BOOST_REQUIRE_MESSAGE(intact, "a " << range.bytes << "-byte allocation at " << static_cast<const void*>(p) << " changed");
  }

  void check_no_overlap(std::uintptr_t at, std::size_t n) const {
    auto next = live_.lower_bound(at);
    if (next != live_.end())
      BOOST_REQUIRE_MESSAGE(at + n <= next->first, "overlaps the live allocation that follows it");
    if (next != live_.begin()) {
      auto before = std::prev(next);
      BOOST_REQUIRE_MESSAGE(before->first + footprint(before->second.bytes) <= at,
                            "overlaps the live allocation before it");
    }
  }

  /// [at, at + n) lies in the payload of one known block (after its 64-byte header, before its end).
  bool inside_one_block(std::uintptr_t at, std::size_t n) const {
    auto it = blocks_.upper_bound(at);
    if (it == blocks_.begin()) return false;
    --it;
    return at >= it->first + block_header_bytes && at + n <= it->first + it->second;
  }
  bool inside_known_block(std::uintptr_t at) const {
    auto it = blocks_.upper_bound(at);
    if (it == blocks_.begin()) return false;
    --it;
    return at < it->first + it->second;
  }

  perfloc::process_chunk chunk_;
  std::map<std::uintptr_t, std::size_t> blocks_;  // start -> bytes
  std::map<std::uintptr_t, live_range> live_;
  std::size_t held_ = 0, in_use_ = 0;
  std::byte* first_block_end_ = nullptr;
  std::byte* first_free_ = nullptr;
  unsigned next_fill_ = 1;
};

perfloc::top_chunk& private_top() {
  static perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 256 * KiB * KiB}};
  return top;
}

/// Leaves exactly `room` bytes between the bump and the end of the first block (room a multiple of 16).
std::size_t fill_to(watched_chunk& w, std::size_t room) {
  const auto left = static_cast<std::size_t>(w.first_block_end() - w.first_free());
  BOOST_REQUIRE(left > room);
  BOOST_REQUIRE(w.allocate(left - room) == w.first_free());
  return room;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_request_that_fits_the_rest_of_a_block_exactly_ends_at_its_end) {
  // Every size whose footprint is the room left, from room - 15 to room, for rooms small and large.
  for (std::size_t room : {std::size_t{16}, std::size_t{32}, std::size_t{48}, std::size_t{256}, std::size_t{4096}})
    for (std::size_t bytes = room - 15; bytes <= room; ++bytes) {
      watched_chunk w{private_top()};
      fill_to(w, room);
      std::byte* p = w.allocate(bytes);
      BOOST_TEST(p + room == w.first_block_end(), "room " << room << ", " << bytes << " bytes");
      BOOST_TEST(w.blocks() == 1u);  // no new block for a request that fits
      // The block is full: the next requests, of any size, go to a new block and never past this one's end.
      for (std::size_t next : {std::size_t{1}, std::size_t{16}, std::size_t{17}, std::size_t{100}}) w.allocate(next);
      BOOST_TEST(w.blocks() == 2u);
      w.check_all();
    }
}

BOOST_AUTO_TEST_CASE(a_request_one_byte_over_the_rest_of_a_block_takes_a_new_block) {
  for (std::size_t room : {std::size_t{16}, std::size_t{32}, std::size_t{48}, std::size_t{256}, std::size_t{4096}}) {
    watched_chunk w{private_top()};
    fill_to(w, room);
    std::byte* p = w.allocate(room + 1);
    BOOST_TEST(w.blocks() == 2u);
    BOOST_TEST((p < w.first_block_end() - room || p >= w.first_block_end()));  // not in the old block's tail
    // The tail of the old block may still serve a request that fits it, and never beyond its end.
    for (int i = 0; i < 4; ++i) w.allocate(room / 4 ? room / 4 : 1);
    w.allocate(room);
    w.check_all();
  }
}

BOOST_AUTO_TEST_CASE(the_fast_path_refuses_what_would_cross_the_block_end) {
  // From each room, requests of every size up to room + 16 (one granule over), each in a fresh chunk.
  for (std::size_t room : {std::size_t{32}, std::size_t{48}, std::size_t{64}, std::size_t{112}})
    for (std::size_t bytes = 0; bytes <= room + 16; ++bytes) {
      watched_chunk w{private_top()};
      fill_to(w, room);
      w.allocate(bytes);
      w.allocate(16);
      w.allocate(room);
      w.check_all();
    }
}

BOOST_AUTO_TEST_CASE(allocations_right_after_freeing_a_span_that_is_not_the_latest_stay_apart) {
  for (std::size_t freed : {std::size_t{16}, std::size_t{48}, std::size_t{200}, std::size_t{512}, std::size_t{528},
                            std::size_t{1000}, std::size_t{4096}, std::size_t{40000}}) {
    watched_chunk w{private_top()};
    std::byte* a = w.allocate(freed);
    w.allocate(24);  // so that `a` is not the latest allocation
    w.deallocate(a);
    // Requests of the freed size, smaller, larger, and with every alignment, right after the free.
    std::vector<std::byte*> made;
    for (std::size_t bytes : {freed, freed / 2, std::size_t{1}, freed + 1, freed / 3, std::size_t{16}})
      made.push_back(w.allocate(bytes));
    for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2) made.push_back(w.allocate(freed / 4, alignment));
    w.check_all();
    // Free every other one (none of them the latest), then fill the first block to its end and beyond.
    for (std::size_t i = 0; i + 1 < made.size(); i += 2) w.deallocate(made[i]);
    for (int i = 0; i < 2000; ++i) w.allocate(8 + (static_cast<std::size_t>(i) * 37) % 600);
    BOOST_TEST(w.blocks() >= 2u);
    w.check_all();
  }
}

BOOST_AUTO_TEST_CASE(every_alignment_is_kept_at_the_end_of_a_block) {
  for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2)
    for (std::size_t room : {std::size_t{16}, std::size_t{32}, std::size_t{80}, std::size_t{4096}, std::size_t{8192}})
      for (std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{16}, room - 15, room, room + 1}) {
        watched_chunk w{private_top()};
        fill_to(w, room);
        w.allocate(bytes, alignment);
        w.allocate(16);
        w.allocate(bytes, alignment);
        w.check_all();
      }
}

BOOST_AUTO_TEST_CASE(a_chunk_filled_across_many_blocks_keeps_every_allocation_inside_one) {
  // Geometric growth, documented: 64 KiB, 128 KiB, ... 4 MiB, then 4 MiB blocks. Mixed sizes and alignments
  // fill eight blocks; every allocation is checked against the blocks the chunk holds.
  watched_chunk w{private_top()};
  std::uint64_t state = 88172645463325252u;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  std::vector<std::byte*> live;
  while (w.blocks() < 8) {
    const std::size_t bytes = next() % 8 == 0 ? next() % 20000 : next() % 300;
    live.push_back(w.allocate(bytes));
    if (next() % 4 == 0 && live.size() > 1) {  // free one that is not the latest
      const std::size_t i = next() % (live.size() - 1);
      w.deallocate(live[i]);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  BOOST_TEST(w.held_bytes() == (64 + 128 + 256 + 512 + 1024 + 2048 + 4096 + 4096) * KiB);
  w.check_all();
}
