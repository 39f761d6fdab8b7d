// perfloc-bench-icount-anchors: instruction counts of the anchors that are cheap to count (no
// malloc replacement involved): the bump-pointer limit and the pmr monotonic resources.
#include "bump.hpp"
#include "icount.hpp"
#include "pmr.hpp"

int main(int argc, char** argv) {
  using namespace perfloc_bench;
  static constexpr icount_entry entries[] = {
      {"bump", icount_run<bump>},
      {"pmr-reused", icount_run<pmr_reused>},
      {"pmr-new", icount_run<pmr_new>},
  };
  return icount_main(argc, argv, entries, std::size(entries));
}
