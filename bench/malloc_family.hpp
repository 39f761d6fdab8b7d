// bench/malloc_family.hpp — the general-purpose allocators as a scope policy: malloc/free for raw
// allocations, new/delete for objects. The same policy is linked three times, against glibc, jemalloc
// and mimalloc (which replace malloc and operator new for the whole process, hence one executable each).
// There is no scope: every object is freed one by one when the workload's scope ends.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <utility>

namespace perfloc_bench {

struct malloc_free {
  struct context {};

  class scope {
   public:
    static constexpr bool frees_at_end = false;
    static constexpr bool runs_destructors = false;
    static constexpr bool frees_individually = true;
    static constexpr bool has_scope_object = false;

    explicit scope(context&) noexcept {}
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

    void* allocate(std::size_t n) {
      void* p = std::malloc(n);
      if (p == nullptr) [[unlikely]]
        std::abort();
      return p;
    }
    void deallocate(void* p, std::size_t) noexcept { std::free(p); }

    template <class T, class... A>
    T* make(A&&... args) {
      return new T(std::forward<A>(args)...);
    }
    template <class T>
    void release(T* p) noexcept {
      delete p;
    }
  };
};

}  // namespace perfloc_bench
