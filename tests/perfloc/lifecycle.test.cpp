// Tests of an object's and a chunk's life from the user's side: destructors run exactly once whatever they
// destroy during release, the final statistics count every object, requests at the extremes of size and
// alignment fail cleanly, and handles (allocators, pmr resources, perfloc::vector) that outlive their chunk
// are stopped in debug and ASan builds.
#define BOOST_TEST_MODULE perfloc.lifecycle
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory_resource>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "death.hpp"

import perfloc;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;
constexpr std::size_t size_max = static_cast<std::size_t>(-1);

// ------------------------------------------------------------------------------------------------------------
// Objects whose destructors destroy other objects
// ------------------------------------------------------------------------------------------------------------

/// How many times each node's destructor ran, by id.
using destructor_log = std::map<int, int>;

/// A node of an object graph in one chunk. Its destructor destroys the nodes it points at, as a tree of
/// objects made with make<T> would. The string is long enough to live on the global heap, so that a second
/// run of the destructor is a double free the allocator (or ASan) notices.
struct node {
  destructor_log& log;
  int id;
  std::string name;
  std::vector<node*> owned;
  node(destructor_log& l, int i) : log(l), id(i), name("node number " + std::to_string(i) + ", heap-allocated name") {}
  ~node() {
    if (++log[id] > 1) return;  // a second run must not go on to destroy again
    for (node* other : owned) perfloc::destroy(other);
  }
};

bool each_ran_once(const destructor_log& log, int nodes) {
  if (static_cast<int>(log.size()) != nodes) return false;
  for (const auto& [id, runs] : log)
    if (runs != 1) return false;
  return true;
}

/// A top whose release hook keeps the last chunk's final figures.
struct hooked_top {
  std::optional<perfloc::chunk_summary> last;
  perfloc::top_chunk top{perfloc::top_options{.on_release = [this](const perfloc::chunk_summary& s) { last = s; }}};
};

}  // namespace

namespace {

struct released_graph {
  destructor_log log;
  std::uint64_t objects_made = 0, objects_destroyed = 0;  ///< as the release hook saw them
};

/// Makes `nodes` nodes in a new chunk, in the order of their ids (0 is the oldest), gives the first node of
/// each edge the second to destroy, then releases the chunk.
released_graph release_graph(int nodes, const std::vector<std::pair<int, int>>& edges) {
  released_graph result;
  hooked_top hooked;
  {
    perfloc::process_chunk chunk{hooked.top};
    std::vector<node*> made;
    for (int i = 0; i < nodes; ++i) made.push_back(chunk.make<node>(result.log, i));
    for (auto [owner, owned] : edges) made[owner]->owned.push_back(made[owned]);
  }
  BOOST_REQUIRE(hooked.last);
  result.objects_made = hooked.last->objects_made;
  result.objects_destroyed = hooked.last->objects_destroyed;
  return result;
}

}  // namespace

BOOST_AUTO_TEST_CASE(destructor_destroying_a_younger_object_runs_each_once) {
  // The reproduction: the younger node's destructor runs first at release, then its owner's
  // destructor destroys it again.
  BOOST_TEST(each_ran_once(release_graph(2, {{0, 1}}).log, 2));
}

BOOST_AUTO_TEST_CASE(destructor_destroying_an_older_object_runs_each_once) {
  BOOST_TEST(each_ran_once(release_graph(2, {{1, 0}}).log, 2));
}

BOOST_AUTO_TEST_CASE(chains_of_destroying_destructors_run_each_once_in_either_direction) {
  std::vector<std::pair<int, int>> younger, older;  // each node owns the next one made, or the one before
  for (int i = 0; i + 1 < 50; ++i) {
    younger.emplace_back(i, i + 1);
    older.emplace_back(i + 1, i);
  }
  for (const auto* edges : {&younger, &older}) {
    const released_graph graph = release_graph(50, *edges);
    BOOST_TEST(each_ran_once(graph.log, 50));
    BOOST_TEST(graph.objects_made == 50u);
    BOOST_TEST(graph.objects_destroyed == 50u);
  }
}

BOOST_AUTO_TEST_CASE(a_cycle_of_destroying_destructors_runs_each_once_at_release) {
  // At release a destructor may destroy an object whose destructor is running further up the stack.
  BOOST_TEST(each_ran_once(release_graph(3, {{0, 1}, {1, 2}, {2, 0}}).log, 3));
  BOOST_TEST(each_ran_once(release_graph(3, {{2, 1}, {1, 0}, {0, 2}}).log, 3));
}

