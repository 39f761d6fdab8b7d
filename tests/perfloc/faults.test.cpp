// Faults: what perfloc does when memory runs out or code throws, and how it reports misuse.
//
// - A top chunk whose reservation runs out: std::bad_alloc, the failing chunk unchanged, every other chunk
//   intact and usable, every byte accounted for afterwards.
// - The OS refusing memory, in a forked child: a small RLIMIT_AS (no address space to reserve) and a small
//   RLIMIT_DATA (mprotect to read-write fails: the OS refuses to commit). std::bad_alloc, never a crash.
// - Exceptions: throwing constructors (after growth, over-aligned, in perfloc::vector) and an exception
//   unwinding through many nested scopes leak nothing: destructor counts and statistics come back exactly.
// - Misuse in debug builds: the leak report's fields, use of a released chunk, destroy after release.
#define BOOST_TEST_MODULE perfloc.faults
#include <boost/test/unit_test.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory_resource>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "death.hpp"

import perfloc;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;

struct counted {
  static inline long alive = 0;
  std::uint64_t value;
  explicit counted(std::uint64_t v) : value(v) { ++alive; }
  ~counted() { --alive; }
};

template <std::size_t Alignment>
struct alignas(Alignment) throws_when_asked {
  static inline long alive = 0;
  unsigned char bytes[Alignment];
  explicit throws_when_asked(bool fail) {
    if (fail) throw std::runtime_error("constructor failed");
    ++alive;
  }
  ~throws_when_asked() { --alive; }
};

/// A chunk with known contents: allocations filled with a pattern, counted objects, a vector.
struct filled_chunk {
  perfloc::process_chunk chunk;
  std::vector<std::pair<unsigned char*, std::size_t>> raws;
  std::vector<counted*> objects;
  std::optional<std::vector<int, perfloc::allocator<int>>> numbers;
  unsigned char fill;

  filled_chunk(perfloc::top_chunk& top, int id) : chunk(top, "filled " + std::to_string(id)), fill(id + 1) {
    for (std::size_t bytes : {1, 40, 300, 5000, 20000}) {
      auto* p = static_cast<unsigned char*>(chunk.allocate(bytes));
      std::memset(p, fill, bytes);
      raws.emplace_back(p, bytes);
    }
    for (int i = 0; i < 10; ++i) objects.push_back(chunk.make<counted>(id * 100 + i));
    numbers.emplace(perfloc::allocator<int>{chunk});
    for (int i = 0; i < 1000; ++i) numbers->push_back(id * 1000 + i);
  }
  ~filled_chunk() { numbers.reset(); }

  bool intact() const {
    for (auto [p, bytes] : raws)
      if (std::any_of(p, p + bytes, [this](unsigned char c) { return c != fill; })) return false;
    const int id = fill - 1;
    for (int i = 0; i < 10; ++i)
      if (objects[i]->value != static_cast<std::uint64_t>(id * 100 + i)) return false;
    for (int i = 0; i < 1000; ++i)
      if ((*numbers)[i] != id * 1000 + i) return false;
    return true;
  }
};

