// tests/perfloc/memory_tools.cpp — what AddressSanitizer and Valgrind memcheck see of perfloc's memory.
//
//   memory_tools clean               uses everything correctly: must run clean under ASan and memcheck
//   memory_tools use-after-release   reads an object after its chunk was released: must be reported
//   memory_tools use-after-destroy   reads an object after perfloc::destroy: must be reported
//   memory_tools chunk-tail          reads past an allocation, into chunk memory never handed out: reported
//
// perfloc hands out memory from its own blocks, so the tools know which bytes are live only through the
// hooks in perfloc/detail/track.hpp. tests/CMakeLists.txt runs the misuse modes expecting the tool's report
// ("use-after-poison" from ASan in the asan preset, "Invalid read" from memcheck in debug builds).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory_resource>
#include <string_view>
#include <thread>
#include <vector>

import perfloc;

namespace {

struct record {
  std::uint64_t id;
  char name[24];
  std::vector<int>* log;
  record(std::uint64_t i, const char* n, std::vector<int>* l) : id(i), log(l) {
    std::strncpy(name, n, sizeof name - 1);
    name[sizeof name - 1] = '\0';
  }
  ~record() {
    if (log) log->push_back(static_cast<int>(id));
  }
};

int failures = 0;
void expect(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "memory_tools: FAILED: %s\n", what);
    ++failures;
  }
}

/// Reads through a volatile pointer so that the compiler keeps the read.
template <class T>
T read(const T* p) {
  return *static_cast<const volatile T*>(p);
}

int clean() {
  std::vector<int> log;
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 64 << 20, .retain_bytes = 1 << 20}};
  for (int round = 0; round < 3; ++round) {
    perfloc::process_chunk chunk{top, "clean"};
    // Bump allocations of every alignment, written and read back.
    struct raw {
      unsigned char* p;
      std::size_t bytes, alignment;
    };
    std::vector<raw> raws;
    for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2)
      for (std::size_t bytes : {0, 1, 15, 16, 17, 100, 1000, 5000}) {
        auto* p = static_cast<unsigned char*>(chunk.allocate(bytes, alignment));
        std::memset(p, static_cast<int>(bytes & 0xff), bytes);
        raws.push_back({p, bytes, alignment});
      }
    // Large allocations get blocks of their own; the chunk grows through more bump blocks.
    auto* big = static_cast<unsigned char*>(chunk.allocate(1 << 20));
    std::memset(big, 7, 1 << 20);
    for (int i = 0; i < 3000; ++i) std::memset(chunk.allocate(200), 1, 200);
    // Freed spans are reused; the latest allocation steps the bump back.
    for (std::size_t i = 0; i < raws.size(); i += 2) chunk.deallocate(raws[i].p, raws[i].bytes, raws[i].alignment);
    for (std::size_t i = 1; i < raws.size(); i += 2)
      for (std::size_t k = 0; k < raws[i].bytes; ++k)
        expect(read(raws[i].p + k) == (raws[i].bytes & 0xff), "a live allocation kept its contents");
    for (int i = 0; i < 200; ++i) std::memset(chunk.allocate(48), 2, 48);
    chunk.deallocate(big, 1 << 20);
    // Objects, early destroy, destructors at release.
    for (int i = 0; i < 100; ++i) {
      record* r = chunk.make<record>(static_cast<std::uint64_t>(i), "name", &log);
      if (i % 3 == 0) perfloc::destroy(r);
    }
    // The adapters.
    {
      std::vector<int, perfloc::allocator<int>> numbers{perfloc::allocator<int>{chunk}};
      std::pmr::vector<long> more{chunk.resource()};
      perfloc::vector<record> refs{chunk};
      for (int i = 0; i < 5000; ++i) {
        numbers.push_back(i);
        more.push_back(i);
        if (i % 100 == 0) refs.emplace_back(static_cast<std::uint64_t>(i), "ref", &log);
      }
      long sum = 0;
      for (int i : numbers) sum += i;
      for (long i : more) sum -= i;
      for (const record& r : refs) sum += static_cast<long>(r.id % 100);
      expect(sum == 0, "the containers kept their contents");
    }
    // The chunk moves, then is released on another thread.
    perfloc::process_chunk moved = std::move(chunk);
    int* value = moved.make<int>(42);
    std::thread([c = std::move(moved), value]() mutable {
      expect(read(value) == 42, "an object survived its chunk's move");
      c.release();
    }).join();
  }
  expect(log.size() == 3 * (100 + 50), "every destructor ran once");
  expect(top.stats().live_chunks == 0 && top.stats().in_use_bytes == 0, "everything went back to the top");
  {
    perfloc::process_chunk on_default;  // default_top() too
    std::memset(on_default.allocate(300), 3, 300);
  }
  if (failures) return 1;
  std::puts("memory_tools: clean run done");
  return 0;
}

int use_after_release() {
  perfloc::top_chunk top;
  int* value;
  {
    perfloc::process_chunk chunk{top};
    value = chunk.make<int>(42);
  }
  std::printf("memory_tools: read after release: %d\n", read(value));  // the tool must stop this
  return 0;
}

int use_after_destroy() {
  perfloc::process_chunk chunk;
  record* first = chunk.make<record>(1, "first", nullptr);
  std::vector<int> log;
  first->log = &log;
  chunk.make<int>(2);  // so the destroyed object is not the latest allocation
  perfloc::destroy(first);
  std::printf("memory_tools: read after destroy: %llu\n", static_cast<unsigned long long>(read(&first->id)));
  return 0;
}

int chunk_tail() {
  perfloc::process_chunk chunk;
  auto* p = static_cast<unsigned char*>(chunk.allocate(24));
  std::memset(p, 1, 24);
  std::printf("memory_tools: read past the allocation: %d\n", read(p + 40));  // never handed out
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode == "clean") return clean();
  if (mode == "use-after-release") return use_after_release();
  if (mode == "use-after-destroy") return use_after_destroy();
  if (mode == "chunk-tail") return chunk_tail();
  std::fprintf(stderr, "usage: memory_tools clean|use-after-release|use-after-destroy|chunk-tail\n");
  return 2;
}
