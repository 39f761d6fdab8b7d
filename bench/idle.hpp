// bench/idle.hpp — idle coroutines: what a server pays per connection that is waiting. N coroutines are
// spawned on one io_context and all suspended at once, each on a timer of its own (an hour away), each
// holding `idle_state_bytes` of state it wrote; then the io_context is destroyed with all of them still
// suspended, which destroys their frames (and, for perfloc, releases their chunks).
//
// Not a Google Benchmark: one io_context per process (the process's RSS is the measurement), run by
// `perfloc-bench-asio --perfloc_idle=<competitor> --perfloc_idle_n=N`; bench/run.py runs every competitor
// for N = 1 000, 10 000 and 100 000, alternating, and reports medians. The competitors:
//
//   asio            asio::co_spawn; the state from global operator new (deleted when the frame goes);
//                   co_await timer.async_wait(asio::use_awaitable)
//   perfloc         perfloc::co_spawn; the state from the chunk of co_await perfloc::this_coro::chunk();
//                   co_await timer.async_wait(perfloc::use_chunk) (the wait's memory from the chunk too)
//   perfloc-param   the same, the factory taking the process_chunk& and the coroutine having it as its
//                   first parameter, so that its frame is in the chunk as well
//
// Both sides warm up first (16 coroutines spawned and run to completion), so that per-thread caches and
// the top chunk exist before the first reading. Reported, as one JSON line on stdout:
//
//   rss_before, rss_idle, rss_after           resident bytes (/proc/self/statm): before the spawns, with all
//                                             N suspended, after the io_context was destroyed
//   vm_data_before, vm_data_idle, vm_data_after   private writable address space (VmData): the commit
//                                             charge under vm.overcommit_memory=2
//   committed_before, committed_idle, committed_after   default_top().stats().committed_bytes
//   retain_bytes                              default_top().options().retain_bytes
//   spawn_s, spawn_wall_s                     CPU (wall) seconds to spawn the N coroutines and run each to its
//                                             suspension (io_context::poll), page faults included
//   teardown_s                                CPU seconds to destroy the io_context
//   peak_rss                                  VmHWM
//
// It imports perfloc, so it is the includer's last #include (STYLE.md: every #include before any import).
#pragma once

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <string_view>

#include "grow.hpp"
#include "which_asio.hpp"
#include "workload.hpp"

import perfloc;

namespace perfloc_bench {

inline constexpr std::size_t idle_state_bytes = 256;
inline constexpr std::size_t idle_warm_up = 16;

struct idle_counts {
  std::size_t suspended = 0;  ///< coroutines that reached their wait
  std::size_t ended = 0;      ///< frames destroyed (completed, or destroyed with the io_context)
};

/// Counts the frame's destruction, whichever way it happens.
struct idle_guard {
  idle_counts* counts;
  ~idle_guard() { ++counts->ended; }
};

/// The plain Asio side's state: from global new, deleted with the frame.
struct idle_heap_state {
  void* p = ::operator new(idle_state_bytes);
  ~idle_heap_state() { ::operator delete(p, idle_state_bytes); }
};

inline void fill_state(void* p) {
  std::memset(p, 0x5a, idle_state_bytes);
  keep(p);
}

inline asio::awaitable<void> idle_plain(idle_counts* counts, std::chrono::hours wait) {
  idle_guard guard{counts};
  idle_heap_state state;
  fill_state(state.p);
  asio::steady_timer timer(co_await asio::this_coro::executor, wait);
  ++counts->suspended;
  co_await timer.async_wait(asio::use_awaitable);
}

inline asio::awaitable<void> idle_in_chunk(perfloc::process_chunk& chunk, idle_counts* counts,
                                                  std::chrono::hours wait) {
  idle_guard guard{counts};
  fill_state(chunk.allocate(idle_state_bytes));
  asio::steady_timer timer(co_await asio::this_coro::executor, wait);
  ++counts->suspended;
  co_await timer.async_wait(perfloc::use_chunk);
}

inline asio::awaitable<void> idle_chunk(idle_counts* counts, std::chrono::hours wait) {
  idle_guard guard{counts};
  perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
  fill_state(chunk.allocate(idle_state_bytes));
  asio::steady_timer timer(co_await asio::this_coro::executor, wait);
  ++counts->suspended;
  co_await timer.async_wait(perfloc::use_chunk);
}

/// Spawns one idle coroutine of `competitor` on ctx; false if there is no such competitor.
inline bool idle_spawn(std::string_view competitor, asio::io_context& ctx, idle_counts* counts,
                       std::chrono::hours wait) {
  if (competitor == "asio") {
    asio::co_spawn(ctx, [=] { return idle_plain(counts, wait); }, asio::detached);
  } else if (competitor == "perfloc") {
    perfloc::co_spawn(ctx, [=] { return idle_chunk(counts, wait); }, asio::detached);
  } else if (competitor == "perfloc-param") {
    perfloc::co_spawn(
        ctx, [=](perfloc::process_chunk& chunk) { return idle_in_chunk(chunk, counts, wait); }, asio::detached);
  } else {
    return false;
  }
  return true;
}

inline int idle_run(std::string_view competitor, std::size_t n) {
  idle_counts counts;
  perfloc::top_chunk& top = perfloc::default_top();
  std::optional<asio::io_context> ctx(std::in_place, 1);
  for (std::size_t i = 0; i < idle_warm_up; ++i) {  // a zero wait: they run to completion
    if (!idle_spawn(competitor, *ctx, &counts, std::chrono::hours(0))) {
      std::fprintf(stderr, "--perfloc_idle: no competitor '%.*s' (asio, perfloc, perfloc-param)\n",
                   static_cast<int>(competitor.size()), competitor.data());
      return 2;
    }
  }
  ctx->run();
  ctx->restart();
  if (counts.ended != idle_warm_up) {
    std::fprintf(stderr, "--perfloc_idle: the warm-up did not complete\n");
    return 1;
  }

  const std::size_t rss_before = resident_bytes(), vm_data_before = committed_address_space();
  const std::size_t committed_before = top.stats().committed_bytes;
  const double cpu_start = cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < n; ++i) idle_spawn(competitor, *ctx, &counts, std::chrono::hours(1));
  while (counts.suspended < idle_warm_up + n && ctx->poll() > 0) {
  }
  const double cpu_idle = cpu_seconds();
  const auto idle = std::chrono::steady_clock::now();
  const std::size_t rss_idle = resident_bytes(), vm_data_idle = committed_address_space();
  const perfloc::top_stats stats_idle = top.stats();
  if (counts.suspended != idle_warm_up + n || counts.ended != idle_warm_up) {
    std::fprintf(stderr, "--perfloc_idle: %zu of %zu coroutines suspended, %zu ended early\n",
                 counts.suspended - idle_warm_up, n, counts.ended - idle_warm_up);
    return 1;
  }