std::size_t in_use_sum(const std::vector<std::unique_ptr<filled_chunk>>& chunks) {
  std::size_t sum = 0;
  for (auto& c : chunks) sum += c->chunk.stats().in_use_bytes;
  return sum;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------
// A tiny reservation runs out
// ------------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(exhaustion_by_every_path_leaves_other_chunks_intact_and_memory_accounted) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 4 * MiB, .max_reserved_bytes = 4 * MiB}};
  counted::alive = 0;
  std::vector<std::unique_ptr<filled_chunk>> others;
  for (int id = 0; id < 4; ++id) others.push_back(std::make_unique<filled_chunk>(top, id));
  const std::size_t others_in_use = in_use_sum(others);

  auto everything_else_is_intact = [&](const char* after) {
    for (auto& c : others) BOOST_TEST(c->intact(), "chunk " << c->chunk.label() << " after " << after);
    BOOST_TEST(in_use_sum(others) == others_in_use, "in use after " << after);
    BOOST_TEST(counted::alive == 40, "objects alive after " << after);
  };

  std::size_t taken = 0;
  {
    perfloc::process_chunk greedy{top, "greedy"};
    // 1. Bump growth: 200 KiB at a time until the reservation is gone; then blocks of their own (1 MiB).
    BOOST_CHECK_THROW(for (;;) {
      std::memset(greedy.allocate(200 * KiB), 0xee, 200 * KiB);
      taken += 200 * KiB;
    }, std::bad_alloc);
    BOOST_TEST(taken > 0u);
    BOOST_TEST(greedy.stats().in_use_bytes == taken);
    everything_else_is_intact("bump growth ran out");
    BOOST_CHECK_THROW(for (;;) {
      std::memset(greedy.allocate(1 * MiB), 0xef, 1 * MiB);
      taken += 1 * MiB;
    }, std::bad_alloc);
    BOOST_TEST(greedy.stats().in_use_bytes == taken);
    // 2. Opening chunks until not even the smallest block is left.
    std::vector<perfloc::process_chunk> extra;
    BOOST_CHECK_THROW(for (;;) extra.emplace_back(top, "extra"), std::bad_alloc);
    BOOST_TEST(top.stats().live_chunks == 4u + 1u + extra.size());
    everything_else_is_intact("opening chunks ran out");
    // 3. Now every request that needs a block fails, and leaves nothing behind.
    BOOST_CHECK_THROW(greedy.allocate(1 * MiB), std::bad_alloc);
    BOOST_CHECK_THROW(greedy.allocate(300 * KiB, 64 * KiB), std::bad_alloc);
    BOOST_CHECK_THROW(greedy.allocate(200 * KiB), std::bad_alloc);  // no block's free tail holds 200 KiB (1.)
    struct big {
      unsigned char bytes[300 * KiB];
    };
    BOOST_CHECK_THROW(greedy.make<big>(), std::bad_alloc);
    std::vector<int, perfloc::allocator<int>> numbers{perfloc::allocator<int>{greedy}};
    BOOST_CHECK_THROW(for (int i = 0;; ++i) numbers.push_back(i), std::bad_alloc);
    for (std::size_t i = 0; i < numbers.size(); ++i) BOOST_REQUIRE(numbers[i] == static_cast<int>(i));
    std::pmr::vector<char> text{greedy.resource()};
    BOOST_CHECK_THROW(text.resize(2 * MiB), std::bad_alloc);
    BOOST_TEST(text.empty());
    const std::size_t in_use_with_vector = greedy.stats().in_use_bytes;
    BOOST_TEST(in_use_with_vector == taken + (numbers.capacity() ? ((numbers.capacity() * sizeof(int) + 15) & ~15u) : 0));
    BOOST_CHECK_THROW(perfloc::process_chunk{top}, std::bad_alloc);
    everything_else_is_intact("every kind of request ran out");
    BOOST_TEST(greedy.stats().in_use_bytes == in_use_with_vector);  // failed requests left nothing behind
    BOOST_TEST(top.stats().in_use_bytes == others_in_use + in_use_with_vector);
    // Every chunk is still usable for what fits in the memory it holds.
    for (auto& c : others) {
      void* p = c->chunk.allocate(64);
      std::memset(p, 1, 64);
      c->chunk.deallocate(p, 64);
    }
  }
  everything_else_is_intact("the greedy chunk was released");
  others.clear();
  BOOST_TEST(counted::alive == 0);
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
  const perfloc::top_stats stats = top.stats();
  BOOST_TEST(stats.committed_bytes <= stats.reserved_bytes);
  // Fully accounted: a new chunk can take at least what the greedy one took, again and again.
  for (int round = 0; round < 3; ++round) {
    perfloc::process_chunk again{top};
    std::size_t again_taken = 0;
    try {
      for (;;) {
        again.allocate(200 * KiB);
        again_taken += 200 * KiB;
      }
    } catch (const std::bad_alloc&) {
    }
    BOOST_TEST(again_taken >= taken, "round " << round);
  }
  BOOST_TEST(top.stats().live_chunks == 0u);
}

