// Tests of perfloc.collections and the std adapters: perfloc::vector by reference, perfloc::allocator,
// and std::pmr containers in a chunk.
#define BOOST_TEST_MODULE perfloc.collections
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <map>
#include <memory_resource>
#include <new>
#include <random>
#include <ranges>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
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

bool by_id(const widget& a, const widget& b) { return a.id < b.id; }

template <class T>
using chunk_vector = std::vector<T, perfloc::allocator<T>>;

/// The addresses a perfloc::vector holds, in order, read through its iterators.
template <class T>
std::vector<const T*> addresses_in(const perfloc::vector<T>& refs) {
  std::vector<const T*> out;
  for (const T& x : refs) out.push_back(&x);
  return out;
}

struct item {
  int id;
};

/// The vector against its model: the same addresses in the same order, read through every access path.
void expect_same(const perfloc::vector<item>& refs, const std::vector<item*>& model) {
  BOOST_REQUIRE_EQUAL(refs.size(), model.size());
  BOOST_REQUIRE_EQUAL(refs.empty(), model.empty());
  std::size_t i = 0;
  for (const item& x : refs) BOOST_REQUIRE(&x == model[i++]);
  i = model.size();
  for (auto r = refs.rbegin(); r != refs.rend(); ++r) BOOST_REQUIRE(&*r == model[--i]);
  for (i = 0; i < model.size(); ++i)
    BOOST_REQUIRE(&refs[i] == model[i] && &refs.at(i) == model[i] && refs.data()[i] == model[i]);
  // at() checks what operator[] does not: every index from size() on is out of range (std::vector's contract).
  BOOST_REQUIRE_THROW((void)refs.at(model.size()), std::out_of_range);
  BOOST_REQUIRE_THROW((void)refs.at(model.size() + 1), std::out_of_range);
  if (!model.empty()) BOOST_REQUIRE(&refs.front() == model.front() && &refs.back() == model.back());
  BOOST_REQUIRE(refs.capacity() >= refs.size());
}

}  // namespace

static_assert(std::random_access_iterator<perfloc::vector<widget>::iterator>);
static_assert(std::random_access_iterator<perfloc::vector<widget>::const_iterator>);
static_assert(std::ranges::random_access_range<perfloc::vector<widget>>);
static_assert(std::is_nothrow_move_constructible_v<perfloc::vector<widget>>);

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
  std::vector<const widget*> made;
  for (int i = 0; i < 6; ++i) made.push_back(&refs.emplace_back(i, "w"));
  refs.pop_back();
  BOOST_TEST(addresses_in(refs) == (std::vector{made[0], made[1], made[2], made[3], made[4]}),
             boost::test_tools::per_element());
  auto next = refs.erase(refs.begin() + 1);
  BOOST_TEST(&*next == made[2]);
  BOOST_TEST((next - refs.begin()) == 1);
  BOOST_TEST(addresses_in(refs) == (std::vector{made[0], made[2], made[3], made[4]}), boost::test_tools::per_element());
  next = refs.erase(refs.begin() + 1, refs.begin() + 3);  // a range in the middle: the last one shifts down
  BOOST_TEST((next - refs.begin()) == 1);
  BOOST_TEST(addresses_in(refs) == (std::vector{made[0], made[4]}), boost::test_tools::per_element());
  next = refs.erase(refs.end() - 1);  // the last one: the returned position is end()
  BOOST_TEST((next == refs.end()));
  BOOST_TEST(addresses_in(refs) == (std::vector{made[0]}), boost::test_tools::per_element());
  const std::size_t capacity = refs.capacity();
  refs.clear();
  BOOST_TEST(refs.empty());
  BOOST_TEST(refs.capacity() == capacity);
  BOOST_TEST(widget::alive == 6);
  for (int i = 0; i < 6; ++i) BOOST_TEST(made[i]->id == i);  // forgetting a reference leaves the object alone
  // Freeing a referent early: destroy it, then forget its reference.
  perfloc::vector<widget> again{chunk};
  widget& doomed = again.emplace_back(9, "doomed");
  perfloc::destroy(&doomed);
  again.pop_back();
  BOOST_TEST(widget::alive == 6);
}

