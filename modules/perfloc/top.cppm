// perfloc.top — the top chunk: the one piece of memory perfloc takes from the operating system.
//
// A top chunk reserves a large range of address space (virtual: it costs nothing until used), commits it as
// process chunks take blocks from it, and gives memory back to the OS above a retain watermark. Its header,
// its children meta list (one child_meta per live process chunk) and its allocation memory all live in that
// range; see perfloc/detail/arena.hpp for the layout and src/perfloc/top_state.cpp for the slow paths.
// It is thread-safe: each thread opens and releases chunks through a cache of its own, without a lock.
module;

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <source_location>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "perfloc/detail/arena.hpp"

export module perfloc.top;

export namespace perfloc {

/// One process chunk as statistics see it: live in top_chunk::for_each_chunk, final in the release hook.
struct chunk_summary {
  std::string_view label;             ///< "" if none was given (as kept: see process_chunk); valid during the call only
  std::size_t in_use_bytes = 0;       ///< bytes handed out (at release: just before the blocks go back)
  std::size_t peak_in_use_bytes = 0;  ///< the most in_use_bytes has been
  std::size_t held_bytes = 0;         ///< bytes of the blocks the chunk holds
  std::size_t blocks = 0;
  std::uint64_t objects_made = 0;       ///< by make<T>
  std::uint64_t objects_destroyed = 0;  ///< by perfloc::destroy or by the release (at release: all of them)
  /// Open to release (live chunks: open to now); -1 when the top has no release hook, or for a chunk that
  /// the hook itself opened.
  std::chrono::nanoseconds lifetime{-1};
  std::source_location opened_at{};       ///< where the process_chunk was constructed
};

/// How a top chunk takes memory from the OS. Sizes are rounded up to 64 KiB.
struct top_options {
  /// The first reservation of address space (virtual; committed only as it is used). Each later one is at
  /// least as large as all before it, so that few reservations reach max_reserved_bytes.
  std::size_t reservation_bytes = std::size_t{16} << 30;
  /// The limit: past this much address space reserved for blocks, allocation fails with std::bad_alloc
  /// (after taking back what thread caches hold). The meta region is reserved beside it, sized for as many
  /// live chunks as this has 64 KiB blocks.
  std::size_t max_reserved_bytes = std::size_t{1} << 40;
  /// Free committed memory kept for reuse, what the threads' caches hold and the meta region (whose metas
  /// stay once made) included; free memory above this goes back to the OS.
  std::size_t retain_bytes = std::size_t{64} << 20;
  /// Called with each chunk's final statistics when it is released, on the releasing thread, after the
  /// chunk's destructors ran (per-request high-water marks for logs or metrics). Must not throw. Unset,
  /// it costs nothing; set, each open also reads the steady clock (for `lifetime`). The hook may open
  /// chunks of this top (a scratch chunk for a log line): the chunks it opens are not reported to it.
  std::function<void(const chunk_summary&)> on_release;
};

/// A snapshot of a top chunk. Exact when no other thread is opening, releasing or allocating; otherwise a
/// little stale, never impossible: each chunk is read whole (in_use_bytes <= committed_bytes).
struct top_stats {
  std::size_t reserved_bytes = 0;        ///< address space reserved for blocks, plus the meta region in use
  std::size_t committed_bytes = 0;       ///< memory backed by the OS now (blocks, header, meta region)
  std::size_t peak_committed_bytes = 0;  ///< the most committed_bytes ever was
  std::size_t in_use_bytes = 0;          ///< bytes handed out by live process chunks (with padding and headers)
  std::uint64_t live_chunks = 0;         ///< process chunks opened and not yet released
};

class top_chunk;

/// A text report: totals, then the live chunks grouped by label, all from one walk. A row per label as
/// kept (chunks whose labels share their first 47 bytes are one row), shown in double quotes with C escapes
/// (\n, \", \xNN); unlabelled chunks are the row (no label), unquoted. Columns: chunks; in use, held,
/// made and destroyed summed over the row's chunks; "max peak", the largest peak of one of them.
std::string report(const top_chunk& top);

/// Writes an SVG map of the top chunk's reservations: header and meta region, each block coloured by what
/// holds it (a live chunk: in its own colour up to 40 live chunks, else in its label's; a thread cache; the
/// top, free and committed or given back to the OS), the reserved space not yet used, and the totals per
/// label. A map of more than 1024 cells of 64 KiB uses bigger cells (a power of two times 64 KiB), each in
/// the colour of what holds most of it, so that the file stays small however many chunks live. The blocks
/// and figures come from one hold of the top's mutex; the file is written beside `path` and renamed over
/// it, so a reader sees the old picture or the new one, whole. Each block or run of cells is a
/// <g class='block' | 'cells'> with data-kind, data-label and data-bytes; each label total a
/// <g class='label total'> with data-label, data-chunks, data-in-use and data-held, for scripts. Throws
/// std::system_error when the file cannot be written.
void write_svg(const top_chunk& top, const std::filesystem::path& path);

/// The top chunk. Neither copyable nor movable: process chunks point at it.
/// Destroying it while process chunks are alive prints a leak report naming them (and aborts in debug builds).
class top_chunk {
 public:
  explicit top_chunk(top_options options = {})
      : state_(detail::create_top({options.reservation_bytes, options.max_reserved_bytes, options.retain_bytes})) {
    if (options.on_release) {
      // The state owns the hook: a top destroyed while chunks live (a leak report in a release build) keeps
      // its state mapped for them, and their releases still call the hook.
      try {
        state_->release_hook_context = new release_function(std::move(options.on_release));
      } catch (...) {
        detail::destroy_top(state_);
        throw;
      }
      state_->release_hook_cleanup = [](void* hook) noexcept { delete static_cast<release_function*>(hook); };
      state_->release_hook = &call_on_release;
      state_->fast_key = detail::no_fast_key;  // open and release take their general paths, which call it
    }
  }
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
  top_options options() const {
    top_options options{state_->settings.reservation_bytes, state_->settings.max_reserved_bytes,
                        state_->settings.retain_bytes, {}};
    if (state_->release_hook) options.on_release = *static_cast<const release_function*>(state_->release_hook_context);
    return options;
  }