// ------------------------------------------------------------------------------------------------------------
// The OS refuses memory (in a forked child, with resource limits)
// ------------------------------------------------------------------------------------------------------------

namespace {

/// A field of /proc/self/status, in bytes ("VmSize", "VmData").
std::size_t status_bytes(const char* field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(field) + ":";
  while (std::getline(status, line))
    if (line.starts_with(prefix)) return std::stoull(line.substr(prefix.size())) * 1024;
  return 0;
}

void set_limit(int resource, std::size_t bytes) {  // the soft limit: it may be set again, higher or lower
  rlimit limit{};
  ::getrlimit(resource, &limit);
  limit.rlim_cur = bytes;
  if (::setrlimit(resource, &limit) != 0) {
    std::perror("setrlimit");
    std::_Exit(3);
  }
}

/// Inside the child: print and exit non-zero when something is wrong (no Boost.Test in the child).
void child_check(bool condition, const char* what) {
  if (condition) return;
  std::fprintf(stderr, "child check failed: %s\n", what);
  std::_Exit(4);
}

/// Allocates from a chunk until std::bad_alloc; the chunk must stay usable, its statistics unchanged.
std::size_t fill_until_refused(perfloc::process_chunk& chunk, std::size_t step) {
  const std::size_t in_use = chunk.stats().in_use_bytes;
  std::size_t taken = 0;
  void* last = nullptr;
  try {
    for (int i = 0; i < 100000; ++i) {
      last = chunk.allocate(step);
      std::memset(last, 0x5a, step);
      taken += step;
    }
  } catch (const std::bad_alloc&) {
    child_check(chunk.stats().in_use_bytes == in_use + taken, "a refused request left nothing behind");
    if (last) {  // still usable: memory given back is handed out again
      chunk.deallocate(last, step);
      child_check(chunk.allocate(step) == last, "the chunk is still usable");
    }
    return taken;
  }
  child_check(false, "the OS never refused");
  return taken;
}

void warm_up() {  // the child's own allocations (exception objects, streams) come from memory it already has
  std::vector<void*> blocks;
  for (int i = 0; i < 64; ++i) blocks.push_back(std::malloc(4096));
  for (void* p : blocks) std::free(p);
  try {
    throw std::bad_alloc();
  } catch (const std::bad_alloc&) {
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(no_address_space_to_reserve_is_bad_alloc_not_a_crash) {
  const perfloc_test::death child = perfloc_test::run_in_child([] {
    warm_up();
    // 64 MiB more address space than the process has now: the default 16 GiB reservation cannot be had.
    set_limit(RLIMIT_AS, status_bytes("VmSize") + 64 * MiB);
    {
      perfloc::top_chunk top;  // reserves less: it halves its request until the OS agrees
      const perfloc::top_stats stats = top.stats();
      child_check(stats.reserved_bytes > 0 && stats.reserved_bytes <= 64 * MiB, "a smaller reservation was taken");
      perfloc::process_chunk keeper{top};
      auto* kept = static_cast<unsigned char*>(keeper.allocate(1000));
      std::memset(kept, 0x77, 1000);
      {
        perfloc::process_chunk chunk{top};
        fill_until_refused(chunk, 256 * KiB);  // bump growth: no room for another reservation
        fill_until_refused(chunk, 1 * MiB);    // blocks of their own
        child_check(top.stats().live_chunks == 2, "two live chunks");
      }
      child_check(std::all_of(kept, kept + 1000, [](unsigned char c) { return c == 0x77; }), "the keeper is intact");
      keeper.release();
      child_check(top.stats().live_chunks == 0 && top.stats().in_use_bytes == 0, "everything was given back");
      std::fprintf(stderr, "step: growth refused\n");
    }
    // No room even for the smallest reservation a top chunk needs.
    set_limit(RLIMIT_AS, status_bytes("VmSize") + 128 * KiB);
    try {
      perfloc::top_chunk top;
      child_check(false, "a top chunk was made without address space");
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "step: construction refused\n");
    }
  });
  BOOST_TEST(!child.died, child.output);
  BOOST_TEST(child.output.find("step: growth refused") != std::string::npos, child.output);
  BOOST_TEST(child.output.find("step: construction refused") != std::string::npos, child.output);
}

BOOST_AUTO_TEST_CASE(the_os_refusing_to_commit_is_bad_alloc_not_a_crash) {
  // RLIMIT_DATA bounds private writable memory: reserving (PROT_NONE) still works, committing (mprotect to
  // read-write) fails with ENOMEM, which is what an OS out of memory does to perfloc.
  const perfloc_test::death child = perfloc_test::run_in_child([] {
    warm_up();
    perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1024 * MiB, .retain_bytes = 0}};
    perfloc::process_chunk keeper{top};
    auto* kept = static_cast<unsigned char*>(keeper.allocate(1000));
    std::memset(kept, 0x77, 1000);
    set_limit(RLIMIT_DATA, status_bytes("VmData") + 16 * MiB);
    {
      perfloc::process_chunk chunk{top};
      const std::size_t taken = fill_until_refused(chunk, 200 * KiB);
      child_check(taken < 32 * MiB, "commits were refused near the limit");
      fill_until_refused(chunk, 2 * MiB);
      // Opening chunks fails too once no block can be committed; nothing is lost.
      std::vector<perfloc::process_chunk> more;
      try {
        for (int i = 0; i < 10000; ++i) more.emplace_back(top);
        child_check(false, "opening chunks was never refused");
      } catch (const std::bad_alloc&) {
      }
      child_check(top.stats().live_chunks == 2 + more.size(), "live chunks counted exactly");
    }
    child_check(std::all_of(kept, kept + 1000, [](unsigned char c) { return c == 0x77; }), "the keeper is intact");
    keeper.release();
    child_check(top.stats().live_chunks == 0 && top.stats().in_use_bytes == 0, "everything was given back");
    std::fprintf(stderr, "step: commit refused\n");
    // A top chunk that cannot commit its own header gives its reservation back and throws.
    set_limit(RLIMIT_DATA, status_bytes("VmData") + 16 * KiB);
    const std::size_t address_space = status_bytes("VmSize");
    try {
      perfloc::top_chunk refused{perfloc::top_options{.reservation_bytes = 64 * MiB}};
      child_check(false, "a top chunk was made without committing its header");
    } catch (const std::bad_alloc&) {
      child_check(status_bytes("VmSize") == address_space, "the reservation was given back");
      std::fprintf(stderr, "step: construction refused\n");
    }
  });
  BOOST_TEST(!child.died, child.output);
  BOOST_TEST(child.output.find("step: commit refused") != std::string::npos, child.output);
  BOOST_TEST(child.output.find("step: construction refused") != std::string::npos, child.output);
}

