// fuzz/perfloc_fuzz.cpp — a libFuzzer target that runs perfloc against a model of what it must do.
//
// Each input is decoded into a sequence of operations on up to eight process chunks at once, from two top
// chunks: default_top() and a private one with a tiny reservation, so that exhaustion (std::bad_alloc) is
// part of the normal diet. Operations: open and release chunks (nested and interleaved, early or at the
// end), allocate with sizes from 0 to ~1 MiB (mostly small) and alignments 1..4096, deallocate, make and
// destroy objects of several layouts (trivial, with a destructor, over-aligned, throwing), grow
// std::vector<int, perfloc::allocator<int>>, std::pmr::vector through chunk.resource(), perfloc::vector and
// a std::vector made inside the chunk itself (whose destructor runs during release), move chunks between
// slots (construction and assignment), bad requests that must throw and change nothing, and object graphs:
// nodes whose destructors destroy the nodes they own, older or younger ones, destroyed tree by tree or by
// the release, each destructor running exactly once.
//
// After every step the model is checked: live allocations never overlap, alignment is kept, fill patterns
// and container contents are intact, destructor counts are exact, and chunk.stats().in_use_bytes,
// top.stats().in_use_bytes and top.stats().live_chunks equal the model's, and each chunk's held_bytes stays
// within the README's reuse bound: 3 x its peak live bytes + one 4 MiB block. The in-use model is written out
// independently of perfloc's code: an allocation of n bytes counts ((n ? n : 1) + 15) & ~15; make<T> counts
// an 8-byte header, plus a 24-byte cleanup record when T has a non-trivial destructor, rounded up to alignof(T)
// when that is above 8, plus sizeof(T), rounded the same way.
//
// A failed check prints what failed and aborts, which libFuzzer reports as a crash. The same file, linked
// with fuzz/replay_main.cpp instead of libFuzzer, replays fuzz/corpus and fuzz/regressions as a CTest test.
#include <algorithm>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <memory_resource>
#include <new>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <vector>

import perfloc;

namespace {

// ------------------------------------------------------------------------------------------------------------
// Failing loudly
// ------------------------------------------------------------------------------------------------------------

[[noreturn]] [[gnu::format(printf, 1, 2)]] void fail(const char* format, ...) {
  std::va_list args;
  va_start(args, format);
  std::fputs("perfloc_fuzz: model mismatch: ", stderr);
  std::vfprintf(stderr, format, args);
  std::fputc('\n', stderr);
  va_end(args);
  std::abort();
}

#define FUZZ_CHECK(condition)                                                            \
  do {                                                                                   \
    if (!(condition)) fail("%s:%d: %s", __FILE__, __LINE__, #condition);                 \
  } while (false)
#define FUZZ_CHECK_EQ(a, b)                                                                                    \
  do {                                                                                                         \
    const auto fuzz_a = (a);                                                                                   \
    const auto fuzz_b = (b);                                                                                   \
    if (fuzz_a != fuzz_b)                                                                                      \
      fail("%s:%d: %s == %s (%llu != %llu)", __FILE__, __LINE__, #a, #b, static_cast<unsigned long long>(fuzz_a), \
           static_cast<unsigned long long>(fuzz_b));                                                           \
  } while (false)

// ------------------------------------------------------------------------------------------------------------
// Reading the input
// ------------------------------------------------------------------------------------------------------------

class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) : at_(data), end_(data + size) {}
  bool empty() const { return at_ == end_; }
  std::uint8_t byte() { return at_ == end_ ? 0 : *at_++; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() | byte() << 8); }
  std::size_t pick(std::size_t n) { return n ? byte() % n : 0; }

  /// 0 .. ~1 MiB, mostly small.
  std::size_t size() {
    const unsigned bucket = byte() % 100;
    if (bucket < 60) return byte();
    if (bucket < 85) return u16() % 4097;
    if (bucket < 96) return u16();
    return (std::size_t{u16()} << 4) % ((std::size_t{1} << 20) + 4096);
  }
  /// 0 means "the default argument"; else a power of two from 1 to 4096.
  std::size_t alignment() {
    const std::uint8_t b = byte();
    return b < 150 ? 0 : std::size_t{1} << (b % 13);
  }

 private:
  const std::uint8_t* at_;
  const std::uint8_t* end_;
};

// ------------------------------------------------------------------------------------------------------------
// The model
// ------------------------------------------------------------------------------------------------------------

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;
constexpr std::size_t max_slots = 8;

constexpr std::size_t footprint(std::size_t bytes) { return ((bytes ? bytes : 1) + 15) & ~std::size_t{15}; }

template <class T>
constexpr std::size_t model_prefix() {
  const std::size_t header = 8 + (std::is_trivially_destructible_v<T> ? 0 : 24);
  const std::size_t alignment = alignof(T) > 8 ? alignof(T) : 8;
  return (header + alignment - 1) / alignment * alignment;
}
template <class T>
constexpr std::size_t model_bytes() {
  return footprint(model_prefix<T>() + sizeof(T));
}

