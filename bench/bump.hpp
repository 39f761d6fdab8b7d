// bench/bump.hpp — the physical limit: a bare bump pointer over one buffer reused by every scope.
// A scope starts at the buffer's beginning; allocation rounds up to 16 bytes (the alignment the other
// competitors give), bumps, and checks the end (a well-predicted branch any real allocator needs too).
// Releasing a scope costs nothing, and release() of one object only runs its destructor (no reuse).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

namespace perfloc_bench {

struct bump {
  struct context {
    static constexpr std::size_t capacity = std::size_t{4} << 20;  // > 4096 objects of 256 B
    context() : buffer(static_cast<std::byte*>(::operator new(capacity, std::align_val_t{64}))) {
      std::memset(buffer, 0, capacity);  // commit the pages before any timing
    }
    ~context() { ::operator delete(buffer, std::align_val_t{64}); }
    context(const context&) = delete;
    context& operator=(const context&) = delete;
    std::byte* buffer;
  };

  class scope {
   public:
    static constexpr bool frees_at_end = true;
    static constexpr bool runs_destructors = false;
    static constexpr bool frees_individually = true;  // release() is a no-op: the limit, not a real free
    static constexpr bool has_scope_object = false;

    explicit scope(context& c) noexcept : next_(c.buffer), end_(c.buffer + context::capacity) {}
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

    [[gnu::always_inline]] void* allocate(std::size_t n) {
      n = (n + 15) & ~std::size_t{15};
      if (n > static_cast<std::size_t>(end_ - next_)) [[unlikely]]
        std::abort();
      std::byte* p = next_;
      next_ += n;
      return p;
    }
    void deallocate(void*, std::size_t) noexcept {}

    template <class T, class... A>
    T* make(A&&... args) {
      return ::new (allocate(sizeof(T))) T(std::forward<A>(args)...);
    }
    template <class T>
    void release(T* p) noexcept {
      p->~T();
    }

   private:
    std::byte* next_;
    std::byte* end_;
  };
};

/// The same bump pointer with its cursor in memory outside the scope (in the context, as perfloc keeps
/// its cursor in the chunk's meta, where statistics read it from any thread): the workload's writes may
/// alias it, so it is loaded and stored at every allocation. Not a target: it tells how much of perfloc's
/// distance to `bump` is that store.
struct bump_in_memory {
  struct context : bump::context {
    std::byte* next = nullptr;
  };

  class scope {
   public:
    static constexpr bool frees_at_end = true;
    static constexpr bool runs_destructors = false;
    static constexpr bool frees_individually = true;
    static constexpr bool has_scope_object = false;

    explicit scope(context& c) noexcept : context_(c) {
      c.next = c.buffer;
      asm volatile("" : : "r"(&c) : "memory");  // the cursor escapes, as a chunk's meta does
    }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

    [[gnu::always_inline]] void* allocate(std::size_t n) {
      n = (n + 15) & ~std::size_t{15};
      std::byte* p = context_.next;
      if (n > static_cast<std::size_t>(context_.buffer + bump::context::capacity - p)) [[unlikely]]
        std::abort();
      context_.next = p + n;
      return p;
    }
    void deallocate(void*, std::size_t) noexcept {}

    template <class T, class... A>
    T* make(A&&... args) {
      return ::new (allocate(sizeof(T))) T(std::forward<A>(args)...);
    }
    template <class T>
    void release(T* p) noexcept {
      p->~T();
    }

   private:
    context& context_;
  };
};

}  // namespace perfloc_bench
