// perfloc-bench-apr: Apache Portable Runtime pools. Each scope is a pool created and destroyed
// (apr_pool_create / apr_pool_destroy); objects with destructors register an APR cleanup. APR cannot
// free one object, so free_reuse is not run. Two variants:
//   apr         the scope is a subpool of a root pool whose allocator is private and unsynchronized, as
//               httpd's per-request pools are: the fastest way to use APR, and the anchor of the targets.
//   apr-global  the scope is a top-level pool (parent NULL): the global allocator, behind its mutex,
//               which is what `apr_pool_create(&p, NULL)` gives a casual user (about 2x the open+release).
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_version.h>

#include <cstdlib>
#include <new>
#include <type_traits>
#include <utility>

#include "harness.hpp"

namespace perfloc_bench {

template <bool PrivateAllocator>
struct apr {
  struct context {
    context() {
      static const bool initialized = [] {
        if (apr_initialize() != APR_SUCCESS) std::abort();
        std::atexit(apr_terminate);
        return true;
      }();
      (void)initialized;
      if (apr_allocator_create(&allocator) != APR_SUCCESS) std::abort();
      if (apr_pool_create_ex(&root, nullptr, nullptr, allocator) != APR_SUCCESS) std::abort();
      apr_allocator_owner_set(allocator, root);
    }
    ~context() { apr_pool_destroy(root); }  // also destroys the allocator it owns
    context(const context&) = delete;
    context& operator=(const context&) = delete;
    apr_allocator_t* allocator = nullptr;
    apr_pool_t* root = nullptr;
  };

  class scope {
   public:
    static constexpr bool frees_at_end = true;
    static constexpr bool runs_destructors = true;  // through cleanups
    static constexpr bool frees_individually = false;
    static constexpr bool has_scope_object = true;

    explicit scope(context& c) {
      if (apr_pool_create(&pool_, PrivateAllocator ? c.root : nullptr) != APR_SUCCESS) std::abort();
    }
    ~scope() { apr_pool_destroy(pool_); }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

    void* allocate(std::size_t n) { return apr_palloc(pool_, n); }

    template <class T, class... A>
    T* make(A&&... args) {
      T* object = ::new (apr_palloc(pool_, sizeof(T))) T(std::forward<A>(args)...);
      if constexpr (!std::is_trivially_destructible_v<T>) {
        apr_pool_cleanup_register(pool_, object, &cleanup<T>, apr_pool_cleanup_null);
      }
      return object;
    }

   private:
    template <class T>
    static apr_status_t cleanup(void* object) {
      static_cast<T*>(object)->~T();
      return APR_SUCCESS;
    }
    apr_pool_t* pool_ = nullptr;
  };
};

}  // namespace perfloc_bench

int main(int argc, char** argv) {
  return perfloc_bench::run_main(argc, argv, [] {
    benchmark::AddCustomContext("allocator", std::string("APR ") + apr_version_string());
    perfloc_bench::register_competitor<perfloc_bench::apr<true>>("apr");
    perfloc_bench::register_competitor<perfloc_bench::apr<false>>("apr-global");
  });
}
