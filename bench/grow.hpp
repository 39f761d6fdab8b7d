// bench/grow.hpp — a long-lived scope growing to 1 GiB and released: the growth, commit and decommit
// workload. Not a Google Benchmark: one cycle per process (the process's RSS is the measurement, so every
// repetition is a fresh process), run by `perfloc-bench-<exe> --perfloc_grow=<competitor>`; bench/run.py
// runs it a few times per competitor, alternating, and reports medians.
//
// The cycle: open one scope; allocate objects of 64 KiB..1 MiB (a fixed pseudo-random sequence, the same
// for everyone) until `target` bytes have been requested, writing one byte in every 4 KiB page of each
// object (so every page is faulted in, as a real user's data would be); then end the scope (the malloc
// family frees every object, in allocation order). Reported, as one JSON line on stdout:
//
//   grow_s        CPU seconds (user + system, the page faults included) from the scope's opening to the
//                 last page touched; grow_wall_s the same in wall-clock time
//   release_s     CPU seconds to end the scope (its destructor, or the frees); release_wall_s
//   rss_*         resident set (/proc/self/statm) before the scope, when grown, after release
//   peak_rss      the process's high-water mark (VmHWM of /proc/self/status)
//   committed_*   for competitors that say (perfloc: top_stats::committed_bytes)
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include <time.h>
#include <unistd.h>

#include "workload.hpp"

namespace perfloc_bench {

inline constexpr std::size_t grow_min_size = std::size_t{64} << 10;
inline constexpr std::size_t grow_max_size = std::size_t{1} << 20;
inline constexpr std::size_t grow_page = 4096;

/// Object i of the grow workload: a size in [64 KiB, 1 MiB], a multiple of 16 (splitmix64, fixed seed).
inline std::size_t grow_size(std::uint64_t i) {
  std::uint64_t z = 0x4752'4f57'3147'4942ull + (i + 1) * 0x9e37'79b9'7f4a'7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58'476d'1ce4'e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d0'49bb'1331'11ebull;
  z ^= z >> 31;
  return (grow_min_size + z % (grow_max_size - grow_min_size + 1)) & ~std::size_t{15};
}

/// Resident bytes now (/proc/self/statm, second field, in pages).
inline std::size_t resident_bytes() {
  std::FILE* file = std::fopen("/proc/self/statm", "r");
  if (!file) return 0;
  unsigned long size = 0, resident = 0;
  const int read = std::fscanf(file, "%lu %lu", &size, &resident);
  std::fclose(file);
  return read == 2 ? resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

/// A field of /proc/self/status given in kB ("VmHWM:", "VmData:"), in bytes; 0 if absent.
inline std::size_t status_bytes(const char* field) {
  std::FILE* file = std::fopen("/proc/self/status", "r");
  if (!file) return 0;
  char line[256];
  const std::size_t length = std::strlen(field);
  std::size_t kib = 0;
  while (std::fgets(line, sizeof line, file)) {
    if (std::strncmp(line, field, length) == 0) {
      kib = std::strtoull(line + length, nullptr, 10);
      break;
    }
  }
  std::fclose(file);
  return kib << 10;
}

/// The process's peak resident bytes (VmHWM).
inline std::size_t peak_resident_bytes() { return status_bytes("VmHWM:"); }

/// The process's private writable address space (VmData): what the kernel charges as commit when
/// vm.overcommit_memory=2 (MAP_NORESERVE is ignored then), whether or not the pages were touched.
inline std::size_t committed_address_space() { return status_bytes("VmData:"); }

/// CPU time of the process, user and system: page faults and madvise are system time.
inline double cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

template <class C>
int grow_run(std::string_view name, std::size_t target) {
  using clock = std::chrono::steady_clock;
  using scope_t = typename C::scope;
  typename C::context context;
  std::vector<void*> pointers;  // only for competitors that free one by one
  pointers.reserve(target / grow_min_size + 1);
  std::optional<scope_t> scope;
  const std::size_t rss_before = resident_bytes();
  std::size_t committed_before = 0, committed_grown = 0, committed_after = 0;
  if constexpr (requires { C::committed_bytes(); }) committed_before = C::committed_bytes();

  const double cpu_start = cpu_seconds();
  const auto start = clock::now();
  scope.emplace(context);
  std::size_t requested = 0, count = 0;
  while (requested < target) {
    const std::size_t n = grow_size(count);
    auto* p = static_cast<unsigned char*>(scope->allocate(n));
    for (std::size_t offset = 0; offset < n; offset += grow_page) p[offset] = static_cast<unsigned char>(offset);
    p[n - 1] = 1;
    keep(p);
    if constexpr (!scope_t::frees_at_end) pointers.push_back(p);
    requested += n;
    ++count;
  }
  clobber();
  const auto grown = clock::now();
  const double cpu_grown = cpu_seconds();
  const std::size_t rss_grown = resident_bytes();
  if constexpr (requires { C::committed_bytes(); }) committed_grown = C::committed_bytes();

  const double cpu_release_start = cpu_seconds();
  const auto release_start = clock::now();
  if constexpr (!scope_t::frees_at_end) {
    for (std::size_t i = 0; i < pointers.size(); ++i) scope->deallocate(pointers[i], grow_size(i));
  }
  scope.reset();
  clobber();
  const auto released = clock::now();
  const double cpu_released = cpu_seconds();
  const std::size_t rss_after = resident_bytes();
  if constexpr (requires { C::committed_bytes(); }) committed_after = C::committed_bytes();
  const std::size_t peak = peak_resident_bytes();

  const auto seconds = [](auto d) { return std::chrono::duration<double>(d).count(); };
  std::printf(
      "{\"competitor\": \"%.*s\", \"target_bytes\": %zu, \"requested_bytes\": %zu, \"allocations\": %zu, "
      "\"grow_s\": %.6f, \"release_s\": %.6f, \"grow_wall_s\": %.6f, \"release_wall_s\": %.6f, "
      "\"rss_before\": %zu, \"rss_grown\": %zu, \"rss_after\": %zu, "
      "\"peak_rss\": %zu",
      static_cast<int>(name.size()), name.data(), target, requested, count, cpu_grown - cpu_start,
      cpu_released - cpu_release_start, seconds(grown - start), seconds(released - release_start), rss_before, rss_grown, rss_after, peak);
  if constexpr (requires { C::committed_bytes(); }) {
    std::printf(", \"committed_before\": %zu, \"committed_grown\": %zu, \"committed_after\": %zu", committed_before,
                committed_grown, committed_after);
  }
  std::printf("}\n");
  return 0;
}

}  // namespace perfloc_bench
