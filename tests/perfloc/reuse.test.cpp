// Tests of reuse inside one long-lived process chunk: memory given back by deallocate or destroy is reused
// at the size it was freed, whatever the size and the order, so that held_bytes stays within the bound the
// README documents (held_bytes <= reuse_factor * peak live bytes + one block). Each workload runs against a
// model that knows the live allocations and their bytes on its own (footprint = size rounded up to 16, at
// least 16), writes a pattern into every allocation and reads it back before freeing it.
#define BOOST_TEST_MODULE perfloc.reuse
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory_resource>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "death.hpp"

import perfloc;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;

// The documented bound (README, "Containers in a chunk"): held_bytes <= reuse_factor * peak live bytes +
// one block, the largest block a chunk grows by.
constexpr std::size_t reuse_factor = 3;
constexpr std::size_t one_block = 4 * MiB;

constexpr std::size_t footprint(std::size_t bytes) { return ((bytes ? bytes : 1) + 15) & ~std::size_t{15}; }

/// The sizes the suite cycles through: odd ones especially, 16 B to 256 KiB.
constexpr std::array<std::size_t, 14> sizes{16, 17, 48, 100, 520, 1000, 3000, 4097, 20000, 65536, 100000, 131071,
                                            200000, 256 * KiB};

struct live_allocation {
  unsigned char* at;
  std::size_t bytes, alignment;
  unsigned char fill;
};

/// A chunk, the model of what is live in it, and the checks.
class workload {
 public:
  explicit workload(const char* name) : name_(name) {}

  void allocate(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) {
    auto* p = static_cast<unsigned char*>(chunk_.allocate(bytes, alignment));
    if (reinterpret_cast<std::uintptr_t>(p) % alignment != 0) BOOST_FAIL(name_ << ": not aligned to " << alignment);
    const auto fill = static_cast<unsigned char>(++fills_ | 1);
    write(p, bytes, fill);
    live_.push_back({p, bytes, alignment, fill});
    live_bytes_ += footprint(bytes);
    peak_bytes_ = std::max(peak_bytes_, live_bytes_);
    step();
  }
  void free(std::size_t index) {
    live_allocation a = live_[index];
    check(a);
    live_[index] = live_.back();
    live_.pop_back();
    chunk_.deallocate(a.at, a.bytes, a.alignment);
    live_bytes_ -= footprint(a.bytes);
    step();
  }
  /// Frees the oldest (FIFO) or the newest (LIFO) allocation: keeps live_ in allocation order.
  void free_oldest() { free_ordered(0); }
  void free_newest() { free_ordered(live_.size() - 1); }
  void free_all() {
    while (!live_.empty()) free_newest();
  }

  std::size_t live_count() const { return live_.size(); }
  std::size_t held() const { return chunk_.stats().held_bytes; }
  std::size_t peak() const { return peak_bytes_; }
  perfloc::process_chunk& chunk() { return chunk_; }

  /// Every allocation intact, in_use as the model says, held within the bound.
  void checkpoint() {
    for (const live_allocation& a : live_) check(a);
    const perfloc::chunk_stats stats = chunk_.stats();
    BOOST_REQUIRE_EQUAL(stats.in_use_bytes, live_bytes_);
    if (stats.held_bytes > reuse_factor * peak_bytes_ + one_block)
      BOOST_FAIL(name_ << ": after " << operations_ << " operations, held " << stats.held_bytes << " B for a peak of "
                       << peak_bytes_ << " live B (bound " << reuse_factor << " * peak + " << one_block << ")");
    // The smallest factor for which the bound would still hold here.
    if (stats.held_bytes > one_block)
      worst_ratio_ = std::max(worst_ratio_, static_cast<double>(stats.held_bytes - one_block) / peak_bytes_);
  }
  void report() const {
    BOOST_TEST_MESSAGE(name_ << ": " << operations_ << " operations, peak " << peak_bytes_ << " B, held at the end "
                             << held() << " B, worst (held - one block) / peak " << worst_ratio_);
  }

