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
#include <type_traits>
#include <utility>

namespace perfloc_bench {

/// The bump pointer; `cursor_in_memory`: its cursor and end in the context, not in the scope. There the
/// workload's writes may alias them, so they are loaded and the cursor stored at every allocation, as
/// perfloc keeps its cursor in the chunk's meta (where statistics read it from any thread): `bump-in-memory`,
/// in no target, tells how much of perfloc's distance to `bump` is that store.
template <bool cursor_in_memory>
struct basic_bump {
  struct context {
    static constexpr std::size_t capacity = std::size_t{4} << 20;  // > 4096 objects of 256 B
    context() : buffer(static_cast<std::byte*>(::operator new(capacity, std::align_val_t{64}))) {
      std::memset(buffer, 0, capacity);  // commit the pages before any timing
    }
    ~context() { ::operator delete(buffer, std::align_val_t{64}); }
    context(const context&) = delete;
    context& operator=(const context&) = delete;
    std::byte* buffer;
    std::byte* next = nullptr;  // the cursor and end of a scope with cursor_in_memory
    std::byte* end = nullptr;
  };

  class scope {
   public:
    static constexpr bool frees_at_end = true;
    static constexpr bool runs_destructors = false;
    static constexpr bool frees_individually = true;  // release() is a no-op: the limit, not a real free
    static constexpr bool has_scope_object = false;

    explicit scope(context& c) noexcept : next_(start(c)), end_(limit(c)) {}
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
    using cursor = std::conditional_t<cursor_in_memory, std::byte*&, std::byte*>;
    static cursor start(context& c) noexcept {
      if constexpr (!cursor_in_memory) {
        return c.buffer;
      } else {
        c.next = c.buffer;
        c.end = c.buffer + context::capacity;
        asm volatile("" : : "r"(&c) : "memory");  // the context escapes, as a chunk's meta does
        return c.next;
      }
    }
    static cursor limit(context& c) noexcept {
      if constexpr (cursor_in_memory) return c.end;
      else return c.buffer + context::capacity;
    }

    cursor next_;
    cursor end_;
  };
};

using bump = basic_bump<false>;
using bump_in_memory = basic_bump<true>;

}  // namespace perfloc_bench
