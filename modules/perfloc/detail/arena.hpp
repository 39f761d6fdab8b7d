// perfloc/detail/arena.hpp — the data structures of the top chunk and of process chunks, and their fast paths.
//
// Memory layout (the seed's picture, as built):
//
//   reservation 0:  [ top_state header (64 KiB) | allocation memory ... ]
//   reservation k:  [ allocation memory ... ]   (more when one is exhausted, each as large as all before it)
//   meta region:    [ child_meta + thread_cache slots ... ]   (reserved on its own, committed as it fills)
//
// Allocation memory is handed out in blocks of 64 KiB << size_class, each aligned to its size within its
// reservation (so that free buddies merge at the top). A block starts with a block_header.
// A process chunk starts in a first region: a small one (1 to 8 KiB) of a slab, a 64 KiB block a thread cache
// cut into regions of one class, or a whole 64 KiB block; when it outgrows it, it goes on in blocks of its own.
// The first region holds the chunk_header right after a block_header, and the chunk's child_meta (in the
// meta region) and the chunk_header point at each other. The child_meta also holds the chunk's allocation
// cursor and statistics, which is what the handle allocates through.
//
// Opening and releasing a chunk must cost a handful of nanoseconds, so it touches only the calling
// thread's thread_cache: its free first regions (with their child_meta still attached: shells, and slabs'
// regions), its stacks of free blocks per small size class, and its part of the children meta list. No atomic
// read-modify-write, no lock, on that path. Everything else (refills, big blocks, reservations,
// statistics) goes through top_state under its mutex.
//
// The live list of a thread_cache is written by its owning thread only, with relaxed atomic stores (plain
// moves on x86), so that statistics can walk it from any thread: child_metas are never unmapped while the
// top lives, so a walker never faults, and a bound on its steps ends a walk that a concurrent edit sent
// astray. A walk is exact when the list's owner is not opening or releasing chunks meanwhile; that is the
// price of an open and a release that take no lock and no locked instruction. A chunk released on another
// thread than the one that opened it (a coroutine that moved) is handed back to its home cache through a
// lock-free stack the owner drains.
//
// This header is included from the global module fragment of the module units: the names are internal
// (perfloc::detail), reachable by the inline fast paths of the module interfaces, and exported by nothing.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <mutex>
#include <new>
#include <source_location>
#include <string_view>
#include <type_traits>
#include <vector>

#include "perfloc/detail/track.hpp"

/// Debug and ASan builds check handles that outlive their chunk (chunk_ref); release builds pay nothing.
#if !defined(NDEBUG) || defined(PERFLOC_TRACK_ASAN)
#define PERFLOC_CHECK_HANDLES 1
#else
#define PERFLOC_CHECK_HANDLES 0
#endif

namespace perfloc::detail {

// ---------------------------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------------------------

inline constexpr std::size_t granule_bytes = std::size_t{64} << 10;  ///< the smallest block; blocks are 2^k of them
inline constexpr std::size_t page_bytes = 4096;
inline constexpr std::size_t min_alignment = 16;  ///< every bump allocation is 16-aligned and a multiple of 16
/// Larger requests that do not fit the current block get a block of their own.
inline constexpr std::size_t large_request_bytes = std::size_t{256} << 10;
inline constexpr unsigned block_class_count = 48;     ///< 64 KiB << 47 is far above any reservation
inline constexpr unsigned cached_block_classes = 4;   ///< 64 KiB .. 512 KiB blocks are cached per thread
inline constexpr unsigned max_growth_class = 6;       ///< a chunk's bump blocks grow geometrically to 4 MiB

// A chunk's first memory is a region: for most chunks a small one, carved with dozens of others from a 64 KiB
// block (a slab) its thread cache owns, so that an idle chunk costs about what it uses; for chunks that use
// more, a whole 64 KiB block (a shell, as before). A chunk that outgrows its region moves on to private
// blocks that grow geometrically. Each thread cache learns, per call site that opens chunks, which region
// class those chunks need (thread_cache::site_class), starting from new_site_region.
// The classes step by 256 bytes up to 2 KiB, where most idle chunks (a coroutine waiting, a connection) fall
// and a class's rounding is most of what they cost; above 4 KiB by 512 bytes to 1 KiB, then 2 KiB.
inline constexpr unsigned region_class_count = 12;
inline constexpr unsigned whole_block_region = region_class_count - 1;  ///< a whole 64 KiB block
inline constexpr std::size_t region_bytes[region_class_count] = {1024, 1280, 1536, 1792, 2048, 2560,
                                                                   3072, 4096, 4608, 6144, 8192, 65536};
constexpr std::size_t region_bytes_of(unsigned region_class) noexcept { return region_bytes[region_class]; }
static_assert(region_bytes_of(whole_block_region) == granule_bytes);
inline constexpr std::uint8_t region_size_class = 0xff;  ///< block_header::size_class of a small region
/// A call site no chunk was opened at yet (thread_cache::site_class): its first chunk gets a whole 64 KiB block,
/// where it shows what the site's chunks use without growing, and the chunks opened after it, until one is
/// released, get new_site_region.
inline constexpr unsigned new_site = region_class_count;
/// The class of the chunks a site opens after its first, until one is released: 1.25 KiB, what a waiting coroutine
/// of perfloc::co_spawn takes (its spawn state and entry frame, a small frame, an operation). Those that outgrow
/// it go on in blocks of their own and move the site up at their release. A burst of new chunks (a server's
/// first connections) would otherwise take a whole block each, and leave a page or two touched in each, for good.
inline constexpr unsigned new_site_region = 1;
static_assert(region_bytes_of(new_site_region) == 1280);

/// How many free blocks of a class one thread keeps per top: 13 of 64 KiB (shells), 4 of 128 KiB, 2 of 256 KiB,
/// 1 of 512 KiB. Bigger blocks always go back to the top, where retain_bytes applies to them.
constexpr unsigned cached_block_limit(unsigned size_class) noexcept {
  return size_class == 0 ? 13u : size_class == 1 ? 4u : size_class == 2 ? 2u : 1u;
}

constexpr std::size_t block_bytes_of(unsigned size_class) noexcept { return granule_bytes << size_class; }

/// The most a thread cache holds (3 MiB and 64 KiB), which counts in retain_bytes. Its free blocks, one slab
/// per small region class whose regions are all free (kept so that a thread that opens and releases one chunk
/// at a time does not hand a slab to the top and back each time), and the slab of the region it parked
/// (thread_cache::parked), which may be all free but for it.
inline constexpr std::size_t thread_cache_bound_bytes = [] {
  std::size_t bytes = 0;
  for (unsigned c = 0; c < cached_block_classes; ++c) bytes += cached_block_limit(c) * block_bytes_of(c);
  return bytes + whole_block_region * granule_bytes + granule_bytes;
}();
static_assert(thread_cache_bound_bytes == (std::size_t{3} << 20) + granule_bytes);

/// The smallest class whose blocks hold `bytes`.
constexpr unsigned block_class_for(std::size_t bytes) noexcept {
  const std::size_t granules = (bytes + granule_bytes - 1) / granule_bytes;
  return granules <= 1 ? 0u : static_cast<unsigned>(std::bit_width(granules - 1));
}

/// 1, 2, 4, 8 or 16: the alignments the fast path serves (constant-folded for the usual constant argument).
constexpr bool is_small_power_of_two(std::size_t alignment) noexcept {
  return alignment <= min_alignment && ((0x10116u >> alignment) & 1u);
}

constexpr std::size_t round_up(std::size_t n, std::size_t alignment) noexcept {
  return (n + alignment - 1) & ~(alignment - 1);
}

/// What a bump allocation of `bytes` consumes: a multiple of 16, at least 16, so that allocate(0) is distinct.
constexpr std::size_t footprint(std::size_t bytes) noexcept { return round_up(bytes ? bytes : 1, min_alignment); }

/// Requests that may get a block of their own: those that do not fit the current block. Deallocation of
/// such a request looks it up among the chunk's own blocks.
constexpr bool may_need_own_block(std::size_t footprint_bytes, std::size_t alignment) noexcept {
  return footprint_bytes + (alignment > min_alignment ? alignment : 0) > large_request_bytes;
}

// ---------------------------------------------------------------------------------------------------------
// Request arithmetic: the one place that guards it against wrapping
// ---------------------------------------------------------------------------------------------------------
//
// Every request reaches the slow path's admission check (allocate_slow) before anything is computed from
// its size and alignment. What passes is at most a top's max_request_bytes, itself at most SIZE_MAX / 2, so
// what the slow paths compute from it (footprints, alignment slides, block headers, block classes) stays far
// from wrapping. The fast path needs no check: `bytes - 1 < fast_limit - bump` holds only for a request that
// fits the current block. make<T> sizes are constants (checked at compile time), and arrays go through
// array_bytes.

/// The bytes a request needs: its footprint plus the slack an alignment above 16 may need to slide it into
/// place. 0 when that exceeds `max_request_bytes` (which must be at most SIZE_MAX / 2): such a request can
/// never be served, and computing with it could wrap.
constexpr std::size_t admitted_bytes(std::size_t bytes, std::size_t alignment, std::size_t max_request_bytes) noexcept {
  if (bytes > max_request_bytes || alignment > max_request_bytes) return 0;
  const std::size_t n = footprint(bytes);  // bytes <= SIZE_MAX / 2: cannot wrap
  const std::size_t slack = alignment > min_alignment ? alignment : 0;
  return n <= max_request_bytes && slack <= max_request_bytes - n ? n + slack : 0;
}
static_assert(admitted_bytes(~std::size_t{0} / 2, std::size_t{1} << 63, ~std::size_t{0} / 2) == 0);
static_assert(admitted_bytes(~std::size_t{0} / 2 - 100, std::size_t{1} << 62, ~std::size_t{0} / 2) == 0);
static_assert(admitted_bytes(100, 64, 1 << 20) == 112 + 64);

/// n objects of `size` bytes; std::bad_array_new_length (a std::bad_alloc) when that wraps.
inline std::size_t array_bytes(std::size_t n, std::size_t size) {
  if (n > ~std::size_t{0} / size) throw std::bad_array_new_length();
  return n * size;
}

struct thread_cache;
struct top_state;
struct chunk_header;
struct child_meta;

// ---------------------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------------------

/// The first 64 bytes of every block held by a chunk or a thread cache. A block free at the top has no
/// header: the top links it from a side table (reservation::free_links), so that it can go back to the OS whole.
struct alignas(64) block_header {
  block_header* next = nullptr;  ///< in a thread cache's free list, or in a chunk's block list
  block_header* prev = nullptr;  ///< a small region's slab; in a thread cache's list of slabs
  std::size_t bytes = 0;         ///< the whole block, this header included
  unsigned size_class = 0;
  std::atomic<std::uint64_t>* map_entry = nullptr;  ///< this block's entry in its reservation's block map