 private:
  static void write(unsigned char* p, std::size_t bytes, unsigned char fill) {
    if (bytes <= 64) return static_cast<void>(std::memset(p, fill, bytes));
    std::memset(p, fill, 32);
    std::memset(p + bytes / 2, fill, 1);
    std::memset(p + bytes - 32, fill, 32);
  }
  void check(const live_allocation& a) const {
    const auto same = [&](std::size_t from, std::size_t n) {
      for (std::size_t i = from; i < from + n; ++i)
        if (a.at[i] != a.fill) return false;
      return true;
    };
    const bool intact =
        a.bytes <= 64 ? same(0, a.bytes) : same(0, 32) && same(a.bytes / 2, 1) && same(a.bytes - 32, 32);
    if (!intact) BOOST_FAIL(name_ << ": the contents of a " << a.bytes << "-byte allocation changed");
  }
  void free_ordered(std::size_t index) {
    live_allocation a = live_[index];
    check(a);
    live_.erase(live_.begin() + static_cast<std::ptrdiff_t>(index));
    chunk_.deallocate(a.at, a.bytes, a.alignment);
    live_bytes_ -= footprint(a.bytes);
    step();
  }
  void step() {
    if (++operations_ % 1009 == 0) checkpoint();
  }

  const char* name_;
  perfloc::process_chunk chunk_;
  std::deque<live_allocation> live_;
  std::size_t live_bytes_ = 0, peak_bytes_ = 0, operations_ = 0;
  double worst_ratio_ = 0;
  unsigned fills_ = 0;
};

/// Operations per size, so that each order runs about a million operations over all sizes; fewer for the
/// largest sizes, whose allocations are written and checked at their ends only.
std::size_t operations_for(std::size_t bytes) { return bytes <= 4097 ? 110'000 : 40'000; }

/// Runs `phase(bytes)` for every size in turn in one chunk, freeing what is left after each.
template <class Phase>
void every_size(workload& w, Phase phase) {
  for (std::size_t bytes : sizes) {
    phase(bytes);
    w.free_all();
    w.checkpoint();
  }
  w.report();
}

}  // namespace

// The measurement: a connection keeps 4 messages alive and frees the oldest as each new one arrives.
BOOST_AUTO_TEST_CASE(freed_odd_sizes_are_reused_in_fifo_order) {
  workload w{"fifo"};
  every_size(w, [&](std::size_t bytes) {
    for (std::size_t keep : {std::size_t{4}, std::size_t{37}}) {
      for (std::size_t i = 0; i < operations_for(bytes) / 4; ++i) {
        w.allocate(bytes);
        if (w.live_count() > keep) w.free_oldest();
      }
    }
  });
}

// The same, one chunk per size, as the issue measured it (on the old scheme: 504 MiB held after 1M messages
// of 520 B): the chunk never grows past the blocks its first four messages needed.
BOOST_AUTO_TEST_CASE(a_chunk_keeping_four_messages_alive_stays_in_the_blocks_it_first_took) {
  for (std::size_t bytes : {std::size_t{64}, std::size_t{520}, std::size_t{1000}, std::size_t{3000},
                            std::size_t{20000}}) {
    perfloc::top_chunk top;  // a new site: its first chunk has a whole block
    perfloc::process_chunk chunk{top};
    std::deque<void*> messages;
    std::size_t held_with_four = 0;
    for (int i = 0; i < 50'000; ++i) {
      void* message = chunk.allocate(bytes);
      std::memset(message, i & 0xff, bytes);
      messages.push_back(message);
      if (messages.size() == 4 && !held_with_four) held_with_four = chunk.stats().held_bytes;
      if (messages.size() > 4) {
        chunk.deallocate(messages.front(), bytes);
        messages.pop_front();
      }
    }
    BOOST_TEST(chunk.stats().held_bytes == held_with_four, bytes << "-byte messages");
    BOOST_TEST(held_with_four <= (bytes * 4 < 60 * KiB ? 64 * KiB : 192 * KiB));  // the first block, or two
  }
}

