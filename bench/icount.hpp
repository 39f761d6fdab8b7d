// bench/icount.hpp — a bare driver for instruction counting under `valgrind --tool=callgrind`: no
// benchmark framework, just `scopes` scopes of one workload. bench/run.py --icount runs it twice, with
// N and 2N allocations, and divides the difference of the two instruction totals by N, which cancels
// process startup and the one-time setup.
//
//   perfloc-bench-icount[-anchors] <competitor> <workload> <K> <total allocations>
//   workload: per_scope | destructors | open_release (K must be 1: the total is a number of empty scopes)
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "workload.hpp"

namespace perfloc_bench {

template <class C>
int icount_run(std::string_view workload, std::size_t k, std::size_t total) {
  if (k == 0 || k > max_objects || total % k != 0) {
    std::fprintf(stderr, "K must be in [1, %zu] and divide the total\n", max_objects);
    return 2;
  }
  const std::size_t scopes = total / k;
  typename C::context context;
  std::vector<void*> pointers(max_objects);
  std::uint64_t sink = 0;
  if (workload == "per_scope") {
    for (std::size_t s = 0; s < scopes; ++s) per_scope<C>(context, k, pointers.data());
  } else if (workload == "destructors") {
    for (std::size_t s = 0; s < scopes; ++s) destructors<C>(context, k, pointers.data(), &sink);
    if (sink != tracked_sum(k) * scopes) {
      std::fprintf(stderr, "not every destructor ran exactly once\n");
      return 1;
    }
  } else if (workload == "open_release") {
    if constexpr (!C::scope::has_scope_object) {
      std::fprintf(stderr, "this competitor has no scope object: open_release does not apply\n");
      return 3;
    } else {
      for (std::size_t s = 0; s < scopes; ++s) open_release<C>(context);
    }
  } else {
    std::fprintf(stderr, "unknown workload %.*s\n", static_cast<int>(workload.size()), workload.data());
    return 2;
  }
  std::printf("%zu scopes x %zu allocations\n", scopes, k);
  return 0;
}

/// A competitor selectable by name on the command line.
struct icount_entry {
  const char* name;
  int (*run)(std::string_view workload, std::size_t k, std::size_t total);
};

inline int icount_main(int argc, char** argv, const icount_entry* entries, std::size_t count) {
  if (argc == 5) {
    for (std::size_t i = 0; i < count; ++i) {
      if (std::strcmp(argv[1], entries[i].name) == 0) {
        return entries[i].run(argv[2], std::strtoull(argv[3], nullptr, 10), std::strtoull(argv[4], nullptr, 10));
      }
    }
  }
  std::fprintf(stderr, "usage: %s <competitor> <per_scope|destructors|open_release> <K> <total allocations>\ncompetitors:",
               argv[0]);
  for (std::size_t i = 0; i < count; ++i) std::fprintf(stderr, " %s", entries[i].name);
  std::fprintf(stderr, "\n");
  return 2;
}

}  // namespace perfloc_bench