  std::byte* payload() noexcept { return reinterpret_cast<std::byte*>(this + 1); }
  std::byte* end() noexcept { return reinterpret_cast<std::byte*>(this) + bytes; }
};
static_assert(sizeof(block_header) == 64);

/// A 64 KiB block a thread cache cut into small regions of one class, each with its meta attached for good (the
/// region starts with a block_header whose `prev` is the slab). The owner takes and gives back regions without a
/// lock: a region released on another thread comes home with its meta (release_elsewhere). The slabs of a
/// class with a free region are listed in the cache, newest first; a slab whose regions are all free goes
/// back to the top, unless it is the only one listed. Its regions are carved as they are needed, a step at a
/// time (carve_slab): the first region_count of its `capacity` are, the rest of the block is untouched. The
/// meta of each carved region is also noted here, written under the top's mutex, so that snapshot() can draw
/// the regions without reading them.
struct alignas(64) slab_header {
  static constexpr std::size_t most_regions = (granule_bytes - 1024) / 1024;
  block_header block;                ///< as any block's: next and prev link the cache's list of slabs
  block_header* free_regions = nullptr;  ///< a stack, linked through the regions' block_header::next
  std::uint32_t region_bytes = 0;
  std::uint16_t region_count = 0;
  std::uint16_t free_count = 0;
  std::uint8_t region_class = 0;
  std::uint8_t capacity = 0;  ///< the regions the slab can hold; region_count of them are carved (carve_slab)
  child_meta* owners[most_regions]{};
};
inline constexpr std::size_t slab_header_bytes = (sizeof(slab_header) + 63) & ~std::size_t{63};
static_assert(slab_header_bytes <= 1024);

/// A slab's regions are carved (their headers written, their pages backed) this many bytes at a time, as they are
/// needed: a slab that serves a few chunks costs the pages they use, not 64 KiB. Two steps to a slab: with four
/// (16 KiB), a burst of 100 000 coroutines spawned 10-15% slower (a lock and a system call per step).
inline constexpr std::size_t slab_carve_step_bytes = 32 << 10;

inline slab_header* slab_of(block_header* region) noexcept { return reinterpret_cast<slab_header*>(region->prev); }

/// Writes a fresh header at the start of a block (a new block, or one given back after holding a single
/// large allocation, which used the whole block, header included).
inline block_header* make_block_header(std::byte* at, unsigned size_class,
                                       std::atomic<std::uint64_t>* map_entry) noexcept {
  track::internal_access(at, sizeof(block_header));
  auto* block = ::new (static_cast<void*>(at)) block_header{};
  block->bytes = block_bytes_of(size_class);
  block->size_class = size_class;
  block->map_entry = map_entry;
  return block;
}

/// A block map entry: the owning chunk's meta (64-aligned) | size class + 1. Zero: not the start of a block.
/// Written on the slow paths that move blocks between chunks, caches and the top; read by write_svg.
inline std::uint64_t block_map_word(const void* owner_meta, unsigned size_class) noexcept {
  return reinterpret_cast<std::uintptr_t>(owner_meta) | (size_class + 1);
}
inline void set_block_owner(block_header* block, const void* owner_meta) noexcept {
  block->map_entry->store(block_map_word(owner_meta, block->size_class), std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------------------
// The children meta list
// ---------------------------------------------------------------------------------------------------------

/// released_elsewhere: the chunk's first block stayed where it was released; region_released_elsewhere: its
/// small region comes home with the meta.
enum class meta_state : std::uint8_t { free, live, released_elsewhere, region_released_elsewhere };

/// Labels are kept in the meta (no allocation): at most 47 bytes of valid UTF-8, cut before a character that
/// does not fit, invalid bytes replaced by U+FFFD (copy_label).
inline constexpr std::size_t label_capacity = 48;

/// One per live process chunk, in the top chunk's meta region: the chunk's entry in the children meta list,
/// its allocation cursor and its statistics. The cursor lives here rather than in the chunk header so that
/// statistics read from any thread are exact at no cost to allocation: a bump moves `bump`, and the bytes
/// in use are `counted_bytes + (bump - counted_to)`. Fields a walker reads from another thread are atomics
/// (relaxed: plain moves on x86; the label goes through std::atomic_ref); the owner alone writes them.
///
/// A reading from another thread must be possible, never torn (in_use <= held, one label): the owner's
/// changes that take more than one store (an open, a settle, a step back of the bump, a block more or less)
/// are counted in `changes`, odd while one is under way, and a reader retries until it read between two
/// (a seqlock; figures_of). The bump fast path only moves `bump` forward, which keeps every reading
/// possible, so it costs nothing more. No change may take a lock: a reader may spin under the top's mutex.
struct alignas(64) child_meta {
  // The allocation cursor and what allocation updates: one cache line.
  std::atomic<std::byte*> bump{nullptr};        ///< next free byte of the current block
  std::atomic<std::byte*> fast_limit{nullptr};  ///< see allocate(); never below bump
  std::atomic<std::byte*> counted_to{nullptr};  ///< counted_bytes covers bumps up to here
  std::atomic<std::size_t> counted_bytes{0};
  std::atomic<std::size_t> peak_in_use_bytes{0};  ///< as of the last decrease: the peak is max(this, in use)
  std::atomic<std::uint64_t> objects_made{0};
  chunk_header* chunk = nullptr;  ///< the chunk this meta describes; the chunk points back
  std::atomic<meta_state> state{meta_state::free};
  std::atomic<std::uint32_t> blocks{0};

  // The list, and the rest of the statistics.
  alignas(64) std::atomic<child_meta*> prev{nullptr};  ///< neighbours in the home cache's live list
  std::atomic<child_meta*> next{nullptr};
  thread_cache* home = nullptr;     ///< the cache whose live list holds this meta
  child_meta* free_next = nullptr;  ///< in a free stack, or in a cache's remote-release stack
  std::atomic<std::uint64_t> objects_destroyed{0};  ///< by perfloc::destroy, or by the release
  std::atomic<std::size_t> held_bytes{0};           ///< bytes of the blocks the chunk holds
  std::atomic<std::uintptr_t> opened_at{0};  ///< a std::source_location, bit for bit
  std::atomic<std::int64_t> opened_ns{0};    ///< steady clock at open, kept only when the top has a release hook

  alignas(64) char label[label_capacity]{};
  std::uint32_t magic = 0;  ///< tells a child_meta from other slots of the meta region (debug checks)
  /// Bumped each time a chunk of this meta is released, in builds that check handles (see chunk_ref): tells a
  /// handle of a released chunk from one of the chunk that reuses the meta.
  std::atomic<std::uint32_t> generation{0};
  std::atomic<std::uint32_t> changes{0};  ///< the seqlock's sequence: see above and change_scope

  static std::byte* load(const std::atomic<std::byte*>& p) noexcept { return p.load(std::memory_order_relaxed); }
  static void store(std::atomic<std::byte*>& p, std::byte* value) noexcept {
    p.store(value, std::memory_order_relaxed);
  }
  /// Single writer (the chunk's owner): a plain load and store, no locked instruction.
  static void add(std::atomic<std::size_t>& counter, std::size_t n) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }

  /// Makes the owner's stores in its lifetime one change for readers. Scopes do not nest (none needs to): a
  /// load and two plain stores, no branch; the fences only order the compiler's stores on x86.
  class change_scope {
   public:
    explicit change_scope(child_meta* meta) noexcept
        : meta_(meta), odd_(meta->changes.load(std::memory_order_relaxed) + 1) {
      meta_->changes.store(odd_, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_release);  // the odd count is seen before what follows
    }
    ~change_scope() { meta_->changes.store(odd_ + 1, std::memory_order_release); }
    change_scope(const change_scope&) = delete;
    change_scope& operator=(const change_scope&) = delete;

   private:
    child_meta* meta_;
    std::uint32_t odd_;
  };

  std::size_t in_use() const noexcept {
    return counted_bytes.load(std::memory_order_relaxed) +
           static_cast<std::size_t>(load(bump) - load(counted_to));
  }
  /// Settles and puts the cursor at `to` (a new block, a step back, past an alignment gap), as one change.
  void move_cursor(std::byte* to) noexcept {
    const change_scope change{this};
    add(counted_bytes, static_cast<std::size_t>(load(bump) - load(counted_to)));
    store(bump, to);
    store(counted_to, to);
  }
  /// Bytes handed out other than by bumping (reused spans, own blocks).
  void count(std::size_t n) noexcept { add(counted_bytes, n); }
  /// Bytes given back, and the cursor put at `to` (where it is, or a step back), as one change: settles,
  /// and the value before the decrease may be the peak.
  void give_back(std::size_t n, std::byte* to) noexcept {
    const change_scope change{this};
    const std::size_t before = in_use();
    if (before > peak_in_use_bytes.load(std::memory_order_relaxed))
      peak_in_use_bytes.store(before, std::memory_order_relaxed);
    counted_bytes.store(before - n, std::memory_order_relaxed);
    store(bump, to);
    store(counted_to, to);
  }
  void add_held(std::ptrdiff_t n) noexcept {
    const change_scope change{this};
    add(held_bytes, static_cast<std::size_t>(n));
    blocks.store(blocks.load(std::memory_order_relaxed) + (n > 0 ? 1u : -1u), std::memory_order_relaxed);
  }
  std::source_location where_opened() const noexcept {
    return std::bit_cast<std::source_location>(opened_at.load(std::memory_order_relaxed));
  }

  inline void* allocate(std::size_t bytes, std::size_t alignment);
  inline void deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept;
};
static_assert(sizeof(child_meta) == 192);  // three cache lines
static_assert(sizeof(std::source_location) == sizeof(std::uintptr_t));
inline constexpr std::uint32_t child_meta_magic = 0x7066'6c6d;  // "pflm"

// ---------------------------------------------------------------------------------------------------------
// Handles that outlive the process_chunk object
// ---------------------------------------------------------------------------------------------------------

/// Stops the program: a handle made for generation `generation` of `meta` was used after that chunk was
/// released (src/perfloc/process.cpp).
[[noreturn]] void stale_handle(const child_meta* meta, unsigned generation) noexcept;

/// A chunk of this meta ends: handles made for it no longer pass chunk_ref's check.
inline void end_generation([[maybe_unused]] child_meta* meta) noexcept {
#if PERFLOC_CHECK_HANDLES
  meta->generation.store(meta->generation.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
#endif
}

/// What a perfloc::allocator (so also a perfloc::vector) and the pmr resource hold: the chunk's meta. A
/// handle may outlive its chunk, and the meta then serves the next chunk opened from it; in builds that check
/// handles, the handle also keeps the low 16 bits of the meta's generation from when it was made, in the
/// pointer's top 16 bits (metas are mmap'd below 2^47), and every use compares them with the meta's. It stays
/// 8 bytes: perfloc.asio keeps an optional allocator in a coroutine frame's 16-byte header.
class chunk_ref {
 public:
  explicit chunk_ref(child_meta* meta) noexcept : word_(reinterpret_cast<std::uintptr_t>(meta)) {
#if PERFLOC_CHECK_HANDLES
    word_ |= std::uintptr_t{meta->generation.load(std::memory_order_relaxed) & generation_mask} << address_bits;
#endif
  }

  /// The meta, for a use of the handle: stops the program if the chunk it was made for has been released.
  inline child_meta* meta() const noexcept {
#if PERFLOC_CHECK_HANDLES
    child_meta* meta = same_meta();
    const auto generation = static_cast<unsigned>(word_ >> address_bits);
    if ((meta->generation.load(std::memory_order_relaxed) & generation_mask) != generation) [[unlikely]]
      stale_handle(meta, generation);
    return meta;
#else
    return same_meta();
#endif
  }
  /// The meta, for comparisons: two handles of one meta are equal.
  inline child_meta* same_meta() const noexcept {
    return reinterpret_cast<child_meta*>(word_ & ((std::uintptr_t{1} << address_bits) - 1));
  }

 private:
  static constexpr unsigned address_bits = 48;
  static constexpr std::uint32_t generation_mask = 0xffff;
  std::uintptr_t word_;
};
static_assert(sizeof(chunk_ref) == sizeof(void*));

// ---------------------------------------------------------------------------------------------------------
// Per-thread cache
// ---------------------------------------------------------------------------------------------------------

/// A thread's private part of one top chunk. Lives in the top's meta region; outlives its thread (orphaned,
/// then adopted by a new thread) so that chunks that moved away can still be released into it.
///
/// Its free 64 KiB blocks (class 0) are shells: the first block of a released chunk, with the chunk's
/// child_meta still attached (the header's `meta`, whose `home` is this cache). Its slabs hold small first
/// regions, each with its meta attached too. Opening a chunk pops a region of the class its call site needs
/// (a shell, or a region from the newest listed slab of that class) and has its memory and its meta at once;
/// releasing pushes it back.
///
/// Its free blocks can be taken by another thread when the top would otherwise fail a request (see
/// reclaim_caches in top_state.cpp): the owner edits them only between enter_cache and leave_cache, which
/// mark the cache `busy`; a reclaiming thread sets `attention`'s reclaim_bit, makes every thread see it with an
/// asymmetric barrier (os::heavy_barrier), and takes the blocks of a cache that is not busy. The owner pays
/// two plain stores and one load for it; the reclaimer pays a system call, once per failing request.
struct thread_cache {
  // What open and release touch: one cache line.
  block_header* free_blocks[cached_block_classes]{};
  std::atomic<std::uint8_t> free_block_count[cached_block_classes]{};  ///< one writer at a time; read by the top
  std::atomic<bool> busy{false};             ///< the owner is editing free_blocks
  /// Bit 0 (reclaim_bit): a reclaimer wants free_blocks, take the slow path. The rest: the stack of metas of
  /// chunks other threads released (metas are 64-aligned). One word, so that the open's fast path tests
  /// both with one load; every change is a read-modify-write that keeps the other part.
  std::atomic<std::uintptr_t> attention{0};
  static constexpr std::uintptr_t reclaim_bit = 1;
  bool reclaim_pending(std::memory_order order) const noexcept { return attention.load(order) & reclaim_bit; }
  top_state* top = nullptr;
  std::uint64_t fast_key = 0;  ///< its top's fast_key, on this line: the release's fast path reads it here
  /// The small region of the chunk its owner released last, parked rather than given back to its slab when
  /// the slot was empty (release_chunk), for the next open of its class to take back first (open_chunk): its
  /// meta's address plus its region class (metas are 64-aligned), or nothing_parked. The meta is free (walkers
  /// skip it) but stays in the live list, and its slab counts the region as in use: neither fast path touches
  /// the slab or the list, and the release takes no part in the busy protocol (only the owner fills the slot,
  /// only when empty; a reclaimer only empties it). It keeps at most its slab from the top: counted as 64 KiB
  /// in the retain budget (cached_bytes). flush_blocks_locked gives it back (a reclaim, the thread's exit, a
  /// cache refilled from the top).
  std::atomic<std::uintptr_t> parked{nothing_parked};
  static constexpr std::uintptr_t nothing_parked = 63;  ///< no region class: no open matches it
  static constexpr std::uintptr_t parked_class_bits = 63;
  child_meta* free_metas = nullptr;
  thread_cache* next_in_top = nullptr;     ///< all caches of the top (under the top's mutex)
  std::atomic<bool> orphaned{false};       ///< its thread has exited (written under the top's mutex)
  std::atomic<std::uint8_t> empty_slabs{0};  ///< listed slabs whose regions are all free; read by the top
  slab_header* slabs[whole_block_region]{};  ///< per small region class: slabs with a free region, newest first

  /// What the chunks opened at a call site need (sites are told apart by a hash of their source_location):
  /// the region class to open them with; and, of the releases since the site last moved that would have fit
  /// a smaller region, how many and the most any of them used. The first chunk of a site gets a whole block, the
  /// next ones new_site_region (see new_site); eight releases that fit a smaller region move the site down to
  /// the class that fits them all; a chunk that outgrew a region smaller than the site's, or used more than the
  /// site's region without outgrowing its own, moves it up at once; of the chunks that outgrew the site's own
  /// region, the second since the site last moved does (site_outgrown): one outlier, a server's rare large
  /// answer, pays a block of its own rather than moving every chunk after it to a bigger region (in the HTTP
  /// demo, the /stats answer between the warm-up and the rounds moved the request site up, and the rounds'
  /// first burst of 32 requests took a new slab of the bigger class: 64 KiB more at the peak).
  static constexpr unsigned site_count = 16;
  static constexpr unsigned site_votes_to_shrink = 8;
  std::uint8_t site_class[site_count];
  std::uint8_t site_votes[site_count]{};
  std::uint32_t site_most_used[site_count]{};
  bool site_outgrown[site_count]{};  ///< a chunk outgrew the site's region since the site last moved
  /// Per small region class: the slab whose regions are carved as they are needed and that has room for more
  /// (carve_slab), or nullptr. It is listed in `slabs` while one of its carved regions is free.
  slab_header* growing[whole_block_region]{};

  child_meta live;                         ///< sentinel of this cache's part of the children meta list

  thread_cache() noexcept {
    live.prev.store(&live, std::memory_order_relaxed);
    live.next.store(&live, std::memory_order_relaxed);
    for (std::uint8_t& c : site_class) c = new_site;
  }

  // --- the live list (owner only) ---
  void link(child_meta* meta) noexcept {
    child_meta* first = live.next.load(std::memory_order_relaxed);
    meta->prev.store(&live, std::memory_order_relaxed);
    meta->next.store(first, std::memory_order_relaxed);
    first->prev.store(meta, std::memory_order_relaxed);
    live.next.store(meta, std::memory_order_release);  // a walker that sees the meta sees it filled in
  }
  void unlink(child_meta* meta) noexcept {
    child_meta* before = meta->prev.load(std::memory_order_relaxed);
    child_meta* after = meta->next.load(std::memory_order_relaxed);
    before->next.store(after, std::memory_order_relaxed);
    after->prev.store(before, std::memory_order_relaxed);
  }

  // --- free blocks (between enter_cache and leave_cache) ---
  unsigned count_of(unsigned size_class) const noexcept {
    return free_block_count[size_class].load(std::memory_order_relaxed);
  }
  void set_count(unsigned size_class, unsigned n) noexcept {
    free_block_count[size_class].store(static_cast<std::uint8_t>(n), std::memory_order_relaxed);
  }
  void push_free(block_header* block, unsigned size_class) noexcept {
    block->next = free_blocks[size_class];
    free_blocks[size_class] = block;
    set_count(size_class, count_of(size_class) + 1);
  }
  block_header* pop_free(unsigned size_class) noexcept {
    block_header* block = free_blocks[size_class];
    free_blocks[size_class] = block->next;
    set_count(size_class, count_of(size_class) - 1);
    return block;
  }
  inline block_header* take_block(unsigned size_class);  ///< size_class >= 1
  inline void give_block(block_header* block) noexcept;  ///< a block of class >= 1
  inline void give_shell(block_header* first) noexcept;  ///< a chunk's first block, its meta attached
  inline void keep_shell(block_header* first) noexcept;  ///< give_shell when the cache has room

  // --- first regions (between enter_cache and leave_cache) ---
  /// Takes the parked chunk's meta into `meta` if it is of the class (its chunk free, the meta in the live
  /// list); false otherwise. One load and a subtraction: the class is in the word's low bits.
  bool take_parked(unsigned region_class, child_meta*& meta) noexcept {
    const std::uintptr_t word = parked.load(std::memory_order_relaxed) - region_class;
    if (word & parked_class_bits) return false;
    parked.store(nothing_parked, std::memory_order_relaxed);
    meta = reinterpret_cast<child_meta*>(word);
    return true;
  }
  /// A free first region of the class with its meta attached, or nullptr (the cache must be refilled). For
  /// new_site, a whole block, and the site's next chunks get new_site_region.
  inline block_header* take_region(unsigned region_class, unsigned site) noexcept;
  /// Whether a small region can be taken back without more: not when its slab must be listed again, or
  /// would have all its regions free while another slab of its class is listed (give_region does both).
  inline bool can_keep_small_region(block_header* region) const noexcept;
  inline void keep_small_region(block_header* region) noexcept;
  /// The same two, given the region's slab and what its counts were read as (the release's fast path reads
  /// them once, before stores the compiler must assume alias them).
  inline bool can_keep_small_region(const slab_header* slab, unsigned free_count, unsigned region_count) const noexcept;
  inline void keep_small_region(block_header* region, slab_header* slab, unsigned free_count,
                                unsigned region_count) noexcept;
  /// What a chunk released at home teaches its site: `used` is what it used of its region; `outgrew`: it went on
  /// in bump blocks of its own.
  inline void learn(const chunk_header* chunk, std::size_t used, bool outgrew) noexcept;
};

static_assert(alignof(child_meta) == thread_cache::parked_class_bits + 1 && new_site < thread_cache::nothing_parked);

/// Waits until a reclaim of `cache` is over (src/perfloc/top_state.cpp); the owner is busy again on return.
void wait_for_reclaim(thread_cache* cache) noexcept;

/// The owner starts editing its cache's free blocks. The signal fence keeps the compiler from moving the load
/// above the store; the reclaimer's heavy barrier does the same for the processor.
[[gnu::always_inline]] inline void enter_cache(thread_cache* cache) noexcept {
  cache->busy.store(true, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (cache->reclaim_pending(std::memory_order_acquire)) [[unlikely]] wait_for_reclaim(cache);
}
[[gnu::always_inline]] inline void leave_cache(thread_cache* cache) noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  cache->busy.store(false, std::memory_order_release);
}
/// enter_cache .. leave_cache for a scope. Never nested: user code (destructors) never runs inside one.
struct cache_section {
  thread_cache* cache;
  explicit cache_section(thread_cache* c) noexcept : cache(c) { enter_cache(cache); }
  ~cache_section() { leave_cache(cache); }
  cache_section(const cache_section&) = delete;
  cache_section& operator=(const cache_section&) = delete;
};

// ---------------------------------------------------------------------------------------------------------
// The top chunk's header
// ---------------------------------------------------------------------------------------------------------

struct top_settings {
  std::size_t reservation_bytes;
  std::size_t max_reserved_bytes;
  std::size_t retain_bytes;
};

struct reservation {
  std::byte* base = nullptr;
  std::size_t bytes = 0;
  std::byte* frontier = nullptr;  ///< allocation memory below it has been committed and handed out
  std::atomic<std::uint64_t>* block_map = nullptr;  ///< one word per 64 KiB granule (see block_map_word)
  struct free_link {
    std::byte* prev;
    std::byte* next;
  };
  free_link* free_links = nullptr;  ///< one per granule: the top's free lists, outside the free blocks
};

/// What statistics, the release hook and write_svg report of one chunk.
struct chunk_figures {
  char label[label_capacity];
  std::size_t in_use_bytes;
  std::size_t peak_in_use_bytes;
  std::size_t held_bytes;
  std::uint32_t blocks;
  std::uint64_t objects_made;
  std::uint64_t objects_destroyed;
  std::int64_t lifetime_ns;  ///< -1 when the top keeps no open times (it has no release hook)
  std::source_location opened_at;
  const child_meta* identity;
};
/// Reads a meta's figures: exact for the calling owner; for anyone else, one consistent reading (seqlock).
/// `now_ns`: the steady clock in ns, for `lifetime_ns` of a chunk of a top with a release hook; -1: none.
chunk_figures figures_of(const child_meta* meta, std::int64_t now_ns = -1) noexcept;
std::int64_t steady_clock_ns() noexcept;

/// One block of a top chunk's reservations, for write_svg.
struct block_view {
  enum kind_t : std::uint8_t { top_header, meta_region, in_chunk, cached, free_committed, free_decommitted, unused };
  std::size_t reservation;
  std::size_t offset;  ///< from the reservation's base
  std::size_t bytes;
  kind_t kind;
  const child_meta* owner;  ///< for in_chunk
};
struct top_totals {
  std::size_t reserved_bytes = 0;
  std::size_t committed_bytes = 0;
  std::size_t peak_committed_bytes = 0;
  std::size_t in_use_bytes = 0;
  std::uint64_t live_chunks = 0;
};
/// The live chunks and the totals, from one walk (the totals add up the chunks).
struct live_view {
  top_totals totals;
  std::vector<chunk_figures> chunks;
};
/// Blocks, live chunks and totals, from one hold of the top's mutex.
struct top_snapshot {
  top_totals totals;
  std::vector<std::size_t> reservation_bytes;
  std::vector<block_view> blocks;
  std::vector<chunk_figures> chunks;  ///< the live ones
};

using release_hook_function = void (*)(void* context, const chunk_figures& final_figures) noexcept;

// Pages straight from the OS (src/perfloc/top_state.cpp), for the top's own tables: the default top is never
// destroyed, and a leak checker does not look into perfloc's mappings for what points at a malloc'd table.
void* map_pages(std::size_t bytes);  ///< throws std::bad_alloc
void unmap_pages(void* p, std::size_t bytes) noexcept;
template <class T>
struct pages_allocator {
  using value_type = T;
  pages_allocator() = default;
  template <class U>
  pages_allocator(const pages_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(map_pages(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { unmap_pages(p, n * sizeof(T)); }
  friend bool operator==(const pages_allocator&, const pages_allocator&) noexcept { return true; }
};

/// Lives at the start of reservation 0. Everything below the mutex is guarded by it.
struct top_state {
  std::uint64_t id = 0;  ///< unique per top ever created: tells a stale thread binding from a new top
  /// `id` when open_chunk and release_chunk may take their fast paths (no release hook), else no_fast_key,
  /// which no binding holds: the fast paths compare the binding's id with it, one compare for both.
  std::uint64_t fast_key = 0;
  top_settings settings{};
  std::size_t max_request_bytes = 0;  ///< the largest allocation this top can ever satisfy

  // Statistics readable without the mutex.
  std::atomic<std::size_t> reserved_bytes{0};
  std::atomic<std::size_t> committed_bytes{0};
  std::atomic<std::size_t> peak_committed_bytes{0};
  release_hook_function release_hook = nullptr;  ///< set at construction only
  void* release_hook_context = nullptr;           ///< owned by the state: freed with it by release_hook_cleanup
  void (*release_hook_cleanup)(void* context) noexcept = nullptr;

  std::mutex mutex;
  /// In the order they were made; carving goes on at the last one's frontier (the others are used up).
  std::vector<reservation, pages_allocator<reservation>> reservations;
  /// Free blocks per class, linked through reservation::free_links: those kept committed (retained), and those
  /// given back to the OS. Kept apart so that a request takes retained memory first, wherever it lies.
  std::byte* free_blocks[block_class_count]{};
  std::byte* decommitted_blocks[block_class_count]{};
  std::size_t retained_bytes = 0;  ///< committed bytes in free_blocks
  /// The meta region: its own reservation (not in `reservations`; its committed part counts in reserved_bytes,
  /// so max_reserved_bytes bounds it too), sized for as many metas as max_reserved_bytes has 1 KiB regions,
  /// committed 64 KiB at a time as it fills.
  std::byte* meta_begin = nullptr;
  std::byte* meta_bump = nullptr;
  std::byte* meta_committed_end = nullptr;
  std::byte* meta_end = nullptr;
  child_meta* free_metas = nullptr;  ///< metas given back by exiting threads and by reclaims
  thread_cache* caches = nullptr;
  /// Serves threads past their thread_local teardown (static destructors, atexit handlers, late
  /// thread_local destructors): used under the mutex only, made on first use.
  thread_cache* exit_cache = nullptr;
};

// Out of line (src/perfloc/top_state.cpp): everything that takes the mutex or talks to the OS.
top_state* create_top(const top_settings& settings);
void destroy_top(top_state* top) noexcept;  ///< with live chunks: a leak report (and abort in debug builds)
top_totals collect_totals(top_state* top);
live_view live_chunks(top_state* top);  ///< a snapshot of the children meta list
top_snapshot snapshot(top_state* top);   ///< blocks and live chunks, for pictures
block_header* top_take_block(top_state* top, unsigned size_class);  ///< throws std::bad_alloc
/// A chunk opened by a thread that has no cache any more (at exit), from the top's shared exit cache.
child_meta* open_chunk_at_exit(top_state* top, std::string_view label, std::source_location where);
/// From the top; when it is exhausted, gives this cache's free blocks back to it first and tries again.
block_header* refill_block(thread_cache* cache, unsigned size_class);
/// A new shell for an empty cache: a block from the top with a meta attached.
block_header* refill_shell(thread_cache* cache);
/// Gives `cache` free first regions of the class: a shell, or a new slab of small regions. Throws
/// std::bad_alloc when the top has no block or no metas left; nothing was taken then.
void refill_region(thread_cache* cache, unsigned region_class);
/// Takes back a small region of `cache`'s (released at home, or come home from another thread): lists its
/// slab again, and gives the slab to the top when all its regions are free and another slab of the class is
/// listed. `top_locked`: the caller holds the top's mutex.
void give_region(thread_cache* cache, block_header* region, bool top_locked) noexcept;
/// Gives a shell whose cache is full to the top, its meta back to the cache's free metas.
void spill_shell(thread_cache* cache, block_header* first) noexcept;
/// The first block of a chunk released away from its home: becomes a shell of this thread's cache if it
/// has a meta to spare, otherwise goes to the top.
void adopt_first_block(top_state* top, block_header* first) noexcept;
void top_give_block(top_state* top, block_header* block) noexcept;
/// Gives a block to the top and its pages back to the OS, its header's included, whatever retain_bytes allows.
void top_give_block_to_os(top_state* top, block_header* block) noexcept;
/// The calling thread's cache of `top`, made on first use; nullptr past the thread's thread_local teardown.
thread_cache* bind_cache(top_state* top);
child_meta* refill_metas(thread_cache* cache);  ///< throws std::bad_alloc
void drain_released_elsewhere(thread_cache* cache) noexcept;
/// A chunk released away from its home cache; `with_region`: its first region (a small one) goes home too.
void release_elsewhere(child_meta* meta, bool with_region) noexcept;
bool is_live_meta(const void* meta) noexcept;  ///< debug checks: does a live top own this live meta?

/// default_top()'s state, published once it exists: the process_chunk default constructor's fast path.
inline std::atomic<top_state*> default_top_state{nullptr};

/// The calling thread's last used cache. Constant-initialized and trivial, so that importers reach it
/// directly, without a TLS wrapper call. A top's id is unique among all tops ever created and never 0, so
/// `binding.id == top->id` alone says the binding is this top's (a new top at a dead one's address has a new
/// id): the fast paths compare ids only.
struct cache_binding {
  std::uint64_t id = 0;  ///< 0: no binding
  thread_cache* cache = nullptr;
};
/// top_state::fast_key of a top with a release hook: ids count up from 1 and never reach it.
inline constexpr std::uint64_t no_fast_key = ~std::uint64_t{0};
inline thread_local constinit cache_binding current_binding{};

/// The calling thread's cache of `top`; nullptr past the thread's thread_local teardown (at exit).
inline thread_cache* cache_for(top_state* top) {
  const cache_binding& binding = current_binding;
  if (binding.id == top->id) [[likely]] return binding.cache;  // ids: see cache_binding
  return bind_cache(top);
}

inline block_header* thread_cache::take_block(unsigned size_class) {
  if (size_class >= 1 && size_class < cached_block_classes && free_blocks[size_class]) [[likely]]
    return pop_free(size_class);
  return refill_block(this, size_class);
}

inline void thread_cache::give_block(block_header* block) noexcept {
  track::taken_back(block->payload(), block->bytes - sizeof(block_header));
  const unsigned size_class = block->size_class;
  if (size_class >= 1 && size_class < cached_block_classes && count_of(size_class) < cached_block_limit(size_class))
    return push_free(block, size_class);
  top_give_block(top, block);
}

inline void thread_cache::keep_shell(block_header* first) noexcept {
  track::taken_back(first->payload(), first->bytes - sizeof(block_header));
  push_free(first, 0);
}
inline void thread_cache::give_shell(block_header* first) noexcept {
  if (count_of(0) < cached_block_limit(0)) [[likely]] return keep_shell(first);
  track::taken_back(first->payload(), first->bytes - sizeof(block_header));
  spill_shell(this, first);
}

/// The calling thread's cache, or nullptr when none can be had (a thread past its thread_local teardown, or
/// a meta region that is full): for paths that give memory back and must not throw.
inline thread_cache* cache_if_any(top_state* top) noexcept {
  try {
    return cache_for(top);
  } catch (...) {
    return nullptr;
  }
}

/// Returns a block to the calling thread's cache, or straight to the top when there is no cache.
inline void give_block_anywhere(top_state* top, block_header* block) noexcept {
  if (thread_cache* cache = cache_if_any(top)) {
    cache_section section(cache);
    return cache->give_block(block);
  }
  track::taken_back(block->payload(), block->bytes - sizeof(block_header));
  top_give_block(top, block);
}

/// A block for a chunk of `top`: from the calling thread's cache, or from the top when there is none (at exit).
inline block_header* take_block_anywhere(top_state* top, unsigned size_class) {
  if (thread_cache* cache = cache_for(top)) {
    cache_section section(cache);
    return cache->take_block(size_class);
  }
  return top_take_block(top, size_class);
}

// ---------------------------------------------------------------------------------------------------------
// Process chunks
// ---------------------------------------------------------------------------------------------------------

/// Precedes each object with a non-trivial destructor: the chunk's cleanup list, run newest first at release.
struct cleanup_record {
  cleanup_record* next;
  cleanup_record* prev;
  void (*destroy)(void* object) noexcept;
};

/// The 8 bytes right before every object `make` returns: its chunk's meta, and three flag bits.
struct object_header {
  static constexpr std::uintptr_t destroyed_bit = 1;    ///< by perfloc::destroy
  static constexpr std::uintptr_t has_cleanup_bit = 2;
  /// Its destructor was run (or is running) by the chunk's release: a destroy() from another destructor
  /// during the release then does nothing, whichever of the two objects is older.
  static constexpr std::uintptr_t released_bit = 4;
  static constexpr std::uintptr_t flag_bits = 63;  // child_meta is 64-aligned
  std::uintptr_t word;

  child_meta* meta() const noexcept { return reinterpret_cast<child_meta*>(word & ~flag_bits); }
};
static_assert(sizeof(object_header) == 8);

/// Where `make<T>` puts the header (and cleanup record) and the object inside one allocation.
template <class T>
struct object_layout {
  static constexpr bool has_cleanup = !std::is_trivially_destructible_v<T>;
  static constexpr std::size_t alignment = alignof(T) > min_alignment ? alignof(T) : min_alignment;
  static constexpr std::size_t prefix =
      round_up(sizeof(object_header) + (has_cleanup ? sizeof(cleanup_record) : 0), alignof(T) > 8 ? alignof(T) : 8);
  static_assert(sizeof(T) <= ~std::size_t{0} / 2 - prefix, "make<T>: T is larger than any top chunk can give");
  static constexpr std::size_t request = prefix + sizeof(T);  ///< what make<T> allocates

  static object_header* header_of(void* object) noexcept { return static_cast<object_header*>(object) - 1; }
  static cleanup_record* record_of(void* object) noexcept {
    return reinterpret_cast<cleanup_record*>(header_of(object)) - 1;
  }
  static std::byte* start_of(void* object) noexcept { return static_cast<std::byte*>(object) - prefix; }
};

/// Free memory inside a chunk, kept for reuse ("spans"; the scheme is described in src/perfloc/process.cpp).
/// A span's tag sits at its end: the link to the next span of its list in the last 8 bytes (bit 0 set for a
/// 16-byte span), its size in the 8 before when it is 32 bytes or more. The header of an object freed there
/// (the 8 bytes before the object, which is at least 1 byte, in a footprint that is a multiple of 16) ends
/// before those last 16 bytes (8 for a 16-byte span), so a second destroy still sees the destroyed bit.
/// Classes: exact 16-byte steps up to 256 bytes, then four per power of two, the last one open-ended.
inline constexpr unsigned exact_span_classes = 16;  ///< 16, 32, ..., 256 bytes
inline constexpr unsigned span_class_count = 64;    ///< one bit each in chunk_header::span_mask
inline constexpr std::size_t span_lists_bytes = span_class_count * sizeof(std::byte*);  ///< their heads

/// The class a span of `span_bytes` (a multiple of 16) is filed in: every span in class c is at least
/// span_class_floor(c) bytes, and smaller than the next class's floor.
constexpr unsigned span_class_of(std::size_t span_bytes) noexcept {
  if (span_bytes <= 256) return static_cast<unsigned>(span_bytes / 16 - 1);
  const unsigned log2 = static_cast<unsigned>(std::bit_width(span_bytes) - 1);  // 8 ..
  const unsigned quarter = static_cast<unsigned>(span_bytes >> (log2 - 2)) & 3u;
  const unsigned span_class = exact_span_classes + (log2 - 8) * 4 + quarter;
  return span_class < span_class_count ? span_class : span_class_count - 1;
}
constexpr std::size_t span_class_floor(unsigned span_class) noexcept {
  if (span_class < exact_span_classes) return (span_class + 1) * std::size_t{16};
  const unsigned above = span_class - exact_span_classes;
  return std::size_t{4 + above % 4} << (above / 4 + 6);
}
static_assert(span_class_of(256) == 15 && span_class_of(272) == 16 && span_class_floor(16) == 256 &&
              span_class_of(520) == 20 && span_class_floor(20) == 512 && span_class_floor(21) == 640);
static_assert(span_class_of(span_class_floor(span_class_count - 1)) == span_class_count - 1 &&
              span_class_floor(span_class_count - 1) > (std::size_t{512} << 10));

/// A block holding one large allocation, which may use all of it (a 4 MiB buffer fits a 4 MiB block): its
/// record lives in the chunk's own memory instead of in the block.
struct own_block {
  std::byte* start;     ///< the block
  std::byte* payload;   ///< the allocation in it
  own_block* prev;
  own_block* next;
  std::atomic<std::uint64_t>* map_entry;
  unsigned size_class;
};

/// The header of a process chunk, in its first block right after the block_header. (The allocation cursor
/// is in the chunk's child_meta.)
struct chunk_header {
  // One cache line. The fields from next_block_class on are written by every open; the six from `end` to
  // `span_lists` are as an open wants them in a free region (the end of the first region, then nulls), so
  // an open leaves them as they are (empty_for_open; the release's fast path is taken only when they are).
  std::byte* end;                 ///< end of the current block
  cleanup_record* cleanups;       ///< objects whose destructors run at release, newest first
  block_header* more_blocks;      ///< bump blocks after the first, newest first
  own_block* own_blocks;          ///< blocks of single large allocations
  std::uint64_t span_mask;        ///< bit c set: span_lists[c] is non-empty (the lists are read under it only)
  /// The heads of the span lists (each points at a span's end, its tag just below): 512 bytes bumped from the
  /// chunk at its first free (ensure_span_lists), so that a small first region does not carry them.
  std::byte** span_lists;
  std::uint8_t next_block_class;
  bool resource_made;
  std::uint8_t site;  ///< the call site that opened it (thread_cache::site_class)
  // Set once per region.
  std::uint8_t region_class;
  /// The low 32 bits of first_free + shrink_below_of(region_class): a chunk whose bump ended below it would
  /// have fit the next smaller region. A bump in the first region is less than 64 KiB away from it, so the
  /// release's fast path tells below from not below by the sign of the 32-bit difference of the low halves
  /// (exact modulo 2^32, wherever 4 GiB boundaries fall): one subtraction, no load of first_free.
  std::uint32_t learn_below;
  child_meta* meta;
  top_state* top;
  /// Where allocation starts in the first region: after this header; in a whole block, plus a colour of 0..15
  /// cache lines chosen once per shell, so that the first objects of chunks alive together (coroutine frames,
  /// say) do not all fall in the same cache sets, as they would at one offset in 64 KiB-aligned blocks.
  std::byte* first_free;
  std::size_t freed_since_merge;  ///< bytes kept as spans since the last merge_spans (valid under span_mask)
  bool allocated_after_lists;  ///< an allocation came after span_lists were made (read once they are)
  /// Once span_lists are made: the furthest the bump was from first_free before it stepped back (a LIFO free, a
  /// merge), which what is in use at the release does not show (first_region_extent). Only read of a chunk that
  /// stayed in its first region.
  std::uint32_t stepped_back_from;
  /// The std::pmr view of this chunk, made on first use. Builds that check handles make each chunk of a
  /// shell's its resource in the next slot, so that a pmr container left from an earlier chunk does not find
  /// the new chunk's resource at its address (it is caught unless four chunks later made theirs there).
  alignas(16) std::byte resource_storage[PERFLOC_CHECK_HANDLES ? 4 : 1][16];

  block_header* first_block() noexcept { return reinterpret_cast<block_header*>(this) - 1; }
  /// What a free region's header holds, which open_region does not write: the current block is the first
  /// region, no destructors to run, no more blocks, no spans. Where a region is made (carve_slab,
  /// attach_meta: after its block_header) and in release_chunk_slow.
  void empty_for_open() noexcept {
    end = first_block()->end();
    cleanups = nullptr;
    more_blocks = nullptr;
    own_blocks = nullptr;
    span_mask = 0;
    span_lists = nullptr;
  }

  void* allocate_slow(std::size_t bytes, std::size_t alignment);  // src/perfloc/process.cpp
  /// Back to the fast path: fast_limit at end - 16, or at bump when the block is that full.
  void resume_bumping() noexcept {
    std::byte* bump = child_meta::load(meta->bump);
    child_meta::store(meta->fast_limit, end - min_alignment > bump ? end - min_alignment : bump);
  }
  bool free_own_block(std::byte* p, std::size_t n) noexcept;  ///< false if p is not in an own block
  void keep_span(std::byte* start, std::size_t n, bool freed) noexcept;  ///< freed: by deallocate
  bool ensure_span_lists() noexcept;
  /// The bump steps back from `bump`: with span lists, its site must still learn how far it went.
  void note_step_back(const std::byte* bump) noexcept {
    if (!span_lists) return;
    const auto extent = static_cast<std::uint32_t>(std::bit_cast<std::uintptr_t>(bump) -
                                                   std::bit_cast<std::uintptr_t>(first_free));
    if (extent > stepped_back_from) stepped_back_from = extent;
  }
  void run_cleanups() noexcept;
  void give_back_blocks(bool to_os) noexcept;  ///< to_os: its bump blocks go back to the OS (process.cpp)
  void file_span(std::byte* start, std::size_t n) noexcept;
  void* take_span(std::size_t n) noexcept;
  std::byte* take_span(std::size_t n, std::size_t alignment) noexcept;
  void merge_spans() noexcept;
  void check_freed_range(const std::byte* start, std::size_t n) noexcept;  // debug builds
  void grow(std::size_t min_bytes);

  void* allocate_own_block(std::size_t bytes, std::size_t n, std::size_t alignment);

  void push_cleanup(cleanup_record* record) noexcept {
    record->prev = nullptr;
    record->next = cleanups;
    if (cleanups) cleanups->prev = record;
    cleanups = record;
  }
  void unlink_cleanup(cleanup_record* record) noexcept {
    if (record->prev) record->prev->next = record->next;
    else cleanups = record->next;
    if (record->next) record->next->prev = record->prev;
  }
};

/// Allocation starts right after the header (16-aligned, as every bump): in a small region every byte counts.
inline constexpr std::size_t chunk_header_bytes = round_up(sizeof(chunk_header), min_alignment);
static_assert(chunk_header_bytes == (PERFLOC_CHECK_HANDLES ? 160 : 112));  // the README's figure (release)

/// What a first region of the class leaves for allocation (a whole block: without its colour).
constexpr std::size_t region_payload_of(unsigned region_class) noexcept {
  return region_bytes_of(region_class) - sizeof(block_header) - chunk_header_bytes -
         (region_class == whole_block_region ? 15 * 64 : 0);
}
/// What a chunk in a region of the class would have fit in a smaller one: a chunk that used less.
constexpr std::uint32_t shrink_below_of(unsigned region_class) noexcept {
  return region_class ? static_cast<std::uint32_t>(region_payload_of(region_class - 1) + 1) : 0;
}
/// chunk_header::learn_below of a region of the class whose allocation starts at `first_free`.
inline std::uint32_t learn_below_of(unsigned region_class, const std::byte* first_free) noexcept {
  return static_cast<std::uint32_t>(std::bit_cast<std::uintptr_t>(first_free) + shrink_below_of(region_class));
}
/// The smallest region class whose regions hold `used` bytes.
constexpr unsigned region_class_for(std::size_t used) noexcept {
  unsigned c = 0;
  while (c < whole_block_region && region_payload_of(c) < used) ++c;
  return c;
}
static_assert(region_class_for(0) == 0 && region_class_for(region_payload_of(2)) == 2 &&
              region_class_for(region_payload_of(2) + 1) == 3 && region_class_for(~std::size_t{0}) == whole_block_region);

/// The entry of thread_cache::site_class for chunks opened at `where`.
inline unsigned site_of(const std::source_location& where) noexcept {
  return static_cast<unsigned>((std::bit_cast<std::uintptr_t>(where) * 0x9E37'79B9'7F4A'7C15ull) >> 60);
}
static_assert(thread_cache::site_count == 16);

[[gnu::always_inline]] inline block_header* thread_cache::take_region(unsigned region_class, unsigned site) noexcept {
  if (region_class >= whole_block_region) {
    if (!free_blocks[0]) return nullptr;
    block_header* block = pop_free(0);
    if (region_class == new_site) [[unlikely]] {  // the site's first chunk: its release must teach the site
      site_class[site] = new_site_region;
      // Below every bump in the block: the release takes the slow path, which learns and sets it back.
      auto* chunk = reinterpret_cast<chunk_header*>(block->payload());
      track::internal_access(chunk, sizeof(chunk_header));
      chunk->learn_below = static_cast<std::uint32_t>(std::bit_cast<std::uintptr_t>(block->end()));
    }
    return block;
  }
  slab_header* slab = slabs[region_class];
  if (!slab) return nullptr;
  block_header* region = slab->free_regions;
  slab->free_regions = region->next;
  const unsigned free_count = slab->free_count;  // read once: the stores below may alias it
  slab->free_count = static_cast<std::uint16_t>(free_count - 1);
  if (free_count == slab->region_count)
    empty_slabs.store(empty_slabs.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  if (free_count == 1) {  // the slab leaves the list, of which it is the first
    auto* next = reinterpret_cast<slab_header*>(slab->block.next);
    slabs[region_class] = next;
    if (next) next->block.prev = nullptr;
  }
  return region;
}

inline bool thread_cache::can_keep_small_region(const slab_header* slab, unsigned free_count,
                                                 unsigned region_count) const noexcept {
  // Listed, and not about to have all its regions free unless it is the only slab listed (kept then): a
  // thread that opens and releases one chunk at a time stays here.
  return free_count && (free_count + 1 != region_count || (slabs[slab->region_class] == slab && !slab->block.next));
}
inline bool thread_cache::can_keep_small_region(block_header* region) const noexcept {
  const slab_header* slab = slab_of(region);
  return can_keep_small_region(slab, slab->free_count, slab->region_count);
}
inline void thread_cache::keep_small_region(block_header* region, slab_header* slab, unsigned free_count,
                                            unsigned region_count) noexcept {
  track::taken_back(region->payload(), region->bytes - sizeof(block_header));
  region->next = slab->free_regions;
  slab->free_regions = region;
  slab->free_count = static_cast<std::uint16_t>(free_count + 1);
  if (free_count + 1 == region_count)
    empty_slabs.store(empty_slabs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}
inline void thread_cache::keep_small_region(block_header* region) noexcept {
  slab_header* slab = slab_of(region);
  keep_small_region(region, slab, slab->free_count, slab->region_count);
}

inline void thread_cache::learn(const chunk_header* chunk, std::size_t used, bool outgrew) noexcept {
  const unsigned site = chunk->site;
  // Measured against its region, or the site's when that is smaller: a site's first chunk, in a whole block,
  // while the next ones get new_site_region (new_site itself, in the exit cache, is above every class).
  const unsigned reference = site_class[site] < chunk->region_class ? site_class[site] : chunk->region_class;
  if (outgrew) {  // it went on in blocks of its own: the site moves up, one class at least
    // Unless it is the first since the site moved to the region it outgrew (see site_outgrown).
    if (chunk->region_class == site_class[site] && !site_outgrown[site]) {
      site_outgrown[site] = true;
      return;
    }
    const unsigned fits = region_class_for(used), next = chunk->region_class + 1u;
    const unsigned up = next < whole_block_region ? next : whole_block_region;
    site_class[site] = static_cast<std::uint8_t>(fits > up ? fits : up);
  } else if (used < shrink_below_of(reference)) {  // it would have fit a smaller region
    if (used > site_most_used[site]) site_most_used[site] = static_cast<std::uint32_t>(used);
    if (++site_votes[site] < site_votes_to_shrink) return;
    site_class[site] = static_cast<std::uint8_t>(region_class_for(site_most_used[site]));
  } else if (used > region_payload_of(reference)) {  // it would not have fit the site's region
    site_class[site] = static_cast<std::uint8_t>(region_class_for(used));
  } else {
    return;
  }
  site_votes[site] = 0;
  site_most_used[site] = 0;
  site_outgrown[site] = false;
}



/// The fast path: a pointer bump. Everything else (a full block, a freed span waiting for reuse, an
/// alignment above 16, allocate(0)) goes to allocate_slow. The test is `bytes - 1 < fast_limit - bump`
/// (unsigned): false for 0, false for everything when fast_limit == bump, and otherwise, with fast_limit
/// at end - 16, bytes <= end - 16 - bump, which keeps the new bump (16-aligned, as end is) at or below
/// fast_limit. That invariant, fast_limit >= bump, is what keeps the subtraction from wrapping; the slow
/// path keeps it with resume_bumping(). Two instructions fewer than testing 0 and the room apart.
///
/// The prefetch of the next allocation's first line pays for the cursor's store: where the objects written
/// after allocation miss the first-level cache (K = 4096 in bench/workload.hpp's per_scope), a store to the
/// meta's line between two stores to missing lines halved the throughput on an Intel Xeon (3.0 ns per
/// allocation against the bump pointer's 1.4; a bump pointer with its cursor in a register but stored to
/// memory at each allocation measured the same 3.0, with the prefetch 1.4). It is a hint (no fault, no
/// access for sanitizers), one instruction, within the block (next <= fast_limit).
inline void* child_meta::allocate(std::size_t bytes, std::size_t alignment) {
  std::byte* p = load(bump);
  const std::size_t last = bytes - 1;
  if (is_small_power_of_two(alignment) && last < static_cast<std::size_t>(load(fast_limit) - p)) [[likely]] {
    std::byte* next = p + (last | (min_alignment - 1)) + 1;
    store(bump, next);
    __builtin_prefetch(next, 1, 3);
    track::handed_out(p, bytes);
    return p;
  }
  return chunk->allocate_slow(bytes, alignment);
}

/// Gives [p, p + footprint(bytes)) back: the bump steps back when it is the latest allocation, otherwise
/// the span is kept for reuse (or its own block returns to the top).
inline void child_meta::deallocate(void* p, std::size_t bytes, std::size_t alignment) noexcept {
  const std::size_t n = footprint(bytes);
  auto* start = static_cast<std::byte*>(p);
  if (may_need_own_block(n, alignment) && chunk->free_own_block(start, n)) return;
  track::taken_back(start, n);
  std::byte* now = load(bump);
  const bool latest = start + n == now;
  if (latest && load(fast_limit) == now) store(fast_limit, start);  // stay on the slow path
  if (latest) chunk->note_step_back(now);
  give_back(n, latest ? start : now);  // one change for readers: settled, uncounted, stepped back
  if (!latest) chunk->keep_span(start, n, true);
}

void copy_label(child_meta* meta, std::string_view label) noexcept;
void note_open_time(child_meta* meta) noexcept;
void call_release_hook(chunk_header* chunk) noexcept;

/// Opens a chunk in `chunk`, the header of a free first region of `cache` (`meta` attached). `general` adds what
/// the fast path leaves to the slow one: a label, and the open time for a release hook. `parked`: the region is
/// the one the cache parked (thread_cache::parked), whose meta is still in the live list and whose figures
/// held_bytes and blocks are the region's already (its release took the fast path: it never grew).
template <bool general, bool parked = false>
[[gnu::always_inline]] inline child_meta* open_region(thread_cache* cache, top_state* top, chunk_header* chunk,
                                                      child_meta* meta, unsigned site, std::string_view label,
                                                      const std::source_location& where) noexcept {
  const child_meta::change_scope change{meta};  // a walker still reading the meta's last chunk retries
  std::byte* first_free = chunk->first_free;
  const std::size_t region_bytes = parked ? 0 : chunk->first_block()->bytes;  // read once: the stores below may alias it
  // chunk->end is the region's end already (empty_for_open, or a release on the fast path).
  std::byte* const end = parked ? chunk->end : reinterpret_cast<std::byte*>(chunk->first_block()) + region_bytes;
  child_meta::store(meta->bump, first_free);
  child_meta::store(meta->fast_limit, end - min_alignment);
  child_meta::store(meta->counted_to, first_free);
  // end, cleanups, more_blocks, own_blocks, span_mask and span_lists are as wanted already (empty_for_open).
  chunk->next_block_class = 1;
  chunk->resource_made = false;
  chunk->site = static_cast<std::uint8_t>(site);

  meta->counted_bytes.store(0, std::memory_order_relaxed);
  meta->peak_in_use_bytes.store(0, std::memory_order_relaxed);
  meta->objects_made.store(0, std::memory_order_relaxed);
  meta->objects_destroyed.store(0, std::memory_order_relaxed);
  if (!parked) {
    meta->held_bytes.store(region_bytes, std::memory_order_relaxed);
    meta->blocks.store(1, std::memory_order_relaxed);
  }
  meta->state.store(meta_state::live, std::memory_order_relaxed);
  meta->opened_at.store(std::bit_cast<std::uintptr_t>(where), std::memory_order_relaxed);
  if (general && top->release_hook) note_open_time(meta);
  if (general && !label.empty()) copy_label(meta, label);
  else std::atomic_ref<char>(meta->label[0]).store('\0', std::memory_order_relaxed);
  // Last: a walker that finds the meta finds it filled in. A parked meta is in the list already, and moves to
  // its front only when a chunk opened since is before it (the list stays newest first, for check_outlives).
  if (!parked) {
    cache->link(meta);
  } else if (cache->live.next.load(std::memory_order_relaxed) != meta) [[unlikely]] {
    cache->unlink(meta);
    cache->link(meta);
  }
  return meta;
}
/// The same in `first`, a free first region of `cache` taken from its shells or slabs.
template <bool general>
[[gnu::always_inline]] inline child_meta* open_region(thread_cache* cache, top_state* top, block_header* first,
                                                      unsigned site, std::string_view label,
                                                      const std::source_location& where) noexcept {
  auto* chunk = reinterpret_cast<chunk_header*>(first->payload());
  track::internal_access(chunk, sizeof(chunk_header));
  // The region's meta: meta->chunk == chunk, meta->home == cache.
  return open_region<general>(cache, top, chunk, chunk->meta, site, label, where);
}
/// The same in the region of `meta`, which the cache had parked (thread_cache::take_parked).
[[gnu::always_inline]] inline child_meta* open_parked(thread_cache* cache, top_state* top, child_meta* meta,
                                                      unsigned site, const std::source_location& where) noexcept {
  chunk_header* chunk = meta->chunk;
  track::internal_access(chunk, sizeof(chunk_header));  // its release poisoned the region, header included
  return open_region<false, true>(cache, top, chunk, meta, site, {}, where);
}

// The general halves of open_chunk and release_chunk (src/perfloc/process.cpp).
child_meta* open_chunk_slow(top_state* top, std::string_view label, std::source_location where);
void release_chunk_slow(child_meta* meta) noexcept;

/// open_chunk's fast path when nothing of the class is parked: a region from the cache's shells or slabs. Apart,
/// so that open_chunk saves no registers for it (a tail call, its arguments in open_chunk's registers). Inside
/// enter_cache; leaves it.
[[gnu::noinline, gnu::returns_nonnull]] inline child_meta* open_chunk_from_regions(top_state* top,
                                                                                   std::source_location where,
                                                                                   thread_cache* cache, unsigned site) {
  block_header* first = cache->take_region(cache->site_class[site], site);
  if (!first) [[unlikely]] {
    leave_cache(cache);
    return open_chunk_slow(top, {}, where);
  }
  child_meta* meta = open_region<false>(cache, top, first, site, {}, where);
  leave_cache(cache);
  return meta;
}

/// Opens a process chunk without a label from the calling thread's cache: no lock unless the cache must be
/// refilled. The common case (a bound cache that parked a region of the class its site needs, no release hook)
/// calls nothing, so it saves no registers; a region from the shells or slabs is a tail call. Never inlined: the handle that receives the result then stays in a
/// register at the call site. Returns the chunk's meta (never null): the handle allocates through it.
[[gnu::noinline, gnu::returns_nonnull]] inline child_meta* open_chunk(top_state* top, std::source_location where) {
  const cache_binding& binding = current_binding;
  thread_cache* cache = binding.cache;
  // One compare: a binding of this top (see cache_binding), and no release hook (top_state::fast_key).
  if (binding.id != top->fast_key) [[unlikely]] return open_chunk_slow(top, {}, where);
  // enter_cache, but a pending reclaim is waited for on the slow path: the fast path calls nothing, so it
  // saves no registers.
  cache->busy.store(true, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  const unsigned site = site_of(where);
  const unsigned region_class = cache->site_class[site];
  child_meta* meta = nullptr;
  // One load: a pending reclaim, or metas released elsewhere to take back first.
  if (cache->attention.load(std::memory_order_acquire)) [[unlikely]] {
    leave_cache(cache);
    return open_chunk_slow(top, {}, where);
  }
  // The parked chunk first: its meta is one load from the cache, where a slab's region is a chain of dependent
  // loads (the slab, its free stack, the region's header), and the live list is left as it is.
  if (!cache->take_parked(region_class, meta)) [[unlikely]] return open_chunk_from_regions(top, where, cache, site);
  meta = open_parked(cache, top, meta, site, where);
  leave_cache(cache);
  return meta;
}
/// The same with a label, which takes the slow path when there is one.
inline child_meta* open_chunk(top_state* top, std::string_view label, std::source_location where) {
  return label.empty() ? open_chunk(top, where) : open_chunk_slow(top, label, where);
}

/// A release on the chunk's home thread, before its first region is free again (its meta attached).
[[gnu::always_inline]] inline void leave_live_list(thread_cache* cache, child_meta* meta) noexcept {
  end_generation(meta);  // after the destructors and the hook, which may still use the chunk's handles
  cache->unlink(meta);
  meta->state.store(meta_state::free, std::memory_order_relaxed);
}

/// Runs the destructors of what was made in the chunk, gives its blocks and meta back: O(blocks).
/// The common case (released on the thread that opened it, in its first region, nothing to destroy, no hook,
/// nothing for its site to learn) pushes the region back and calls nothing, so it saves no registers: every
/// other case is a tail call.
[[gnu::noinline]] inline void release_chunk(child_meta* meta) noexcept {
  chunk_header* chunk = meta->chunk;
  const cache_binding& binding = current_binding;
  thread_cache* cache = binding.cache;
  // Without span lists, what its site learns (release_chunk_slow) is at least up to the bump: at or above
  // learn_below, there is nothing to learn. With them, the slow path works it out.
  const auto bump_low = static_cast<std::uint32_t>(std::bit_cast<std::uintptr_t>(child_meta::load(meta->bump)));
  // Nothing to destroy, no more blocks, no span lists: one test of the four words or'ed together.
  const std::uintptr_t more = reinterpret_cast<std::uintptr_t>(chunk->cleanups) |
                              reinterpret_cast<std::uintptr_t>(chunk->more_blocks) |
                              reinterpret_cast<std::uintptr_t>(chunk->own_blocks) |
                              reinterpret_cast<std::uintptr_t>(chunk->span_lists);
  // The meta's home cache is this thread's bound cache, and the binding is of the home's top (see
  // cache_binding; the bound cache is read only once it is the home, so valid), which has no release hook
  // (top_state::fast_key, copied into each of its caches).
  if (more || cache != meta->home || binding.id != cache->fast_key ||
      static_cast<std::int32_t>(bump_low - chunk->learn_below) < 0) [[unlikely]]
    return release_chunk_slow(meta);  // learns what the chunk used
  // A small region is parked when the slot is empty, for the next open of its class: no slab, no live list,
  // and so no busy flag either (see thread_cache::parked). The release order: a reclaimer that takes the slot
  // sees the meta free and the region as the chunk left it.
  const unsigned region_class = chunk->region_class;
  if (region_class != whole_block_region &&
      cache->parked.load(std::memory_order_relaxed) == thread_cache::nothing_parked) [[likely]] {
    end_generation(meta);
    meta->state.store(meta_state::free, std::memory_order_relaxed);
    track::taken_back(chunk->first_block()->payload(), chunk->first_block()->bytes - sizeof(block_header));
    cache->parked.store(reinterpret_cast<std::uintptr_t>(meta) + region_class, std::memory_order_release);
    return;
  }
  cache->busy.store(true, std::memory_order_relaxed);  // enter_cache, waiting on the slow path (as open_chunk)
  std::atomic_signal_fence(std::memory_order_seq_cst);
  // Before the slab is read: a reclaimer may be editing it (it puts the parked region back on its slab).
  if (cache->reclaim_pending(std::memory_order_acquire)) [[unlikely]] {
    leave_cache(cache);
    return release_chunk_slow(meta);
  }
  block_header* first = chunk->first_block();
  const bool whole = region_class == whole_block_region;
  // A small region's slab and counts, read once (unused for a whole block).
  slab_header* const slab = slab_of(first);
  const unsigned free_count = whole ? 0 : slab->free_count;
  const unsigned region_count = whole ? 0 : slab->region_count;
  if (whole ? cache->count_of(0) >= cached_block_limit(0)
            : !cache->can_keep_small_region(slab, free_count, region_count)) [[unlikely]] {
    leave_cache(cache);
    return release_chunk_slow(meta);
  }
  leave_live_list(cache, meta);
  if (whole) cache->keep_shell(first);  // the cache has room: checked above
  else cache->keep_small_region(first, slab, free_count, region_count);
  leave_cache(cache);
}

// Debug-build checks (src/perfloc/process.cpp): print a clear message and abort.
[[noreturn]] void misuse(const char* message, const void* where = nullptr) noexcept;
void check_destroy(const object_header* header, const void* object) noexcept;
/// Stops when `object` lies in a chunk opened on this thread after `owner` (so released before it).
void check_outlives(chunk_header* owner, const void* object) noexcept;
/// Whether `p` lies in one of the chunk's blocks (its own blocks included): O(blocks). For debug checks
/// (check_outlives; perfloc.asio's check of results that point into the chunk being released).
bool chunk_contains(chunk_header* chunk, const void* p) noexcept;

// ---------------------------------------------------------------------------------------------------------
// The std::pmr view
// ---------------------------------------------------------------------------------------------------------

/// A chunk seen as a std::pmr::memory_resource. Made in the chunk header on first use, so that the pointer
/// stays valid while the process_chunk handle moves. Its virtual functions are out of line in
/// src/perfloc/process.cpp, which is where its vtable is emitted.
class chunk_resource final : public std::pmr::memory_resource {
 public:
  explicit chunk_resource(child_meta* meta) noexcept : chunk_(meta) {}

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override;

  chunk_ref chunk_;  ///< checked on every call, in builds that check handles
};
static_assert(sizeof(chunk_resource) <= sizeof(chunk_header::resource_storage[0]));

inline std::pmr::memory_resource* resource_of(chunk_header* chunk) noexcept {
  constexpr std::size_t slots = std::extent_v<decltype(chunk_header::resource_storage)>;
  std::size_t index = 0;
  if constexpr (slots > 1) index = chunk->meta->generation.load(std::memory_order_relaxed) % slots;
  std::byte* slot = chunk->resource_storage[index];
  if (!chunk->resource_made) {
    ::new (static_cast<void*>(slot)) chunk_resource(chunk->meta);
    chunk->resource_made = true;
  }
  return std::launder(reinterpret_cast<chunk_resource*>(slot));
}

}  // namespace perfloc::detail
