// Soak: about a million scopes with mixed allocation patterns on two threads, some chunks handed from one
// thread to the other and released there, then checks that the top chunk comes back to where it started.
//
// Bounded by operations, never by time: each of the two threads runs exactly half of PERFLOC_SOAK_SCOPES
// scopes (default 1,000,000; about 2 s in a debug build), whatever the speed of the machine, so what it
// detects (a leak that grows with the number of scopes, such as chunks released on the other thread whose
// metas never go home) it detects on every run. Raise it for a long run: PERFLOC_SOAK_SCOPES=100000000.
//
// The stated bound on memory after the burst: committed <= retain_bytes + the committed memory before the
// burst (header and meta region) + one 4 KiB header page per 64 KiB of the peak (a decommitted free block
// keeps its header page committed) + 1 MiB (meta region growth).
#define BOOST_TEST_MODULE perfloc.soak
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory_resource>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

import perfloc;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::strtoull(value, nullptr, 10) : fallback;
}

std::atomic<long> alive{0};
std::atomic<long> made{0};       // counted by the scopes, as they ask for objects
std::atomic<long> destroyed{0};  // counted by the destructor

struct node {
  std::uint64_t value;
  node* next;
  node(std::uint64_t v, node* n) : value(v), next(n) { alive.fetch_add(1, std::memory_order_relaxed); }
  ~node() {
    alive.fetch_sub(1, std::memory_order_relaxed);
    destroyed.fetch_add(1, std::memory_order_relaxed);
  }
};

/// Chunks handed from one thread to the other, which releases them.
struct mailbox {
  std::mutex mutex;
  std::vector<perfloc::process_chunk> chunks;
  void put(perfloc::process_chunk chunk) {
    std::lock_guard lock(mutex);
    chunks.push_back(std::move(chunk));
  }
  std::vector<perfloc::process_chunk> take() {
    std::lock_guard lock(mutex);
    return std::exchange(chunks, {});
  }
};

/// One scope of a randomly chosen pattern; returns false when a check failed.
bool one_scope(perfloc::top_chunk& top, std::mt19937_64& random, mailbox& outgoing) {
  perfloc::process_chunk chunk{top};
  switch (random() % 32) {
    default: {  // the common case (25 in 32): a few small allocations, touched
      const int count = 1 + static_cast<int>(random() % 16);
      for (int i = 0; i < count; ++i) {
        const std::size_t bytes = 16 + random() % 241;
        std::memset(chunk.allocate(bytes), i, bytes);
      }
      break;
    }
    case 0: case 1: {  // a linked list of objects with destructors, the head destroyed early
      node* head = nullptr;
      const int count = static_cast<int>(random() % 100);
      for (int i = 0; i < count; ++i) head = chunk.make<node>(static_cast<std::uint64_t>(i), head);
      made.fetch_add(count, std::memory_order_relaxed);
      std::uint64_t expected = static_cast<std::uint64_t>(count);
      for (node* n = head; n; n = n->next)
        if (n->value != --expected) return false;
      if (head) perfloc::destroy(head);
      break;
    }
    case 2: {  // containers growing in the chunk
      std::vector<int, perfloc::allocator<int>> numbers{perfloc::allocator<int>{chunk}};
      std::pmr::vector<std::uint64_t> more{chunk.resource()};
      const int count = static_cast<int>(random() % 2000);
      for (int i = 0; i < count; ++i) {
        numbers.push_back(i);
        more.push_back(static_cast<std::uint64_t>(i) * 3);
      }
      for (int i = 0; i < count; ++i)
        if (numbers[i] != i || more[i] != static_cast<std::uint64_t>(i) * 3) return false;
      break;
    }
    case 3: {  // nested scopes
      perfloc::process_chunk inner{top};
      perfloc::vector<node> refs{inner};
      for (int i = 0; i < 8; ++i) refs.emplace_back(static_cast<std::uint64_t>(i), nullptr);
      made.fetch_add(8, std::memory_order_relaxed);
      chunk.allocate(100);
      if (refs[7].value != 7) return false;
      break;
    }
    case 4: {  // now and then a large allocation (a block of its own), else a span given back
      if (random() % 16 == 0) std::memset(chunk.allocate(256 * KiB + random() % (1 * MiB)), 1, 4096);
      else {
        const std::size_t bytes = random() % 4000;
        void* p = chunk.allocate(bytes);
        std::memset(p, 3, bytes);
        chunk.deallocate(p, bytes);
      }
      break;
    }
    case 5: case 6: {  // handed to the other thread, which releases it
      chunk.make<node>(1, nullptr);
      made.fetch_add(1, std::memory_order_relaxed);
      std::memset(chunk.allocate(500), 2, 500);
      outgoing.put(std::move(chunk));
      break;
    }
  }
  return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_million_scopes_on_two_threads_come_back_to_baseline) {
  constexpr std::uint64_t batch = 256;  // scopes between two takes of the mailbox
  const std::uint64_t per_thread = (env_or("PERFLOC_SOAK_SCOPES", 1'000'000) / 2 + batch - 1) / batch * batch;
  constexpr std::size_t retain = 16 * MiB;
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 1024 * MiB, .retain_bytes = retain}};
  const perfloc::top_stats before = top.stats();
  alive = 0;
  made = 0;
  destroyed = 0;

  mailbox boxes[2];
  std::atomic<std::uint64_t> scopes{0};
  std::atomic<bool> failed{false};
  auto worker = [&](int me) {
    std::mt19937_64 random(static_cast<std::uint64_t>(me) * 7919 + 1);
    for (std::uint64_t done = 0; done < per_thread && !failed.load(std::memory_order_relaxed); done += batch) {
      for (std::uint64_t i = 0; i < batch; ++i)
        if (!one_scope(top, random, boxes[1 - me])) failed = true;
      boxes[me].take();  // releases the chunks the other thread handed over
      scopes.fetch_add(batch, std::memory_order_relaxed);
    }
  };
  std::thread a(worker, 0), b(worker, 1);
  a.join();
  b.join();
  for (mailbox& box : boxes) box.take();  // what was handed over last, released here on a third thread

  const perfloc::top_stats after = top.stats();
  BOOST_TEST_MESSAGE("soak: " << scopes.load() << " scopes, " << made.load() << " objects made, peak committed "
                              << after.peak_committed_bytes / KiB << " KiB, committed after "
                              << after.committed_bytes / KiB << " KiB");
  BOOST_TEST(!failed.load());
  BOOST_TEST(scopes.load() == 2 * per_thread);  // every scope ran: the run is the same on any machine
  BOOST_TEST(made.load() > 0);
  BOOST_TEST(destroyed.load() == made.load());  // each object made was destroyed exactly once
  BOOST_TEST(alive.load() == 0);
  BOOST_TEST(after.live_chunks == before.live_chunks);
  BOOST_TEST(after.in_use_bytes == before.in_use_bytes);
  const std::size_t bound =
      retain + before.committed_bytes + after.peak_committed_bytes / (64 * KiB) * (4 * KiB) + 1 * MiB;
  BOOST_TEST(after.committed_bytes <= bound, "committed " << after.committed_bytes << " > bound " << bound);
}
