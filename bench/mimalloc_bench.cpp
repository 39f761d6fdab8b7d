// perfloc-bench-mimalloc: malloc/free and new/delete with mimalloc linked in (replacing malloc and
// operator new for the whole process), and a mimalloc first-class heap per scope (mi_heap_new,
// mi_heap_malloc, mi_heap_destroy). main() checks that the replacement is in effect.
#include <mimalloc.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

#include "harness.hpp"
#include "malloc_family.hpp"

namespace perfloc_bench {

struct mimalloc_heap {
  struct context {};

  class scope {
   public:
    static constexpr bool frees_at_end = true;  // mi_heap_destroy frees every block of the heap
    static constexpr bool runs_destructors = false;
    static constexpr bool frees_individually = true;
    static constexpr bool has_scope_object = true;

    explicit scope(context&) : heap_(mi_heap_new()) {
      if (heap_ == nullptr) std::abort();
    }
    ~scope() { mi_heap_destroy(heap_); }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

    void* allocate(std::size_t n) {
      void* p = mi_heap_malloc(heap_, n);
      if (p == nullptr) [[unlikely]]
        std::abort();
      return p;
    }
    void deallocate(void* p, std::size_t) noexcept { mi_free(p); }

    template <class T, class... A>
    T* make(A&&... args) {
      return ::new (allocate(sizeof(T))) T(std::forward<A>(args)...);
    }
    template <class T>
    void release(T* p) noexcept {
      p->~T();
      mi_free(p);
    }

   private:
    mi_heap_t* heap_;
  };
};

}  // namespace perfloc_bench

int main(int argc, char** argv) {
  return perfloc_bench::run_main(argc, argv, [] {
    void* volatile probe = std::malloc(100);
    const bool overridden = mi_is_in_heap_region(probe);
    std::free(probe);
    if (!overridden) {
      std::fprintf(stderr, "perfloc-bench-mimalloc: malloc is not mimalloc's; refusing to run\n");
      std::exit(1);
    }
    const int v = mi_version();
    benchmark::AddCustomContext("allocator", "mimalloc " + std::to_string(v / 100) + "." +
                                                 std::to_string(v / 10 % 10) + "." + std::to_string(v % 10));
    perfloc_bench::register_competitor<perfloc_bench::malloc_free>("mimalloc");
    perfloc_bench::register_competitor<perfloc_bench::mimalloc_heap>("mimalloc-heap");
  });
}