BOOST_AUTO_TEST_CASE(freed_odd_sizes_are_reused_in_lifo_order) {
  workload w{"lifo"};
  std::mt19937_64 random{1};
  every_size(w, [&](std::size_t bytes) {
    // A stack whose depth wanders: runs of pushes (sizes a little apart), runs of pops.
    for (std::size_t i = 0; i < operations_for(bytes) / 5; ++i) {
      const std::size_t run = 1 + random() % 8;
      if (random() % 2 || w.live_count() < run) {
        for (std::size_t k = 0; k < run && w.live_count() < 64; ++k) w.allocate(bytes + 16 * (random() % 3));
      } else {
        for (std::size_t k = 0; k < run; ++k) w.free_newest();
      }
    }
  });
}

BOOST_AUTO_TEST_CASE(freed_odd_sizes_are_reused_in_random_order) {
  workload w{"random"};
  std::mt19937_64 random{2};
  every_size(w, [&](std::size_t bytes) {
    for (std::size_t i = 0; i < operations_for(bytes) / 2; ++i) {
      if (w.live_count() < 2 || (w.live_count() < 48 && random() % 2)) w.allocate(bytes);
      else w.free(random() % w.live_count());
    }
  });
}

BOOST_AUTO_TEST_CASE(freed_mixed_sizes_are_reused_in_random_order) {
  workload w{"mixed"};
  std::mt19937_64 random{3};
  for (std::size_t i = 0; i < 400'000; ++i) {
    if (w.live_count() < 4 || (w.live_count() < 200 && random() % 2)) {
      // Mostly small, some large: log-uniform from 16 B to 256 KiB.
      const std::size_t bytes = std::size_t{16} << (random() % 15);
      w.allocate(std::min<std::size_t>(256 * KiB, bytes + random() % bytes));
    } else {
      w.free(random() % w.live_count());
    }
  }
  w.free_all();
  w.checkpoint();
  w.report();
}

BOOST_AUTO_TEST_CASE(freed_memory_is_reused_by_over_aligned_requests_in_random_order) {
  workload w{"over-aligned"};
  std::mt19937_64 random{7};
  for (std::size_t i = 0; i < 200'000; ++i) {
    if (w.live_count() < 2 || (w.live_count() < 64 && random() % 2))
      w.allocate(sizes[random() % 9], std::size_t{32} << (random() % 8));  // 32 to 4096
    else
      w.free(random() % w.live_count());
  }
  w.free_all();
  w.checkpoint();
  w.report();
}

// ------------------------------------------------------------------------------------------------------------
// Containers that churn inside one chunk
// ------------------------------------------------------------------------------------------------------------

namespace {

/// Between a container and the chunk's resource: counts the live bytes (as the chunk counts them) and their
/// peak, so that the bound is checked against the containers' own demand.
class counting_resource final : public std::pmr::memory_resource {
 public:
  explicit counting_resource(perfloc::process_chunk& chunk) : chunk_(chunk) {}
  std::size_t live() const { return live_; }
  std::size_t peak() const { return peak_; }
  void check_bound(const char* what) const {
    const perfloc::chunk_stats stats = chunk_.stats();
    BOOST_REQUIRE_EQUAL(stats.in_use_bytes, live_);
    if (stats.held_bytes > reuse_factor * peak_ + one_block)
      BOOST_FAIL(what << ": held " << stats.held_bytes << " B for a peak of " << peak_ << " live B");
  }

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    void* p = chunk_.resource()->allocate(bytes, alignment);
    live_ += footprint(bytes);
    peak_ = std::max(peak_, live_);
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    chunk_.resource()->deallocate(p, bytes, alignment);
    live_ -= footprint(bytes);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }

  perfloc::process_chunk& chunk_;
  std::size_t live_ = 0, peak_ = 0;
};