  /// Calls f(const chunk_summary&) for each live process chunk, from a snapshot of the children meta list
  /// taken without stopping the threads that open and release chunks (so f may open chunks itself). Each
  /// chunk is read whole: one label, in_use_bytes <= held_bytes.
  template <class F>
  void for_each_chunk(F&& f) const {
    for (const detail::chunk_figures& figures : detail::live_chunks(state_).chunks) f(summary_of(figures));
  }

 private:
  static chunk_summary summary_of(const detail::chunk_figures& f) noexcept {
    return {f.label,          f.in_use_bytes,      f.peak_in_use_bytes,
            f.held_bytes,     f.blocks,            f.objects_made,
            f.objects_destroyed, std::chrono::nanoseconds(f.lifetime_ns), f.opened_at};
  }
  using release_function = std::function<void(const chunk_summary&)>;
  static void call_on_release(void* hook, const detail::chunk_figures& figures) noexcept {
    (*static_cast<release_function*>(hook))(summary_of(figures));
  }

  detail::top_state* state_;

  friend std::string report(const top_chunk& top);
  friend void write_svg(const top_chunk& top, const std::filesystem::path& path);

  /// For the other perfloc modules (found by argument-dependent lookup only).
  friend inline detail::top_state* state_of(top_chunk& top) noexcept { return top.state_; }
};

/// The process-wide top chunk, made on first use and never destroyed (so chunks may outlive main's
/// statics). Thread-safe.
top_chunk& default_top();

}  // namespace perfloc
