// perfloc.process — the process chunk: an arena for one scope, carved from a top chunk.
//
// A process_chunk is a move-only handle to a chunk whose header lives in the chunk's own first block, so
// object headers, the chunk's child_meta and a coroutine's executor can point at the chunk while the handle
// moves. Allocation is a pointer bump (inline here: importers compile it in place); objects made with
// make<T> carry an 8-byte header leading back to the chunk's meta, so destroy(p) works from the pointer
// alone; the chunk runs the destructors of what was made in it, newest first, and returns its blocks to the
// top chunk in one go when it is released. The slow paths are in src/perfloc/process.cpp.
module;

#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <new>
#include <source_location>
#include <string_view>
#include <type_traits>
#include <utility>

#include "perfloc/detail/arena.hpp"

export module perfloc.process;

import perfloc.top;

namespace perfloc::detail {

/// make<T> for process_chunk and allocator: the object, its 8-byte header and (for a non-trivial
/// destructor) its cleanup record in one allocation.
template <class T, class... Args>
inline T* make_in(child_meta* meta, Args&&... args) {
  static_assert(!std::is_array_v<T> && !std::is_reference_v<T>, "make<T> makes one object");
  using layout = object_layout<T>;
  auto* start = static_cast<std::byte*>(meta->allocate(layout::request, layout::alignment));
  void* place = start + layout::prefix;
  T* object;
  if constexpr (std::is_nothrow_constructible_v<T, Args...>) {
    object = ::new (place) T(std::forward<Args>(args)...);
  } else {
    try {
      object = ::new (place) T(std::forward<Args>(args)...);
    } catch (...) {
      meta->deallocate(start, layout::request, layout::alignment);
      throw;
    }
  }
  child_meta::add(meta->objects_made, 1);
  std::uintptr_t word = reinterpret_cast<std::uintptr_t>(meta);
  if constexpr (layout::has_cleanup) {
    cleanup_record* record = layout::record_of(object);
    record->destroy = [](void* p) noexcept { static_cast<T*>(p)->~T(); };
    meta->chunk->push_cleanup(record);
    word |= object_header::has_cleanup_bit;
  }
  layout::header_of(object)->word = word;
  return object;
}

inline top_state* default_state() {
  if (top_state* top = default_top_state.load(std::memory_order_acquire)) [[likely]] return top;
  return state_of(default_top());
}
}  // namespace perfloc::detail

export namespace perfloc {

/// A snapshot of one chunk.
struct chunk_stats {
  std::size_t in_use_bytes = 0;       ///< bytes handed out now: requested sizes, padding, object headers
  std::size_t peak_in_use_bytes = 0;  ///< the most in_use_bytes has been
  std::size_t held_bytes = 0;         ///< bytes of the blocks the chunk holds from its top chunk
  std::size_t blocks = 0;             ///< how many blocks that is
  std::uint64_t objects_made = 0;     ///< by make<T> (and perfloc::vector::emplace_back)
  std::uint64_t objects_destroyed = 0;  ///< by perfloc::destroy, or by the chunk's release
};

/// An arena for one scope. Everything allocated or made in it is released, destructors run, when the
/// chunk is released: at the end of the handle's scope, or by release(). Move-only; a moved-from chunk owns
/// nothing. One owner at a time (it may move between threads).
class process_chunk {
 public:
  /// Opens a chunk from default_top().
  inline explicit process_chunk(std::source_location where = std::source_location::current())
      : meta_(detail::open_chunk(detail::default_state(), where)) {}
  /// Opens a labelled chunk from default_top(); the label (up to 47 bytes, copied) shows in statistics,
  /// reports and leak reports.
  inline explicit process_chunk(std::string_view label, std::source_location where = std::source_location::current())
      : meta_(detail::open_chunk(detail::default_state(), label, where)) {}
  /// Opens a chunk from another top chunk.
  inline explicit process_chunk(top_chunk& top, std::source_location where = std::source_location::current())
      : meta_(detail::open_chunk(state_of(top), where)) {}
  inline process_chunk(top_chunk& top, std::string_view label,
                std::source_location where = std::source_location::current())
      : meta_(detail::open_chunk(state_of(top), label, where)) {}

  inline process_chunk(process_chunk&& other) noexcept : meta_(std::exchange(other.meta_, nullptr)) {}
  inline process_chunk& operator=(process_chunk&& other) noexcept {
    if (this != &other) {
      release();
      meta_ = std::exchange(other.meta_, nullptr);
    }
    return *this;
  }
  process_chunk(const process_chunk&) = delete;
  process_chunk& operator=(const process_chunk&) = delete;
  inline ~process_chunk() { release(); }

  /// Runs the destructors of the objects made in the chunk (newest first) and gives all its memory back.
  /// Each destructor runs exactly once. Those destructors may still use the chunk: destroy() of an object
  /// whose destructor the release already ran (or is running) does nothing, destroy() of one it has not
  /// reached yet destroys it now, and an object they make is destroyed by the same release, right after. The
  /// handle then owns nothing. Does nothing on a chunk that owns nothing.
  inline void release() noexcept {
    if (meta_) {
      detail::release_chunk(meta_);
      meta_ = nullptr;
    }
  }

  /// `bytes` of memory aligned to `alignment`, valid until the chunk is released or it is deallocated.
  /// A pointer bump on the fast path. allocate(0) returns a distinct pointer.
  /// Throws std::invalid_argument when `alignment` is not a power of two, std::bad_alloc when the request
  /// is larger than the top chunk can ever give or its reservations are exhausted; the chunk stays usable.
  inline void* allocate(std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) {
    check_owned();
    return meta_->allocate(bytes, alignment);
  }

