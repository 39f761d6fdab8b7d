// perfloc-bench-bump: the bump-pointer limit, and the same with its cursor in memory (see bump.hpp).
#include "bump.hpp"
#include "harness.hpp"

int main(int argc, char** argv) {
  return perfloc_bench::run_main(argc, argv, [] {
    perfloc_bench::register_competitor<perfloc_bench::bump>("bump");
    perfloc_bench::register_competitor<perfloc_bench::bump_in_memory>("bump-in-memory");
  });
}