BOOST_AUTO_TEST_CASE(an_early_destroy_of_a_tree_then_release_runs_each_once) {
  destructor_log log;
  {
    perfloc::process_chunk chunk;
    node* root = chunk.make<node>(log, 1);
    node* kept = chunk.make<node>(log, 2);
    root->owned.push_back(chunk.make<node>(log, 3));
    root->owned.push_back(kept);
    kept->owned.push_back(chunk.make<node>(log, 4));
    node* other = chunk.make<node>(log, 5);
    other->owned.push_back(chunk.make<node>(log, 6));
    perfloc::destroy(root);  // destroys 1, 3, 2 and 4 now
    BOOST_TEST(log.size() == 4u);
    BOOST_TEST(chunk.stats().objects_destroyed == 4u);
  }
  BOOST_TEST(each_ran_once(log, 6));
}

BOOST_AUTO_TEST_CASE(an_object_a_destructor_makes_during_release_is_destroyed_by_the_same_release) {
  struct maker {
    perfloc::process_chunk& chunk;
    destructor_log& log;
    int generations_left;
    ~maker() {
      ++log[generations_left];
      if (generations_left > 0) chunk.make<maker>(chunk, log, generations_left - 1);
    }
  };
  destructor_log log;
  hooked_top hooked;
  {
    perfloc::process_chunk chunk{hooked.top};
    chunk.make<maker>(chunk, log, 3);  // its destructor makes one, whose destructor makes one, ...
    chunk.make<int>(7);
  }
  BOOST_TEST(each_ran_once(log, 4));
  BOOST_REQUIRE(hooked.last);
  BOOST_TEST(hooked.last->objects_made == 5u);
  BOOST_TEST(hooked.last->objects_destroyed == 5u);
  BOOST_TEST(hooked.last->in_use_bytes > 0u);  // the hook runs before the blocks go back
}

/// Holds a pointer to an object made before it and looks at it from its destructor: newest-first release
/// means the older object is still alive then, as members of a struct are when its destructor runs.
struct user_of_older {
  const bool* older_alive;
  bool* saw_older_alive;
  ~user_of_older() { *saw_older_alive = *older_alive; }
};
struct alive_flag {
  bool alive = true;
  ~alive_flag() { alive = false; }
};

BOOST_AUTO_TEST_CASE(a_destructor_at_release_still_sees_every_object_made_before_its_own) {
  constexpr int pairs = 64;
  bool saw[pairs] = {};
  {
    perfloc::process_chunk chunk;
    for (int i = 0; i < pairs; ++i) {
      // A few objects between them, so that the order is not only that of neighbours.
      const alive_flag* older = chunk.make<alive_flag>();
      for (int k = 0; k < i % 3; ++k) chunk.make<alive_flag>();
      chunk.make<user_of_older>(&older->alive, &saw[i]);
    }
  }
  for (int i = 0; i < pairs; ++i) BOOST_TEST(saw[i], "object " << i << "'s older neighbour was destroyed first");
}

// ------------------------------------------------------------------------------------------------------------
// Final statistics
// ------------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(at_release_every_object_made_counts_as_destroyed) {
  struct trivial {
    int a;
    double b;
  };
  hooked_top hooked;
  {
    perfloc::process_chunk chunk{hooked.top};
    chunk.make<int>(1);
    chunk.make<trivial>(2, 3.0);
    chunk.make<std::string>("a string long enough to be on the heap, with a destructor");
    BOOST_TEST(chunk.stats().objects_made == 3u);
    BOOST_TEST(chunk.stats().objects_destroyed == 0u);
  }
  BOOST_REQUIRE(hooked.last);
  BOOST_TEST(hooked.last->objects_made == 3u);
  BOOST_TEST(hooked.last->objects_destroyed == 3u);

  {  // early destroys count once, not again at release
    perfloc::process_chunk chunk{hooked.top};
    int* early = chunk.make<int>(1);
    auto* text = chunk.make<std::string>("another string long enough to be on the heap");
    chunk.make<trivial>(2, 3.0);
    perfloc::destroy(early);
    perfloc::destroy(text);
    BOOST_TEST(chunk.stats().objects_destroyed == 2u);
  }
  BOOST_TEST(hooked.last->objects_made == 3u);
  BOOST_TEST(hooked.last->objects_destroyed == 3u);
}

