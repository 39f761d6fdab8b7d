// perfloc-bench-talloc: Samba's talloc, a hierarchical allocator over malloc. Each scope is a talloc
// context (talloc_new / talloc_free); objects with destructors get a talloc destructor; one object is
// freed with talloc_free.
#include <talloc.h>

#include <cstdlib>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "harness.hpp"

namespace perfloc_bench {

struct talloc_scopes {
  struct context {};

  class scope {
   public:
    static constexpr bool frees_at_end = true;
    static constexpr bool runs_destructors = true;  // through talloc destructors
    static constexpr bool frees_individually = true;
    static constexpr bool has_scope_object = true;

    explicit scope(context&) : memory_context_(talloc_new(nullptr)) {
      if (memory_context_ == nullptr) std::abort();
    }
    ~scope() { talloc_free(memory_context_); }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

    void* allocate(std::size_t n) {
      void* p = talloc_size(memory_context_, n);
      if (p == nullptr) [[unlikely]]
        std::abort();
      return p;
    }

    template <class T, class... A>
    T* make(A&&... args) {
      T* object = ::new (allocate(sizeof(T))) T(std::forward<A>(args)...);
      if constexpr (!std::is_trivially_destructible_v<T>) _talloc_set_destructor(object, &destructor<T>);
      return object;
    }
    template <class T>
    void release(T* p) noexcept {
      talloc_free(p);  // runs the talloc destructor, if any
    }

   private:
    template <class T>
    static int destructor(void* object) {
      static_cast<T*>(object)->~T();
      return 0;
    }
    void* memory_context_;
  };
};

}  // namespace perfloc_bench

int main(int argc, char** argv) {
  return perfloc_bench::run_main(argc, argv, [] {
    benchmark::AddCustomContext("allocator", "talloc " + std::to_string(talloc_version_major()) + "." +
                                                 std::to_string(talloc_version_minor()));
    perfloc_bench::register_competitor<perfloc_bench::talloc_scopes>("talloc");
  });
}