  /// Gives back memory from allocate (same `bytes` and `alignment`) for the chunk to reuse.
  inline void deallocate(void* p, std::size_t bytes, std::size_t alignment = alignof(std::max_align_t)) noexcept {
    check_owned();
    if (p) meta_->deallocate(p, bytes, alignment);
  }

  /// Makes a T in the chunk. Its destructor runs when the chunk is released, or earlier by perfloc::destroy.
  /// If the constructor throws, the memory is given back and the exception propagates.
  template <class T, class... Args>
  inline T* make(Args&&... args) {
    check_owned();
    return detail::make_in<T>(meta_, std::forward<Args>(args)...);
  }

  /// This chunk as a std::pmr::memory_resource, for std::pmr containers. Valid until the chunk is released,
  /// also while the handle moves.
  inline std::pmr::memory_resource* resource() noexcept {
    check_owned();
    return detail::resource_of(meta_->chunk);
  }

  inline chunk_stats stats() const noexcept {
    check_owned();
    const detail::chunk_figures f = detail::figures_of(meta_);
    return {f.in_use_bytes, f.peak_in_use_bytes, f.held_bytes, f.blocks, f.objects_made, f.objects_destroyed};
  }

  /// The label given at construction ("" if none).
  inline std::string_view label() const noexcept {
    check_owned();
    return meta_->label;
  }

  /// False for a moved-from or released chunk.
  inline explicit operator bool() const noexcept { return meta_ != nullptr; }

 private:
  inline void check_owned() const noexcept {
#ifndef NDEBUG
    if (!meta_) detail::misuse("use of a moved-from or released process_chunk");
#endif
  }

  detail::child_meta* meta_;

  template <class>
  friend class allocator;
};

/// A standard allocator that allocates from a process chunk (std::vector<T, perfloc::allocator<T>>,
/// std::map, std::unordered_map, ...). It holds the chunk itself, not the handle, so it stays valid while
/// the process_chunk handle moves, until the chunk is released. deallocate gives memory back to the chunk
/// for reuse. Debug and ASan builds stop with a message when an allocator (or a container holding one) is
/// used after its chunk was released.
///
/// Propagation is that of std::pmr::polymorphic_allocator, and for the same reason: a container keeps the
/// chunk it was made with for its whole life. Copy and move assignment between containers of different
/// chunks copy or move the elements into the target's own chunk; swapping containers of different chunks
/// is undefined, as for pmr. Copy construction uses the same chunk.
template <class T>
class allocator {
 public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using propagate_on_container_copy_assignment = std::false_type;
  using propagate_on_container_move_assignment = std::false_type;
  using propagate_on_container_swap = std::false_type;
  using is_always_equal = std::false_type;

  inline allocator(process_chunk& chunk) noexcept : chunk_((chunk.check_owned(), chunk.meta_)) {}
  template <class U>
  inline allocator(const allocator<U>& other) noexcept : chunk_(other.chunk_) {}

  /// Throws std::bad_array_new_length when n * sizeof(T) overflows, std::bad_alloc when the top chunk
  /// cannot give that much.
  [[nodiscard]] inline T* allocate(std::size_t n) {
    return static_cast<T*>(chunk_.meta()->allocate(detail::array_bytes(n, sizeof(T)), alignof(T)));
  }
  inline void deallocate(T* p, std::size_t n) noexcept { chunk_.meta()->deallocate(p, n * sizeof(T), alignof(T)); }

  inline std::size_t max_size() const noexcept { return chunk_.meta()->chunk->top->max_request_bytes / sizeof(T); }

  /// Makes a U in the chunk exactly as process_chunk::make<U> does.
  template <class U, class... Args>
  inline U* make(Args&&... args) const {
    return detail::make_in<U>(chunk_.meta(), std::forward<Args>(args)...);
  }

  /// Debug builds stop with a message when `object` lives in a chunk that will be released before this
  /// allocator's chunk: one opened later on this thread, as a nested scope's chunk is. Otherwise nothing.
  inline void check_outlives([[maybe_unused]] const void* object) const noexcept {
#ifndef NDEBUG
    detail::check_outlives(chunk_.meta()->chunk, object);
#endif
  }

  template <class U>
  inline friend bool operator==(const allocator& a, const allocator<U>& b) noexcept {
    return a.chunk_.same_meta() == b.chunk_.same_meta();
  }

 private:
  detail::chunk_ref chunk_;  ///< the chunk's meta; checked on each use in debug and ASan builds

  template <class>
  friend class allocator;
};

/// Destroys an object made by process_chunk::make<T> before its chunk is released: runs ~T and gives its
/// memory back to the chunk for reuse. Pass the pointer make returned, with its type (as with delete, a
/// base-class pointer is wrong). nullptr does nothing, and so does a destroy, from a destructor the chunk's
/// release runs, of an object whose destructor that release already ran. Debug builds stop with a message on
/// a second destroy or on a pointer make did not return.
template <class T>
inline void destroy(T* object) noexcept {
  if (!object) return;
  using U = std::remove_cv_t<T>;
  using layout = detail::object_layout<U>;
  auto* target = const_cast<U*>(object);
  detail::object_header* header = layout::header_of(target);
#ifndef NDEBUG
  detail::check_destroy(header, target);  // a released chunk, or a second destroy
#endif
  // A destructor run by the chunk's release destroys an object whose destructor the release already ran.
  if (header->word & detail::object_header::released_bit) return;
  detail::child_meta* meta = header->meta();
  target->~U();
  detail::child_meta::add(meta->objects_destroyed, 1);
  if constexpr (layout::has_cleanup) meta->chunk->unlink_cleanup(layout::record_of(target));
  header->word |= detail::object_header::destroyed_bit;
  meta->deallocate(layout::start_of(target), layout::request, layout::alignment);
}

}  // namespace perfloc
