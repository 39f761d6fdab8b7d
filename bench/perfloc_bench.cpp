// perfloc-bench-perfloc and perfloc-bench-icount: perfloc as a competitor, against the pinned public
// API (DESIGN.md): a scope is a `perfloc::process_chunk` from default_top(); raw allocations use
// chunk.allocate(n) (default alignment), objects chunk.make<T>(...), whose destructors run when the
// chunk is released; one object is ended early with perfloc::destroy(p).
//
// Built only when the `perfloc` target exists. Compiled twice: as a Google Benchmark executable, and
// with PERFLOC_BENCH_ICOUNT as the bare driver that run.py --icount counts under Callgrind.
#ifdef PERFLOC_BENCH_ICOUNT
#include "icount.hpp"
#else
#include "harness.hpp"
#endif

#include <cstddef>
#include <cstdint>
#include <utility>

import perfloc;

namespace perfloc_bench {

struct perfloc_chunks {
  struct context {
    context() {
      // Create the process-wide top chunk and warm the per-thread chunk cache before timing.
      (void)perfloc::default_top();
      perfloc::process_chunk warm;
      touch(warm.allocate(64), 0);
    }
  };

  class scope {
   public:
    static constexpr bool frees_at_end = true;
    static constexpr bool runs_destructors = true;
    static constexpr bool frees_individually = true;
    static constexpr bool has_scope_object = true;

    explicit scope(context&) {}
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

    void* allocate(std::size_t n) { return chunk_.allocate(n); }

    template <class T, class... A>
    T* make(A&&... args) {
      return chunk_.template make<T>(std::forward<A>(args)...);
    }
    template <class T>
    void release(T* p) {
      perfloc::destroy(p);
    }

   private:
    perfloc::process_chunk chunk_;
  };

  /// Memory the default top chunk has committed (grow.hpp reports it beside the RSS).
  static std::size_t committed_bytes() { return perfloc::default_top().stats().committed_bytes; }

  /// The default top's retain watermark (burst.hpp reports it: the target for what a burst leaves behind).
  static std::size_t retain_bytes() { return perfloc::default_top().options().retain_bytes; }

  /// Checked after each benchmark: every chunk a workload opened has been released.
  static const char* verify() {
    return perfloc::default_top().stats().live_chunks == 0 ? nullptr : "a process chunk is still live";
  }
};

}  // namespace perfloc_bench

#ifdef PERFLOC_BENCH_ICOUNT
int main(int argc, char** argv) {
  static constexpr perfloc_bench::icount_entry entries[] = {
      {"perfloc", perfloc_bench::icount_run<perfloc_bench::perfloc_chunks>},
  };
  return perfloc_bench::icount_main(argc, argv, entries, 1);
}
#else
int main(int argc, char** argv) {
  return perfloc_bench::run_main(argc, argv, [] {
    perfloc_bench::register_competitor<perfloc_bench::perfloc_chunks>("perfloc");
  });
}
#endif