// ------------------------------------------------------------------------------------------------------------
// Exceptions leak nothing
// ------------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(throwing_constructors_leak_nothing_after_growth_over_aligned_and_in_collections) {
  perfloc::top_chunk top;
  using plain_thrower = throws_when_asked<16>;
  using wide_thrower = throws_when_asked<128>;
  {
    perfloc::process_chunk chunk{top};
    // Fill the first block nearly full, so that the failing make takes a new block first.
    while (chunk.stats().held_bytes == 64 * KiB) chunk.allocate(1000);
    std::size_t in_use = chunk.stats().in_use_bytes;
    for (int i = 0; i < 100; ++i) {
      BOOST_CHECK_THROW(chunk.make<plain_thrower>(true), std::runtime_error);
      BOOST_CHECK_THROW(chunk.make<wide_thrower>(true), std::runtime_error);
      BOOST_REQUIRE(chunk.stats().in_use_bytes == in_use);
      chunk.make<plain_thrower>(false);  // interleaved successes: the failures are not all the latest allocation
      in_use = chunk.stats().in_use_bytes;
    }
    BOOST_TEST(plain_thrower::alive == 100);
    BOOST_TEST(wide_thrower::alive == 0);
    perfloc::vector<wide_thrower> refs{chunk};
    refs.emplace_back(false);
    const std::size_t with_refs = chunk.stats().in_use_bytes;
    BOOST_CHECK_THROW(refs.emplace_back(true), std::runtime_error);
    BOOST_TEST(refs.size() == 1u);
    BOOST_TEST(chunk.stats().in_use_bytes == with_refs);
  }
  BOOST_TEST(plain_thrower::alive == 0);
  BOOST_TEST(wide_thrower::alive == 0);
  BOOST_TEST(top.stats().in_use_bytes == 0u);
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(an_exception_through_two_hundred_nested_scopes_of_every_kind_leaks_nothing) {
  perfloc::top_chunk top{perfloc::top_options{.retain_bytes = 8 * MiB}};
  perfloc::top_chunk other{perfloc::top_options{.retain_bytes = 8 * MiB}};
  counted::alive = 0;
  const std::size_t committed_before = top.stats().committed_bytes;
  auto nest = [&](auto& self, int depth) -> void {
    perfloc::process_chunk opened{depth % 3 ? top : other, "level"};
    perfloc::process_chunk chunk = std::move(opened);  // a moved chunk unwinds like any other
    chunk.make<counted>(depth);
    std::vector<int, perfloc::allocator<int>> numbers{perfloc::allocator<int>{chunk}};
    numbers.resize(static_cast<std::size_t>(depth) * 10);
    std::pmr::vector<long> more{chunk.resource()};
    more.assign(100, depth);
    perfloc::vector<counted> refs{chunk};
    refs.emplace_back(depth);
    if (depth % 50 == 0) chunk.allocate(300 * KiB);  // a block of its own
    if (depth == 200) throw std::runtime_error("deep");
    self(self, depth + 1);
  };
  BOOST_CHECK_THROW(nest(nest, 0), std::runtime_error);
  BOOST_TEST(counted::alive == 0);
  for (perfloc::top_chunk* t : {&top, &other}) {
    BOOST_TEST(t->stats().live_chunks == 0u);
    BOOST_TEST(t->stats().in_use_bytes == 0u);
  }
  // The blocks went back: what stays committed is the retain budget, which the thread cache counts in, plus
  // what the cache took since the top last gave a block back (README: at most 13 blocks of 64 KiB, 4 of
  // 128 KiB, 2 of 256 KiB, 1 of 512 KiB), and the first 4 KiB page of each block the top gave back to the OS
  // (at most one per block: 201 chunks on this top, none holding more than 5 blocks).
  constexpr std::size_t cache_bound = 13 * 64 * KiB + 4 * 128 * KiB + 2 * 256 * KiB + 512 * KiB;
  BOOST_TEST(top.stats().committed_bytes <= committed_before + 8 * MiB + cache_bound + 201 * 5 * 4 * KiB);
}

