// Chunks opened at exit: from a static destructor, an atexit handler, or a thread_local destructor that runs
// after perfloc's own per-thread teardown. One mode per process (the modes are CTest tests, perfloc.exit.*);
// the process exits 0 only if every chunk opened at exit worked: main returns 1, and the exit-time code ends
// the process with 0 once it has checked its chunks (or 2 when they failed).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <thread>

import perfloc;

namespace {

struct counted {
  static inline int alive = 0;
  std::string text{"a string long enough to live on the heap"};
  counted() { ++alive; }
  ~counted() { --alive; }
};

/// Opens, grows, fills and releases chunks of `top`; true when everything behaved.
bool use_chunks(perfloc::top_chunk& top) noexcept {
  try {
    for (int round = 0; round < 40; ++round) {  // more than a thread cache holds, so the top is asked too
      perfloc::process_chunk chunk{top, "at exit"};
      for (int i = 0; i < 100; ++i) chunk.make<counted>();
      auto* bytes = static_cast<unsigned char*>(chunk.allocate(300 * 1024));  // a block of its own
      std::memset(bytes, round, 300 * 1024);
      for (int i = 0; i < 10; ++i) chunk.allocate(20 * 1024);  // grows into more blocks
      perfloc::process_chunk moved = std::move(chunk);
      if (moved.stats().objects_made != 100) return false;
    }
    return counted::alive == 0 && top.stats().live_chunks == 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exit_time: %s\n", e.what());
    return false;
  }
}

[[noreturn]] void finish(bool worked, const char* where) {
  std::fprintf(stderr, "exit_time: chunks opened %s %s\n", where, worked ? "worked" : "FAILED");
  std::fflush(stderr);
  std::_Exit(worked ? 0 : 2);
}

perfloc::top_chunk* private_top = nullptr;

struct uses_default_top_at_exit {
  ~uses_default_top_at_exit() { finish(use_chunks(perfloc::default_top()), "in a static destructor"); }
};
struct uses_private_top_at_exit {
  ~uses_private_top_at_exit() { finish(use_chunks(*private_top), "from a live private top in a static destructor"); }
};
struct uses_default_top_late {  // a thread_local made before perfloc's own, so destroyed after it
  bool armed = false;
  bool* result = nullptr;
  ~uses_default_top_late() {
    if (!armed) return;
    const bool worked = use_chunks(perfloc::default_top());
    if (result) *result = worked;
    else finish(worked, "in a late thread_local destructor");
  }
};
thread_local uses_default_top_late late;

}  // namespace

int main(int argc, char** argv) {
  const std::string_view mode = argc > 1 ? argv[1] : "";
  if (mode == "static-destructor") {
    { perfloc::process_chunk warm_up; }  // perfloc's statics and thread_locals exist before ours
    static uses_default_top_at_exit user;
  } else if (mode == "private-top") {
    static perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 64 << 20}};
    private_top = &top;
    { perfloc::process_chunk warm_up{top}; }
    static uses_private_top_at_exit user;  // made after the top, so destroyed before it
  } else if (mode == "atexit") {
    { perfloc::process_chunk warm_up; }
    std::atexit([] { finish(use_chunks(perfloc::default_top()), "in an atexit handler"); });
  } else if (mode == "thread-local") {
    late.armed = true;  // made before perfloc's thread_locals on this thread
    { perfloc::process_chunk warm_up; }
  } else if (mode == "thread-local-of-a-thread") {
    bool worked = false;
    std::thread([&worked] {
      late.armed = true;
      late.result = &worked;
      perfloc::process_chunk warm_up;
    }).join();
    finish(worked, "in a late thread_local destructor of a thread");
  } else {
    std::fprintf(stderr, "usage: exit_time static-destructor|private-top|atexit|thread-local|thread-local-of-a-thread\n");
    return 3;
  }
  return 1;  // the exit-time code ends the process with its own status
}