BOOST_AUTO_TEST_CASE(sort_permutes_references_and_objects_keep_their_values) {
  widget::alive = 0;
  perfloc::process_chunk chunk;
  widget existing{1, "existing"};  // outside the vector's chunk; the vector does not own it
  perfloc::vector<widget> refs{chunk};
  const widget* five = &refs.emplace_back(5, "five");
  refs.push_back(existing);
  const widget* three = &refs.emplace_back(3, "three");
  refs.sort(by_id);  // the README's example
  BOOST_TEST(addresses_in(refs) == (std::vector<const widget*>{&existing, three, five}),
             boost::test_tools::per_element());
  BOOST_TEST(existing.id == 1);
  BOOST_TEST(existing.name == "existing");
  BOOST_TEST(five->id == 5);
  BOOST_TEST(three->name == "three");
  refs.sort(std::ranges::greater{}, &widget::id);  // a comparator on a projection, as std::ranges::sort takes
  BOOST_TEST(addresses_in(refs) == (std::vector<const widget*>{five, three, &existing}),
             boost::test_tools::per_element());
  // stable_sort keeps ties in order: even ids first, each group in its current order.
  const widget* four = &refs.emplace_back(4, "four");
  const widget* two = &refs.emplace_back(2, "two");  // now 5 3 1 4 2
  refs.stable_sort({}, [](const widget& w) { return w.id % 2; });
  BOOST_TEST(addresses_in(refs) == (std::vector<const widget*>{four, two, five, three, &existing}),
             boost::test_tools::per_element());
  refs.reverse();
  BOOST_TEST(addresses_in(refs) == (std::vector<const widget*>{&existing, three, five, two, four}),
             boost::test_tools::per_element());
  refs.swap_elements(0, 4);
  BOOST_TEST(addresses_in(refs) == (std::vector<const widget*>{four, three, five, two, &existing}),
             boost::test_tools::per_element());
  // Any std::ranges algorithm that permutes, on the spine, with a projection that dereferences.
  std::ranges::rotate(refs.pointers(), refs.pointers().begin() + 3);
  BOOST_TEST(addresses_in(refs) == (std::vector<const widget*>{two, &existing, four, three, five}),
             boost::test_tools::per_element());
  std::ranges::stable_partition(
      refs.pointers(), [](int id) { return id > 3; }, [](widget* w) { return w->id; });
  BOOST_TEST(addresses_in(refs) == (std::vector<const widget*>{four, five, two, &existing, three}),
             boost::test_tools::per_element());
  BOOST_TEST(refs.erase_if([](const widget& w) { return w.id > 3; }) == 2u);
  BOOST_TEST(perfloc::erase_if(refs, [](const widget& w) { return w.id == 3; }) == 1u);
  BOOST_TEST(addresses_in(refs) == (std::vector<const widget*>{two, &existing}), boost::test_tools::per_element());
  // Nothing above assigned an object: every widget still has its own id and name.
  BOOST_TEST(widget::alive == 5);
  BOOST_TEST(existing.id == 1);
  BOOST_TEST(existing.name == "existing");
  for (const auto& [w, id, name] :
       {std::tuple{five, 5, "five"}, {three, 3, "three"}, {four, 4, "four"}, {two, 2, "two"}}) {
    BOOST_TEST(w->id == id);
    BOOST_TEST(w->name == name);
  }
}

