// src/perfloc/top_state.cpp — the top chunk's slow paths: reservations, blocks, the meta region, thread caches.
//
// Everything here runs under the top's mutex, and only when a thread cache is empty or full, a chunk needs a
// big block, or somebody asks for statistics. Blocks are 64 KiB << class, each aligned to its size within its
// reservation, so that a free block and its buddy (the other half of the block twice its size) merge again
// when both are free at the top. A request is served from its class's free list, else split from a bigger
// free block, else carved from the current reservation's frontier (committing it), else from a new
// reservation — each at least as large as everything reserved so far, until `max_reserved_bytes`, so their
// number stays small; the tail of the old one is cut into free blocks first, so no reserved byte is lost.
// Only when all of that fails does a request take back what thread caches hold (reclaim_caches below).
//
// Free committed memory — the top's free blocks and the threads' caches together — stays within
// `retain_bytes`: above it, a block given back goes back to the OS whole, its header page included (the top
// keeps its free lists in a side table, never in the free blocks). Thread caches are bounded
// (thread_cache_bound_bytes) and are counted first: a top whose caches fill the budget keeps nothing more.
//
// Small first regions come from slabs: a 64 KiB block a thread cache cuts into regions of one class as they are
// needed, 32 KiB of it at a time (carve_slab), each with a meta attached for the slab's life; the slab goes back
// to the top when all its regions are free (give_region), except one per class that the cache keeps, counted
// in the budget like its free blocks, and those it keeps as free 64 KiB blocks while it has room for them:
// carve_slab takes those first. The region a thread's last release parked (thread_cache::parked) keeps its slab
// from the top until the thread opens a chunk of its class or the cache is flushed: counted in the budget too.
//
// Thread caches live in the meta region, are bound to a thread on first use and orphaned when it exits;
// a new thread adopts an orphan before a new cache is made, so their number stays that of the threads.
// A thread past its thread_local teardown has no cache: it opens chunks through the top's exit cache, under
// the mutex (open_chunk_at_exit).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

#include "os.hpp"
#include "perfloc/detail/arena.hpp"

