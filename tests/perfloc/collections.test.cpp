// Tests of perfloc.collections and the std adapters: perfloc::vector by reference, perfloc::allocator,
// and std::pmr containers in a chunk.
#define BOOST_TEST_MODULE perfloc.collections
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <map>
#include <memory_resource>
#include <new>
#include <ranges>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "death.hpp"

import perfloc;

namespace {

struct widget {
  static inline int alive = 0;
  int id;
  std::string name;
  widget(int i, std::string n) : id(i), name(std::move(n)) { ++alive; }
  ~widget() { --alive; }
};

template <class T>
using chunk_vector = std::vector<T, perfloc::allocator<T>>;

}  // namespace

static_assert(std::random_access_iterator<perfloc::vector<widget>::iterator>);
static_assert(std::random_access_iterator<perfloc::vector<widget>::const_iterator>);
static_assert(std::ranges::random_access_range<perfloc::vector<widget>>);

BOOST_AUTO_TEST_CASE(emplace_back_makes_in_the_chunk_and_push_back_stores_a_reference) {
  widget::alive = 0;
  widget outside{100, "outside"};
  {
    perfloc::process_chunk chunk;
    perfloc::vector<widget> refs{chunk};
    BOOST_TEST(refs.empty());
    widget& first = refs.emplace_back(1, "first");
    refs.emplace_back(2, "second");
    refs.push_back(outside);
    BOOST_TEST(refs.size() == 3u);
    BOOST_TEST(&refs[0] == &first);
    BOOST_TEST(&refs[2] == &outside);
    BOOST_TEST(refs.front().name == "first");
    BOOST_TEST(refs.back().id == 100);
    BOOST_TEST(refs.at(1).name == "second");
    BOOST_CHECK_THROW(refs.at(3), std::out_of_range);
    refs[2].name = "changed through the vector";
    BOOST_TEST(widget::alive == 3);
  }
  BOOST_TEST(outside.name == "changed through the vector");
  BOOST_TEST(widget::alive == 1);  // the two emplaced widgets died with the chunk, the outside one lives on
}

BOOST_AUTO_TEST_CASE(referents_survive_the_vector_and_die_with_the_chunk) {
  widget::alive = 0;
  perfloc::process_chunk chunk;
  widget* kept = nullptr;
  {
    perfloc::vector<widget> refs{chunk};
    for (int i = 0; i < 10; ++i) refs.emplace_back(i, "w");
    kept = &refs[4];
  }  // the vector (its spine) is gone, the widgets are not
  BOOST_TEST(widget::alive == 10);
  BOOST_TEST(kept->id == 4);
  chunk.release();
  BOOST_TEST(widget::alive == 0);
}

BOOST_AUTO_TEST_CASE(clear_pop_back_and_erase_forget_references_only) {
  widget::alive = 0;
  perfloc::process_chunk chunk;
  perfloc::vector<widget> refs{chunk};
  for (int i = 0; i < 6; ++i) refs.emplace_back(i, "w");
  refs.pop_back();
  auto next = refs.erase(refs.begin() + 1);
  BOOST_TEST(next->id == 2);
  refs.erase(refs.begin() + 2, refs.end());
  std::vector<int> ids;
  for (widget& w : refs) ids.push_back(w.id);
  BOOST_TEST(ids == (std::vector<int>{0, 2}), boost::test_tools::per_element());
  const std::size_t capacity = refs.capacity();
  refs.clear();
  BOOST_TEST(refs.empty());
  BOOST_TEST(refs.capacity() == capacity);
  BOOST_TEST(widget::alive == 6);
  // Freeing a referent early: destroy it, then forget its reference.
  perfloc::vector<widget> again{chunk};
  widget& doomed = again.emplace_back(9, "doomed");
  perfloc::destroy(&doomed);
  again.pop_back();
  BOOST_TEST(widget::alive == 6);
}

