// bench/burst.hpp — burst and return: N scopes opened and held live at once, each with a little data in it,
// then all of them ended. Does the memory of the burst go back, or does its high-water mark stay resident?
// Not a Google Benchmark: one burst per process (the process's RSS is the measurement), run by
// `perfloc-bench-<exe> --perfloc_burst=<competitor> --perfloc_burst_n=N`; bench/run.py runs perfloc and plain
// malloc (glibc) a few times each, alternating, and reports medians.
//
// Each scope of the burst allocates the per-scope workload's first `burst_objects` sizes (16–256 B, the
// same for everyone) and writes every byte of them; the scopes are ended in the order they were opened
// (the malloc family frees each object). Reported, as one JSON line on stdout:
//
//   rss_before, rss_burst, rss_after          resident bytes (/proc/self/statm) before the burst, with all N
//                                             scopes live, after they all ended
//   vm_data_before, vm_data_burst             private writable address space (VmData: the commit charge
//                                             under vm.overcommit_memory=2)
//   committed_*, retain_bytes                 for competitors that say (perfloc: top_stats::committed_bytes,
//                                             top_options::retain_bytes of default_top())
//   burst_s, end_s                            CPU seconds to open and fill the N scopes, and to end them
//   peak_rss                                  VmHWM
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "grow.hpp"
#include "workload.hpp"

namespace perfloc_bench {

inline constexpr std::size_t burst_objects = 4;  // a small request's scope, as per_scope at K = 4

/// The bytes each scope of the burst asks for: sizes()[0..burst_objects).
inline std::size_t burst_bytes_per_scope() {
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < burst_objects; ++i) bytes += sizes()[i];
  return bytes;
}

template <class C>
int burst_run(std::string_view name, std::size_t n) {
  using scope_t = typename C::scope;
  const std::uint32_t* size = sizes().data();
  typename C::context context;
  // The handles and the malloc family's pointers are allocated (and written) before the first reading.
  std::unique_ptr<std::optional<scope_t>[]> scopes(new std::optional<scope_t>[n]);
  std::vector<void*> pointers(scope_t::frees_at_end ? 0 : n * burst_objects);
  const std::size_t rss_before = resident_bytes(), vm_data_before = committed_address_space();
  std::size_t committed_before = 0, committed_burst = 0, committed_after = 0;
  if constexpr (requires { C::committed_bytes(); }) committed_before = C::committed_bytes();

  const double cpu_start = cpu_seconds();
  for (std::size_t i = 0; i < n; ++i) {
    scopes[i].emplace(context);
    for (std::size_t j = 0; j < burst_objects; ++j) {
      void* p = scopes[i]->allocate(size[j]);
      std::memset(p, static_cast<int>(j + 1), size[j]);
      keep(p);
      if constexpr (!scope_t::frees_at_end) pointers[i * burst_objects + j] = p;
    }
  }
  clobber();
  const double cpu_burst = cpu_seconds();
  const std::size_t rss_burst = resident_bytes(), vm_data_burst = committed_address_space();
  if constexpr (requires { C::committed_bytes(); }) committed_burst = C::committed_bytes();

  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (!scope_t::frees_at_end) {
      for (std::size_t j = 0; j < burst_objects; ++j) scopes[i]->deallocate(pointers[i * burst_objects + j], size[j]);
    }
    scopes[i].reset();
  }
  clobber();
  const double cpu_end = cpu_seconds();
  const std::size_t rss_after = resident_bytes(), vm_data_after = committed_address_space();
  if constexpr (requires { C::committed_bytes(); }) committed_after = C::committed_bytes();
  if constexpr (requires { C::verify(); }) {
    if (const char* error = C::verify()) {
      std::fprintf(stderr, "burst %.*s: %s\n", static_cast<int>(name.size()), name.data(), error);
      return 1;
    }
  }

  std::printf(
      "{\"competitor\": \"%.*s\", \"n\": %zu, \"bytes_per_scope\": %zu, \"burst_s\": %.6f, \"end_s\": %.6f, "
      "\"rss_before\": %zu, \"rss_burst\": %zu, \"rss_after\": %zu, \"vm_data_before\": %zu, "
      "\"vm_data_burst\": %zu, \"vm_data_after\": %zu, \"peak_rss\": %zu",
      static_cast<int>(name.size()), name.data(), n, burst_bytes_per_scope(), cpu_burst - cpu_start,
      cpu_end - cpu_burst, rss_before, rss_burst, rss_after, vm_data_before, vm_data_burst, vm_data_after,
      peak_resident_bytes());
  if constexpr (requires { C::committed_bytes(); }) {
    std::printf(", \"committed_before\": %zu, \"committed_burst\": %zu, \"committed_after\": %zu", committed_before,
                committed_burst, committed_after);
  }
  if constexpr (requires { C::retain_bytes(); }) std::printf(", \"retain_bytes\": %zu", C::retain_bytes());
  std::printf("}\n");
  return 0;
}

}  // namespace perfloc_bench
