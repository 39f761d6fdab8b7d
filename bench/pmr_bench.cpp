// perfloc-bench-pmr: std::pmr monotonic_buffer_resource (new per scope; one buffer reused with
// release()) and unsynchronized_pool_resource, over glibc malloc.
#include "harness.hpp"
#include "pmr.hpp"

int main(int argc, char** argv) {
  return perfloc_bench::run_main(argc, argv, [] {
    perfloc_bench::register_competitor<perfloc_bench::pmr_new>("pmr-new");
    perfloc_bench::register_competitor<perfloc_bench::pmr_reused>("pmr-reused");
    perfloc_bench::register_competitor<perfloc_bench::pmr_pool>("pmr-pool");
  });
}