BOOST_AUTO_TEST_CASE(sort_and_ranges_work_on_the_references) {
  perfloc::process_chunk chunk;
  perfloc::vector<widget> refs{chunk};
  for (int id : {5, 3, 9, 1, 7}) refs.emplace_back(id, "w" + std::to_string(id));
  std::vector<const widget*> addresses;
  for (const widget& w : refs) addresses.push_back(&w);
  std::sort(refs.begin(), refs.end(), [](const widget& a, const widget& b) { return a.id < b.id; });
  // std::sort moves the values through the references (the referents are what is sorted).
  std::vector<int> ids;
  for (const widget& w : refs) ids.push_back(w.id);
  BOOST_TEST(ids == (std::vector<int>{1, 3, 5, 7, 9}), boost::test_tools::per_element());
  auto odd_big = refs | std::views::filter([](const widget& w) { return w.id > 4; }) |
                 std::views::transform([](const widget& w) { return w.name; });
  std::vector<std::string> names(odd_big.begin(), odd_big.end());
  BOOST_TEST(names == (std::vector<std::string>{"w5", "w7", "w9"}), boost::test_tools::per_element());
  const auto found = std::ranges::find_if(refs, [](const widget& w) { return w.id == 7; });
  const std::ptrdiff_t position = found - refs.begin();
  BOOST_TEST(position == 3);
  const perfloc::vector<widget>& view = refs;
  BOOST_TEST(std::distance(view.begin(), view.end()) == 5);
}

BOOST_AUTO_TEST_CASE(the_spine_grows_geometrically_and_its_old_memory_is_reused) {
  perfloc::process_chunk chunk;
  perfloc::vector<int> refs{chunk};
  int value = 0;
  std::size_t reallocations = 0, capacity = 0;
  for (int i = 0; i < 100000; ++i) {
    refs.push_back(value);
    if (refs.capacity() != capacity) ++reallocations, capacity = refs.capacity();
  }
  BOOST_TEST(reallocations < 20u);
  // Only the live spine (and the freed ones waiting for reuse) is counted: in-use stays at the live spine.
  BOOST_TEST(chunk.stats().in_use_bytes == refs.capacity() * sizeof(int*));
}

BOOST_AUTO_TEST_CASE(copies_and_moves_keep_references_and_chunks_straight) {
  perfloc::process_chunk a, b;
  perfloc::vector<widget> in_a{a};
  in_a.emplace_back(1, "one");
  in_a.emplace_back(2, "two");
  perfloc::vector<widget> copy = in_a;  // same chunk, second spine
  BOOST_TEST(&copy[1] == &in_a[1]);
  perfloc::vector<widget> in_b{b};
  in_b = in_a;  // references copied into b's own spine
  BOOST_TEST(&in_b[0] == &in_a[0]);
  perfloc::vector<widget> moved = std::move(copy);
  BOOST_TEST(copy.empty());
  BOOST_TEST(moved.size() == 2u);
  in_b = std::move(moved);  // different chunks: references copied, the source emptied
  BOOST_TEST(moved.empty());
  BOOST_TEST(in_b.size() == 2u);
  perfloc::vector<widget> list{a, {std::ref(in_a[1]), std::ref(in_a[0])}};
  BOOST_TEST(list.front().id == 2);
}

BOOST_AUTO_TEST_CASE(reserve_beyond_max_size_is_length_error_and_leaves_the_vector_intact) {
  perfloc::process_chunk chunk;
  perfloc::vector<int> refs{chunk};
  int x = 1;
  refs.push_back(x);
  BOOST_CHECK_THROW(refs.reserve(refs.max_size() + 1), std::length_error);
  BOOST_CHECK_THROW(refs.reserve(std::size_t(-1)), std::length_error);
  BOOST_TEST(refs.size() == 1u);
  BOOST_TEST(&refs[0] == &x);
  refs.reserve(1000);
  BOOST_TEST(refs.capacity() >= 1000u);
}

BOOST_AUTO_TEST_CASE(the_vector_survives_its_chunk_handle_moving) {
  perfloc::process_chunk moved;
  {
    perfloc::process_chunk chunk;
    perfloc::vector<widget> refs{chunk};
    refs.emplace_back(1, "before");
    moved = std::move(chunk);
    refs.emplace_back(2, "after the handle moved");
    BOOST_TEST(refs.size() == 2u);
    BOOST_TEST(refs[0].name == "before");
  }  // the vector gives its spine back to the chunk, which `moved` still holds
  BOOST_TEST(moved.stats().in_use_bytes == 2 * ((32 + sizeof(widget) + 15) / 16 * 16));  // record, header, object
}

