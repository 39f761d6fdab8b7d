// Memory at scale, from the user's side: a burst of chunks, all or some released, gives its memory back to
// the OS whole above retain_bytes (thread caches included).
//
// The documented constants these tests compute with (README, "How it works" and "Threads"): a child_meta is
// 192 bytes, and the meta region commits 64 KiB at a time and keeps what it committed; a free block above the
// retain budget goes back to the OS whole, header page included; a thread caches at most 16 free 64 KiB
// blocks; thread caches count in retain_bytes.
#define BOOST_TEST_MODULE perfloc.scale
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <vector>

#include <unistd.h>

import perfloc;

namespace {
constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;
constexpr std::size_t meta_bytes = 192;              // one child_meta per chunk, kept by the meta region
constexpr std::size_t meta_commit_step = 64 * KiB;   // the meta region commits this much at a time
constexpr std::size_t count = 20'000;
constexpr std::size_t state_bytes = 256;

/// What the meta region may have committed for `n` chunks alive at once.
constexpr std::size_t metas_of(std::size_t n) { return (n * meta_bytes + meta_commit_step - 1) / meta_commit_step * meta_commit_step + meta_commit_step; }

/// Resident bytes of this process (/proc/self/statm: size, resident, ... in pages).
[[maybe_unused]] std::size_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  BOOST_REQUIRE(f);
  unsigned long size = 0, resident = 0;
  BOOST_REQUIRE(std::fscanf(f, "%lu %lu", &size, &resident) == 2);
  std::fclose(f);
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

/// `count` chunks, each holding `state_bytes` written (a suspended coroutine's state).
void open_idle_chunks(perfloc::top_chunk& top, std::vector<perfloc::process_chunk>& chunks) {
  chunks.reserve(count);
  for (std::size_t i = 0; i < count; ++i) std::memset(chunks.emplace_back(top).allocate(state_bytes), 1, state_bytes);
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_released_burst_leaves_no_more_committed_than_retain_bytes) {
  constexpr std::size_t retain = 1 * MiB;
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = retain}};
  const std::size_t before = top.stats().committed_bytes;
  {
    std::vector<perfloc::process_chunk> chunks;
    open_idle_chunks(top, chunks);
    BOOST_TEST(top.stats().committed_bytes > before + retain + metas_of(count));  // the setup: a real burst
    while (!chunks.empty()) chunks.pop_back();  // newest first, as scopes end
  }
  const std::size_t after = top.stats().committed_bytes;
  BOOST_TEST_MESSAGE("committed after the burst: +" << (after - before) / KiB << " KiB");
  // Free memory, the thread cache's included, within retain_bytes; the metas stay.
  BOOST_TEST(after <= before + retain + metas_of(count));
}

// Under AddressSanitizer or ThreadSanitizer the process's resident memory is mostly their shadow memory,
// which they keep (ASan's poisoning of the released blocks, say): the measure would be of the tool, not of
// perfloc. committed_bytes (the test above) is checked under them too.
#if !__has_feature(address_sanitizer) && !__has_feature(thread_sanitizer)
BOOST_AUTO_TEST_CASE(a_released_burst_leaves_resident_memory_near_the_start) {
  constexpr std::size_t retain = 1 * MiB;
  constexpr std::size_t slack = 1 * MiB;  // the test's own allocations (Boost.Test, the vector's spine is freed)
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = retain}};
  const std::size_t before = resident_bytes();
  {
    std::vector<perfloc::process_chunk> chunks;
    open_idle_chunks(top, chunks);
    BOOST_TEST(resident_bytes() > before + retain + metas_of(count) + slack);  // the setup: a real burst
    while (!chunks.empty()) chunks.pop_back();
  }
  const std::size_t after = resident_bytes();
  BOOST_TEST_MESSAGE("resident after the burst: +" << (after > before ? (after - before) / KiB : 0) << " KiB");
  BOOST_TEST(after <= before + retain + metas_of(count) + slack);
}
#endif

BOOST_AUTO_TEST_CASE(free_blocks_go_back_whole_when_their_buddies_stay_in_use) {
  // Every other chunk stays open, so no released block can merge with its buddy: each must still go back to
  // the OS whole, header page included (retain_bytes = 0; the thread cache keeps at most 16 first blocks).
  constexpr std::size_t cache_shells = 16 * 64 * KiB;
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = 0}};
  const std::size_t before = top.stats().committed_bytes;
  std::vector<perfloc::process_chunk> chunks;
  open_idle_chunks(top, chunks);
  const std::size_t all = top.stats().committed_bytes - before;  // count chunks and their metas
  std::vector<perfloc::process_chunk> survivors;
  for (std::size_t i = 0; i < count; i += 2) survivors.push_back(std::move(chunks[i]));
  chunks.clear();  // the odd ones, released
  const std::size_t after = top.stats().committed_bytes - before;
  BOOST_TEST_MESSAGE("committed: " << all / KiB << " KiB for all, " << after / KiB << " KiB for half");
  // Half the chunks' memory, all the metas (kept), the cache's shells.
  BOOST_TEST(after <= all / 2 + count / 2 * meta_bytes + meta_commit_step + cache_shells);
}