// ------------------------------------------------------------------------------------------------------------
// Misuse, caught in debug builds (see also process.test.cpp and top.test.cpp)
// ------------------------------------------------------------------------------------------------------------

#ifndef NDEBUG
BOOST_AUTO_TEST_CASE(the_leak_report_names_each_live_chunk_its_size_and_where_it_was_opened) {
  int opened_on_line = 0;
  const perfloc_test::death death = perfloc_test::run_in_child([&opened_on_line] {
    auto* top = new perfloc::top_chunk{};
    // clang-format off
    opened_on_line = __LINE__; auto* named = new perfloc::process_chunk{*top, "GET /orders/42"};
    // clang-format on
    named->allocate(100);  // 112 bytes in use
    named->make<counted>(1);  // + 48
    auto* unnamed = new perfloc::process_chunk{*top};
    unnamed->allocate(3000);
    {
      perfloc::process_chunk released{*top, "released early"};  // not in the report
    }
    std::fprintf(stderr, "opened on line %d\n", opened_on_line);
    delete top;
  });
  BOOST_TEST(death.died);
  const std::string& out = death.output;
  BOOST_TEST(out.find("2 process chunk(s) are alive") != std::string::npos, out);
  BOOST_TEST(out.find("chunk 'GET /orders/42': 160 bytes in use") != std::string::npos, out);
  BOOST_TEST(out.find("chunk '(no label)': 3008 bytes in use") != std::string::npos, out);
  BOOST_TEST(out.find("released early") == std::string::npos, out);
  const std::size_t line_at = out.find("opened on line ");
  BOOST_REQUIRE(line_at != std::string::npos);
  const std::string line = out.substr(line_at + 15, out.find('\n', line_at) - line_at - 15);
  BOOST_TEST(out.find("faults.test.cpp:" + line) != std::string::npos, out);  // where it was opened
  BOOST_TEST(out.find("release every process chunk before its top chunk") != std::string::npos, out);
}

