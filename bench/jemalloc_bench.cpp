// perfloc-bench-jemalloc: malloc/free and new/delete with jemalloc linked in, replacing malloc (and so
// libstdc++'s operator new) for the whole process. main() checks that the replacement is in effect.
#include <jemalloc/jemalloc.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "harness.hpp"
#include "malloc_family.hpp"

namespace {

// jemalloc's per-thread byte counter must grow when plain malloc is called; otherwise malloc is not
// jemalloc's and the numbers would be glibc's under a wrong name.
std::string check_jemalloc() {
  const char* version = nullptr;
  std::size_t size = sizeof version;
  if (mallctl("version", &version, &size, nullptr, 0) != 0) return {};
  std::uint64_t before = 0, after = 0;
  size = sizeof before;
  if (mallctl("thread.allocated", &before, &size, nullptr, 0) != 0) return {};
  void* volatile p = std::malloc(1000);
  mallctl("thread.allocated", &after, &size, nullptr, 0);
  std::free(p);
  return after >= before + 1000 ? std::string("jemalloc ") + version : std::string();
}

}  // namespace

int main(int argc, char** argv) {
  return perfloc_bench::run_main(argc, argv, [] {
    const std::string version = check_jemalloc();
    if (version.empty()) {
      std::fprintf(stderr, "perfloc-bench-jemalloc: malloc is not jemalloc's; refusing to run\n");
      std::exit(1);
    }
    benchmark::AddCustomContext("allocator", version);
    perfloc_bench::register_competitor<perfloc_bench::malloc_free>("jemalloc");
  });
}