  ctx.reset();  // with all N suspended: their frames are destroyed, perfloc's chunks released
  const double cpu_after = cpu_seconds();
  const std::size_t rss_after = resident_bytes(), vm_data_after = committed_address_space();
  const perfloc::top_stats stats_after = top.stats();
  if (counts.ended != idle_warm_up + n || stats_after.live_chunks != 0) {
    std::fprintf(stderr, "--perfloc_idle: %zu of %zu frames destroyed, %llu chunks still live\n",
                 counts.ended - idle_warm_up, n, static_cast<unsigned long long>(stats_after.live_chunks));
    return 1;
  }

  std::printf(
      "{\"competitor\": \"%.*s\", \"n\": %zu, \"state_bytes\": %zu, \"spawn_s\": %.6f, \"spawn_wall_s\": %.6f, "
      "\"teardown_s\": %.6f, \"rss_before\": %zu, \"rss_idle\": %zu, \"rss_after\": %zu, \"vm_data_before\": %zu, "
      "\"vm_data_idle\": %zu, \"vm_data_after\": %zu, \"committed_before\": %zu, \"committed_idle\": %zu, "
      "\"committed_after\": %zu, \"in_use_idle\": %zu, \"live_chunks_idle\": %llu, \"retain_bytes\": %zu, \"peak_rss\": %zu}\n",
      static_cast<int>(competitor.size()), competitor.data(), n, idle_state_bytes, cpu_idle - cpu_start,
      std::chrono::duration<double>(idle - start).count(), cpu_after - cpu_idle, rss_before, rss_idle, rss_after,
      vm_data_before, vm_data_idle, vm_data_after, committed_before, stats_idle.committed_bytes,
      stats_after.committed_bytes, stats_idle.in_use_bytes, static_cast<unsigned long long>(stats_idle.live_chunks),
      top.options().retain_bytes, peak_resident_bytes());
  return 0;
}

/// The idle mode of perfloc-bench-asio; -1 when argv does not ask for it.
inline int idle_mode(int argc, char** argv) {
  constexpr std::string_view idle_flag = "--perfloc_idle=", n_flag = "--perfloc_idle_n=";
  const char* competitor = nullptr;
  std::size_t n = 100'000;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with(idle_flag)) competitor = argv[i] + idle_flag.size();
    if (arg.starts_with(n_flag)) n = std::strtoull(argv[i] + n_flag.size(), nullptr, 10);
  }
  return competitor ? idle_run(competitor, n) : -1;
}

}  // namespace perfloc_bench
