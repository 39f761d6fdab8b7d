// bench/harness.hpp — wraps the workloads of workload.hpp in Google Benchmark, one registration call
// per competitor, so that each competitor executable is a policy plus one line of main.
//
// Benchmark names are `<workload>/<competitor>[/<K>]`; bench/run.py parses them. Each benchmark reports
// `ns_per_alloc` (or `ns_per_scope` for open_release), computed from CPU time, and `ops_per_iter`.
// The threaded workloads (`threads_*/<competitor>/real_time/threads:<N>`) report `items_per_second`, the
// throughput of all threads together over wall-clock time.
//
// Besides Google Benchmark's own flags, every competitor executable has three modes of its own (run_main):
//
//   --perfloc_grow=<competitor> [--perfloc_grow_mib=N]   the 1 GiB growth workload (grow.hpp), one cycle
//   --perfloc_burst=<competitor> [--perfloc_burst_n=N]   N scopes live at once, then all ended (burst.hpp)
//   --perfloc_icount=<competitor> <workload> <K> <N>     a workload run bare, for Callgrind (icount.hpp)
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "burst.hpp"
#include "grow.hpp"
#include "icount.hpp"
#include "workload.hpp"

namespace perfloc_bench {

inline constexpr std::int64_t scope_sizes[] = {4, 64, 4096};
inline constexpr std::int64_t free_sizes[] = {64, 4096};

/// Competitors may define `static const char* verify()`, called after each benchmark: a non-null
/// message marks the benchmark as failed (perfloc checks that no chunk is left live).
template <class C>
void verify(benchmark::State& state) {
  if constexpr (requires { C::verify(); }) {
    if (const char* error = C::verify()) state.SkipWithError(error);
  }
}

/// Adds `ns_per_<unit>` (derived from CPU time, so time spent preempted on a shared machine is left
/// out) and `ops_per_iter` to the benchmark's counters.
inline void report_per_op(benchmark::State& state, double ops_per_iteration, const char* unit) {
  using benchmark::Counter;
  state.counters[std::string("ns_per_") + unit] =
      Counter(ops_per_iteration * 1e-9, Counter::kIsIterationInvariantRate | Counter::kInvert);
  state.counters["ops_per_iter"] = ops_per_iteration;
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * ops_per_iteration));
}

template <class C>
void bench_per_scope(benchmark::State& state) {
  const auto k = static_cast<std::size_t>(state.range(0));
  typename C::context context;
  std::vector<void*> pointers(max_objects);
  for (auto _ : state) per_scope<C>(context, k, pointers.data());
  verify<C>(state);
  report_per_op(state, static_cast<double>(k), "alloc");
}

template <class C>
void bench_destructors(benchmark::State& state) {
  const auto k = static_cast<std::size_t>(state.range(0));
  std::uint64_t sink = 0;  // outlives the context: some contexts release leftovers when destroyed
  typename C::context context;
  std::vector<void*> pointers(max_objects);
  for (auto _ : state) destructors<C>(context, k, pointers.data(), &sink);
  benchmark::DoNotOptimize(sink);
  if (sink != tracked_sum(k) * static_cast<std::uint64_t>(state.iterations())) {
    state.SkipWithError("not every destructor ran exactly once");
  }
  verify<C>(state);
  report_per_op(state, static_cast<double>(k), "alloc");
}

template <class C>
void bench_free_reuse(benchmark::State& state) {
  const auto k = static_cast<std::size_t>(state.range(0));
  typename C::context context;
  void* ring[free_window] = {};
  for (auto _ : state) free_reuse<C>(context, k, ring);
  verify<C>(state);
  report_per_op(state, static_cast<double>(k), "alloc");
}

template <class C>
void bench_open_release(benchmark::State& state) {
  typename C::context context;
  for (auto _ : state) open_release<C>(context);
  verify<C>(state);
  report_per_op(state, 1.0, "scope");
}

// ---------------------------------------------------------------------------------------------------
// Threads: each thread opens and releases scopes of its own (its own context, as a per-thread pool or
// allocator would be in a server), 1 thread against 2. Wall-clock time (UseRealTime): the point is the
// throughput of both threads together, which CPU time would hide. No verify(): it reads process-wide
// state while the other thread may still be in its loop; the single-threaded runs check it.
// ---------------------------------------------------------------------------------------------------

inline constexpr int thread_counts[] = {1, 2};

template <class C>
void bench_threads_open_release(benchmark::State& state) {
  typename C::context context;
  for (auto _ : state) open_release<C>(context);
  state.SetItemsProcessed(state.iterations());
}

/// The per-scope workload at K = 4 (a small request's scope), each thread in its own scopes.
template <class C>
void bench_threads_per_scope(benchmark::State& state) {
  constexpr std::size_t k = 4;
  typename C::context context;
  std::vector<void*> pointers(max_objects);
  for (auto _ : state) per_scope<C>(context, k, pointers.data());
  state.SetItemsProcessed(state.iterations());  // scopes
}