// Objects whose destructors are counted; each checks that it is where it was made and that its value is
// intact when it dies.
long alive_objects = 0;      // constructed - destroyed, all counted kinds
long destructor_calls = 0;   // total destructor calls

template <std::size_t Alignment, std::size_t Padding>
struct alignas(Alignment) counted {
  std::uint64_t check;
  const void* self;
  unsigned char padding[Padding];
  explicit counted(std::uint64_t c) : check(c), self(this) {
    std::memset(padding, static_cast<int>(c & 0xff), Padding);
    ++alive_objects;
  }
  ~counted() {
    if (self != this) fail("a destructor ran on an object that is not where it was made");
    for (unsigned char b : padding)
      if (b != static_cast<unsigned char>(check & 0xff)) fail("an object's bytes changed before its destructor ran");
    --alive_objects;
    ++destructor_calls;
  }
  bool intact(std::uint64_t expected) const {
    if (check != expected || self != this) return false;
    for (unsigned char b : padding)
      if (b != static_cast<unsigned char>(expected & 0xff)) return false;
    return true;
  }
};

struct plain {  // trivially destructible: no cleanup record, an 8-byte header
  std::uint64_t check;
  std::uint32_t more[5];
  explicit plain(std::uint64_t c) : check(c) {
    for (auto& m : more) m = static_cast<std::uint32_t>(c);
  }
  bool intact(std::uint64_t expected) const {
    if (check != expected) return false;
    for (auto m : more)
      if (m != static_cast<std::uint32_t>(expected)) return false;
    return true;
  }
};

struct throws_on_construction {
  explicit throws_on_construction(std::uint64_t) { throw std::runtime_error("constructor failed on purpose"); }
  ~throws_on_construction() { fail("the destructor of an object whose constructor threw ran"); }
  std::uint64_t check;
};

/// A node of an object graph: its destructor destroys the nodes it owns, which may be older or younger
/// than it. Each run of a destructor is counted by id; the model expects exactly one per node.
std::map<std::uint64_t, int> node_destructions;

struct graph_node {
  std::uint64_t id;
  const void* self;
  graph_node* owned[2] = {nullptr, nullptr};
  explicit graph_node(std::uint64_t i) : id(i), self(this) {}
  ~graph_node() {
    if (self != this) fail("a graph node's destructor ran on an object that is not where it was made");
    if (++node_destructions[id] > 1)
      fail("the destructor of graph node %llu ran twice", static_cast<unsigned long long>(id));
    for (graph_node* other : owned) perfloc::destroy(other);
  }
};

using small_object = counted<8, 8>;
using wide_object = counted<64, 40>;
using page_aligned_object = counted<256, 100>;
using big_object = counted<16, 3000>;

/// What the model knows about each kind of object, without perfloc's own layout code.
struct kind_info {
  std::size_t bytes;   // model_bytes<T>
  std::size_t prefix;  // model_prefix<T>
  std::size_t size;    // sizeof(T)
  std::size_t alignment;
  bool counted;
  void* (*make)(perfloc::process_chunk&, std::uint64_t);
  bool (*intact)(const void*, std::uint64_t);
  void (*destroy)(void*);
};

template <class T>
constexpr kind_info kind_of() {
  return {model_bytes<T>(),
          model_prefix<T>(),
          sizeof(T),
          alignof(T),
          !std::is_trivially_destructible_v<T>,
          [](perfloc::process_chunk& chunk, std::uint64_t c) -> void* { return chunk.make<T>(c); },
          [](const void* p, std::uint64_t c) { return static_cast<const T*>(p)->intact(c); },
          [](void* p) { perfloc::destroy(static_cast<T*>(p)); }};
}
const kind_info kinds[] = {kind_of<small_object>(), kind_of<wide_object>(), kind_of<page_aligned_object>(),
                           kind_of<big_object>(), kind_of<plain>()};
constexpr std::size_t kind_count = std::size(kinds);

using int_vector = std::vector<int, perfloc::allocator<int>>;

struct raw_allocation {
  std::byte* at;
  std::size_t bytes, alignment;  // alignment 0: allocated with the default argument
  unsigned char fill;
};
struct object_record {
  std::size_t kind;
  void* object;
  std::uint64_t check;
  bool pinned;  // referenced by a perfloc::vector: not destroyed early
};
template <class Container>
struct checked {  // a container and the seed its contents derive from
  std::unique_ptr<Container> container;
  int seed;
};

struct node_record {
  graph_node* node;
  std::uint64_t id;
  graph_node* owner;  // nullptr: a root, which the harness may destroy (with the tree it owns)
};

struct chunk_slot {
  std::optional<perfloc::process_chunk> handle;
  bool from_small_top = false;
  std::vector<raw_allocation> raws;
  std::vector<object_record> objects;
  std::vector<node_record> nodes;
  // Owned by the harness, destroyed before the chunk is released (as a user must).
  std::vector<checked<int_vector>> std_vectors;
  std::vector<checked<std::pmr::vector<std::uint64_t>>> pmr_vectors;
  std::vector<std::unique_ptr<perfloc::vector<small_object>>> ref_vectors;
  // Made inside the chunk: destroyed by the chunk's release, deallocating into the chunk being released.
  std::vector<std::pair<int_vector*, int>> inner_vectors;
  std::size_t peak_live = 0;  // the most model_in_use has been at a check

