// perfloc.top — the top chunk: the one piece of memory perfloc takes from the operating system.
//
// A top chunk reserves a large range of address space (virtual: it costs nothing until used), commits it as
// process chunks take blocks from it, and gives memory back to the OS above a retain watermark. Its header,
// its children meta list (one child_meta per live process chunk) and its allocation memory all live in that
// range; see perfloc/detail/arena.hpp for the layout and src/perfloc/top_state.cpp for the slow paths.
// It is thread-safe: each thread opens and releases chunks through a cache of its own, without a lock.
module;

#include <cstddef>
#include <cstdint>

#include "perfloc/detail/arena.hpp"

export module perfloc.top;

export namespace perfloc {

/// How a top chunk takes memory from the OS. Sizes are rounded up to 64 KiB.
struct top_options {
  /// Address space reserved at a time (virtual; committed only as it is used).
  std::size_t reservation_bytes = std::size_t{16} << 30;
  /// Past this much reserved address space, allocation fails with std::bad_alloc.
  std::size_t max_reserved_bytes = std::size_t{1} << 40;
  /// Free committed memory kept for reuse; free memory above this goes back to the OS.
  std::size_t retain_bytes = std::size_t{64} << 20;
};

/// A snapshot of a top chunk. Exact when no other thread is opening, releasing or allocating.
struct top_stats {
  std::size_t reserved_bytes = 0;        ///< address space reserved from the OS
  std::size_t committed_bytes = 0;       ///< memory backed by the OS now (blocks, header, meta region)
  std::size_t peak_committed_bytes = 0;  ///< the most committed_bytes ever was
  std::size_t in_use_bytes = 0;          ///< bytes handed out by live process chunks (with padding and headers)
  std::uint64_t live_chunks = 0;         ///< process chunks opened and not yet released
};

/// The top chunk. Neither copyable nor movable: process chunks point at it.
/// Destroying it while process chunks are alive prints a leak report naming them (and aborts in debug builds).
class top_chunk {
 public:
  explicit top_chunk(const top_options& options = {})
      : state_(detail::create_top({options.reservation_bytes, options.max_reserved_bytes, options.retain_bytes})) {}
  ~top_chunk() { detail::destroy_top(state_); }
  top_chunk(const top_chunk&) = delete;
  top_chunk& operator=(const top_chunk&) = delete;

  /// Takes the top's mutex briefly; walks every thread's live chunks without stopping them.
  top_stats stats() const {
    const detail::top_totals totals = detail::collect_totals(state_);
    return {totals.reserved_bytes, totals.committed_bytes, totals.peak_committed_bytes, totals.in_use_bytes,
            totals.live_chunks};
  }

  /// The options in force (after rounding).
  top_options options() const noexcept {
    return {state_->settings.reservation_bytes, state_->settings.max_reserved_bytes, state_->settings.retain_bytes};
  }

 private:
  detail::top_state* state_;

  /// For the other perfloc modules (found by argument-dependent lookup only).
  friend inline detail::top_state* state_of(top_chunk& top) noexcept { return top.state_; }
};

/// The process-wide top chunk, made on first use and never destroyed (so chunks may outlive main's
/// statics). Thread-safe.
top_chunk& default_top();

}  // namespace perfloc
