// perfloc-bench-asio: spawned coroutines and coroutine frames, plain Asio against perfloc.asio, against
// the pinned API of DESIGN.md:
//
//   perfloc::co_spawn(executor, factory, token)            a coroutine with a process chunk of its own
//   co_await perfloc::this_coro::chunk()                   its chunk, from inside
//   factory(perfloc::process_chunk&)                       or as the factory's parameter
//   asio::awaitable<T> f(perfloc::process_chunk&, ...)     a coroutine whose frame lives in the chunk
//
// Benchmarks (names `<workload>/<competitor>`, as the other executables; bench/run.py parses them):
//
//   co_spawn_empty/{asio,perfloc,perfloc-param}   spawn a coroutine that does nothing and run it to the end
//   co_spawn_8/{asio,perfloc,perfloc-param}       the same, the coroutine making 8 allocations of 16–256 B
//                                                 (the per-scope workload's first 8 sizes), each touched:
//                                                 asio: global operator new / delete;
//                                                 perfloc: chunk.allocate from `co_await this_coro::chunk()`;
//                                                 perfloc-param: the factory takes the chunk and the coroutine
//                                                 has it as first parameter, so its frame is in the chunk too
//   frame/{asio,perfloc}                          one coroutine co_awaits a child coroutine again and again:
//                                                 asio: `awaitable<int> step(int)`, its frame from Asio's
//                                                 per-thread recycling cache; perfloc: `awaitable<int>
//                                                 step(process_chunk&, int)`, its frame in the chunk (given
//                                                 back to the chunk and reused, call after call)
//   heap_calls/{asio,perfloc}                     2 000 coroutines alive at once, each waiting on a timer
//                                                 (asio: use_awaitable; perfloc: use_chunk, the factory taking
//                                                 the chunk): besides the time per coroutine, the counter
//                                                 heap_calls_per_coroutine counts every call of the malloc
//                                                 family (operator new and Asio's aligned_alloc end there)
//   this_coro_chunk/perfloc                       `co_await perfloc::this_coro::chunk()` in a loop;
//   this_coro_chunk/asio                          `co_await asio::this_coro::executor`, for scale
//   post_op/{asio,perfloc}                        one perfloc coroutine awaits `asio::post(token)` again and
//                                                 again: asio::use_awaitable against perfloc::use_chunk
//
// Spawns come in batches of 16 per io_context::run(), so run() and restart() are amortized alike for
// everyone; the figure is CPU nanoseconds per coroutine (per child call for `frame`). Every completion
// token is asio::detached. One thread, one io_context.
//
// Besides the benchmarks, `--perfloc_idle=<asio|perfloc|perfloc-param> --perfloc_idle_n=N` runs the idle
// coroutines workload once (idle.hpp): N coroutines suspended at once, then the io_context destroyed.
//
// Built only when the `perfloc` target exists and modules/perfloc/asio.cppm does (bench/CMakeLists.txt), on
// the Asio perfloc is built on (which_asio.hpp: Boost.Asio, or standalone Asio with PERFLOC_STANDALONE_ASIO).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <new>
#include <string>

#include "harness.hpp"
#include "heap_calls.hpp"
#include "which_asio.hpp"
#include "idle.hpp"  // imports perfloc: last

import perfloc;