  bool open() const { return handle.has_value(); }
};

class model {
 public:
  explicit model(perfloc::top_chunk& small_top)
      : small_top_(small_top),
        default_baseline_(perfloc::default_top().stats()),
        small_baseline_(small_top.stats()) {}

  void run(reader& in) {
    node_destructions.clear();
    for (int step = 0; step < 3000 && !in.empty(); ++step) {
      this->step(in);
      check_everything(step % 64 == 0);
    }
    for (std::size_t i = 0; i < max_slots; ++i)
      if (slots_[i].open()) release(i, in.byte() & 1);
    check_everything(true);
    FUZZ_CHECK_EQ(alive_objects, 0);
    FUZZ_CHECK(regions_.empty());
    const perfloc::top_stats after = perfloc::default_top().stats();
    FUZZ_CHECK_EQ(after.live_chunks, default_baseline_.live_chunks);
    FUZZ_CHECK_EQ(after.in_use_bytes, default_baseline_.in_use_bytes);
    FUZZ_CHECK_EQ(small_top_.stats().live_chunks, small_baseline_.live_chunks);
    FUZZ_CHECK_EQ(small_top_.stats().in_use_bytes, small_baseline_.in_use_bytes);
  }

 private:
  // --- operations ---
  void step(reader& in) {
    const std::uint8_t op = in.byte() % 17;
    if (op <= 1) return open(in);
    const std::optional<std::size_t> i = pick_open(in);
    if (!i) return open(in);
    chunk_slot& slot = slots_[*i];
    switch (op) {
      case 2: return release(*i, in.byte() & 1);
      case 3: case 4: case 5: return allocate(slot, in);
      case 6: case 7: return deallocate(slot, in);
      case 8: return make(slot, in);
      case 9: return destroy(slot, in);
      case 10: return std_vector_op(slot, in);
      case 11: return pmr_vector_op(slot, in);
      case 12: return ref_vector_op(slot, in);
      case 13: return inner_vector_op(slot, in);
      case 14: return move(*i, in);
      case 16: return graph_op(slot, in);
      default: return bad_requests(slot, in);
    }
  }

  std::optional<std::size_t> pick_open(reader& in) {
    std::size_t open[max_slots], count = 0;
    for (std::size_t i = 0; i < max_slots; ++i)
      if (slots_[i].open()) open[count++] = i;
    if (!count) return std::nullopt;
    return open[in.pick(count)];
  }

