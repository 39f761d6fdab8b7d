// Imports the installed perfloc and uses it as a user would: chunks from default_top() and from a private
// top, make/destroy with destructors counted, allocate/deallocate with every alignment, perfloc::allocator in
// a std::vector, a std::pmr container, perfloc::vector, moves, statistics and the release hook. Each step is
// checked against what the README promises; any failure prints what failed and exits 1. Last, a coroutine
// started with perfloc::co_spawn, on Boost.Asio or on standalone Asio (PERFLOC_STANDALONE_ASIO, which the
// package defines for its importers when the consumer sets the CMake variable of that name).
#if defined(PERFLOC_STANDALONE_ASIO)
#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#else
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#endif

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <vector>

import perfloc;

#if !defined(PERFLOC_STANDALONE_ASIO)
namespace asio = boost::asio;
#endif

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::printf("perfloc consumer: FAILED: %s\n", what);
    ++failures;
  }
}

/// What a request of `bytes` counts in in_use_bytes (README): a multiple of 16, at least 16.
constexpr std::size_t footprint(std::size_t bytes) { return ((bytes ? bytes : 1) + 15) & ~std::size_t{15}; }

int alive = 0;
struct widget {
  int id;
  std::string name;
  widget(int i, std::string n) : id(i), name(std::move(n)) { ++alive; }
  ~widget() { --alive; }
};

void chunks_and_objects() {
  const perfloc::top_stats before = perfloc::default_top().stats();
  {
    perfloc::process_chunk chunk{"consumer"};
    check(chunk.label() == "consumer", "the label is kept");
    check(perfloc::default_top().stats().live_chunks == before.live_chunks + 1, "the chunk counts in default_top()");

    int* number = chunk.make<int>(42);
    check(*number == 42, "make<int>(42) gives 42");
    check(chunk.stats().in_use_bytes == 16, "an int and its 8-byte header count 16 bytes");

    widget* w = chunk.make<widget>(7, "a name long enough to need the global heap");
    check(alive == 1 && w->id == 7, "make<widget> constructs");
    perfloc::destroy(w);
    check(alive == 0, "destroy runs the destructor");
    for (int i = 0; i < 100; ++i) chunk.make<widget>(i, "w");
    check(alive == 100, "a hundred widgets alive");
    check(chunk.stats().objects_made == 102, "objects_made counts every make");
    check(chunk.stats().objects_destroyed == 1, "objects_destroyed counts destroy");

    // Raw memory with every alignment, written and read back.
    std::vector<std::pair<unsigned char*, std::size_t>> raws;
    for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2) {
      auto* p = static_cast<unsigned char*>(chunk.allocate(100 + alignment, alignment));
      check(reinterpret_cast<std::uintptr_t>(p) % alignment == 0, "allocate keeps the alignment");
      std::memset(p, static_cast<int>(alignment % 251), 100 + alignment);
      raws.emplace_back(p, alignment);
    }
    for (auto& [p, alignment] : raws)
      for (std::size_t i = 0; i < 100 + alignment; ++i)
        if (p[i] != static_cast<unsigned char>(alignment % 251)) {
          check(false, "allocated memory keeps what was written");
          break;
        }
    const std::size_t in_use = chunk.stats().in_use_bytes;
    chunk.deallocate(raws.back().first, 100 + 4096, 4096);
    check(chunk.stats().in_use_bytes == in_use - footprint(100 + 4096), "deallocate gives the bytes back");

    bool threw = false;
    try {
      chunk.allocate(16, 3);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    check(threw, "an alignment that is not a power of two throws std::invalid_argument");

    // Moves: the moved-from handle owns nothing, the objects stay.
    perfloc::process_chunk moved = std::move(chunk);
    check(!chunk && static_cast<bool>(moved), "a moved-from chunk owns nothing");
    check(*number == 42, "objects survive a move of the handle");
  }
  check(alive == 0, "releasing the chunk destroys what was made in it");
  const perfloc::top_stats after = perfloc::default_top().stats();
  check(after.live_chunks == before.live_chunks, "the released chunk is gone from default_top()");
  check(after.in_use_bytes == before.in_use_bytes, "its bytes are back");
}

