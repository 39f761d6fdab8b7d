// bench/harness.hpp — wraps the workloads of workload.hpp in Google Benchmark, one registration call
// per competitor, so that each competitor executable is a policy plus one line of main.
//
// Benchmark names are `<workload>/<competitor>[/<K>]`; bench/run.py parses them. Each benchmark reports
// `ns_per_alloc` (or `ns_per_scope` for open_release), computed from CPU time, and `ops_per_iter`.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

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

/// Registers every workload that applies to competitor C under the name `name`.
template <class C>
void register_competitor(const std::string& name) {
  using scope_t = typename C::scope;
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
  }
}

/// The body of every competitor executable's main: `register_all` registers the competitors (and may
/// add context lines with benchmark::AddCustomContext, e.g. the allocator's version).
template <class Register>
int run_main(int argc, char** argv, Register register_all) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace perfloc_bench