std::pmr::string text_of(std::uint64_t key, std::pmr::memory_resource* resource) {
  // Lengths from 0 to ~600: short strings stay inline, longer ones take odd-sized buffers.
  std::pmr::string s{resource};
  s.assign(static_cast<std::size_t>(key * 7919 % 601), static_cast<char>('a' + key % 26));
  return s;
}
bool is_text_of(const std::pmr::string& s, std::uint64_t key) {
  return s.size() == key * 7919 % 601 && std::all_of(s.begin(), s.end(), [&](char c) { return c == 'a' + key % 26; });
}

}  // namespace

BOOST_AUTO_TEST_CASE(pmr_containers_churning_in_a_chunk_reuse_its_memory) {
  perfloc::process_chunk chunk;
  counting_resource counted{chunk};
  std::mt19937_64 random{4};
  {
    std::pmr::list<std::pmr::string> list{&counted};
    std::pmr::deque<std::uint64_t> deque{&counted};
    std::pmr::map<std::uint64_t, std::pmr::string> map{&counted};
    std::pmr::unordered_map<std::uint64_t, std::pmr::string> hashed{&counted};
    std::deque<std::uint64_t> list_keys;  // the model of the list, on the global heap
    // Erases the key if it is there (checking its text), inserts it otherwise.
    const auto toggle = [&](auto& table, std::uint64_t key) {
      if (auto found = table.find(key); found != table.end()) {
        BOOST_REQUIRE(is_text_of(found->second, key));
        table.erase(found);
      } else {
        table.emplace(key, text_of(key, &counted));
      }
    };
    std::uint64_t next_key = 0, deque_front = 0;
    for (std::size_t i = 1; i <= 250'000; ++i) {
      const std::uint64_t r = random();
      const std::size_t target = 64 + (i / 20'000 % 4) * 300;  // sizes that wander, so buffers are freed in turn
      switch (r % 4) {
        case 0:  // a queue of strings: push at the back, pop at the front
          if (list.size() < target) {
            list.push_back(text_of(next_key, &counted));
            list_keys.push_back(next_key++);
          } else {
            BOOST_REQUIRE(is_text_of(list.front(), list_keys.front()));
            list.pop_front();
            list_keys.pop_front();
          }
          break;
        case 1:  // a deque used as a queue: its 512-byte blocks come and go
          for (int k = 0; k < 8; ++k) {
            if (deque.size() < 16 * target) deque.push_back(deque_front + deque.size());
            else {
              BOOST_REQUIRE_EQUAL(deque.front(), deque_front);
              deque.pop_front();
              ++deque_front;
            }
          }
          break;
        case 2:  // a map of strings: random keys in and out
          toggle(map, r / 4 % (2 * target));
          break;
        default:  // a hash table whose bucket array grows and is rehashed down again
          toggle(hashed, r / 4 % (4 * target));
          if (i % 50'000 == 0) hashed.rehash(0);
      }
      if (i % 1009 == 0) counted.check_bound("pmr containers");
    }
    BOOST_TEST_MESSAGE("pmr containers: peak " << counted.peak() << " B, held " << chunk.stats().held_bytes << " B");
  }
  BOOST_TEST(counted.live() == 0u);
  counted.check_bound("pmr containers, destroyed");
}

BOOST_AUTO_TEST_CASE(std_vectors_growing_and_shrinking_in_a_chunk_reuse_its_memory) {
  using int_vector = std::vector<std::uint32_t, perfloc::allocator<std::uint32_t>>;
  perfloc::process_chunk chunk;
  std::mt19937_64 random{5};
  std::vector<int_vector> vectors;
  for (int k = 0; k < 6; ++k) vectors.emplace_back(perfloc::allocator<std::uint32_t>{chunk});
  // The model: capacities, from which the live bytes follow; during a reallocation both buffers are live.
  std::size_t peak = 0;
  const auto live_bytes = [&] {
    std::size_t n = 0;
    for (const int_vector& v : vectors) n += v.capacity() ? footprint(v.capacity() * sizeof(std::uint32_t)) : 0;
    return n;
  };
  for (std::size_t i = 1; i <= 30'000; ++i) {
    int_vector& v = vectors[random() % vectors.size()];
    const std::size_t before = live_bytes();
    const std::size_t old_buffer = v.capacity() ? footprint(v.capacity() * sizeof(std::uint32_t)) : 0;
    switch (random() % 4) {
      case 0: v.clear(); v.shrink_to_fit(); break;
      case 1: v.resize(v.size() / 2); v.shrink_to_fit(); break;
      default: {
        const std::size_t more = random() % 3000;
        for (std::size_t k = 0; k < more; ++k) v.push_back(static_cast<std::uint32_t>(v.size() * 2654435761u));
      }
    }
    // Growth doubles the capacity: the last reallocation held the buffer of half the final capacity and the
    // final one at once.
    const std::size_t buffer = v.capacity() ? footprint(v.capacity() * sizeof(std::uint32_t)) : 0;
    if (buffer > old_buffer) {
      const std::size_t half = v.capacity() / 2 ? footprint(v.capacity() / 2 * sizeof(std::uint32_t)) : 0;
      peak = std::max(peak, before - old_buffer + half + buffer);
    }
    peak = std::max(peak, live_bytes());
    for (std::size_t k = 0; k < v.size(); k += 97)
      BOOST_REQUIRE_EQUAL(v[k], static_cast<std::uint32_t>(k * 2654435761u));
    if (!v.empty()) BOOST_REQUIRE_EQUAL(v.back(), static_cast<std::uint32_t>((v.size() - 1) * 2654435761u));
    const perfloc::chunk_stats stats = chunk.stats();
    BOOST_REQUIRE_EQUAL(stats.in_use_bytes, live_bytes());
    if (stats.held_bytes > reuse_factor * peak + one_block)
      BOOST_FAIL("vectors: after " << i << " operations, held " << stats.held_bytes << " B for a peak of " << peak);
  }
  BOOST_TEST_MESSAGE("vectors: peak " << peak << " B, held " << chunk.stats().held_bytes << " B");
}

BOOST_AUTO_TEST_CASE(objects_made_and_destroyed_in_random_order_reuse_their_memory) {
  struct message {
    std::array<std::uint64_t, 63> words;  // 504 B + header + cleanup record: a 544-byte allocation
    explicit message(std::uint64_t seed) { words.fill(seed); }
    ~message() { words.fill(0); }
  };
  perfloc::process_chunk chunk;
  std::mt19937_64 random{6};
  std::vector<std::pair<message*, std::uint64_t>> live;
  const std::size_t per_object = footprint(8 + 24 + sizeof(message));
  std::size_t peak = 0;
  for (std::uint64_t i = 1; i <= 200'000; ++i) {
    if (live.size() < 3 || (live.size() < 100 && random() % 2)) {
      live.emplace_back(chunk.make<message>(i), i);
    } else {
      const std::size_t k = random() % live.size();
      BOOST_REQUIRE(live[k].first->words[62] == live[k].second && live[k].first->words[0] == live[k].second);
      perfloc::destroy(live[k].first);
      live[k] = live.back();
      live.pop_back();
    }
    peak = std::max(peak, live.size() * per_object);
    if (i % 1009 == 0 && chunk.stats().held_bytes > reuse_factor * peak + one_block)
      BOOST_FAIL("objects: held " << chunk.stats().held_bytes << " B for a peak of " << peak << " B");
  }
}

// ------------------------------------------------------------------------------------------------------------
// Misuse: a size larger than was allocated
// ------------------------------------------------------------------------------------------------------------

#ifndef NDEBUG
BOOST_AUTO_TEST_CASE(deallocate_with_a_larger_size_than_allocated_is_reported) {
  const auto death = perfloc_test::run_in_child([] {
    perfloc::process_chunk chunk;
    chunk.allocate(64);
    void* p = chunk.allocate(100);
    chunk.deallocate(p, 200);  // the latest allocation: 200 bytes run past what the chunk handed out
    chunk.allocate(200);
  });
  BOOST_TEST(death.died);
  BOOST_TEST(death.output.find("larger than") != std::string::npos, death.output);
}
#endif