BOOST_AUTO_TEST_CASE(std_containers_live_in_the_chunk_through_the_allocator) {
  perfloc::process_chunk chunk;
  const std::size_t before = chunk.stats().in_use_bytes;
  {
    chunk_vector<int> numbers{perfloc::allocator<int>{chunk}};
    for (int i = 0; i < 1000; ++i) numbers.push_back(i);
    BOOST_TEST(chunk.stats().in_use_bytes >= before + 1000 * sizeof(int));
    using map_allocator = perfloc::allocator<std::pair<const int, std::string>>;
    std::map<int, std::string, std::less<>, map_allocator> names{map_allocator{chunk}};
    for (int i = 0; i < 100; ++i) names.emplace(i, "name");
    std::unordered_map<int, int, std::hash<int>, std::equal_to<>, perfloc::allocator<std::pair<const int, int>>>
        squares{16, std::hash<int>{}, std::equal_to<>{}, perfloc::allocator<std::pair<const int, int>>{chunk}};
    for (int i = 0; i < 1000; ++i) squares[i] = i * i;
    BOOST_TEST(squares.at(31) == 961);
    BOOST_TEST(names.size() == 100u);
  }
  BOOST_TEST(chunk.stats().in_use_bytes == before);  // every node and buffer went back to the chunk
}

BOOST_AUTO_TEST_CASE(allocators_compare_by_chunk_and_rebind) {
  perfloc::process_chunk a, b;
  perfloc::allocator<int> ia{a};
  perfloc::allocator<double> da{a};
  perfloc::allocator<int> ib{b};
  BOOST_TEST((ia == da));
  BOOST_TEST((ia != ib));
  using rebound = std::allocator_traits<perfloc::allocator<int>>::rebind_alloc<long>;
  rebound la{ia};
  BOOST_TEST((la == ia));
  BOOST_CHECK_THROW((void)ia.allocate(std::size_t(-1) / 2), std::bad_array_new_length);
  perfloc::top_chunk small{perfloc::top_options{.reservation_bytes = 4 << 20, .max_reserved_bytes = 64 << 20}};
  perfloc::process_chunk in_small{small};
  perfloc::allocator<int> limited{in_small};
  BOOST_TEST(limited.max_size() < (64u << 20) / sizeof(int));
  BOOST_CHECK_THROW((void)limited.allocate(limited.max_size() + 1), std::bad_alloc);  // more than it can ever give
}

BOOST_AUTO_TEST_CASE(pmr_containers_live_in_the_chunk) {
  perfloc::process_chunk chunk;
  {
    std::pmr::vector<std::pmr::string> lines{chunk.resource()};
    for (int i = 0; i < 200; ++i) lines.emplace_back("a line long enough to need its own buffer #" + std::to_string(i));
    BOOST_TEST(lines[150].get_allocator().resource() == chunk.resource());  // uses-allocator construction
    BOOST_TEST(chunk.stats().in_use_bytes > 200u * 40u);
  }
  BOOST_TEST(chunk.stats().in_use_bytes == 0u);
}

BOOST_AUTO_TEST_CASE(a_growing_std_vector_reuses_its_freed_buffers) {
  perfloc::process_chunk chunk;
  std::size_t most_in_use = 0;
  {
    chunk_vector<int> numbers{perfloc::allocator<int>{chunk}};
    for (int i = 0; i < 1'000'000; ++i) {
      numbers.push_back(i);
      most_in_use = std::max(most_in_use, chunk.stats().in_use_bytes);
    }
    const std::size_t final_buffer = numbers.capacity() * sizeof(int);
    BOOST_TEST_MESSAGE("1M ints: final buffer " << final_buffer << " B, most in use " << most_in_use << " B, held "
                                                << chunk.stats().held_bytes << " B");
    BOOST_TEST(most_in_use < 3 * final_buffer);
    BOOST_TEST(chunk.stats().held_bytes < 3 * final_buffer);
  }
  BOOST_TEST(chunk.stats().in_use_bytes == 0u);
}

#ifndef NDEBUG
BOOST_AUTO_TEST_CASE(a_reference_into_a_chunk_released_first_is_reported) {
  const auto death = perfloc_test::run_in_child([] {
    perfloc::process_chunk outer{"outer"};
    perfloc::vector<int> refs{outer};
    perfloc::process_chunk inner{"inner"};
    refs.push_back(*inner.make<int>(1));
  });
  BOOST_TEST(death.died);
  BOOST_TEST(death.output.find("chunk 'inner', opened after the vector's chunk 'outer'") != std::string::npos,
             death.output);
}

BOOST_AUTO_TEST_CASE(references_into_older_chunks_are_fine) {
  perfloc::process_chunk outer{"outer"};
  int* kept = outer.make<int>(5);
  perfloc::process_chunk inner{"inner"};
  perfloc::vector<int> refs{inner};
  refs.push_back(*kept);
  BOOST_TEST(refs[0] == 5);
}
#endif