namespace perfloc_bench {
namespace {

constexpr int spawn_batch = 16;
constexpr std::size_t coroutine_allocations = 8;

// ---- the coroutines --------------------------------------------------------------------------------

asio::awaitable<void> empty() { co_return; }

asio::awaitable<void> empty_in(perfloc::process_chunk&) { co_return; }

asio::awaitable<void> eight_new(std::uint64_t* sink) {
  const std::uint32_t* size = sizes().data();
  void* objects[coroutine_allocations];
  for (std::size_t i = 0; i < coroutine_allocations; ++i) {
    void* p = ::operator new(size[i]);
    touch(p, i);
    keep(p);
    objects[i] = p;
  }
  for (std::size_t i = 0; i < coroutine_allocations; ++i) {
    *sink += *static_cast<std::uint64_t*>(objects[i]);
    ::operator delete(objects[i], size[i]);
  }
  co_return;
}

void eight_from(perfloc::process_chunk& chunk, std::uint64_t* sink) {
  const std::uint32_t* size = sizes().data();
  for (std::size_t i = 0; i < coroutine_allocations; ++i) {
    void* p = chunk.allocate(size[i]);
    touch(p, i);
    keep(p);
    *sink += *static_cast<std::uint64_t*>(p);
  }  // the memory goes with the chunk, when the coroutine completes
}

asio::awaitable<void> eight_chunk(std::uint64_t* sink) {
  perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
  eight_from(chunk, sink);
}

asio::awaitable<void> eight_param(perfloc::process_chunk& chunk, std::uint64_t* sink) {
  eight_from(chunk, sink);
  co_return;
}

asio::awaitable<int> step(int x) { co_return x + 1; }

asio::awaitable<int> step_in(perfloc::process_chunk&, int x) { co_return x + 1; }

asio::awaitable<void> frame_loop(benchmark::State* state) {
  int x = 0;
  for (auto _ : *state) {
    x = co_await step(x);
    keep(x);
  }
}

asio::awaitable<void> frame_loop_in(perfloc::process_chunk& chunk, benchmark::State* state) {
  int x = 0;
  for (auto _ : *state) {
    x = co_await step_in(chunk, x);
    keep(x);
  }
}

asio::awaitable<void> chunk_loop(benchmark::State* state) {
  for (auto _ : *state) {
    perfloc::process_chunk& chunk = co_await perfloc::this_coro::chunk();
    perfloc::process_chunk* address = &chunk;
    keep(address);
  }
}

asio::awaitable<void> executor_loop(benchmark::State* state) {
  for (auto _ : *state) {
    auto ex = co_await asio::this_coro::executor;
    keep(ex);
  }
}

template <class Token>
asio::awaitable<void> post_loop(benchmark::State* state, Token token) {
  for (auto _ : *state) co_await asio::post(token);
}

// ---- the benchmarks --------------------------------------------------------------------------------

void check_no_live_chunk(benchmark::State& state) {
  if (perfloc::default_top().stats().live_chunks != 0) state.SkipWithError("a process chunk is still live");
}

/// Spawns batches of `spawn_batch` coroutines with `spawn(ctx)` and runs each batch to completion.
template <class Spawn>
void spawn_batches(benchmark::State& state, Spawn spawn) {
  asio::io_context ctx(1);
  (void)perfloc::default_top();
  {  // warm both allocators' per-thread caches before timing
    for (int i = 0; i < spawn_batch; ++i) spawn(ctx);
    ctx.run();
    ctx.restart();
  }
  for (auto _ : state) {
    for (int i = 0; i < spawn_batch; ++i) spawn(ctx);
    ctx.run();
    ctx.restart();
  }
  check_no_live_chunk(state);
  report_per_op(state, spawn_batch, "coroutine");
}

constexpr std::uint64_t eight_sum = coroutine_allocations * (coroutine_allocations - 1) / 2;

void check_sink(benchmark::State& state, std::uint64_t sink) {
  // The warm-up batch adds one batch more than the timed iterations.
  const auto coroutines = (static_cast<std::uint64_t>(state.iterations()) + 1) * spawn_batch;
  if (sink != eight_sum * coroutines) state.SkipWithError("not every coroutine ran");
}

constexpr int alive_at_once = 2000;

/// Rounds of `alive_at_once` spawns, all spawned before run(): every coroutine is alive at once, waiting on
/// its timer. Reports the time and the heap calls per coroutine.
template <class Spawn>
void alive_rounds(benchmark::State& state, Spawn spawn) {
  asio::io_context ctx(1);
  (void)perfloc::default_top();
  for (int warm = 0; warm < 2; ++warm) {
    for (int i = 0; i < alive_at_once; ++i) spawn(ctx);
    ctx.run();
    ctx.restart();
  }
  const long before = perfloc_heap_calls::count.load();
  for (auto _ : state) {
    for (int i = 0; i < alive_at_once; ++i) spawn(ctx);
    ctx.run();
    ctx.restart();
  }
  check_no_live_chunk(state);
  report_per_op(state, alive_at_once, "coroutine");
  state.counters["heap_calls_per_coroutine"] =
      static_cast<double>(perfloc_heap_calls::count.load() - before) / (static_cast<double>(state.iterations()) * alive_at_once);
}

asio::awaitable<void> wait_once() {
  asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::min());
  co_await timer.async_wait(asio::use_awaitable);
}

asio::awaitable<void> wait_once_in(perfloc::process_chunk&) {
  asio::steady_timer timer(co_await asio::this_coro::executor, asio::steady_timer::time_point::min());
  co_await timer.async_wait(perfloc::use_chunk);
}

void register_all() {
  benchmark::AddCustomContext("asio", asio_version());
  benchmark::RegisterBenchmark("co_spawn_empty/asio", [](benchmark::State& state) {
    spawn_batches(state, [](asio::io_context& ctx) { asio::co_spawn(ctx, [] { return empty(); }, asio::detached); });
  });
  benchmark::RegisterBenchmark("co_spawn_empty/perfloc", [](benchmark::State& state) {
    spawn_batches(state, [](asio::io_context& ctx) { perfloc::co_spawn(ctx, [] { return empty(); }, asio::detached); });
  });
  benchmark::RegisterBenchmark("co_spawn_empty/perfloc-param", [](benchmark::State& state) {
    spawn_batches(state, [](asio::io_context& ctx) {
      perfloc::co_spawn(ctx, [](perfloc::process_chunk& chunk) { return empty_in(chunk); }, asio::detached);
    });
  });

  benchmark::RegisterBenchmark("co_spawn_8/asio", [](benchmark::State& state) {
    std::uint64_t sink = 0;
    spawn_batches(state, [&sink](asio::io_context& ctx) {
      asio::co_spawn(ctx, [&sink] { return eight_new(&sink); }, asio::detached);
    });
    check_sink(state, sink);
  });
  benchmark::RegisterBenchmark("co_spawn_8/perfloc", [](benchmark::State& state) {
    std::uint64_t sink = 0;
    spawn_batches(state, [&sink](asio::io_context& ctx) {
      perfloc::co_spawn(ctx, [&sink] { return eight_chunk(&sink); }, asio::detached);
    });
    check_sink(state, sink);
  });
  benchmark::RegisterBenchmark("co_spawn_8/perfloc-param", [](benchmark::State& state) {
    std::uint64_t sink = 0;
    spawn_batches(state, [&sink](asio::io_context& ctx) {
      perfloc::co_spawn(ctx, [&sink](perfloc::process_chunk& chunk) { return eight_param(chunk, &sink); },
                        asio::detached);
    });
    check_sink(state, sink);
  });

  benchmark::RegisterBenchmark("frame/asio", [](benchmark::State& state) {
    asio::io_context ctx(1);
    asio::co_spawn(ctx, [&state] { return frame_loop(&state); }, asio::detached);
    ctx.run();
    report_per_op(state, 1.0, "call");
  });
  benchmark::RegisterBenchmark("frame/perfloc", [](benchmark::State& state) {
    asio::io_context ctx(1);
    perfloc::co_spawn(ctx, [&state](perfloc::process_chunk& chunk) { return frame_loop_in(chunk, &state); },
                      asio::detached);
    ctx.run();
    check_no_live_chunk(state);
    report_per_op(state, 1.0, "call");
  });

  benchmark::RegisterBenchmark("heap_calls/asio", [](benchmark::State& state) {
    alive_rounds(state, [](asio::io_context& ctx) { asio::co_spawn(ctx, [] { return wait_once(); }, asio::detached); });
  });
  benchmark::RegisterBenchmark("heap_calls/perfloc", [](benchmark::State& state) {
    alive_rounds(state, [](asio::io_context& ctx) {
      perfloc::co_spawn(ctx, [](perfloc::process_chunk& chunk) { return wait_once_in(chunk); }, asio::detached);
    });
  });

  benchmark::RegisterBenchmark("this_coro_chunk/asio", [](benchmark::State& state) {
    asio::io_context ctx(1);
    perfloc::co_spawn(ctx, [&state] { return executor_loop(&state); }, asio::detached);
    ctx.run();
    report_per_op(state, 1.0, "call");
  });
  benchmark::RegisterBenchmark("this_coro_chunk/perfloc", [](benchmark::State& state) {
    asio::io_context ctx(1);
    perfloc::co_spawn(ctx, [&state] { return chunk_loop(&state); }, asio::detached);
    ctx.run();
    check_no_live_chunk(state);
    report_per_op(state, 1.0, "call");
  });

  benchmark::RegisterBenchmark("post_op/asio", [](benchmark::State& state) {
    asio::io_context ctx(1);
    perfloc::co_spawn(ctx, [&state] { return post_loop(&state, asio::use_awaitable); }, asio::detached);
    ctx.run();
    report_per_op(state, 1.0, "op");
  });
  benchmark::RegisterBenchmark("post_op/perfloc", [](benchmark::State& state) {
    asio::io_context ctx(1);
    perfloc::co_spawn(ctx, [&state] { return post_loop(&state, perfloc::use_chunk); }, asio::detached);
    ctx.run();
    check_no_live_chunk(state);
    report_per_op(state, 1.0, "op");
  });
}

}  // namespace
}  // namespace perfloc_bench

int main(int argc, char** argv) {
  if (const int status = perfloc_bench::idle_mode(argc, argv); status >= 0) return status;
  return perfloc_bench::run_main(argc, argv, perfloc_bench::register_all);
}