BOOST_AUTO_TEST_CASE(every_use_of_a_released_or_moved_from_chunk_is_reported) {
  using use = void (*)(perfloc::process_chunk&);
  const use uses[] = {
      [](perfloc::process_chunk& c) { c.allocate(8); },
      [](perfloc::process_chunk& c) { c.make<int>(1); },
      [](perfloc::process_chunk& c) { c.resource(); },
      [](perfloc::process_chunk& c) { (void)c.stats(); },
      [](perfloc::process_chunk& c) { (void)c.label(); },
      [](perfloc::process_chunk& c) { perfloc::allocator<int>{c}; },
  };
  for (std::size_t i = 0; i < std::size(uses); ++i)
    for (bool moved : {false, true}) {
      const perfloc_test::death death = perfloc_test::run_in_child([&] {
        perfloc::process_chunk chunk;
        std::optional<perfloc::process_chunk> elsewhere;
        if (moved) elsewhere.emplace(std::move(chunk));
        else chunk.release();
        uses[i](chunk);
      });
      BOOST_TEST(death.died, "use " << i << (moved ? " of a moved-from chunk" : " of a released chunk"));
      BOOST_TEST(death.output.find("moved-from or released process_chunk") != std::string::npos, death.output);
    }
}

BOOST_AUTO_TEST_CASE(destroy_after_the_chunk_was_released_is_reported) {
  const perfloc_test::death death = perfloc_test::run_in_child([] {
    counted* object;
    {
      perfloc::process_chunk chunk;
      object = chunk.make<counted>(1);
    }
    perfloc::destroy(object);
  });
  BOOST_TEST(death.died);
  // ASan builds see the poisoned header first; plain debug builds print perfloc's own message.
  BOOST_TEST((death.output.find("already released") != std::string::npos ||
              death.output.find("use-after-poison") != std::string::npos),
             death.output);
}

BOOST_AUTO_TEST_CASE(destroy_of_raw_chunk_memory_is_reported) {
  const perfloc_test::death death = perfloc_test::run_in_child([] {
    perfloc::process_chunk chunk;
    auto* p = static_cast<long*>(chunk.allocate(64));
    std::memset(p, 0, 64);
    perfloc::destroy(p + 2);  // inside the chunk, but not something make returned
  });
  BOOST_TEST(death.died);
  BOOST_TEST(death.output.find("did not return") != std::string::npos, death.output);
}
#endif