  void open(reader& in) {
    const std::uint8_t how = in.byte();
    std::size_t i = 0;
    while (i < max_slots && slots_[i].open()) ++i;
    if (i == max_slots) return;
    chunk_slot& slot = slots_[i];
    slot.from_small_top = how & 1;
    perfloc::top_chunk& top = slot.from_small_top ? small_top_ : perfloc::default_top();
    const std::uint64_t live_before = top.stats().live_chunks;
    try {
      if (how & 2) slot.handle.emplace(top, "fuzzed chunk");
      else slot.handle.emplace(top);
    } catch (const std::bad_alloc&) {  // only the tiny top may run out
      FUZZ_CHECK(slot.from_small_top);
      FUZZ_CHECK(!slot.handle);
      FUZZ_CHECK_EQ(top.stats().live_chunks, live_before);
      return;
    }
    FUZZ_CHECK_EQ(top.stats().live_chunks, live_before + 1);
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, 0u);
    FUZZ_CHECK(slot.handle->label() == ((how & 2) ? "fuzzed chunk" : ""));
  }

  /// Destroys the harness's containers of the chunk (they deallocate into it), then releases it and checks
  /// that exactly its counted objects were destroyed.
  void release(std::size_t i, bool by_handle_destructor) {
    chunk_slot& slot = slots_[i];
    check_slot(slot, true);
    drop_harness_containers(slot);
    const long dying = counted_objects(slot);
    const long alive_before = alive_objects;
    perfloc::top_chunk& top = top_of(slot);
    const std::uint64_t live_before = top.stats().live_chunks;
    forget_regions(slot);
    if (by_handle_destructor) {
      slot.handle.reset();
    } else {
      slot.handle->release();
      FUZZ_CHECK(!*slot.handle);
      slot.handle->release();  // twice is fine
      slot.handle.reset();
    }
    FUZZ_CHECK_EQ(alive_objects, alive_before - dying);
    check_nodes_destroyed_once(slot.nodes);
    FUZZ_CHECK_EQ(top.stats().live_chunks, live_before - 1);
    slot = chunk_slot{};
  }

  void allocate(chunk_slot& slot, reader& in) {
    const std::size_t bytes = in.size();
    const std::size_t alignment = in.alignment();
    if (bytes_in(slot) + bytes > 4 * MiB || slot.raws.size() >= 256) return;  // keep each input quick
    const std::size_t in_use_before = slot.handle->stats().in_use_bytes;
    std::byte* p;
    try {
      p = static_cast<std::byte*>(alignment ? slot.handle->allocate(bytes, alignment) : slot.handle->allocate(bytes));
    } catch (const std::bad_alloc&) {
      FUZZ_CHECK(slot.from_small_top);
      FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before);  // a failed request leaves nothing behind
      return;
    }
    FUZZ_CHECK(p != nullptr);
    const std::size_t effective_alignment = alignment ? alignment : alignof(std::max_align_t);
    if (reinterpret_cast<std::uintptr_t>(p) % effective_alignment != 0)
      fail("allocate(%zu, %zu) returned %p, not aligned", bytes, effective_alignment, static_cast<void*>(p));
    add_region(p, std::max<std::size_t>(bytes, 1));
    const auto fill = static_cast<unsigned char>(next_fill_++ | 1);
    std::memset(p, fill, bytes);
    slot.raws.push_back({p, bytes, alignment, fill});
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before + footprint(bytes));
  }

  void deallocate(chunk_slot& slot, reader& in) {
    if (slot.raws.empty()) return;
    const std::size_t k = in.pick(slot.raws.size());
    const raw_allocation a = slot.raws[k];
    check_raw(a, true);
    const std::size_t in_use_before = slot.handle->stats().in_use_bytes;
    if (a.alignment) slot.handle->deallocate(a.at, a.bytes, a.alignment);
    else slot.handle->deallocate(a.at, a.bytes);
    remove_region(a.at);
    slot.raws.erase(slot.raws.begin() + static_cast<std::ptrdiff_t>(k));
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before - footprint(a.bytes));
  }

  void make(chunk_slot& slot, reader& in) {
    const std::size_t kind = in.pick(kind_count);
    if (slot.objects.size() >= 256) return;
    const std::uint64_t check = next_check_++;
    const std::size_t in_use_before = slot.handle->stats().in_use_bytes;
    const long alive_before = alive_objects;
    void* object;
    try {
      object = kinds[kind].make(*slot.handle, check);
    } catch (const std::bad_alloc&) {
      FUZZ_CHECK(slot.from_small_top);
      FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before);
      FUZZ_CHECK_EQ(alive_objects, alive_before);
      return;
    }
    if (reinterpret_cast<std::uintptr_t>(object) % kinds[kind].alignment != 0)
      fail("make of kind %zu returned %p, not aligned to %zu", kind, object, kinds[kind].alignment);
    add_region(static_cast<std::byte*>(object) - kinds[kind].prefix, kinds[kind].prefix + kinds[kind].size);
    slot.objects.push_back({kind, object, check, false});
    FUZZ_CHECK_EQ(alive_objects, alive_before + (kinds[kind].counted ? 1 : 0));
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before + kinds[kind].bytes);
  }

  void destroy(chunk_slot& slot, reader& in) {
    if (slot.objects.empty()) return;
    const std::size_t k = in.pick(slot.objects.size());
    const object_record o = slot.objects[k];
    if (o.pinned) return;
    if (!kinds[o.kind].intact(o.object, o.check)) fail("object of kind %zu at %p changed", o.kind, o.object);
    const std::size_t in_use_before = slot.handle->stats().in_use_bytes;
    const long calls_before = destructor_calls;
    kinds[o.kind].destroy(o.object);
    FUZZ_CHECK_EQ(destructor_calls, calls_before + (kinds[o.kind].counted ? 1 : 0));
    remove_region(static_cast<std::byte*>(o.object) - kinds[o.kind].prefix);
    slot.objects.erase(slot.objects.begin() + static_cast<std::ptrdiff_t>(k));
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before - kinds[o.kind].bytes);
  }

  /// Makes a node (owned by an older node, or owning older roots), or destroys a root and the tree it owns.
  void graph_op(chunk_slot& slot, reader& in) {
    const std::uint8_t what = in.byte();
    const std::size_t node_bytes = model_bytes<graph_node>();
    if (what % 4 == 3 && !slot.nodes.empty()) {
      const std::size_t k = in.pick(slot.nodes.size());
      if (slot.nodes[k].owner) return;
      std::vector<node_record> tree;  // the root and everything it owns, transitively
      std::vector<node_record> rest;
      tree.push_back(slot.nodes[k]);
      for (std::size_t t = 0; t < tree.size(); ++t)
        for (const node_record& n : slot.nodes)
          if (n.owner == tree[t].node) tree.push_back(n);
      for (const node_record& n : slot.nodes)
        if (std::none_of(tree.begin(), tree.end(), [&](const node_record& t) { return t.node == n.node; }))
          rest.push_back(n);
      const std::size_t in_use_before = slot.handle->stats().in_use_bytes;
      perfloc::destroy(tree.front().node);
      check_nodes_destroyed_once(tree);
      for (const node_record& n : tree) remove_region(start_of(n.node));
      slot.nodes = std::move(rest);
      FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before - tree.size() * node_bytes);
      return;
    }
    if (slot.nodes.size() >= 128) return;
    const std::uint64_t id = next_check_++;
    const std::size_t in_use_before = slot.handle->stats().in_use_bytes;
    graph_node* made;
    try {
      made = slot.handle->make<graph_node>(id);
    } catch (const std::bad_alloc&) {
      FUZZ_CHECK(slot.from_small_top);
      FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before);
      return;
    }
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before + node_bytes);
    add_region(start_of(made), model_prefix<graph_node>() + sizeof(graph_node));
    graph_node* owner = nullptr;
    if (what & 1 && !slot.nodes.empty()) {  // an older node owns the new one (its destructor runs first at release)
      node_record& older = slot.nodes[in.pick(slot.nodes.size())];
      for (graph_node*& place : older.node->owned)
        if (!place) {
          place = made;
          owner = older.node;
          break;
        }
    }
    // It owns older roots, but not the root of its own tree: the graph stays a forest, so that destroying a
    // root from the harness never reaches a node twice.
    graph_node* own_root = owner;
    for (bool climbed = true; own_root && climbed;) {
      climbed = false;
      for (const node_record& n : slot.nodes)
        if (n.node == own_root && n.owner) own_root = n.owner, climbed = true;
    }
    for (int adopt = 0; adopt < 2 && (what & 2) && !slot.nodes.empty(); ++adopt) {
      node_record& older = slot.nodes[in.pick(slot.nodes.size())];
      if (older.owner || older.node == own_root) continue;
      made->owned[adopt] = older.node;
      older.owner = made;
    }
    slot.nodes.push_back({made, id, owner});
  }

  static std::byte* start_of(graph_node* node) {
    return reinterpret_cast<std::byte*>(node) - model_prefix<graph_node>();
  }

  /// Every node of `nodes` has had its destructor run exactly once.
  static void check_nodes_destroyed_once(const std::vector<node_record>& nodes) {
    for (const node_record& n : nodes) {
      const auto it = node_destructions.find(n.id);
      if (it == node_destructions.end() || it->second != 1)
        fail("graph node %llu: destructor ran %d times", static_cast<unsigned long long>(n.id),
             it == node_destructions.end() ? 0 : it->second);
    }
  }

  // Container operations: growth may run out on the tiny top, which must leave the container as it was.
  template <class Body>
  void may_run_out(chunk_slot& slot, Body body) {
    try {
      body();
    } catch (const std::bad_alloc&) {
      FUZZ_CHECK(slot.from_small_top);
    }
  }

  void std_vector_op(chunk_slot& slot, reader& in) {
    const std::uint8_t what = in.byte();
    if (slot.std_vectors.empty() || (what % 8 == 0 && slot.std_vectors.size() < 3)) {
      slot.std_vectors.push_back({std::make_unique<int_vector>(perfloc::allocator<int>{*slot.handle}), next_seed_++});
      return;
    }
    auto& [v, seed] = slot.std_vectors[in.pick(slot.std_vectors.size())];
    switch (what % 8) {
      case 1: v->clear(); break;
      case 2: v->shrink_to_fit(); break;
      case 3: slot.std_vectors.erase(slot.std_vectors.begin()); break;
      default: {
        const std::size_t more = in.byte() * (what & 0x80 ? 64u : 1u);
        may_run_out(slot, [&] {
          for (std::size_t n = 0; n < more; ++n) v->push_back(seed + static_cast<int>(v->size()));
        });
      }
    }
  }

  void pmr_vector_op(chunk_slot& slot, reader& in) {
    const std::uint8_t what = in.byte();
    if (slot.pmr_vectors.empty() || (what % 8 == 0 && slot.pmr_vectors.size() < 3)) {
      slot.pmr_vectors.push_back(
          {std::make_unique<std::pmr::vector<std::uint64_t>>(slot.handle->resource()), next_seed_++});
      return;
    }
    auto& [v, seed] = slot.pmr_vectors[in.pick(slot.pmr_vectors.size())];
    FUZZ_CHECK(v->get_allocator().resource() == slot.handle->resource());  // stable while the handle moves
    switch (what % 8) {
      case 1: v->clear(); break;
      case 2: v->shrink_to_fit(); break;
      case 3: slot.pmr_vectors.erase(slot.pmr_vectors.begin()); break;
      default: {
        const std::size_t more = in.byte() * (what & 0x80 ? 16u : 1u);
        may_run_out(slot, [&] {
          for (std::size_t n = 0; n < more; ++n) v->push_back(static_cast<std::uint64_t>(seed) * 1000003u + v->size());
        });
      }
    }
  }

  void ref_vector_op(chunk_slot& slot, reader& in) {
    const std::uint8_t what = in.byte();
    if (slot.ref_vectors.empty() || (what % 8 == 0 && slot.ref_vectors.size() < 2)) {
      slot.ref_vectors.push_back(std::make_unique<perfloc::vector<small_object>>(*slot.handle));
      return;
    }
    perfloc::vector<small_object>& v = *slot.ref_vectors[in.pick(slot.ref_vectors.size())];
    switch (what % 8) {
      case 1: v.clear(); break;
      case 2: if (!v.empty()) v.pop_back(); break;
      case 3: {  // push_back an existing object of this chunk; it stays referenced, so it is not destroyed early
        for (object_record& o : slot.objects)
          if (o.kind == 0) {
            o.pinned = true;
            const std::size_t size_before = v.size();
            may_run_out(slot, [&] { v.push_back(*static_cast<small_object*>(o.object)); });
            if (v.size() != size_before) FUZZ_CHECK(&v.back() == o.object);
            break;
          }
        break;
      }
      default: {  // emplace_back: objects made in the chunk, destroyed at its release
        const std::size_t more = in.byte() % 64;
        for (std::size_t n = 0; n < more; ++n) {
          const std::uint64_t check = next_check_++;
          const std::size_t size_before = v.size();
          try {
            small_object& made = v.emplace_back(check);
            FUZZ_CHECK(&v.back() == &made);
            add_region(reinterpret_cast<std::byte*>(&made) - kinds[0].prefix, kinds[0].prefix + kinds[0].size);
            slot.objects.push_back({0, &made, check, true});
          } catch (const std::bad_alloc&) {
            FUZZ_CHECK(slot.from_small_top);
            FUZZ_CHECK_EQ(v.size(), size_before);  // nothing was added
            break;
          }
        }
      }
    }
  }

  void inner_vector_op(chunk_slot& slot, reader& in) {
    const std::uint8_t what = in.byte();
    if (slot.inner_vectors.empty() || (what % 4 == 0 && slot.inner_vectors.size() < 3)) {
      int_vector* v;
      try {
        v = slot.handle->make<int_vector>(perfloc::allocator<int>{*slot.handle});
      } catch (const std::bad_alloc&) {
        FUZZ_CHECK(slot.from_small_top);
        return;
      }
      slot.inner_vectors.emplace_back(v, next_seed_++);
      return;
    }
    auto& [v, seed] = slot.inner_vectors[in.pick(slot.inner_vectors.size())];
    const std::size_t more = in.byte() * 4u;
    may_run_out(slot, [&, v = v, seed = seed] {
      for (std::size_t n = 0; n < more; ++n) v->push_back(seed + static_cast<int>(v->size()));
    });
  }

  /// Moves chunk i into another slot: by construction into an empty one, by assignment onto an open one
  /// (which releases that one's chunk first).
  void move(std::size_t i, reader& in) {
    const std::size_t j = in.pick(max_slots);
    if (j == i) return;
    chunk_slot& from = slots_[i];
    chunk_slot& to = slots_[j];
    const chunk_stats_snapshot before{from.handle->stats().in_use_bytes, from.handle->label().size()};
    void* const resource = from.handle->resource();
    if (!to.open()) {
      to.handle.emplace(std::move(*from.handle));
    } else {
      check_slot(to, true);
      drop_harness_containers(to);
      const long dying = counted_objects(to);
      const long alive_before = alive_objects;
      forget_regions(to);
      *to.handle = std::move(*from.handle);
      FUZZ_CHECK_EQ(alive_objects, alive_before - dying);
      check_nodes_destroyed_once(to.nodes);
    }
    FUZZ_CHECK(!*from.handle);  // a moved-from chunk owns nothing
    // The bookkeeping follows the chunk.
    std::optional<perfloc::process_chunk> handle = std::move(to.handle);
    from.handle.reset();
    to = std::move(from);
    to.handle = std::move(handle);
    from = chunk_slot{};
    FUZZ_CHECK(to.handle && *to.handle);
    FUZZ_CHECK_EQ(to.handle->stats().in_use_bytes, before.in_use);
    FUZZ_CHECK_EQ(to.handle->label().size(), before.label_size);
    FUZZ_CHECK(static_cast<void*>(to.handle->resource()) == resource);
  }
  struct chunk_stats_snapshot {
    std::size_t in_use, label_size;
  };

  /// Requests that must fail with a clear error and change nothing.
  void bad_requests(chunk_slot& slot, reader& in) {
    const std::size_t in_use_before = slot.handle->stats().in_use_bytes;
    const long alive_before = alive_objects;
    static constexpr std::size_t invalid_alignments[] = {0, 3, 5, 24, 48, 100, 1000, 4097, (std::size_t{1} << 12) | 1};
    const std::uint8_t what = in.byte();
    switch (what % 4) {
      case 0: {
        const std::size_t alignment = invalid_alignments[in.pick(std::size(invalid_alignments))];
        bool threw = false;
        try {
          slot.handle->allocate(in.size(), alignment);
        } catch (const std::invalid_argument&) {
          threw = true;
        }
        if (!threw) fail("allocate with alignment %zu did not throw std::invalid_argument", alignment);
        break;
      }
      case 1: {
        bool threw = false;
        try {
          slot.handle->allocate(std::size_t(-1) - in.byte(), in.alignment() ? 4096 : 16);
        } catch (const std::bad_alloc&) {
          threw = true;
        }
        FUZZ_CHECK(threw);
        break;
      }
      case 2: {
        bool threw = false;
        try {
          slot.handle->make<throws_on_construction>(std::uint64_t{1});
        } catch (const std::runtime_error&) {
          threw = true;
        } catch (const std::bad_alloc&) {
          threw = slot.from_small_top;
        }
        FUZZ_CHECK(threw);
        break;
      }
      default: {
        bool threw = false;
        try {
          (void)perfloc::allocator<std::uint64_t>{*slot.handle}.allocate(std::size_t(-1) / 4);
        } catch (const std::bad_array_new_length&) {
          threw = true;
        }
        FUZZ_CHECK(threw);
      }
    }
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before);
    FUZZ_CHECK_EQ(alive_objects, alive_before);
    // The chunk is still usable.
    void* p = slot.handle->allocate(24);
    std::memset(p, 0x11, 24);
    slot.handle->deallocate(p, 24);
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before);
  }

  // --- checks ---
  void check_everything(bool thoroughly) {
    std::size_t in_use[2] = {0, 0};
    std::uint64_t live[2] = {0, 0};
    long counted_alive = 0;
    for (chunk_slot& slot : slots_) {
      if (!slot.open()) continue;
      check_slot(slot, thoroughly);
      in_use[slot.from_small_top] += model_in_use(slot);
      ++live[slot.from_small_top];
      counted_alive += counted_objects(slot);
    }
    FUZZ_CHECK_EQ(alive_objects, counted_alive);
    const perfloc::top_stats default_stats = perfloc::default_top().stats();
    const perfloc::top_stats small_stats = small_top_.stats();
    FUZZ_CHECK_EQ(default_stats.live_chunks, default_baseline_.live_chunks + live[0]);
    FUZZ_CHECK_EQ(default_stats.in_use_bytes, default_baseline_.in_use_bytes + in_use[0]);
    FUZZ_CHECK_EQ(small_stats.live_chunks, small_baseline_.live_chunks + live[1]);
    FUZZ_CHECK_EQ(small_stats.in_use_bytes, small_baseline_.in_use_bytes + in_use[1]);
    FUZZ_CHECK(small_stats.committed_bytes <= small_stats.reserved_bytes);
    FUZZ_CHECK(small_stats.reserved_bytes <= small_top_.options().max_reserved_bytes);
  }

  void check_slot(chunk_slot& slot, bool thoroughly) {
    FUZZ_CHECK(slot.handle && *slot.handle);
    const std::size_t live = model_in_use(slot);
    const perfloc::chunk_stats stats = slot.handle->stats();
    FUZZ_CHECK_EQ(stats.in_use_bytes, live);
    // The reuse bound. Containers peak inside an operation (a reallocation holds two buffers), between the
    // model's checks: the chunk's own peak covers those moments, and must cover every peak the model saw.
    slot.peak_live = std::max(slot.peak_live, live);
    FUZZ_CHECK(stats.peak_in_use_bytes >= slot.peak_live);
    constexpr std::size_t reuse_factor = 3, one_block = 4 * MiB;
    if (stats.held_bytes > reuse_factor * stats.peak_in_use_bytes + one_block)
      fail("a chunk holds %zu bytes for a peak of %zu live bytes", stats.held_bytes, stats.peak_in_use_bytes);
    for (const raw_allocation& a : slot.raws) check_raw(a, thoroughly);
    for (const object_record& o : slot.objects)
      if (!kinds[o.kind].intact(o.object, o.check)) fail("object of kind %zu at %p changed", o.kind, o.object);
    for (auto& [v, seed] : slot.std_vectors)
      for (std::size_t k = 0; k < v->size(); ++k) FUZZ_CHECK((*v)[k] == seed + static_cast<int>(k));
    for (auto& [v, seed] : slot.pmr_vectors)
      for (std::size_t k = 0; k < v->size(); ++k) FUZZ_CHECK((*v)[k] == static_cast<std::uint64_t>(seed) * 1000003u + k);
    for (auto& [v, seed] : slot.inner_vectors)
      for (std::size_t k = 0; k < v->size(); ++k) FUZZ_CHECK((*v)[k] == seed + static_cast<int>(k));
    for (auto& v : slot.ref_vectors)
      for (small_object& o : *v) FUZZ_CHECK(o.self == &o);
    for (const node_record& n : slot.nodes) FUZZ_CHECK(n.node->self == n.node && !node_destructions.count(n.id));
  }

  /// All of the allocation, or its first and last 16 bytes. memcmp against a buffer of the fill byte: a
  /// byte loop would spend the fuzzer's time in coverage callbacks.
  static void check_raw(const raw_allocation& a, bool thoroughly) {
    static unsigned char pattern[4096];
    std::memset(pattern, a.fill, sizeof pattern);
    const auto matches = [&](std::size_t from, std::size_t n) {
      for (std::size_t done = 0; done < n; done += sizeof pattern)
        if (std::memcmp(a.at + from + done, pattern, std::min(sizeof pattern, n - done)) != 0) return false;
      return true;
    };
    const bool intact = thoroughly || a.bytes <= 32 ? matches(0, a.bytes) : matches(0, 16) && matches(a.bytes - 16, 16);
    if (!intact) fail("the fill pattern of a %zu-byte allocation at %p changed", a.bytes, static_cast<void*>(a.at));
  }

  /// The chunk's share of in_use_bytes, from the model's own bookkeeping and the containers' capacities.
  static std::size_t model_in_use(const chunk_slot& slot) {
    std::size_t n = 0;
    for (const raw_allocation& a : slot.raws) n += footprint(a.bytes);
    for (const object_record& o : slot.objects) n += kinds[o.kind].bytes;
    n += slot.nodes.size() * model_bytes<graph_node>();
    for (auto& [v, seed] : slot.std_vectors) n += v->capacity() ? footprint(v->capacity() * sizeof(int)) : 0;
    for (auto& [v, seed] : slot.pmr_vectors)
      n += v->capacity() ? footprint(v->capacity() * sizeof(std::uint64_t)) : 0;
    for (auto& v : slot.ref_vectors) n += v->capacity() ? footprint(v->capacity() * sizeof(void*)) : 0;
    for (auto& [v, seed] : slot.inner_vectors)
      n += model_bytes<int_vector>() + (v->capacity() ? footprint(v->capacity() * sizeof(int)) : 0);
    return n;
  }

  static long counted_objects(const chunk_slot& slot) {
    long n = 0;
    for (const object_record& o : slot.objects) n += kinds[o.kind].counted;
    return n;
  }
  static std::size_t bytes_in(const chunk_slot& slot) {
    std::size_t n = 0;
    for (const raw_allocation& a : slot.raws) n += a.bytes;
    return n;
  }

  perfloc::top_chunk& top_of(const chunk_slot& slot) { return slot.from_small_top ? small_top_ : perfloc::default_top(); }

  void drop_harness_containers(chunk_slot& slot) {
    const std::size_t in_use_before = slot.handle->stats().in_use_bytes;
    std::size_t freed = 0;
    for (auto& [v, seed] : slot.std_vectors) freed += v->capacity() ? footprint(v->capacity() * sizeof(int)) : 0;
    for (auto& [v, seed] : slot.pmr_vectors) freed += v->capacity() ? footprint(v->capacity() * 8) : 0;
    for (auto& v : slot.ref_vectors) freed += v->capacity() ? footprint(v->capacity() * sizeof(void*)) : 0;
    slot.std_vectors.clear();
    slot.pmr_vectors.clear();
    slot.ref_vectors.clear();
    FUZZ_CHECK_EQ(slot.handle->stats().in_use_bytes, in_use_before - freed);
  }

  // --- the map of live regions: no two overlap ---
  void add_region(std::byte* start, std::size_t bytes) {
    const auto at = reinterpret_cast<std::uintptr_t>(start);
    auto next = regions_.lower_bound(at);
    if (next != regions_.end() && at + bytes > next->first)
      fail("[%p, +%zu) overlaps a live allocation at %#lx", static_cast<void*>(start), bytes,
           static_cast<unsigned long>(next->first));
    if (next != regions_.begin()) {
      auto before = std::prev(next);
      if (before->first + before->second > at)
        fail("[%p, +%zu) overlaps a live allocation at %#lx (+%zu)", static_cast<void*>(start), bytes,
             static_cast<unsigned long>(before->first), before->second);
    }
    regions_.emplace(at, bytes);
  }
  void remove_region(std::byte* start) { FUZZ_CHECK(regions_.erase(reinterpret_cast<std::uintptr_t>(start)) == 1); }
  void forget_regions(const chunk_slot& slot) {
    for (const raw_allocation& a : slot.raws) remove_region(a.at);
    for (const object_record& o : slot.objects) remove_region(static_cast<std::byte*>(o.object) - kinds[o.kind].prefix);
    for (const node_record& n : slot.nodes) remove_region(start_of(n.node));
  }

  perfloc::top_chunk& small_top_;
  const perfloc::top_stats default_baseline_;
  const perfloc::top_stats small_baseline_;
  chunk_slot slots_[max_slots];
  std::map<std::uintptr_t, std::size_t> regions_;
  unsigned next_fill_ = 1;
  std::uint64_t next_check_ = 1;
  int next_seed_ = 1;
};

/// A private top with a tiny reservation: a few MiB, so that large requests and many blocks run out.
perfloc::top_chunk& small_top() {
  static perfloc::top_chunk top{perfloc::top_options{
      .reservation_bytes = 2 * MiB, .max_reserved_bytes = 6 * MiB, .retain_bytes = 512 * KiB}};
  return top;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reader in(data, size);
  model m(small_top());
  m.run(in);
  return 0;
}