namespace perfloc::detail {
namespace {

// ----------------------------------------------------------------------------------------------------------
// The registry of live tops: lets an exiting thread know whether the top its cache belongs to still exists.
// ----------------------------------------------------------------------------------------------------------

std::mutex registry_mutex;
std::vector<top_state*>& live_tops() {
  static auto* tops = new std::vector<top_state*>();  // never destroyed: threads may exit after main
  return *tops;
}
std::atomic<std::uint64_t> next_top_id{1};

bool is_registered(const top_state* top, std::uint64_t id) {
  for (top_state* live : live_tops())
    if (live == top && live->id == id) return true;
  return false;
}

void note_committed(top_state* top, std::ptrdiff_t delta) {
  const std::size_t now = top->committed_bytes.load(std::memory_order_relaxed) + static_cast<std::size_t>(delta);
  top->committed_bytes.store(now, std::memory_order_relaxed);
  if (now > top->peak_committed_bytes.load(std::memory_order_relaxed))
    top->peak_committed_bytes.store(now, std::memory_order_relaxed);
}

constexpr std::size_t header_bytes = granule_bytes;  ///< the top_state, at the start of reservation 0
static_assert(sizeof(top_state) <= header_bytes);

// ----------------------------------------------------------------------------------------------------------
// Reservations and blocks (callers hold the mutex)
// ----------------------------------------------------------------------------------------------------------
//
// Below a reservation's frontier everything is mapped read-write (mprotect), whole blocks at a time, so that
// the kernel merges them into few mappings (vm.max_map_count); decommitting is MADV_DONTNEED, which leaves
// the mapping as it is. A block free at the top is either retained (committed whole, within retain_bytes) or
// given back to the OS whole (decommitted: no page of it backed, its header's included). So the top never
// reads a free block:
// its free lists are linked through a side table with one entry per granule (reservation::free_links), and
// its size class and state are in the block map word, whose owner is one of the two markers below.

std::size_t block_map_bytes(std::size_t reservation_bytes) {
  return round_up(reservation_bytes / granule_bytes * sizeof(std::uint64_t), page_bytes);
}
std::size_t free_links_bytes(std::size_t reservation_bytes) {
  return round_up(reservation_bytes / granule_bytes * sizeof(reservation::free_link), page_bytes);
}

/// Reserves `wanted` bytes, or less down to `needed` when the OS refuses (an RLIMIT_AS, a small machine),
/// with its block map and free links. base is nullptr when even `needed` is refused.
reservation reserve_at_least(std::size_t wanted, std::size_t needed) {
  for (std::size_t bytes = wanted;; bytes = std::max(round_up(bytes / 2, granule_bytes), needed)) {
    if (void* p = os::reserve(bytes)) {
      if (void* map = os::map_table(block_map_bytes(bytes))) {
        if (void* links = os::map_table(free_links_bytes(bytes)))
          return {static_cast<std::byte*>(p), bytes, static_cast<std::byte*>(p),
                  static_cast<std::atomic<std::uint64_t>*>(map), static_cast<reservation::free_link*>(links)};
        os::release(map, block_map_bytes(bytes));
      }
      os::release(p, bytes);
    }
    if (bytes == needed) return {};
  }
}

void release_reservation(const reservation& r) {
  track::internal_access(r.base, static_cast<std::size_t>(r.frontier - r.base));
  os::release(r.base, r.bytes);
  os::release(r.block_map, block_map_bytes(r.bytes));
  os::release(r.free_links, free_links_bytes(r.bytes));
}

/// The owners a block map entry names while the block waits in the top's free lists (a buddy may merge with
/// it): committed whole, or given back to the OS whole. 64-aligned like a child_meta, and never one.
alignas(64) const char free_at_top[64] = {};
alignas(64) const char decommitted_at_top[64] = {};
/// The owner a block map entry names for a slab (a block a thread cache cut into small regions).
alignas(64) const char slab_in_cache[64] = {};

reservation* reservation_of(top_state* top, const void* p) {
  for (reservation& r : top->reservations)
    if (p >= r.base && p < r.base + r.bytes) return &r;
  return nullptr;
}

/// Where the top keeps what it knows of the block at `at`: its block map word and its free link.
struct block_place {
  reservation* r;
  std::size_t granule;
  std::atomic<std::uint64_t>& word() const { return r->block_map[granule]; }
  reservation::free_link& link() const { return r->free_links[granule]; }
};
block_place place_of(top_state* top, const std::byte* at) {
  reservation* r = reservation_of(top, at);
  return {r, static_cast<std::size_t>(at - r->base) / granule_bytes};
}

void decommit(top_state* top, std::byte* at, std::size_t bytes) {
  os::decommit(at, bytes);
  note_committed(top, -static_cast<std::ptrdiff_t>(bytes));
}

std::byte*& free_list(top_state* top, unsigned size_class, bool committed) {
  return committed ? top->free_blocks[size_class] : top->decommitted_blocks[size_class];
}

/// The top's free lists are doubly linked, so that a block can leave its list when its buddy merges with it.
void push_free(top_state* top, std::byte* at, unsigned size_class, bool committed) {
  const block_place place = place_of(top, at);
  if (committed) top->retained_bytes += block_bytes_of(size_class);
  std::byte*& head = free_list(top, size_class, committed);
  place.link() = {nullptr, head};
  if (head) place_of(top, head).link().prev = at;
  head = at;
  place.word().store(block_map_word(committed ? free_at_top : decommitted_at_top, size_class),
                     std::memory_order_relaxed);
}

/// Takes the block at `at` out of the free lists; returns whether it is committed (retained).
bool remove_free(top_state* top, std::byte* at) {
  const block_place place = place_of(top, at);
  const std::uint64_t word = place.word().load(std::memory_order_relaxed);
  const unsigned size_class = static_cast<unsigned>(word & 63) - 1;
  const bool committed = (word & ~std::uint64_t{63}) == reinterpret_cast<std::uintptr_t>(free_at_top);
  if (committed) top->retained_bytes -= block_bytes_of(size_class);
  const reservation::free_link link = place.link();
  if (link.prev) place_of(top, link.prev).link().next = link.next;
  else free_list(top, size_class, committed) = link.next;
  if (link.next) place_of(top, link.next).link().prev = link.prev;
  place.word().store(block_map_word(nullptr, size_class), std::memory_order_relaxed);
  return committed;
}

/// Gives a retained free block back to the OS: it moves to the decommitted list of its class.
void decommit_free(top_state* top, std::byte* at) {
  const unsigned size_class = static_cast<unsigned>(place_of(top, at).word().load(std::memory_order_relaxed) & 63) - 1;
  remove_free(top, at);
  decommit(top, at, block_bytes_of(size_class));
  push_free(top, at, size_class, false);
}

/// Cuts [from, to) of `r` into free blocks, each the largest aligned to its size that fits. They are mapped
/// read-write but untouched: nothing of them is backed until a chunk takes one.
void cut_into_free_blocks(top_state* top, reservation& r, std::byte* from, std::byte* to) {
  while (to - from >= static_cast<std::ptrdiff_t>(granule_bytes)) {
    const std::size_t granule = static_cast<std::size_t>(from - r.base) / granule_bytes;
    const std::size_t room = static_cast<std::size_t>(to - from) / granule_bytes;
    unsigned size_class = static_cast<unsigned>(std::bit_width(room) - 1);
    if (granule) size_class = std::min(size_class, static_cast<unsigned>(std::countr_zero(granule)));
    size_class = std::min(size_class, block_class_count - 1);
    const std::size_t bytes = block_bytes_of(size_class);
    if (os::commit(from, bytes)) push_free(top, from, size_class, false);  // refused (a strict overcommit
    from += bytes;                                                         // policy): those bytes stay unused
  }
}

/// Makes the block at `at` (out of the free lists, mapped read-write) a block for a chunk or a cache: counts
/// it as committed (a decommitted page reads as zero again once touched) and writes its header.
block_header* hand_out(top_state* top, std::byte* at, unsigned size_class, bool committed) {
  if (!committed) note_committed(top, static_cast<std::ptrdiff_t>(block_bytes_of(size_class)));
  const block_place place = place_of(top, at);
  block_header* block = make_block_header(at, size_class, &place.word());
  set_block_owner(block, nullptr);
  return block;
}

block_header* carve_from_frontier(top_state* top, unsigned size_class) {
  if (top->reservations.empty()) return nullptr;
  reservation& r = top->reservations.back();
  const std::size_t bytes = block_bytes_of(size_class);
  std::byte* const at = r.base + round_up(static_cast<std::size_t>(r.frontier - r.base), bytes);
  if (at > r.base + r.bytes || static_cast<std::size_t>(r.base + r.bytes - at) < bytes) return nullptr;
  if (!os::commit(at, bytes)) throw std::bad_alloc();
  cut_into_free_blocks(top, r, r.frontier, at);  // the alignment gap
  r.frontier = at + bytes;
  track::taken_back(at, bytes);
  note_committed(top, static_cast<std::ptrdiff_t>(bytes));
  return hand_out(top, at, size_class, true);
}

/// Halves the smallest bigger free block in the given state until it has the wanted class; the upper halves
/// go to the free lists in that state.
std::byte* split_bigger(top_state* top, unsigned size_class, bool committed) {
  unsigned from = size_class + 1;
  while (from < block_class_count && !free_list(top, from, committed)) ++from;
  if (from == block_class_count) return nullptr;
  std::byte* at = free_list(top, from, committed);
  remove_free(top, at);
  while (from > size_class) {
    --from;
    push_free(top, at + block_bytes_of(from), from, committed);
  }
  return at;
}

bool add_reservation(top_state* top, std::size_t needed) {
  const std::size_t reserved = top->reserved_bytes.load(std::memory_order_relaxed);
  if (reserved >= top->settings.max_reserved_bytes) return false;
  const std::size_t room = top->settings.max_reserved_bytes - reserved;
  if (needed > room) return false;
  // At least as large as everything reserved so far: their number grows with the logarithm of the total.
  const std::size_t wanted = std::min(std::max({top->settings.reservation_bytes, reserved, needed}), room);
  const reservation r = reserve_at_least(wanted, needed);
  if (!r.base) return false;
  try {
    top->reservations.reserve(top->reservations.size() + 1);
  } catch (const std::bad_alloc&) {
    release_reservation(r);
    return false;
  }
  reservation& current = top->reservations.back();
  cut_into_free_blocks(top, current, current.frontier, current.base + current.bytes);  // its tail, not lost
  current.frontier = current.base + current.bytes;
  top->reservations.push_back(r);
  top->reserved_bytes.store(reserved + r.bytes, std::memory_order_relaxed);
  return true;
}

/// A block from the top's own memory, reserving more if allowed; nullptr when that is exhausted.
/// Retained memory first, split from a bigger block if need be: a block given back to the OS costs its pages'
/// faults again, and the retained ones would wait unused while blocks come and go through the OS.
block_header* take_block_from_top(top_state* top, unsigned size_class) {
  for (const bool committed : {true, false}) {
    std::byte* at = free_list(top, size_class, committed);
    if (at) remove_free(top, at);
    else at = split_bigger(top, size_class, committed);
    if (at) return hand_out(top, at, size_class, committed);
  }
  if (block_header* block = carve_from_frontier(top, size_class)) return block;
  if (add_reservation(top, block_bytes_of(size_class))) return carve_from_frontier(top, size_class);
  return nullptr;
}

/// Free bytes a thread cache holds: its free blocks, its slabs whose regions are all free, and the slab of the
/// region it parked (thread_cache::parked), which may be all free but for it. The counts are atomics, read
/// while the owner runs.
std::size_t cached_bytes(const thread_cache* cache) {
  std::size_t bytes = cache->empty_slabs.load(std::memory_order_relaxed) * granule_bytes;
  if (cache->parked.load(std::memory_order_relaxed) != thread_cache::nothing_parked) bytes += granule_bytes;
  for (unsigned c = 0; c < cached_block_classes; ++c) bytes += cache->count_of(c) * block_bytes_of(c);
  return bytes;
}
std::size_t cached_bytes(const top_state* top) {
  std::size_t bytes = 0;
  for (const thread_cache* cache = top->caches; cache; cache = cache->next_in_top) bytes += cached_bytes(cache);
  return bytes;
}

/// Merges the free block at `at` with its buddy while the buddy is free at the top; the merged block is
/// committed only if both halves were (the other half then goes back to the OS). Returns the merged block.
std::byte* merge_with_buddies(top_state* top, std::byte* at, unsigned& size_class, bool& committed) {
  const reservation* r = reservation_of(top, at);
  while (r && size_class + 1 < block_class_count) {
    const std::size_t bytes = block_bytes_of(size_class);
    const std::size_t offset = static_cast<std::size_t>(at - r->base);
    const std::size_t buddy_offset = offset ^ bytes;
    if (buddy_offset + bytes > static_cast<std::size_t>(r->frontier - r->base)) break;
    const std::uint64_t word = r->block_map[buddy_offset / granule_bytes].load(std::memory_order_relaxed);
    if (word != block_map_word(free_at_top, size_class) && word != block_map_word(decommitted_at_top, size_class))
      break;
    std::byte* const buddy = r->base + buddy_offset;
    const bool buddy_committed = remove_free(top, buddy);
    if (committed != buddy_committed) decommit(top, committed ? at : buddy, bytes);
    committed = committed && buddy_committed;
    r->block_map[std::max(offset, buddy_offset) / granule_bytes].store(0, std::memory_order_relaxed);
    at = std::min(at, buddy);
    ++size_class;
  }
  return at;
}

/// `to_os`: the block goes back to the OS whatever the budget (top_give_block_to_os).
void give_block_locked(top_state* top, block_header* block, bool to_os = false) {
  auto* const at = reinterpret_cast<std::byte*>(block);
  unsigned size_class = block->size_class;
  const std::size_t bytes = block->bytes;
  block->map_entry->store(block_map_word(nullptr, size_class), std::memory_order_relaxed);
  track::taken_back(at, sizeof(block_header));  // the top never reads a free block
  // The budget: the top's committed free blocks, every thread's cache and the meta region together (its metas
  // stay once made: after a burst of 100 000 chunks, 18 MiB of them). The caches grow without telling the
  // top, so what the top retained earlier may be over the budget now: it goes first.
  const std::size_t cached =
      cached_bytes(top) + static_cast<std::size_t>(top->meta_committed_end - top->meta_begin);
  const std::size_t budget = top->settings.retain_bytes > cached ? top->settings.retain_bytes - cached : 0;
  for (unsigned c = block_class_count; top->retained_bytes > budget && c-- > 0;)
    while (top->free_blocks[c] && top->retained_bytes > budget) decommit_free(top, top->free_blocks[c]);
  // Kept committed within the budget; otherwise every page goes back, the header's included.
  bool committed = !to_os && top->retained_bytes + bytes <= budget;
  if (!committed) decommit(top, at, bytes);
  std::byte* const merged = merge_with_buddies(top, at, size_class, committed);
  push_free(top, merged, size_class, committed);
}

// ----------------------------------------------------------------------------------------------------------
// The meta region (callers hold the mutex)
// ----------------------------------------------------------------------------------------------------------

void* take_meta_slot(top_state* top, std::size_t bytes) {
  bytes = round_up(bytes, alignof(child_meta));
  if (static_cast<std::size_t>(top->meta_end - top->meta_bump) < bytes) throw std::bad_alloc();
  while (top->meta_bump + bytes > top->meta_committed_end) {
    // What the meta region commits counts as reserved: max_reserved_bytes bounds it with the reservations.
    const std::size_t reserved = top->reserved_bytes.load(std::memory_order_relaxed);
    if (top->settings.max_reserved_bytes - reserved < granule_bytes) throw std::bad_alloc();
    if (!os::commit(top->meta_committed_end, granule_bytes)) throw std::bad_alloc();
    // Past the first step, chunks are coming in numbers: their metas will be written one after the other.
    if (top->meta_committed_end != top->meta_begin) os::populate(top->meta_committed_end, granule_bytes);
    top->reserved_bytes.store(reserved + granule_bytes, std::memory_order_relaxed);
    top->meta_committed_end += granule_bytes;
    note_committed(top, static_cast<std::ptrdiff_t>(granule_bytes));
  }
  void* slot = top->meta_bump;
  top->meta_bump += bytes;
  return slot;
}

std::size_t meta_slots(const top_state* top) {
  return static_cast<std::size_t>(top->meta_bump - top->meta_begin) / sizeof(child_meta);
}

chunk_header* header_of_first(block_header* first) { return reinterpret_cast<chunk_header*>(first->payload()); }

block_header* take_block_locked(top_state* top, unsigned size_class, thread_cache* own);

/// The slab at granule g of r, or nullptr. Caller holds the mutex (slab headers are written under it).
const slab_header* slab_at(const reservation& r, std::size_t g) {
  const std::uint64_t word = r.block_map[g].load(std::memory_order_relaxed);
  if ((word & ~std::uint64_t{63}) != reinterpret_cast<std::uintptr_t>(slab_in_cache)) return nullptr;
  const auto* slab = reinterpret_cast<const slab_header*>(r.base + g * granule_bytes);
  track::internal_access(slab, sizeof(slab_header));
  return slab;
}

/// A slab as pictures show it: its header, each region (in the chunk that holds it, or free in the cache), its
/// tail; neighbours of one kind and owner as one view.
void add_slab_views(std::vector<block_view>& views, std::size_t reservation_index, std::size_t offset,
                    const slab_header* slab) {
  const auto add = [&](std::size_t at, std::size_t bytes, block_view::kind_t kind, const child_meta* owner) {
    if (at != offset && views.back().kind == kind && views.back().owner == owner)  // the previous one is ours
      views.back().bytes += bytes;
    else
      views.push_back({reservation_index, at, bytes, kind, owner});
  };
  add(offset, slab_header_bytes, block_view::cached, nullptr);
  std::size_t at = offset + slab_header_bytes;
  for (unsigned k = 0; k < slab->region_count; ++k, at += slab->region_bytes) {
    const child_meta* meta = slab->owners[k];
    const bool live = meta->state.load(std::memory_order_relaxed) == meta_state::live;
    add(at, slab->region_bytes, live ? block_view::in_chunk : block_view::cached, live ? meta : nullptr);
  }
  if (at < offset + granule_bytes) add(at, offset + granule_bytes - at, block_view::cached, nullptr);
}

/// Takes back the metas of chunks released on other threads: a whole block's meta goes to the free metas (the
/// block went elsewhere), a small region comes home with its meta (give_region). The caller owns the cache
/// (inside enter_cache .. leave_cache) or holds the top's mutex (`top_locked`) for a cache no thread owns.
void drain_locked_or_owned(thread_cache* cache, bool top_locked) noexcept {
  // The stack, and the reclaim bit stays as it is.
  auto* meta = reinterpret_cast<child_meta*>(cache->attention.fetch_and(thread_cache::reclaim_bit, std::memory_order_acquire) &
                                             ~thread_cache::reclaim_bit);
  while (meta) {
    child_meta* next = meta->free_next;
    cache->unlink(meta);
    const bool with_region = meta->state.load(std::memory_order_relaxed) == meta_state::region_released_elsewhere;
    meta->state.store(meta_state::free, std::memory_order_relaxed);
    if (with_region) {
      give_region(cache, meta->chunk->first_block(), top_locked);
    } else {
      meta->free_next = cache->free_metas;
      cache->free_metas = meta;
    }
    meta = next;
  }
}

/// A meta for a new region of `cache`: one of its own free metas, else the top's, else a new slot (which
/// throws std::bad_alloc when the meta region is full). Caller holds the mutex.
child_meta* take_meta_locked(top_state* top, thread_cache* cache) {
  child_meta* meta = cache->free_metas;
  if (meta) {
    cache->free_metas = meta->free_next;
  } else if ((meta = top->free_metas)) {
    top->free_metas = meta->free_next;
  } else {
    meta = ::new (take_meta_slot(top, sizeof(child_meta))) child_meta();
    meta->magic = child_meta_magic;
  }
  meta->home = cache;
  return meta;
}

void detach_meta(child_meta*& free_metas, block_header* first);
void attach_meta(thread_cache* cache, block_header* first, child_meta* meta);

/// Lists `slab` first among its cache's slabs of its class (those with a free region).
void list_slab_first(thread_cache* cache, slab_header* slab) noexcept {
  slab_header*& head = cache->slabs[slab->region_class];
  slab->block.prev = nullptr;
  slab->block.next = head ? &head->block : nullptr;
  if (head) head->block.prev = &slab->block;
  head = slab;
}

/// Puts a free small region back on its slab's free stack, and lists the slab again (first) when that was its
/// only free region. Returns the slab.
slab_header* put_back_on_slab(thread_cache* cache, block_header* region) noexcept {
  cache->keep_small_region(region);
  slab_header* slab = slab_of(region);
  if (slab->free_count == 1) list_slab_first(cache, slab);  // listed again
  return slab;
}

/// Carves up to `n` more regions at the end of `slab`'s carved part (as many as metas could be had), each with a
/// meta attached, and pushes them on its free stack, lowest address first. Returns how many. Caller holds the
/// mutex and owns the cache.
unsigned carve_regions(top_state* top, thread_cache* cache, slab_header* slab, unsigned n) {
  auto* const at = reinterpret_cast<std::byte*>(slab);
  const std::size_t region_bytes = slab->region_bytes;
  const unsigned first = slab->region_count;
  unsigned count = 0;
  for (; count < n && first + count < slab->capacity; ++count) {
    child_meta* meta;
    try {
      meta = take_meta_locked(top, cache);
    } catch (const std::bad_alloc&) {
      break;  // the regions made so far do
    }
    std::byte* const region_at = at + slab_header_bytes + (first + count) * region_bytes;
    track::internal_access(region_at, sizeof(block_header) + sizeof(chunk_header));
    auto* region = ::new (static_cast<void*>(region_at)) block_header{};
    region->bytes = region_bytes;
    region->size_class = region_size_class;
    region->prev = &slab->block;
    auto* chunk = header_of_first(region);
    chunk->meta = meta;
    chunk->top = top;
    chunk->region_class = slab->region_class;
    chunk->first_free = reinterpret_cast<std::byte*>(chunk) + chunk_header_bytes;
    chunk->learn_below = learn_below_of(slab->region_class, chunk->first_free);
    chunk->empty_for_open();
    meta->chunk = chunk;
    slab->owners[first + count] = meta;
    track::taken_back(region->payload(), region_bytes - sizeof(block_header));
  }
  // The new regions on top of the stack, lowest address first: the first chunks of a slab fill it from the bottom.
  for (unsigned i = first + count; i-- > first;) {
    auto* region = reinterpret_cast<block_header*>(at + slab_header_bytes + i * region_bytes);
    region->next = slab->free_regions;
    slab->free_regions = region;
  }
  slab->region_count = static_cast<std::uint16_t>(first + count);
  slab->free_count = static_cast<std::uint16_t>(slab->free_count + count);
  return count;
}

/// How many regions of `region_bytes` one step of carving makes: those that start in the next
/// slab_carve_step_bytes of the slab (at least one), so that a slab's pages are written only as its regions
/// are needed. The first step also holds the slab header.
unsigned regions_per_step(std::size_t region_bytes) {
  return static_cast<unsigned>(std::max<std::size_t>(1, slab_carve_step_bytes / region_bytes));
}

/// Gives `cache` free small regions of the class, each with a meta attached: more regions carved in the slab
/// of the class that has room left (cache->growing), else a new slab: a 64 KiB block cut into regions of one
/// class as they are needed (carve_regions), listed. Caller holds the mutex and owns the cache; no slab of the
/// class is listed (all their regions are in use).
/// The block of a new slab is one of the cache's free 64 KiB blocks if it has one (most likely a slab an
/// earlier wave of chunks emptied, its pages still backed), else the top's.
void carve_slab(top_state* top, thread_cache* cache, unsigned region_class) {
  const std::size_t region_bytes = region_bytes_of(region_class);
  const unsigned step = regions_per_step(region_bytes);
  slab_header* slab = cache->growing[region_class];  // unlisted: its regions are all in use
  if (slab) {
    auto* const next_at = reinterpret_cast<std::byte*>(slab) + slab_header_bytes + slab->region_count * region_bytes;
    os::populate(next_at, std::min<std::size_t>(step * region_bytes,
                                                static_cast<std::size_t>(slab->block.end() - next_at)));
    if (!carve_regions(top, cache, slab, step)) throw std::bad_alloc();  // no meta: nothing was taken
  } else {
    block_header* block = nullptr;
    const bool cached = cache->count_of(0);
    if (cached) {
      block = cache->pop_free(0);
      detach_meta(cache->free_metas, block);  // its meta serves one of the regions
    } else {
      block = take_block_locked(top, 0, cache);  // may throw: nothing was taken
    }
    auto* at = reinterpret_cast<std::byte*>(block);
    // Every page of the step is written below (a header per region): one call backs them all, where a burst
    // of chunks would otherwise take a page fault per page (most of a burst of coroutines' spawn time, perf on
    // bench/idle.hpp). A cached block's pages are backed already, most likely (an emptied slab's).
    if (!cached) os::populate(at, std::min(granule_bytes, slab_header_bytes + step * region_bytes));
    track::internal_access(at, slab_header_bytes);
    const block_header whole = *block;
    slab = ::new (static_cast<void*>(at)) slab_header{};
    slab->block = whole;
    slab->block.next = nullptr;
    slab->block.prev = nullptr;
    slab->region_bytes = static_cast<std::uint32_t>(region_bytes);
    slab->region_class = static_cast<std::uint8_t>(region_class);
    slab->capacity = static_cast<std::uint8_t>((granule_bytes - slab_header_bytes) / region_bytes);
    if (!carve_regions(top, cache, slab, step)) {
      give_block_locked(top, block);
      throw std::bad_alloc();
    }
    set_block_owner(&slab->block, slab_in_cache);
    cache->empty_slabs.store(cache->empty_slabs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  cache->growing[region_class] = slab->region_count < slab->capacity ? slab : nullptr;
  list_slab_first(cache, slab);
}

/// Takes a slab whose regions are all free out of its cache's list and gives it to the top; the metas of its
/// regions go to `free_metas`. Caller holds the mutex.
/// Takes a slab whose regions are all free out of its cache's list; the metas of its regions go to
/// `free_metas`. Returns its block, a plain 64 KiB block again. Caller holds the mutex.
block_header* unlist_slab(thread_cache* cache, slab_header* slab, child_meta*& free_metas) {
  auto* prev = reinterpret_cast<slab_header*>(slab->block.prev);
  auto* next = reinterpret_cast<slab_header*>(slab->block.next);
  if (prev) prev->block.next = slab->block.next;
  else cache->slabs[slab->region_class] = next;
  if (next) next->block.prev = slab->block.prev;
  if (cache->growing[slab->region_class] == slab) cache->growing[slab->region_class] = nullptr;
  cache->empty_slabs.store(cache->empty_slabs.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  for (unsigned i = 0; i < slab->region_count; ++i) {
    child_meta* meta = slab->owners[i];
    meta->free_next = free_metas;
    free_metas = meta;
  }
  block_header* block = &slab->block;
  block->next = block->prev = nullptr;
  set_block_owner(block, nullptr);
  return block;
}

/// Takes a slab whose regions are all free out of its cache's list and gives it to the top; the metas of its
/// regions go to `free_metas`. Caller holds the mutex.
void give_slab_locked(top_state* top, thread_cache* cache, slab_header* slab, child_meta*& free_metas) {
  give_block_locked(top, unlist_slab(cache, slab, free_metas));
}

/// Keeps a slab whose regions are all free as a free 64 KiB block of its cache (a shell, one of its regions'
/// metas attached), which has room for one: the next slab of any class is carved from it again (carve_slab),
/// so that waves of chunks that fill more than one slab do not take slabs from the top and give them back
/// each time, nor spread over blocks whose pages were not backed yet. Caller holds the mutex and owns the
/// cache.
void keep_slab_as_shell(thread_cache* cache, slab_header* slab) {
  block_header* block = unlist_slab(cache, slab, cache->free_metas);
  child_meta* meta = cache->free_metas;
  cache->free_metas = meta->free_next;
  track::taken_back(block->payload(), block->bytes - sizeof(block_header));
  attach_meta(cache, block, meta);
  cache->push_free(block, 0);
}

/// A shell leaves its cache: its meta goes to `free_metas` (the cache's own, or the top's when another thread
/// takes the shell), its block is then a plain block.
void detach_meta(child_meta*& free_metas, block_header* first) {
  chunk_header* header = header_of_first(first);
  track::internal_access(&header->meta, sizeof header->meta);
  child_meta* meta = header->meta;
  meta->free_next = free_metas;
  free_metas = meta;
  set_block_owner(first, nullptr);
}

/// Gives all of a cache's free blocks and its slabs whose regions are all free to the top, the metas of its
/// shells and of those regions to `free_metas`; false if it had none. The cache's owner is the caller, or is
/// not inside enter_cache .. leave_cache (reclaim_caches).
bool flush_blocks_locked(top_state* top, thread_cache* cache, child_meta*& free_metas) {
  bool flushed = false;
  // The parked region first, back on its slab as a release would have put it: the slab may have all its regions
  // free then. The slot is emptied for good: an open must not find the region again once it went elsewhere.
  if (const std::uintptr_t word = cache->parked.load(std::memory_order_acquire); word != thread_cache::nothing_parked) {
    cache->parked.store(thread_cache::nothing_parked, std::memory_order_relaxed);
    auto* meta = reinterpret_cast<child_meta*>(word & ~thread_cache::parked_class_bits);
    cache->unlink(meta);
    put_back_on_slab(cache, meta->chunk->first_block());
  }
  for (unsigned c = 0; c < whole_block_region; ++c)
    for (slab_header* slab = cache->slabs[c]; slab;) {
      auto* next = reinterpret_cast<slab_header*>(slab->block.next);
      if (slab->free_count == slab->region_count) {
        give_slab_locked(top, cache, slab, free_metas);
        flushed = true;
      }
      slab = next;
    }
  for (unsigned c = 0; c < cached_block_classes; ++c) {
    block_header* list = cache->free_blocks[c];
    cache->free_blocks[c] = nullptr;
    cache->set_count(c, 0);  // first: the budget below no longer counts these blocks as cached
    while (block_header* block = list) {
      list = block->next;
      if (c == 0) detach_meta(free_metas, block);
      give_block_locked(top, block);
      flushed = true;
    }
  }
  return flushed;
}
bool flush_blocks_locked(top_state* top, thread_cache* cache) {
  return flush_blocks_locked(top, cache, cache->free_metas);
}

/// Takes the free blocks of every other thread's cache whose owner is not editing it right now: the last
/// resort before a request fails. Each owner edits its free blocks without a lock or a locked instruction,
/// so the two sides meet as in Dekker's algorithm with the expensive fence on this side only: mark the
/// caches, make every running thread execute a full barrier (os::heavy_barrier), then take from those
/// still not busy. An owner that enters its cache from then on sees the mark and waits on the mutex.
bool reclaim_caches(top_state* top) {
  bool marked = false;
  for (thread_cache* cache = top->caches; cache; cache = cache->next_in_top) {
    if (cache->orphaned.load(std::memory_order_relaxed) || cache == top->exit_cache) continue;  // nothing cached, or used under the mutex
    if (!cached_bytes(cache)) continue;
    cache->attention.fetch_or(thread_cache::reclaim_bit, std::memory_order_seq_cst);
    marked = true;
  }
  if (!marked) return false;
  os::heavy_barrier();
  bool reclaimed = false;
  for (thread_cache* cache = top->caches; cache; cache = cache->next_in_top) {
    if (!cache->reclaim_pending(std::memory_order_relaxed)) continue;
    if (!cache->busy.load(std::memory_order_acquire)) reclaimed |= flush_blocks_locked(top, cache, top->free_metas);
    cache->attention.fetch_and(~thread_cache::reclaim_bit, std::memory_order_release);
  }
  return reclaimed;
}

/// A block from the top, else from the calling thread's own cache (`own`, may be nullptr) given back, else
/// from every other thread's cache. Throws std::bad_alloc when all of them together cannot serve it.
block_header* take_block_locked(top_state* top, unsigned size_class, thread_cache* own) {
  if (size_class >= block_class_count) throw std::bad_alloc();
  if (block_header* block = take_block_from_top(top, size_class)) return block;
  if (own && flush_blocks_locked(top, own))
    if (block_header* block = take_block_from_top(top, size_class)) return block;
  if (reclaim_caches(top))
    if (block_header* block = take_block_from_top(top, size_class)) return block;
  throw std::bad_alloc();
}

/// Makes `first` a shell of `cache` with `meta` attached.
void attach_meta(thread_cache* cache, block_header* first, child_meta* meta) {
  chunk_header* header = header_of_first(first);
  track::internal_access(header, sizeof(chunk_header));
  header->meta = meta;
  header->top = cache->top;
  header->region_class = whole_block_region;
  const std::size_t colour = (reinterpret_cast<std::uintptr_t>(first) / granule_bytes) % 16 * 64;
  header->first_free = reinterpret_cast<std::byte*>(header) + chunk_header_bytes + colour;
  header->learn_below = learn_below_of(whole_block_region, header->first_free);
  header->empty_for_open();
  meta->chunk = header;
  meta->home = cache;
  set_block_owner(first, meta);
}

/// The thread is gone: its free blocks and metas go back to the top; its live list stays for the chunks
/// that moved away, until another thread adopts the cache.
void orphan(top_state* top, thread_cache* cache) {
  std::lock_guard lock(top->mutex);
  // Orphaned first: a small region released on another thread from now on is taken back by its releaser
  // (release_elsewhere), so that it does not wait for a thread to adopt this cache.
  cache->orphaned.store(true, std::memory_order_seq_cst);
  drain_locked_or_owned(cache, true);
  // The thread that adopts the cache opens other chunks at other sites (or the same library call sites for
  // other uses): it starts learning afresh.
  std::fill(std::begin(cache->site_class), std::end(cache->site_class), new_site);
  std::fill(std::begin(cache->site_votes), std::end(cache->site_votes), 0);
  std::fill(std::begin(cache->site_most_used), std::end(cache->site_most_used), 0);
  std::fill(std::begin(cache->site_outgrown), std::end(cache->site_outgrown), false);
  flush_blocks_locked(top, cache);
  while (child_meta* meta = cache->free_metas) {
    cache->free_metas = meta->free_next;
    meta->free_next = top->free_metas;
    top->free_metas = meta;
  }
}

// ----------------------------------------------------------------------------------------------------------
// The calling thread's caches
// ----------------------------------------------------------------------------------------------------------

struct thread_caches {
  struct entry {
    top_state* top;
    std::uint64_t id;
    thread_cache* cache;
  };
  std::vector<entry> entries;

  ~thread_caches() {
    current_binding = {};
    gone = true;
    std::lock_guard lock(registry_mutex);
    for (const entry& e : entries)
      if (is_registered(e.top, e.id)) orphan(e.top, e.cache);
  }
  static thread_local bool gone;
};
thread_local bool thread_caches::gone = false;
thread_local thread_caches this_thread_caches;

struct live_figures {
  std::uint64_t chunks = 0;
  std::size_t in_use_bytes = 0;
};

/// Calls f(meta) for each live chunk of every cache: from another thread while their owners run, with
/// relaxed atomics and a bound on the steps in case an edit sends the walk astray. Caller holds the mutex.
template <class F>
void for_each_live_meta(top_state* top, F f) {
  const std::size_t step_limit = meta_slots(top) + 1;
  for (thread_cache* cache = top->caches; cache; cache = cache->next_in_top) {
    std::size_t steps = 0;
    for (child_meta* m = cache->live.next.load(std::memory_order_acquire);
         m != &cache->live && ++steps <= step_limit; m = m->next.load(std::memory_order_acquire))
      if (m->state.load(std::memory_order_relaxed) == meta_state::live) f(m);
  }
}

/// Counts the live chunks and their bytes in use, each read whole (figures_of). With `report`, prints
/// each chunk (the leak report). Caller holds the mutex.
live_figures walk_live_chunks(top_state* top, bool report) {
  live_figures figures;
  for_each_live_meta(top, [&](const child_meta* m) {
    const chunk_figures f = figures_of(m);
    ++figures.chunks;
    figures.in_use_bytes += f.in_use_bytes;
    if (report)
      std::fprintf(stderr, "  chunk '%s': %zu bytes in use, %zu bytes held, opened at %s:%u in %s\n",
                   f.label[0] ? f.label : "(no label)", f.in_use_bytes, f.held_bytes, f.opened_at.file_name(),
                   static_cast<unsigned>(f.opened_at.line()), f.opened_at.function_name());
  });
  return figures;
}

/// The top's own totals (the chunks' are added by the walk). Caller holds the mutex.
top_totals top_totals_locked(const top_state* top) {
  top_totals totals;
  totals.reserved_bytes = top->reserved_bytes.load(std::memory_order_relaxed);
  totals.committed_bytes = top->committed_bytes.load(std::memory_order_relaxed);
  totals.peak_committed_bytes = top->peak_committed_bytes.load(std::memory_order_relaxed);
  return totals;
}

/// Reads the live chunks into `chunks`, whose capacity the caller reserved out of the lock, and adds them
/// to `totals`. Caller holds the mutex.
void read_live_chunks(top_state* top, std::int64_t now_ns, std::vector<chunk_figures>& chunks, top_totals& totals) {
  for_each_live_meta(top, [&](const child_meta* m) {
    if (chunks.size() == chunks.capacity()) return;  // a walk sent astray; never reached otherwise
    chunks.push_back(figures_of(m, now_ns));
    totals.in_use_bytes += chunks.back().in_use_bytes;
  });
  totals.live_chunks = chunks.size();
}

}  // namespace

// ------------------------------------------------------------------------------------------------------------
// Entry points declared in arena.hpp
// ------------------------------------------------------------------------------------------------------------

namespace {
/// Address space for as many metas as max_reserved_bytes has smallest regions (the most chunks that can live at
/// once), plus room for thread caches; at most 64 GiB. Reserved beside the reservations, committed as used.
std::size_t meta_region_bytes(std::size_t max_reserved_bytes) {
  constexpr std::size_t most = std::size_t{64} << 30, caches = std::size_t{16} << 20;
  const std::size_t metas = max_reserved_bytes / region_bytes_of(0);
  const std::size_t bytes = metas < (most - caches) / sizeof(child_meta) ? metas * sizeof(child_meta) + caches : most;
  return round_up(bytes, granule_bytes);
}
}  // namespace

void* map_pages(std::size_t bytes) {
  if (void* p = os::map_table(round_up(bytes, page_bytes))) return p;
  throw std::bad_alloc();
}
void unmap_pages(void* p, std::size_t bytes) noexcept { os::release(p, round_up(bytes, page_bytes)); }

top_state* create_top(const top_settings& wanted) {
  top_settings settings = wanted;
  const std::size_t min_reservation = header_bytes + granule_bytes;
  settings.reservation_bytes =
      std::max(round_up(std::min(settings.reservation_bytes, std::size_t{1} << 62), granule_bytes), min_reservation);
  // Never below one reservation and the meta region's first 64 KiB.
  settings.max_reserved_bytes = std::max(settings.max_reserved_bytes, settings.reservation_bytes + granule_bytes);

  reservation first = reserve_at_least(settings.reservation_bytes, min_reservation);
  if (!first.base) throw std::bad_alloc();
  std::size_t meta_bytes = meta_region_bytes(settings.max_reserved_bytes);
  void* meta = nullptr;
  for (; !(meta = os::reserve(meta_bytes)) && meta_bytes > granule_bytes;)  // an RLIMIT_AS: fewer chunks
    meta_bytes = round_up(meta_bytes / 2, granule_bytes);
  if (!meta || !os::commit(first.base, header_bytes) || !os::commit(meta, granule_bytes)) {
    if (meta) os::release(meta, meta_bytes);
    release_reservation(first);
    throw std::bad_alloc();
  }
  std::byte* const base = first.base;
  auto* top = ::new (static_cast<void*>(base)) top_state{};
  top->id = next_top_id.fetch_add(1, std::memory_order_relaxed);
  top->fast_key = top->id;  // no release hook yet (top_chunk's constructor may add one)
  top->settings = settings;
  top->max_request_bytes = settings.max_reserved_bytes / 2;
  first.frontier = base + header_bytes;
  top->meta_begin = static_cast<std::byte*>(meta);
  top->meta_bump = top->meta_begin;
  top->meta_committed_end = top->meta_begin + granule_bytes;
  top->meta_end = top->meta_begin + meta_bytes;
  try {
    top->reservations.push_back(first);
    std::lock_guard lock(registry_mutex);
    live_tops().push_back(top);
  } catch (...) {
    top->~top_state();
    os::release(meta, meta_bytes);
    release_reservation(first);
    throw;
  }
  top->reserved_bytes.store(first.bytes + granule_bytes, std::memory_order_relaxed);  // the meta region's first
  note_committed(top, static_cast<std::ptrdiff_t>(header_bytes + granule_bytes));
  return top;
}

void destroy_top(top_state* top) noexcept {
  {
    std::lock_guard lock(registry_mutex);
    auto& tops = live_tops();
    tops.erase(std::remove(tops.begin(), tops.end(), top), tops.end());
  }
  std::uint64_t live;
  {
    std::lock_guard lock(top->mutex);
    for (thread_cache* cache = top->caches; cache; cache = cache->next_in_top) drain_locked_or_owned(cache, true);
    live = walk_live_chunks(top, false).chunks;
    if (live) {
      std::fprintf(stderr, "perfloc: a top chunk is destroyed while %llu process chunk(s) are alive:\n",
                   static_cast<unsigned long long>(live));
      walk_live_chunks(top, true);
    }
  }
  if (live) {
#ifndef NDEBUG
    std::fprintf(stderr, "perfloc: release every process chunk before its top chunk (aborting: debug build)\n");
    std::abort();
#else
    // The release hook stays too: it belongs to the state, which those chunks still reach.
    std::fprintf(stderr, "perfloc: the top chunk's memory is left mapped so that those chunks stay valid\n");
    return;
#endif
  }
  if (top->release_hook_cleanup) top->release_hook_cleanup(top->release_hook_context);
  const std::vector<reservation, pages_allocator<reservation>> reservations = std::move(top->reservations);
  std::byte* const meta = top->meta_begin;
  const auto meta_bytes = static_cast<std::size_t>(top->meta_end - top->meta_begin);
  top->~top_state();
  os::release(meta, meta_bytes);
  for (std::size_t i = reservations.size(); i-- > 0;) release_reservation(reservations[i]);
}

top_totals collect_totals(top_state* top) {
  std::lock_guard lock(top->mutex);
  top_totals totals = top_totals_locked(top);
  const live_figures live = walk_live_chunks(top, false);
  totals.live_chunks = live.chunks;
  totals.in_use_bytes = live.in_use_bytes;
  return totals;
}

// The walks below allocate before they take the mutex, never under it: a thread refilling its cache would
// wait for the allocator. Each live chunk has a meta slot, so meta_slots bounds their number; when it grew
// since the vector was reserved, they reserve again and retry.

live_view live_chunks(top_state* top) {
  live_view view;
  const std::int64_t now_ns = top->release_hook ? steady_clock_ns() : -1;
  for (std::size_t needed = 0;;) {
    view.chunks.reserve(needed);
    std::lock_guard lock(top->mutex);
    needed = meta_slots(top);
    if (needed > view.chunks.capacity()) continue;
    view.totals = top_totals_locked(top);
    read_live_chunks(top, now_ns, view.chunks, view.totals);
    return view;
  }
}

top_snapshot snapshot(top_state* top) {
  top_snapshot shot;
  const std::int64_t now_ns = top->release_hook ? steady_clock_ns() : -1;
  for (std::size_t chunks_needed = 0, blocks_needed = 0, reservations_needed = 0;;) {
    // Room first, outside the lock: nothing allocates while the mutex is held.
    shot.chunks.reserve(chunks_needed);
    shot.blocks.reserve(blocks_needed);
    shot.reservation_bytes.reserve(reservations_needed);
    std::lock_guard lock(top->mutex);
    chunks_needed = meta_slots(top);
    reservations_needed = top->reservations.size() + 1;  // and the meta region
    blocks_needed = 2;  // the header and the meta region
    for (std::size_t i = 0; i < top->reservations.size(); ++i) {
      const reservation& r = top->reservations[i];
      const std::size_t granules = static_cast<std::size_t>(r.frontier - r.base) / granule_bytes;
      blocks_needed += granules + 1;
      for (std::size_t g = 0; g < granules; ++g)  // a slab: its header, its regions, its tail
        if (const slab_header* slab = slab_at(r, g)) blocks_needed += slab->region_count + 1;
    }
    if (chunks_needed > shot.chunks.capacity() || blocks_needed > shot.blocks.capacity() ||
        reservations_needed > shot.reservation_bytes.capacity())
      continue;

    // The chunks, then their blocks, under one hold of the mutex.
    shot.totals = top_totals_locked(top);
    read_live_chunks(top, now_ns, shot.chunks, shot.totals);
    for (std::size_t i = 0; i < top->reservations.size(); ++i) {
      const reservation& r = top->reservations[i];
      shot.reservation_bytes.push_back(r.bytes);
      if (i == 0) shot.blocks.push_back({i, 0, header_bytes, block_view::top_header, nullptr});
      const std::size_t granules = static_cast<std::size_t>(r.frontier - r.base) / granule_bytes;
      for (std::size_t g = 0; g < granules; ++g) {
        const std::uint64_t word = r.block_map[g].load(std::memory_order_relaxed);
        if (!word) continue;
        const unsigned size_class = static_cast<unsigned>(word & 63) - 1;
        const void* owner_word = reinterpret_cast<const void*>(word & ~std::uint64_t{63});
        block_view view{i, g * granule_bytes, block_bytes_of(size_class), block_view::cached, nullptr};
        if (const slab_header* slab = slab_at(r, g)) {
          add_slab_views(shot.blocks, i, g * granule_bytes, slab);
          continue;
        }
        if (owner_word == free_at_top) {
          view.kind = block_view::free_committed;
        } else if (owner_word == decommitted_at_top) {
          view.kind = block_view::free_decommitted;
        } else if (const auto* owner = static_cast<const child_meta*>(owner_word);
                   owner && owner->state.load(std::memory_order_relaxed) == meta_state::live) {
          view.kind = block_view::in_chunk;
          view.owner = owner;
        }
        shot.blocks.push_back(view);
      }
      const std::size_t used = static_cast<std::size_t>(r.frontier - r.base);
      if (used < r.bytes) shot.blocks.push_back({i, used, r.bytes - used, block_view::unused, nullptr});
    }
    // The meta region is a reservation of its own; its committed part is what counts in reserved_bytes.
    const auto meta_committed = static_cast<std::size_t>(top->meta_committed_end - top->meta_begin);
    shot.reservation_bytes.push_back(meta_committed);
    shot.blocks.push_back({top->reservations.size(), 0, meta_committed, block_view::meta_region, nullptr});
    return shot;
  }
}

block_header* top_take_block(top_state* top, unsigned size_class) {
  std::lock_guard lock(top->mutex);
  return take_block_locked(top, size_class, nullptr);
}

block_header* refill_block(thread_cache* cache, unsigned size_class) {
  top_state* top = cache->top;
  std::lock_guard lock(top->mutex);
  return take_block_locked(top, size_class, cache);
}

child_meta* open_chunk_at_exit(top_state* top, std::string_view label, std::source_location where) {
  std::lock_guard lock(top->mutex);
  thread_cache* cache = top->exit_cache;
  if (!cache) {
    cache = ::new (take_meta_slot(top, sizeof(thread_cache))) thread_cache();
    cache->top = top;
    cache->fast_key = top->fast_key;
    cache->next_in_top = top->caches;
    top->caches = cache;
    top->exit_cache = cache;
  }
  drain_locked_or_owned(cache, true);
  block_header* first = take_block_locked(top, 0, nullptr);  // may throw: nothing was taken
  child_meta* meta;
  try {
    meta = take_meta_locked(top, cache);
  } catch (...) {
    give_block_locked(top, first);
    throw;
  }
  attach_meta(cache, first, meta);
  return open_region<true>(cache, top, first, site_of(where), label, where);  // a release hands the meta back here
}

void wait_for_reclaim(thread_cache* cache) noexcept {
  do {
    cache->busy.store(false, std::memory_order_release);
    { std::lock_guard lock(cache->top->mutex); }  // the reclaimer holds it until it is done
    cache->busy.store(true, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } while (cache->reclaim_pending(std::memory_order_acquire));
}

block_header* refill_shell(thread_cache* cache) {
  block_header* first = refill_block(cache, 0);  // may throw: nothing was taken
  child_meta* meta = cache->free_metas;
  if (!meta) {
    try {
      meta = refill_metas(cache);
    } catch (...) {
      top_give_block(cache->top, first);
      throw;
    }
  }
  cache->free_metas = meta->free_next;
  attach_meta(cache, first, meta);
  return first;
}

void refill_region(thread_cache* cache, unsigned region_class) {
  if (region_class >= whole_block_region) return cache->push_free(refill_shell(cache), 0);  // new_site too
  std::lock_guard lock(cache->top->mutex);
  carve_slab(cache->top, cache, region_class);
}

// A slab whose regions are all free and that is not kept for its class becomes a free 64 KiB block of the
// cache when the cache has room for one and the caller owns it (keep_slab_as_shell); otherwise it goes back to
// the top.
void give_region(thread_cache* cache, block_header* region, bool top_locked) noexcept {
  slab_header* const slab = put_back_on_slab(cache, region);
  slab_header* const head = cache->slabs[slab->region_class];
  if (slab->free_count != slab->region_count) return;  // (keep_small_region counted it empty otherwise)
  const bool orphaned = cache->orphaned.load(std::memory_order_relaxed);
  if (head == slab && !slab->block.next && !orphaned) return;  // kept
  if (top_locked) return give_slab_locked(cache->top, cache, slab, cache->free_metas);
  std::lock_guard lock(cache->top->mutex);
  if (!orphaned && cache->count_of(0) < cached_block_limit(0)) return keep_slab_as_shell(cache, slab);
  give_slab_locked(cache->top, cache, slab, cache->free_metas);
}

void spill_shell(thread_cache* cache, block_header* first) noexcept {
  detach_meta(cache->free_metas, first);
  top_give_block(cache->top, first);
}

void adopt_first_block(top_state* top, block_header* first) noexcept {
  thread_cache* cache = cache_if_any(top);
  if (cache && cache->free_metas) {
    child_meta* meta = cache->free_metas;
    cache->free_metas = meta->free_next;
    attach_meta(cache, first, meta);
    cache_section section(cache);
    return cache->give_shell(first);
  }
  track::taken_back(first->payload(), first->bytes - sizeof(block_header));
  top_give_block(top, first);
}

void top_give_block(top_state* top, block_header* block) noexcept {
  std::lock_guard lock(top->mutex);
  give_block_locked(top, block);
}

void top_give_block_to_os(top_state* top, block_header* block) noexcept {
  track::taken_back(block->payload(), block->bytes - sizeof(block_header));
  std::lock_guard lock(top->mutex);
  give_block_locked(top, block, true);
}

thread_cache* bind_cache(top_state* top) {
  if (thread_caches::gone) return nullptr;  // past this thread's thread_local teardown: open_chunk_at_exit
  auto& entries = this_thread_caches.entries;
  for (const auto& e : entries)
    if (e.top == top && e.id == top->id) {
      current_binding = {top->id, e.cache};
      return e.cache;
    }
  if (entries.size() >= 8) {  // forget the caches of tops destroyed since (a thread that makes many tops)
    std::lock_guard lock(registry_mutex);
    std::erase_if(entries, [](const thread_caches::entry& e) { return !is_registered(e.top, e.id); });
  }
  entries.reserve(entries.size() + 1);  // the only step that can throw after the cache is taken
  thread_cache* cache = nullptr;
  {
    std::lock_guard lock(top->mutex);
    for (thread_cache* c = top->caches; c; c = c->next_in_top)
      if (c->orphaned.load(std::memory_order_relaxed)) {
        cache = c;
        cache->orphaned.store(false, std::memory_order_relaxed);
        drain_locked_or_owned(cache, true);
        break;
      }
    if (!cache) {
      cache = ::new (take_meta_slot(top, sizeof(thread_cache))) thread_cache();
      cache->top = top;
      cache->fast_key = top->fast_key;
      cache->next_in_top = top->caches;
      top->caches = cache;
    }
  }
  entries.push_back({top, top->id, cache});
  current_binding = {top->id, cache};
  return cache;
}

child_meta* refill_metas(thread_cache* cache) {
  top_state* top = cache->top;
  std::lock_guard lock(top->mutex);
  for (int i = 0; i < 16; ++i) {
    child_meta* meta = top->free_metas;
    if (meta) {
      top->free_metas = meta->free_next;
    } else {
      void* slot;
      try {
        slot = take_meta_slot(top, sizeof(child_meta));
      } catch (const std::bad_alloc&) {
        if (i == 0) throw;
        break;  // the metas taken so far do
      }
      meta = ::new (slot) child_meta();
      meta->magic = child_meta_magic;
    }
    meta->home = cache;
    meta->free_next = cache->free_metas;
    cache->free_metas = meta;
  }
  return cache->free_metas;
}

void drain_released_elsewhere(thread_cache* cache) noexcept { drain_locked_or_owned(cache, false); }

void release_elsewhere(child_meta* meta, bool with_region) noexcept {
  meta->state.store(with_region ? meta_state::region_released_elsewhere : meta_state::released_elsewhere,
                    std::memory_order_relaxed);
  thread_cache* home = meta->home;
  std::atomic<std::uintptr_t>& word = home->attention;  // the stack, and the reclaim bit kept as it is
  std::uintptr_t head = word.load(std::memory_order_relaxed);
  do {
    meta->free_next = reinterpret_cast<child_meta*>(head & ~thread_cache::reclaim_bit);
  } while (!word.compare_exchange_weak(head, reinterpret_cast<std::uintptr_t>(meta) | (head & thread_cache::reclaim_bit),
                                       std::memory_order_seq_cst, std::memory_order_relaxed));
  // A home whose thread has exited drains no more: take the region back for it (orphan() marks the cache
  // before its last drain, so one of the two sees the region).
  if (!with_region || !home->orphaned.load(std::memory_order_seq_cst)) return;
  std::lock_guard lock(home->top->mutex);
  if (home->orphaned.load(std::memory_order_relaxed)) drain_locked_or_owned(home, true);
}

bool is_live_meta(const void* p) noexcept {
  std::lock_guard lock(registry_mutex);
  for (top_state* top : live_tops()) {
    // meta_bump and a new slot's magic are written under the top's mutex (take_meta_slot, refill_metas) by
    // threads opening chunks: read them under it too. The order registry -> top is that of orphan().
    std::lock_guard top_lock(top->mutex);
    const auto* at = static_cast<const std::byte*>(p);
    if (at < top->meta_begin || at >= top->meta_bump) continue;
    if ((at - top->meta_begin) % alignof(child_meta) != 0) return false;
    const auto* meta = static_cast<const child_meta*>(p);
    return meta->magic == child_meta_magic && meta->state.load() != meta_state::free;
  }
  return false;
}

}  // namespace perfloc::detail
