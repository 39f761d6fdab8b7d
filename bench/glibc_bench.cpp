// perfloc-bench-glibc: glibc malloc/free and new/delete.
#include <gnu/libc-version.h>

#include "harness.hpp"
#include "malloc_family.hpp"

int main(int argc, char** argv) {
  return perfloc_bench::run_main(argc, argv, [] {
    benchmark::AddCustomContext("allocator", std::string("glibc ") + gnu_get_libc_version());
    perfloc_bench::register_competitor<perfloc_bench::malloc_free>("glibc");
  });
}