void containers() {
  perfloc::process_chunk chunk;
  {
    std::vector<int, perfloc::allocator<int>> numbers{perfloc::allocator<int>{chunk}};
    for (int i = 0; i < 10000; ++i) numbers.push_back(i * 3);
    bool intact = true;
    for (int i = 0; i < 10000; ++i) intact &= numbers[static_cast<std::size_t>(i)] == i * 3;
    check(intact, "std::vector with perfloc::allocator keeps its elements");
    check(chunk.stats().in_use_bytes == footprint(numbers.capacity() * sizeof(int)),
          "only the live buffer of the std::vector is in use");

    std::pmr::vector<std::pmr::string> lines{chunk.resource()};
    for (int i = 0; i < 100; ++i) lines.emplace_back("line number " + std::to_string(i) + " with some length to it");
    check(lines[99] == "line number 99 with some length to it", "std::pmr containers work in the chunk");
    check(lines[5].get_allocator().resource() == chunk.resource(), "the strings use the chunk too");

    perfloc::vector<widget> refs{chunk};
    for (int i = 0; i < 50; ++i) refs.emplace_back(i, "ref");
    widget outside{1000, "outside"};
    refs.push_back(outside);
    check(refs.size() == 51 && &refs[50] == &outside, "perfloc::vector stores references");
    refs.erase(refs.begin() + 10);
    std::vector<int> expected;  // ids 0..9, 11..49, then the one outside
    for (int i = 0; i < 50; ++i)
      if (i != 10) expected.push_back(i);
    expected.push_back(1000);
    std::vector<int> ids;
    for (const widget& w2 : refs) ids.push_back(w2.id);
    check(ids == expected, "perfloc::vector::erase shifts every later reference");
    check(alive == 51, "perfloc::vector made its elements in the chunk (plus the one outside)");
  }
  chunk.release();
  check(alive == 0, "the elements died with the chunk");
}

void private_top_and_hook() {
  std::size_t released = 0, request_peak = 0;
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = std::size_t{64} << 20,
                                              .retain_bytes = 0,
                                              .on_release = [&](const perfloc::chunk_summary& s) {
                                                ++released;
                                                if (s.label == "request") request_peak = s.peak_in_use_bytes;
                                              }}};
  {
    perfloc::process_chunk a{top, "request"};
    perfloc::process_chunk b{top};
    a.allocate(100);
    b.allocate(1000);
    const perfloc::top_stats stats = top.stats();
    check(stats.live_chunks == 2, "a private top counts its chunks");
    check(stats.in_use_bytes == footprint(100) + footprint(1000), "a private top counts its bytes");
    check(stats.committed_bytes <= stats.reserved_bytes, "committed <= reserved");
    void* big = a.allocate(std::size_t{2} << 20);
    std::memset(big, 1, std::size_t{2} << 20);
    check(a.stats().held_bytes >= (std::size_t{2} << 20) + (std::size_t{64} << 10), "a large request is held");
    a.deallocate(big, std::size_t{2} << 20);
    std::size_t seen = 0;
    top.for_each_chunk([&](const perfloc::chunk_summary&) { ++seen; });
    check(seen == 2, "for_each_chunk walks the live chunks");
    check(perfloc::report(top).find("request") != std::string::npos, "the report names the labelled chunk");
  }
  check(released == 2, "the release hook ran once per chunk");
  check(request_peak == footprint(100) + (std::size_t{2} << 20), "the release hook reports the peak in use");
  check(top.stats().live_chunks == 0 && top.stats().in_use_bytes == 0, "everything is back in the private top");

  bool threw = false;
  try {
    perfloc::process_chunk c{top};
    c.allocate(std::size_t{1} << 40);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  check(threw, "more than the top can give throws std::bad_alloc");
}

/// README (perfloc.asio): the coroutine gets a chunk of its own, its frame and its operations' memory in it,
/// the result reaches the handler, and the chunk is released when the coroutine completes.
void coroutine_with_a_chunk() {
  const std::size_t live_before = perfloc::default_top().stats().live_chunks;
  asio::io_context io;
  bool delivered = false;
  int result = 0;
  perfloc::co_spawn(
      io,
      [&](perfloc::process_chunk& chunk) -> asio::awaitable<int> {
        int* twenty = chunk.make<int>(20);
        check(perfloc::default_top().stats().live_chunks == live_before + 1, "the coroutine has a chunk of its own");
        asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
        co_await timer.async_wait(perfloc::use_chunk);
        perfloc::process_chunk& same = co_await perfloc::this_coro::chunk();
        check(&same == &chunk, "this_coro::chunk() is the chunk the factory took");
        co_return *twenty + 22;
      },
      [&](std::exception_ptr error, int value) {
        delivered = !error;
        result = value;
      });
  io.run();
  check(delivered && result == 42, "perfloc::co_spawn delivers the coroutine's result");
  check(perfloc::default_top().stats().live_chunks == live_before, "the coroutine's chunk is released");
}

}  // namespace

int main() {
  chunks_and_objects();
  containers();
  private_top_and_hook();
  coroutine_with_a_chunk();
  if (failures) {
    std::printf("perfloc consumer: %d check(s) FAILED\n", failures);
    return 1;
  }
  std::puts("perfloc consumer: ok");
  return 0;
}