// ------------------------------------------------------------------------------------------------------------
// Sizes and alignments at the extremes
// ------------------------------------------------------------------------------------------------------------

namespace {

struct figures {
  std::size_t in_use, peak, held, blocks;
  std::uint64_t made, destroyed;
  bool operator==(const figures&) const = default;
};
figures figures_of(const perfloc::process_chunk& chunk) {
  const perfloc::chunk_stats s = chunk.stats();
  return {s.in_use_bytes, s.peak_in_use_bytes, s.held_bytes, s.blocks, s.objects_made, s.objects_destroyed};
}

/// Sizes near the top of the range, and small ones (which with a huge alignment are huge requests too).
std::vector<std::size_t> extreme_sizes(std::size_t max_reserved_bytes) {
  std::vector<std::size_t> sizes = {0, 1, 100, 4096, 300 * KiB};
  for (std::size_t k : {0, 1, 15, 16, 17, 63, 64, 100, 4095, 4096, 65536, 1 << 20})
    sizes.insert(sizes.end(), {size_max - k, size_max / 2 - k, size_max / 2 + 1 + k, size_max / 4 - k});
  for (std::size_t k : {0, 1, 16, 4096}) {  // around half the top's limit, where max_request_bytes sits
    sizes.push_back(max_reserved_bytes / 2 - k);
    sizes.push_back(max_reserved_bytes / 2 + k);
  }
  return sizes;
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LIFECYCLE_UNDER_ASAN 1
#endif
#endif

/// ASan shadows every byte perfloc hands out or takes back: a block of a TiB, which a large top gives for a
/// small size at 2^40 alignment, costs 128 GiB of shadow there. ASan builds leave out the requests that may
/// succeed with more than 16 MiB (those that fit half of max_reserved_bytes); other builds try them all.
bool may_succeed_beyond_16_mib([[maybe_unused]] std::size_t bytes, [[maybe_unused]] std::size_t alignment,
                              [[maybe_unused]] std::size_t max_reserved_bytes) {
#ifdef LIFECYCLE_UNDER_ASAN
  const std::size_t half = max_reserved_bytes / 2;
  const std::size_t slack = alignment > 16 ? alignment : 0;  // what an alignment above 16 may add
  return bytes <= half && slack <= half - bytes && (bytes > (1u << 24) || alignment > (1u << 24));
#else
  return false;
#endif
}

/// Every size with every alignment from 1 to 2^63: either std::bad_alloc with the chunk's statistics
/// unchanged, or a pointer that is aligned and writable at both ends. Returns how many succeeded.
int try_every_extreme(perfloc::process_chunk& chunk, std::size_t max_reserved_bytes) {
  int successes = 0;
  for (unsigned shift = 0; shift < 64; ++shift) {
    const std::size_t alignment = std::size_t{1} << shift;
    for (std::size_t bytes : extreme_sizes(max_reserved_bytes)) {
      if (may_succeed_beyond_16_mib(bytes, alignment, max_reserved_bytes)) continue;
      const figures before = figures_of(chunk);
      void* p = nullptr;
      try {
        p = chunk.allocate(bytes, alignment);
      } catch (const std::bad_alloc&) {
        BOOST_TEST((figures_of(chunk) == before), "allocate(" << bytes << ", 2^" << shift << ") changed the chunk");
        continue;
      }
      BOOST_TEST_CONTEXT("allocate(" << bytes << ", 2^" << shift << ") = " << p) {
        BOOST_TEST(p != nullptr);
        BOOST_TEST(reinterpret_cast<std::uintptr_t>(p) % alignment == 0u);
        if (bytes) {  // a wrapped computation would fault here (touches two pages, even of a huge block)
          auto* at = static_cast<unsigned char*>(p);
          at[bytes - 1] = 0x5a;
          at[0] = 0xa5;
          BOOST_TEST(at[0] == 0xa5);
          if (bytes > 1) BOOST_TEST(at[bytes - 1] == 0x5a);
        }
        chunk.deallocate(p, bytes, alignment);
        BOOST_TEST(figures_of(chunk).in_use == before.in_use);
        ++successes;
      }
    }
    // Still usable after every failure.
    auto* q = static_cast<char*>(chunk.allocate(100));
    std::memset(q, 1, 100);
    chunk.deallocate(q, 100);
  }
  return successes;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_size_and_alignment_at_the_extremes_is_a_valid_pointer_or_bad_alloc) {
  // The reproduction: with max_reserved_bytes = SIZE_MAX, half of SIZE_MAX with 2^63 alignment
  // segfaulted, and a bit less returned 0x8000000000000000.
  perfloc::top_chunk unlimited{perfloc::top_options{.max_reserved_bytes = size_max}};
  perfloc::top_chunk tiny{perfloc::top_options{.reservation_bytes = 1, .max_reserved_bytes = 1, .retain_bytes = 0}};
  {
    perfloc::process_chunk chunk{unlimited};
    BOOST_CHECK_THROW(chunk.allocate(size_max / 2, std::size_t{1} << 63), std::bad_alloc);
    BOOST_CHECK_THROW(chunk.allocate(size_max / 2 - 100, std::size_t{1} << 63), std::bad_alloc);
  }
  struct case_t {
    perfloc::top_chunk& top;
    const char* name;
  };
  for (case_t c : {case_t{perfloc::default_top(), "default top"}, case_t{unlimited, "unlimited top"},
                   case_t{tiny, "tiny top"}}) {
    BOOST_TEST_CONTEXT(c.name) {
      perfloc::process_chunk chunk{c.top};
      chunk.make<std::string>("something made before, to be intact after");
      chunk.allocate(1000);
      const int successes = try_every_extreme(chunk, c.top.options().max_reserved_bytes);
      BOOST_TEST(successes > 0);
      BOOST_TEST(chunk.stats().objects_made == 1u);
    }
  }
}

BOOST_AUTO_TEST_CASE(the_allocator_and_the_pmr_resource_at_the_extremes_throw_and_change_nothing) {
  perfloc::top_chunk unlimited{perfloc::top_options{.max_reserved_bytes = size_max}};
  for (perfloc::top_chunk* top : {&perfloc::default_top(), &unlimited}) {
    perfloc::process_chunk chunk{*top};
    const figures before = figures_of(chunk);
    perfloc::allocator<std::uint64_t> words{chunk};
    for (std::size_t n : {size_max, size_max / 8 + 1, size_max / 8, size_max / 16, size_max / 16 + 1,
                          words.max_size() + 1}) {
      BOOST_CHECK_THROW((void)words.allocate(n), std::bad_alloc);  // bad_array_new_length is a bad_alloc
    }
    std::pmr::memory_resource* resource = chunk.resource();
    for (unsigned shift = 0; shift < 64; ++shift)
      for (std::size_t bytes : {size_max, size_max - 1, size_max / 2, size_max / 2 - 100, size_max / 4})
        BOOST_CHECK_THROW((void)resource->allocate(bytes, std::size_t{1} << shift), std::bad_alloc);
    BOOST_CHECK_THROW((void)resource->allocate(16, 48), std::invalid_argument);
    BOOST_CHECK_THROW(chunk.allocate(16, (std::size_t{1} << 63) + 1), std::invalid_argument);
    BOOST_CHECK_THROW(chunk.allocate(size_max, 3), std::invalid_argument);  // the alignment is checked first
    BOOST_TEST((figures_of(chunk) == before));
    std::pmr::vector<int> still_fine{resource};
    still_fine.assign(1000, 7);
    BOOST_TEST(still_fine[999] == 7);
  }
}

BOOST_AUTO_TEST_CASE(make_of_a_type_larger_than_any_top_is_bad_alloc) {
  struct huge {
    char bytes[std::size_t{1} << 60];  // about the largest array clang accepts
  };
  perfloc::top_chunk unlimited{perfloc::top_options{.max_reserved_bytes = size_max}};
  for (perfloc::top_chunk* top : {&perfloc::default_top(), &unlimited}) {
    perfloc::process_chunk chunk{*top};
    const figures before = figures_of(chunk);
    BOOST_CHECK_THROW(chunk.make<huge>(), std::bad_alloc);
    BOOST_TEST((figures_of(chunk) == before));
  }
}

// ------------------------------------------------------------------------------------------------------------
// Handles that outlive their chunk (debug and ASan builds)
// ------------------------------------------------------------------------------------------------------------

#ifndef NDEBUG
namespace {

/// Stopped with perfloc's message. Before another chunk reuses the meta, the message has the released
/// chunk's label; after, the generation of the meta it was made for.
bool stopped_as_stale(const perfloc_test::death& death, const char* label = nullptr) {
  const auto has = [&](const char* text) { return death.output.find(text) != std::string::npos; };
  return death.died && has("used after its chunk") && has("released") && (label ? has(label) : has("generation"));
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_stale_allocator_is_stopped_before_it_allocates_into_the_chunk_that_reuses_its_meta) {
  const auto death = perfloc_test::run_in_child([] {
    std::optional<perfloc::allocator<int>> stale;
    {
      perfloc::process_chunk chunk{"request 17"};
      stale.emplace(chunk);
    }
    perfloc::process_chunk stranger{"request 18"};  // reuses the released chunk's meta
    std::vector<int, perfloc::allocator<int>> v{*stale};
    v.reserve(100);
  });
  BOOST_TEST(stopped_as_stale(death), death.output);
}

BOOST_AUTO_TEST_CASE(a_stale_allocator_is_stopped_whatever_the_chunk_held_and_wherever_it_was_released) {
  // The tests above release chunks that held one block and nothing to destroy. A chunk with a destructor
  // to run, a second block, a block of its own, a release hook, or released on another thread ends its
  // life another way; its handles must be stopped all the same.
  struct way {
    const char* name;
    void (*fill)(perfloc::process_chunk&);
    bool hook = false, elsewhere = false;
  };
  const way ways[] = {
      {"an object to destroy", [](perfloc::process_chunk& c) { c.make<std::string>(100, 'x'); }},
      {"a second block", [](perfloc::process_chunk& c) { c.allocate(40 * 1024), c.allocate(40 * 1024); }},
      {"a block of its own", [](perfloc::process_chunk& c) { c.allocate(300 * 1024); }},
      {"a release hook", [](perfloc::process_chunk&) {}, true},
      {"released on another thread", [](perfloc::process_chunk&) {}, false, true},
  };
  for (const way& w : ways) {
    const auto death = perfloc_test::run_in_child([&] {
      perfloc::top_options options;
      if (w.hook) options.on_release = [](const perfloc::chunk_summary&) {};
      perfloc::top_chunk top{std::move(options)};
      std::optional<perfloc::allocator<int>> stale;
      {
        perfloc::process_chunk chunk{top, "request 30"};
        stale.emplace(chunk);
        w.fill(chunk);
        if (w.elsewhere) std::thread([c = std::move(chunk)]() mutable { c.release(); }).join();
      }
      (void)stale->allocate(3);
    });
    BOOST_TEST(stopped_as_stale(death, "request 30"), w.name << ": " << death.output);
  }
}

BOOST_AUTO_TEST_CASE(a_stale_allocator_used_before_its_meta_is_reused_names_the_released_chunk) {
  const auto death = perfloc_test::run_in_child([] {
    std::optional<perfloc::allocator<long>> stale;
    {
      perfloc::process_chunk chunk{"request 24"};
      stale.emplace(chunk);
    }
    (void)stale->allocate(3);
  });
  BOOST_TEST(stopped_as_stale(death, "request 24"), death.output);
}

BOOST_AUTO_TEST_CASE(a_stale_allocator_is_stopped_before_it_deallocates) {
  const auto death = perfloc_test::run_in_child([] {
    std::optional<std::vector<int, perfloc::allocator<int>>> outlives;
    {
      perfloc::process_chunk chunk{"request 19"};
      outlives.emplace(perfloc::allocator<int>{chunk});
      outlives->assign(100, 1);
    }
    perfloc::process_chunk stranger;
    outlives.reset();  // gives its buffer back to a released chunk
  });
  BOOST_TEST(stopped_as_stale(death), death.output);
}

BOOST_AUTO_TEST_CASE(a_stale_pmr_resource_is_stopped_even_when_the_next_chunk_uses_its_own) {
  const auto death = perfloc_test::run_in_child([] {
    std::optional<std::pmr::vector<int>> outlives;
    {
      perfloc::process_chunk chunk{"request 20"};
      outlives.emplace(chunk.resource());
    }
    perfloc::process_chunk stranger{"request 21"};
    std::pmr::vector<int> own{stranger.resource()};  // the new chunk's own resource
    own.assign(10, 2);
    outlives->assign(100, 1);
  });
  // Whether the stranger reuses the released chunk's memory depends on the call-site table, whose hash is of
  // addresses (so of ASLR). When it does not, ASan builds stop at the still-poisoned chunk header first.
  BOOST_TEST((stopped_as_stale(death) || death.output.find("use-after-poison") != std::string::npos), death.output);
}

BOOST_AUTO_TEST_CASE(a_stale_pmr_resource_is_stopped_before_the_meta_is_reused) {
  const auto death = perfloc_test::run_in_child([] {
    std::pmr::memory_resource* stale;
    {
      perfloc::process_chunk chunk{"request 22"};
      stale = chunk.resource();
    }
    (void)stale->allocate(64, 16);
  });
  // ASan builds may see the poisoned chunk header first (the resource lives there).
  BOOST_TEST((stopped_as_stale(death, "request 22") || death.output.find("use-after-poison") != std::string::npos),
             death.output);
}

BOOST_AUTO_TEST_CASE(a_perfloc_vector_that_outlives_its_chunk_is_stopped) {
  const auto death = perfloc_test::run_in_child([] {
    std::optional<perfloc::vector<int>> outlives;
    {
      perfloc::process_chunk chunk{"request 23"};
      outlives.emplace(chunk);
    }
    perfloc::process_chunk stranger;
    outlives->emplace_back(5);
  });
  BOOST_TEST(stopped_as_stale(death), death.output);
}

BOOST_AUTO_TEST_CASE(a_perfloc_vector_of_objects_with_destructors_that_outlives_its_chunk_is_stopped) {
  // Its chunk held objects to destroy (and a pmr string that grew into a second block): released by the
  // long way, after the destructors ran. Both the vector and the pmr resource must be stopped.
  for (const bool through_pmr : {false, true}) {
    const auto death = perfloc_test::run_in_child([through_pmr] {
      std::optional<perfloc::vector<std::string>> outlives;
      std::pmr::memory_resource* resource = nullptr;
      {
        perfloc::process_chunk chunk{"request 31"};
        outlives.emplace(chunk);
        for (int i = 0; i < 10; ++i) outlives->emplace_back(100, 'x');
        resource = chunk.resource();
        std::pmr::string grown{resource};
        grown.assign(100 * 1024, 'y');
      }
      perfloc::process_chunk stranger;
      if (through_pmr) (void)resource->allocate(64);
      else outlives->emplace_back(5, 'z');
    });
    BOOST_TEST(stopped_as_stale(death), (through_pmr ? "pmr: " : "vector: ") << death.output);
  }
}

BOOST_AUTO_TEST_CASE(a_destroy_during_release_of_an_object_destroyed_before_is_still_reported) {
  const auto death = perfloc_test::run_in_child([] {
    destructor_log log;
    perfloc::process_chunk chunk;
    node* owner = chunk.make<node>(log, 1);
    node* owned = chunk.make<node>(log, 2);
    owner->owned.push_back(owned);
    perfloc::destroy(owned);  // destroyed by the user: the owner's destructor destroys it a second time
  });
  BOOST_TEST(death.died);
  BOOST_TEST((death.output.find("destroy was called twice") != std::string::npos ||
              death.output.find("use-after-poison") != std::string::npos),
             death.output);
}
#endif

BOOST_AUTO_TEST_CASE(handles_stay_valid_while_their_chunk_lives_and_moves) {
  std::optional<perfloc::process_chunk> moved;  // declared first: released after every handle below
  perfloc::process_chunk chunk{"mover"};
  perfloc::allocator<int> alloc{chunk};
  std::pmr::memory_resource* resource = chunk.resource();
  perfloc::vector<int> refs{chunk};
  moved.emplace(std::move(chunk));
  std::vector<int, perfloc::allocator<int>> v{alloc};
  v.assign(1000, 3);
  std::pmr::vector<int> pv{resource};
  pv.assign(1000, 4);
  refs.emplace_back(5);
  BOOST_TEST(v[999] == 3);
  BOOST_TEST(pv[999] == 4);
  BOOST_TEST(refs[0] == 5);
  BOOST_TEST(moved->resource() == resource);
}