// ---------------------------------------------------------------------------------------------------
// The modes that are not Google Benchmarks (grow, burst, icount): each registered competitor's entry points.
// ---------------------------------------------------------------------------------------------------

struct mode_entry {
  std::string name;
  int (*grow)(std::string_view name, std::size_t target);
  int (*burst)(std::string_view name, std::size_t n);
  int (*icount)(std::string_view workload, std::size_t k, std::size_t total);
};

inline std::vector<mode_entry>& mode_registry() {
  static std::vector<mode_entry> entries;
  return entries;
}

/// Registers every workload that applies to competitor C under the name `name`.
template <class C>
void register_competitor(const std::string& name) {
  using scope_t = typename C::scope;
  mode_registry().push_back({name, grow_run<C>, burst_run<C>, icount_run<C>});
  auto* b = benchmark::RegisterBenchmark(("per_scope/" + name).c_str(), bench_per_scope<C>);
  for (auto k : scope_sizes) b->Arg(k);
  b = benchmark::RegisterBenchmark(("destructors/" + name).c_str(), bench_destructors<C>);
  for (auto k : scope_sizes) b->Arg(k);
  if constexpr (scope_t::frees_individually) {
    b = benchmark::RegisterBenchmark(("free_reuse/" + name).c_str(), bench_free_reuse<C>);
    for (auto k : free_sizes) b->Arg(k);
  }
  if constexpr (scope_t::has_scope_object) {
    benchmark::RegisterBenchmark(("open_release/" + name).c_str(), bench_open_release<C>);
    b = benchmark::RegisterBenchmark(("threads_open_release/" + name).c_str(), bench_threads_open_release<C>);
    for (int n : thread_counts) b->Threads(n);
    b->UseRealTime();
  }
  b = benchmark::RegisterBenchmark(("threads_per_scope/" + name).c_str(), bench_threads_per_scope<C>);
  for (int n : thread_counts) b->Threads(n);
  b->UseRealTime();
}

/// The grow, burst and icount modes; -1 when argv asks for none (then Google Benchmark runs).
inline int run_mode(int argc, char** argv) {
  const auto find = [](std::string_view competitor) -> const mode_entry* {
    for (const mode_entry& entry : mode_registry()) {
      if (entry.name == competitor) return &entry;
    }
    std::fprintf(stderr, "no competitor '%.*s' here; this executable has:", static_cast<int>(competitor.size()),
                 competitor.data());
    for (const mode_entry& entry : mode_registry()) std::fprintf(stderr, " %s", entry.name.c_str());
    std::fprintf(stderr, "\n");
    return nullptr;
  };
  constexpr std::string_view grow_flag = "--perfloc_grow=", mib_flag = "--perfloc_grow_mib=",
                             icount_flag = "--perfloc_icount=", burst_flag = "--perfloc_burst=",
                             burst_n_flag = "--perfloc_burst_n=";
  const char* grow = nullptr;
  const char* burst = nullptr;
  std::size_t mib = 1024, burst_n = 100'000;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with(grow_flag)) grow = argv[i] + grow_flag.size();
    if (arg.starts_with(mib_flag)) mib = std::strtoull(argv[i] + mib_flag.size(), nullptr, 10);
    if (arg.starts_with(burst_flag)) burst = argv[i] + burst_flag.size();
    if (arg.starts_with(burst_n_flag)) burst_n = std::strtoull(argv[i] + burst_n_flag.size(), nullptr, 10);
    if (arg.starts_with(icount_flag)) {
      if (argc != i + 4) {
        std::fprintf(stderr, "usage: %s --perfloc_icount=<competitor> <workload> <K> <total>\n", argv[0]);
        return 2;
      }
      const mode_entry* entry = find(arg.substr(icount_flag.size()));
      return entry ? entry->icount(argv[i + 1], std::strtoull(argv[i + 2], nullptr, 10),
                                   std::strtoull(argv[i + 3], nullptr, 10))
                   : 2;
    }
  }
  if (grow) {
    const mode_entry* entry = find(grow);
    return entry ? entry->grow(entry->name, mib << 20) : 2;
  }
  if (burst) {
    const mode_entry* entry = find(burst);
    return entry ? entry->burst(entry->name, burst_n) : 2;
  }
  return -1;
}

/// The body of every competitor executable's main: `register_all` registers the competitors (and may
/// add context lines with benchmark::AddCustomContext, e.g. the allocator's version).
template <class Register>
int run_main(int argc, char** argv, Register register_all) {
  register_all();
  if (const int status = run_mode(argc, argv); status >= 0) return status;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace perfloc_bench