BOOST_AUTO_TEST_CASE(views_and_reading_algorithms_see_the_objects) {
  perfloc::process_chunk chunk;
  perfloc::vector<widget> refs{chunk};
  for (int id : {1, 3, 5, 7, 9}) refs.emplace_back(id, "w" + std::to_string(id));
  auto odd_big = refs | std::views::filter([](const widget& w) { return w.id > 4; }) |
                 std::views::transform([](const widget& w) { return w.name; });
  std::vector<std::string> names(odd_big.begin(), odd_big.end());
  BOOST_TEST(names == (std::vector<std::string>{"w5", "w7", "w9"}), boost::test_tools::per_element());
  const auto found = std::ranges::find_if(refs, [](const widget& w) { return w.id == 7; });
  BOOST_TEST((found - refs.begin()) == 3);
  const perfloc::vector<widget>& view = refs;
  BOOST_TEST(std::distance(view.begin(), view.end()) == 5);
  std::vector<int> backwards;
  for (auto r = view.rbegin(); r != view.rend(); ++r) backwards.push_back(r->id);
  BOOST_TEST(backwards == (std::vector<int>{9, 7, 5, 3, 1}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(the_spine_grows_geometrically_and_its_old_memory_is_reused) {
  perfloc::process_chunk chunk;
  perfloc::vector<int> refs{chunk};
  int value = 0;
  std::vector<std::size_t> capacities;
  for (int i = 0; i < 100000; ++i) {
    refs.push_back(value);
    if (capacities.empty() || refs.capacity() != capacities.back()) capacities.push_back(refs.capacity());
  }
  // The documented policy: a first spine of 8 references, doubled when full: 8, 16, ..., 131072 (2^17).
  std::vector<std::size_t> expected;
  for (std::size_t c = 8; c < 2 * 100000; c *= 2) expected.push_back(c);
  BOOST_TEST(capacities == expected, boost::test_tools::per_element());
  // Only the live spine is in use: the old ones went back to the chunk (pushing a reference makes nothing).
  BOOST_TEST(chunk.stats().in_use_bytes == (std::size_t{1} << 17) * sizeof(int*));
  BOOST_TEST(chunk.stats().objects_made == 0u);
}

BOOST_AUTO_TEST_CASE(copies_and_moves_keep_references_and_chunks_straight) {
  perfloc::process_chunk a, b;
  perfloc::vector<widget> in_a{a};
  const widget* one = &in_a.emplace_back(1, "one");
  const widget* two = &in_a.emplace_back(2, "two");
  const std::vector<const widget*> both{one, two};
  perfloc::vector<widget> copy = in_a;  // same chunk, second spine
  BOOST_TEST(addresses_in(copy) == both, boost::test_tools::per_element());
  BOOST_TEST(copy.data() != in_a.data());
  perfloc::vector<widget> in_b{b};
  in_b = in_a;  // references copied into b's own spine
  BOOST_TEST(addresses_in(in_b) == both, boost::test_tools::per_element());
  const std::size_t a_in_use = a.stats().in_use_bytes;
  const auto spine = copy.data();
  perfloc::vector<widget> moved = std::move(copy);
  BOOST_TEST(copy.empty());
  BOOST_TEST(moved.data() == spine);  // the spine changed hands; nothing was allocated
  perfloc::vector<widget> other_in_a{a};
  other_in_a = std::move(moved);  // same chunk: the spine is taken, nothing can throw
  BOOST_TEST(other_in_a.data() == spine);
  BOOST_TEST(a.stats().in_use_bytes == a_in_use);
  in_b.clear();
  const auto b_spine = in_b.data();
  in_b = std::move(other_in_a);  // different chunks: references copied into b's spine, the source emptied
  BOOST_TEST(other_in_a.empty());
  BOOST_TEST(in_b.data() == b_spine);  // b's own spine, large enough already
  BOOST_TEST(addresses_in(in_b) == both, boost::test_tools::per_element());
  perfloc::vector<widget> list{a, {std::ref(in_a[1]), std::ref(in_a[0])}};
  BOOST_TEST(addresses_in(list) == (std::vector{two, one}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(insert_emplace_assign_and_resize_store_references_where_a_std_vector_would) {
  widget::alive = 0;
  perfloc::process_chunk chunk;
  std::vector<widget> outside;
  outside.reserve(3);
  for (int i = 0; i < 3; ++i) outside.emplace_back(10 + i, "outside");
  const widget* o0 = &outside[0];
  const widget* o1 = &outside[1];
  const widget* o2 = &outside[2];
  perfloc::vector<widget> refs{chunk};
  auto at = refs.insert(refs.end(), outside[0]);  // into an empty vector
  BOOST_TEST(&*at == o0);
  const widget* made = &*refs.emplace(refs.begin(), 1, "made");
  BOOST_TEST(addresses_in(refs) == (std::vector{made, o0}), boost::test_tools::per_element());
  at = refs.insert(refs.begin() + 1, 2, outside[2]);
  BOOST_TEST((at - refs.begin()) == 1);
  BOOST_TEST(addresses_in(refs) == (std::vector{made, o2, o2, o0}), boost::test_tools::per_element());
  at = refs.insert(refs.begin() + 3, outside.begin(), outside.end());  // from a range of T
  BOOST_TEST((at - refs.begin()) == 3);
  BOOST_TEST(addresses_in(refs) == (std::vector{made, o2, o2, o0, o1, o2, o0}), boost::test_tools::per_element());
  at = refs.insert(refs.end(), {std::ref(outside[1])});
  BOOST_TEST((at - refs.begin()) == 7);
  BOOST_TEST(refs.size() == 8u);
  BOOST_TEST(widget::alive == 4);  // inserting references made nothing but the one emplaced widget

  refs.resize(2, outside[0]);  // shrinking: the object is not used
  BOOST_TEST(addresses_in(refs) == (std::vector{made, o2}), boost::test_tools::per_element());
  refs.resize(4, outside[1]);
  BOOST_TEST(addresses_in(refs) == (std::vector{made, o2, o1, o1}), boost::test_tools::per_element());
  refs.assign(3, outside[0]);
  BOOST_TEST(addresses_in(refs) == (std::vector{o0, o0, o0}), boost::test_tools::per_element());
  refs.assign({std::ref(outside[2]), std::ref(outside[1])});
  BOOST_TEST(addresses_in(refs) == (std::vector{o2, o1}), boost::test_tools::per_element());
  refs.assign(outside.begin(), outside.begin() + 1);
  BOOST_TEST(addresses_in(refs) == (std::vector{o0}), boost::test_tools::per_element());
  const std::size_t in_use = chunk.stats().in_use_bytes;
  refs.shrink_to_fit();
  BOOST_TEST(refs.capacity() == 1u);
  BOOST_TEST(chunk.stats().in_use_bytes < in_use);

  // resize(n) of a vector of references makes value-initialized objects in its chunk, as emplace_back().
  perfloc::vector<int> numbers{chunk};
  int seven = 7;
  numbers.push_back(seven);
  const auto made_before = chunk.stats().objects_made;
  numbers.resize(4);
  BOOST_TEST(chunk.stats().objects_made == made_before + 3);
  BOOST_TEST(&numbers[0] == &seven);
  BOOST_TEST((numbers[1] == 0 && numbers[2] == 0 && numbers[3] == 0));
  BOOST_TEST((&numbers[1] != &numbers[2] && &numbers[2] != &numbers[3]));
}

BOOST_AUTO_TEST_CASE(swap_exchanges_references_within_and_across_chunks) {
  perfloc::process_chunk a, b;
  int x = 1, y = 2, z = 3;
  perfloc::vector<int> first{a, {std::ref(x), std::ref(y)}};
  perfloc::vector<int> second{a, {std::ref(z)}};
  const auto first_spine = first.data(), second_spine = second.data();
  swap(first, second);  // same chunk: the spines change hands
  BOOST_TEST(addresses_in(first) == (std::vector<const int*>{&z}), boost::test_tools::per_element());
  BOOST_TEST(addresses_in(second) == (std::vector<const int*>{&x, &y}), boost::test_tools::per_element());
  BOOST_TEST((first.data() == second_spine && second.data() == first_spine));
  perfloc::vector<int> in_b{b, {std::ref(y), std::ref(z), std::ref(x)}};
  first.swap(in_b);  // across chunks: each keeps its own spine (first's grows) and takes the other's references
  BOOST_TEST(addresses_in(first) == (std::vector<const int*>{&y, &z, &x}), boost::test_tools::per_element());
  BOOST_TEST(addresses_in(in_b) == (std::vector<const int*>{&z}), boost::test_tools::per_element());
  first.reverse();
  std::ranges::swap(first, in_b);  // the longer one is now this side
  BOOST_TEST(addresses_in(first) == (std::vector<const int*>{&z}), boost::test_tools::per_element());
  BOOST_TEST(addresses_in(in_b) == (std::vector<const int*>{&x, &z, &y}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(vectors_compare_their_objects_element_by_element) {
  perfloc::process_chunk chunk;
  int one = 1, another_one = 1, two = 2;
  perfloc::vector<int> a{chunk, {std::ref(one), std::ref(two)}};
  perfloc::vector<int> b{chunk, {std::ref(another_one), std::ref(two)}};  // other objects, equal values
  perfloc::vector<int> c{chunk, {std::ref(one), std::ref(one)}};
  perfloc::vector<int> shorter{chunk, {std::ref(one)}};
  BOOST_TEST((a == b));
  BOOST_TEST(!std::ranges::equal(a.pointers(), b.pointers()));  // the same values, not the same objects
  BOOST_TEST((a != c));
  BOOST_TEST(((c <=> a) == std::strong_ordering::less));
  BOOST_TEST(((shorter <=> a) == std::strong_ordering::less));
  BOOST_TEST((a > shorter));
  BOOST_TEST(((a <=> b) == std::strong_ordering::equal));
}

// ---- Against a model ---------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(random_operations_agree_with_a_vector_of_pointers) {
  perfloc::process_chunk pool{"pool"};  // oldest: its objects may be referred to from every vector below
  std::vector<item*> outside;
  for (int i = 0; i < 32; ++i) outside.push_back(pool.make<item>(item{-1 - i}));
  perfloc::process_chunk a{"a"}, b{"b"};  // b opened after a: b's vectors may hold a's objects
  perfloc::vector<item> refs{a};
  std::vector<item*> model;
  std::vector<std::pair<item*, int>> made;  // every object emplaced, with the id it was made with
  std::mt19937 random(12345);
  const auto below = [&](std::size_t n) { return static_cast<std::size_t>(random() % n); };
  const auto by_id = [](const item& x, const item& y) { return x.id < y.id; };
  const auto model_by_id = [](const item* x, const item* y) { return x->id < y->id; };
  const auto subset_of_model = [&](perfloc::vector<item>& into) {
    std::vector<item*> kept;
    for (item* p : model)
      if (below(3)) into.push_back(*p), kept.push_back(p);
    return kept;
  };
  int next_id = 0;
  for (int step = 0; step < 6000; ++step) {
    const std::size_t size = model.size();
    const unsigned operation = static_cast<unsigned>(size == 0 ? below(3) : below(17));
    BOOST_TEST_CONTEXT("operation " << step << ", kind " << operation << ", size " << size) {
      switch (operation) {
        case 0: {
          item* object = outside[below(outside.size())];
          refs.push_back(*object);
          model.push_back(object);
          break;
        }
        case 1:
        case 2: {
          item& object = refs.emplace_back(item{next_id});
          made.emplace_back(&object, next_id++);
          model.push_back(&object);
          break;
        }
        case 3:
          refs.pop_back();
          model.pop_back();
          break;
        case 4: {
          const std::size_t at = below(size);
          const auto next = refs.erase(refs.begin() + at);
          model.erase(model.begin() + at);
          BOOST_REQUIRE((next - refs.begin()) == static_cast<std::ptrdiff_t>(at));
          break;
        }
        case 5: {
          const std::size_t first = below(size + 1), last = first + below(size - first + 1);
          const auto next = refs.erase(refs.begin() + first, refs.begin() + last);
          model.erase(model.begin() + first, model.begin() + last);
          BOOST_REQUIRE((next - refs.begin()) == static_cast<std::ptrdiff_t>(first));
          break;
        }
        case 6: {  // copy assignment from a vector in the same or in a younger chunk, and outward
          perfloc::vector<item> source{below(2) ? a : b};
          const std::vector<item*> expected = subset_of_model(source);
          perfloc::vector<item> target{below(2) ? a : b};
          target = refs;
          expect_same(target, model);
          refs = source;
          expect_same(source, expected);
          model = expected;
          break;
        }
        case 7: {  // move assignment, both ways, same and different chunks
          perfloc::vector<item> source{below(2) ? a : b};
          model = subset_of_model(source);
          refs = std::move(source);
          BOOST_REQUIRE(source.empty());
          expect_same(refs, model);
          perfloc::vector<item> target{below(2) ? a : b};
          target = std::move(refs);
          BOOST_REQUIRE(refs.empty());
          expect_same(target, model);
          refs = std::move(target);
          break;
        }
        case 8: {  // insert one reference, or a run of them
          const std::size_t at = below(size + 1);
          item* object = below(2) ? outside[below(outside.size())] : model[below(size)];
          const std::size_t count = below(3) ? 1 : below(4);
          const auto inserted =
              count == 1 ? refs.insert(refs.begin() + at, *object) : refs.insert(refs.begin() + at, count, *object);
          model.insert(model.begin() + at, count, object);
          BOOST_REQUIRE((inserted - refs.begin()) == static_cast<std::ptrdiff_t>(at));
          break;
        }
        case 9: {  // insert a range of references, or emplace a new object
          const std::size_t at = below(size + 1);
          if (below(2)) {
            const std::size_t first = below(outside.size()), last = first + below(outside.size() - first + 1);
            std::vector<std::reference_wrapper<item>> objects;
            for (std::size_t i = first; i < last; ++i) objects.emplace_back(*outside[i]);
            const auto inserted = refs.insert(refs.begin() + at, objects.begin(), objects.end());
            model.insert(model.begin() + at, outside.begin() + first, outside.begin() + last);
            BOOST_REQUIRE((inserted - refs.begin()) == static_cast<std::ptrdiff_t>(at));
          } else {
            const auto emplaced = refs.emplace(refs.begin() + at, item{next_id});
            made.emplace_back(&*emplaced, next_id++);
            model.insert(model.begin() + at, &*emplaced);
            BOOST_REQUIRE((emplaced - refs.begin()) == static_cast<std::ptrdiff_t>(at));
          }
          break;
        }
        case 10:  // ids are unique per object: the order after sort is fully determined
          refs.sort(by_id);
          std::sort(model.begin(), model.end(), model_by_id);
          break;
        case 11: {  // ties: stable_sort keeps their order
          const auto bucket = [](const item& x) { return (x.id % 5 + 5) % 5; };
          refs.stable_sort({}, bucket);
          std::stable_sort(model.begin(), model.end(), [&](item* x, item* y) { return bucket(*x) < bucket(*y); });
          break;
        }
        case 12: {
          const int modulus = 2 + static_cast<int>(below(5));
          const auto doomed = [modulus](const item& x) { return x.id % modulus == 0; };
          const std::size_t removed = refs.erase_if(doomed);
          BOOST_REQUIRE(removed == std::erase_if(model, [&](item* x) { return doomed(*x); }));
          break;
        }
        case 13:
          refs.reverse();
          std::reverse(model.begin(), model.end());
          break;
        case 14: {
          const std::size_t i = below(size), j = below(size);
          refs.swap_elements(i, j);
          std::swap(model[i], model[j]);
          break;
        }
        case 15: {  // swap with a vector of the same or a younger chunk, and back
          perfloc::vector<item> other{below(2) ? a : b};
          const std::vector<item*> others = subset_of_model(other);
          refs.swap(other);
          expect_same(refs, others);
          expect_same(other, model);
          swap(refs, other);
          break;
        }
        case 16: {
          const std::size_t count = below(size + 1);
          if (below(2)) {
            refs.resize(count);
            model.resize(count);
          } else {
            const std::size_t bigger = size + below(4);
            item* object = outside[below(outside.size())];
            refs.resize(bigger, *object);
            model.resize(bigger, object);
          }
          break;
        }
      }
      expect_same(refs, model);
      // Nothing above assigns an object: each keeps the id it was made with.
      if (operation >= 10 && operation <= 15) {
        for (std::size_t i = 0; i < outside.size(); ++i) BOOST_REQUIRE(outside[i]->id == -1 - static_cast<int>(i));
        for (const auto& [object, id] : made) BOOST_REQUIRE(object->id == id);
      }
    }
  }
  BOOST_TEST(made.size() > 500u);  // the walk did reach every kind of operation often (a seeded walk)
}

// ---- Exceptions --------------------------------------------------------------------------------------------

namespace {
struct fussy {
  static inline int alive = 0;
  explicit fussy(bool fail) {
    if (fail) throw std::runtime_error("fussy");
    ++alive;
  }
  ~fussy() { --alive; }
};
}  // namespace

BOOST_AUTO_TEST_CASE(emplace_back_that_throws_leaves_the_spine_as_it_was) {
  fussy::alive = 0;
  perfloc::process_chunk chunk;
  perfloc::vector<fussy> refs{chunk};
  BOOST_CHECK_THROW(refs.emplace_back(true), std::runtime_error);
  BOOST_TEST(refs.capacity() == 0u);  // nothing was added, so nothing grew
  BOOST_TEST(chunk.stats().in_use_bytes == 0u);
  for (int i = 0; i < 8; ++i) refs.emplace_back(false);  // the documented first spine: 8 references
  BOOST_TEST(refs.capacity() == 8u);
  const auto first = refs.begin();
  const fussy* at_first = &refs[0];
  BOOST_CHECK_THROW(refs.emplace_back(true), std::runtime_error);
  BOOST_CHECK_THROW(refs.emplace(refs.begin(), true), std::runtime_error);
  BOOST_TEST(refs.capacity() == 8u);
  BOOST_TEST(refs.size() == 8u);
  BOOST_TEST((refs.begin() == first));  // iterators stay valid
  BOOST_TEST(&*first == at_first);
  BOOST_TEST(fussy::alive == 8);
}

BOOST_AUTO_TEST_CASE(emplace_back_whose_spine_cannot_grow_destroys_the_new_object) {
  fussy::alive = 0;
  // A small top, and a spine as large as it can give: the next growth (at least 4/3 of it) cannot fit.
  perfloc::top_chunk small{perfloc::top_options{.reservation_bytes = 4 << 20, .max_reserved_bytes = 8 << 20}};
  perfloc::process_chunk chunk{small};
  perfloc::vector<fussy> refs{chunk};
  fussy kept{false};
  for (std::size_t n = refs.max_size(); refs.capacity() == 0 && n > 0; n = n / 4 * 3) {
    try {
      refs.reserve(n);
    } catch (const std::bad_alloc&) {
    }
  }
  BOOST_REQUIRE(refs.capacity() > 0);
  while (refs.size() < refs.capacity()) refs.push_back(kept);
  const auto spine = refs.data();
  const std::size_t size = refs.size();
  BOOST_CHECK_THROW(refs.emplace_back(false), std::bad_alloc);
  BOOST_TEST(fussy::alive == 1);  // the object made for it was destroyed
  BOOST_TEST(chunk.stats().objects_made == chunk.stats().objects_destroyed);
  BOOST_TEST(refs.size() == size);
  BOOST_TEST(refs.data() == spine);
  BOOST_TEST(&refs.back() == &kept);
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

// ---- Debug checks ------------------------------------------------------------------------------------------

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

BOOST_AUTO_TEST_CASE(every_way_in_of_a_reference_into_a_nested_chunk_is_reported) {
  const char* const ways[] = {"copy assignment", "move assignment", "insert", "insert of a range",
                              "assign",          "resize",          "swap"};
  for (int how = 0; how < 7; ++how) {
    BOOST_TEST_CONTEXT(ways[how]) {
      const auto death = perfloc_test::run_in_child([how] {
        perfloc::process_chunk outer{"outer"};
        perfloc::vector<int> outer_refs{outer};
        perfloc::process_chunk inner{"inner"};
        perfloc::vector<int> inner_refs{inner};
        int& nested = *inner.make<int>(1);
        inner_refs.push_back(nested);
        switch (how) {
          case 0:
            outer_refs = inner_refs;
            break;
          case 1:
            outer_refs = std::move(inner_refs);
            break;
          case 2:
            outer_refs.insert(outer_refs.begin(), nested);
            break;
          case 3:
            outer_refs.insert(outer_refs.end(), inner_refs.begin(), inner_refs.end());
            break;
          case 4:
            outer_refs.assign(2, nested);
            break;
          case 5:
            outer_refs.resize(3, nested);
            break;
          case 6:
            outer_refs.swap(inner_refs);
            break;
        }
      });
      BOOST_TEST(death.died);
      BOOST_TEST(death.output.find("chunk 'inner', opened after the vector's chunk 'outer'") != std::string::npos,
                 death.output);
    }
  }
}

namespace {
/// Chunks of a top of their own: one site whose chunks take 1 KiB regions once it has learned that they use
/// little, and the first chunk of another, a whole block.
perfloc::process_chunk small_chunk(perfloc::top_chunk& top) { return perfloc::process_chunk{top}; }
perfloc::process_chunk chunk_at_a_new_site(perfloc::top_chunk& top) { return perfloc::process_chunk{top}; }
}  // namespace

// A thread's cache parks the region of the small chunk it released last for the next open of its class, whose
// meta stays in the thread's list of chunks: the chunk opened in it is still the newest, for the check as for
// any other. Both ways, the newer chunk reusing the parked region.
BOOST_AUTO_TEST_CASE(a_chunk_opened_in_a_parked_region_is_newer_than_those_opened_before) {
  for (const bool into_newer : {false, true}) {
    const auto run = perfloc_test::run_in_child([into_newer] {
      perfloc::top_chunk top;
      for (int i = 0; i < 8; ++i) small_chunk(top).allocate(64);  // the site learns: 1 KiB regions
      small_chunk(top).allocate(64);  // parked
      perfloc::process_chunk outer = chunk_at_a_new_site(top);
      int& older = *outer.make<int>(5);
      perfloc::vector<int> outer_refs{outer};
      perfloc::process_chunk inner = small_chunk(top);  // in the parked region
      if (outer.stats().held_bytes != 64 * 1024 || inner.stats().held_bytes != 1024) std::_Exit(3);  // the setup
      perfloc::vector<int> inner_refs{inner};
      inner_refs.push_back(older);  // fine
      if (into_newer) outer_refs.push_back(*inner.make<int>(6));  // reported
    });
    BOOST_TEST_CONTEXT("into the newer chunk: " << into_newer) {
      BOOST_TEST(run.died == into_newer, run.output);
      if (into_newer)
        BOOST_TEST(run.output.find("opened after the vector's chunk") != std::string::npos, run.output);
      else
        BOOST_TEST(run.output == "");
    }
  }
}

BOOST_AUTO_TEST_CASE(references_into_older_chunks_are_fine) {
  // The same ways in as above, the other way round: a vector of the nested chunk holding objects of the
  // outer one (and its own). In a child, so that a check that stops too much shows as a death, not a crash.
  const auto run = perfloc_test::run_in_child([] {
    perfloc::process_chunk outer{"outer"};
    int& kept = *outer.make<int>(5);
    perfloc::vector<int> outer_refs{outer};
    outer_refs.push_back(kept);
    perfloc::process_chunk inner{"inner"};
    perfloc::vector<int> refs{inner};
    refs.push_back(kept);
    refs.push_back(*inner.make<int>(6));
    refs.insert(refs.begin(), kept);
    refs.insert(refs.end(), outer_refs.begin(), outer_refs.end());
    refs.resize(5, kept);
    perfloc::vector<int> copy{inner};
    copy = outer_refs;
    copy = std::move(outer_refs);
    copy.swap(refs);
    const int expected[] = {5, 5, 6, 5, 5};
    if (!std::ranges::equal(copy, expected) || refs.size() != 1 || refs[0] != 5) std::_Exit(3);
  });
  BOOST_TEST(!run.died, run.output);
  BOOST_TEST(run.output == "");
}
#endif
