// bench/pmr.hpp — the standard library's memory resources as scope policies. Allocation goes through
// `std::pmr::memory_resource*`, as it does for every pmr container and polymorphic_allocator (a virtual
// call), and objects are made and ended with polymorphic_allocator::new_object / delete_object.
//
//   pmr_new     a monotonic_buffer_resource constructed and destroyed per scope (default initial size,
//               upstream new/delete): what `std::pmr::monotonic_buffer_resource r;` in a function costs.
//   pmr_reused  one monotonic_buffer_resource over a 2 MiB buffer, release()d at the end of each scope:
//               the best a user can do with pmr by hand.
//   pmr_pool    one unsynchronized_pool_resource for the whole run; every object is deallocated one by
//               one at scope end (a pool has no cheap scope release).
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <memory_resource>
#include <new>
#include <utility>

namespace perfloc_bench {

// Operations shared by the three pmr policies; Scope provides `resource()`.
template <class Scope>
struct pmr_operations {
  void* allocate(std::size_t n) { return self().resource()->allocate(n, alignof(std::max_align_t)); }
  void deallocate(void* p, std::size_t n) { self().resource()->deallocate(p, n, alignof(std::max_align_t)); }
  template <class T, class... A>
  T* make(A&&... args) {
    return std::pmr::polymorphic_allocator<>(self().resource()).template new_object<T>(std::forward<A>(args)...);
  }
  template <class T>
  void release(T* p) {
    std::pmr::polymorphic_allocator<>(self().resource()).delete_object(p);
  }

 private:
  Scope& self() { return static_cast<Scope&>(*this); }
};

struct pmr_new {
  struct context {};
  class scope : public pmr_operations<scope> {
   public:
    static constexpr bool frees_at_end = true;
    static constexpr bool runs_destructors = false;
    static constexpr bool frees_individually = true;  // deallocate is a no-op for a monotonic resource
    static constexpr bool has_scope_object = true;
    explicit scope(context&) {}
    std::pmr::memory_resource* resource() { return resource_; }

   private:
    std::pmr::monotonic_buffer_resource monotonic_;
    std::pmr::memory_resource* resource_ = &monotonic_;
  };
};

struct pmr_reused {
  struct context {
    static constexpr std::size_t capacity = std::size_t{2} << 20;  // > 4096 objects of 256 B
    context() : buffer(new std::byte[capacity]), monotonic(buffer.get(), capacity) {
      std::memset(buffer.get(), 0, capacity);  // commit the pages before any timing
    }
    std::unique_ptr<std::byte[]> buffer;
    std::pmr::monotonic_buffer_resource monotonic;
  };
  class scope : public pmr_operations<scope> {
   public:
    static constexpr bool frees_at_end = true;
    static constexpr bool runs_destructors = false;
    static constexpr bool frees_individually = true;  // deallocate is a no-op for a monotonic resource
    static constexpr bool has_scope_object = true;
    explicit scope(context& c) : context_(c), resource_(&c.monotonic) {}
    ~scope() { context_.monotonic.release(); }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;
    std::pmr::memory_resource* resource() { return resource_; }

   private:
    context& context_;
    std::pmr::memory_resource* resource_;
  };
};

struct pmr_pool {
  struct context {
    std::pmr::unsynchronized_pool_resource pool;
  };
  class scope : public pmr_operations<scope> {
   public:
    static constexpr bool frees_at_end = false;
    static constexpr bool runs_destructors = false;
    static constexpr bool frees_individually = true;
    static constexpr bool has_scope_object = false;
    explicit scope(context& c) : resource_(&c.pool) {}
    std::pmr::memory_resource* resource() { return resource_; }

   private:
    std::pmr::memory_resource* resource_;
  };
};

}  // namespace perfloc_bench
