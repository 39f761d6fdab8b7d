// src/perfloc/process.cpp — a process chunk's slow paths: growth, reuse of freed spans, large allocations,
// release, and the debug checks.
//
// The fast path (arena.hpp, child_meta::allocate) is a bump within the current block. It falls through to
// here when the block is full, when the alignment is above 16, for allocate(0), or right after a free:
// deallocate sets `fast_limit` to `bump`, so the fast path costs nothing extra for knowing that memory
// waits for reuse. Allocation stays on the slow path while freed spans serve it, and goes back to bumping at
// the first request none of them fits. The tail of a full block and alignment gaps are kept too, but only
// for when the block is full: they do not take the fast path away.
//
// Reuse: a segregated fit with deferred coalescing. Freed memory ("spans") waits in 64 singly linked lists:
// exact 16-byte classes up to 256 bytes, then four classes per power of two. A request first walks a few
// spans of its own class for one that fits (so memory freed at a size is found again at that size, however
// odd), then takes the head of the smallest larger non-empty class (one bit scan) and gives the remainder
// back. Adjacent spans are merged, and a span that ends at the bump folds back into it, by merge_spans: it
// links every span into one list, sorts it by address (a list merge sort, in place: no memory needed) and
// sweeps it once. It runs when a request would otherwise make the chunk grow and at least max(request,
// held / 16) bytes were freed since the last merge, so its O(F log F) is paid for by the frees it merges.
//
// Why not coalesce at every free, as TLSF and dlmalloc do? Their boundary tags need a header on every
// allocation (or a bitmap per block and a lookup from an address to its block), which the bump fast path and
// headerless allocate() do not have. Deferred merging needs neither, costs nothing per free, and runs exactly
// when it decides held bytes: a chunk grows only after the memory freed since the last merge was merged and
// still did not fit. Measured with tests/perfloc/reuse.test.cpp (FIFO, LIFO, random order, 16 B to 256 KiB,
// over-aligned, pmr containers, std::vector): held bytes stay within 3 x peak live bytes + one 4 MiB block,
// the bound the README documents (worst measured: 2.1 x, LIFO with requests just above 256 KiB, whose own
// blocks are rounded up to a power of two); the old scheme (power-of-two classes searched from the request
// rounded up, no merging) grew without bound.
//
// The next step (small first regions on shared pages, commit page by page) is not in its way: reuse needs
// nothing per block and nothing per allocation; its state is the 64 list heads and the mask in the chunk
// header, read only under the mask (an open clears the mask alone), so it can move out of a small first
// region to wherever a growing chunk keeps its bookkeeping.
//
// The debug double-destroy check: a span's tag is in its last 16 bytes (8 for a 16-byte span), which never
// covers the header of the object freed there, so a second destroy still reports "called twice". Merges and
// splits write tags at new places inside free memory; a destroyed object's header under such a tag (a size,
// or a pointer into the chunk, never a live meta) makes a second destroy report "a pointer make did not
// return" instead: still stopped, with a vaguer message. As before, once the memory is handed out again, a
// second destroy is not seen.
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "perfloc/detail/arena.hpp"

namespace perfloc::detail {
namespace {

/// A block that held one large allocation gets its header back before it leaves the chunk.
block_header* rebuild_own_block(const own_block* record) {
  block_header* block = make_block_header(record->start, record->size_class, record->map_entry);
  set_block_owner(block, nullptr);
  return block;
}

std::byte* align_up(std::byte* p, std::size_t alignment) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  return p + (((address + alignment - 1) & ~(alignment - 1)) - address);
}

// A span's tag: its link (the next span's end, bit 0 set when this span is 16 bytes) in its last 8 bytes, its
// size in the 8 before when it is 32 bytes or more. Reached through track::internal_access: the span itself
// stays poisoned for ASan and Valgrind.
struct span_tag {
  std::size_t bytes;
  std::byte* next;
};
std::size_t tag_bytes(std::size_t span_bytes) { return span_bytes == min_alignment ? 8 : 16; }

span_tag read_tag(std::byte* span_end) {
  track::internal_access(span_end - 8, 8);
  const auto link = *reinterpret_cast<std::uintptr_t*>(span_end - 8);
  span_tag tag{min_alignment, reinterpret_cast<std::byte*>(link & ~std::uintptr_t{1})};
  if (!(link & 1)) {
    track::internal_access(span_end - 16, 8);
    tag.bytes = *reinterpret_cast<std::size_t*>(span_end - 16);
  }
  track::taken_back(span_end - tag_bytes(tag.bytes), tag_bytes(tag.bytes));
  return tag;
}
void write_tag(std::byte* span_end, std::size_t bytes, std::byte* next) {
  const std::size_t n = tag_bytes(bytes);
  track::internal_access(span_end - n, n);
  if (bytes != min_alignment) *reinterpret_cast<std::size_t*>(span_end - 16) = bytes;
  *reinterpret_cast<std::uintptr_t*>(span_end - 8) =
      reinterpret_cast<std::uintptr_t>(next) | (bytes == min_alignment ? 1u : 0u);
  track::taken_back(span_end - n, n);
}

/// Sorts a list of spans (linked through their tags) by address: bottom-up merge sort, in place.
std::byte* merge_by_address(std::byte* a, std::byte* b) {
  std::byte* head = nullptr;
  std::byte* tail = nullptr;
  span_tag tail_tag{};
  const auto append = [&](std::byte* end, const span_tag& tag) {
    if (tail) write_tag(tail, tail_tag.bytes, end);
    else head = end;
    tail = end;
    tail_tag = tag;
  };
  span_tag a_tag = a ? read_tag(a) : span_tag{};
  span_tag b_tag = b ? read_tag(b) : span_tag{};
  while (a && b) {
    if (a < b) {
      append(a, a_tag);
      if ((a = a_tag.next)) a_tag = read_tag(a);
    } else {
      append(b, b_tag);
      if ((b = b_tag.next)) b_tag = read_tag(b);
    }
  }
  std::byte* rest = a ? a : b;
  if (tail) write_tag(tail, tail_tag.bytes, rest);
  else head = rest;
  return head;
}
std::byte* sort_by_address(std::byte* list) {
  std::byte* bins[64] = {};  // bins[i]: a sorted list of 2^i spans, or nothing
  while (list) {
    std::byte* carry = list;
    const span_tag tag = read_tag(list);
    list = tag.next;
    write_tag(carry, tag.bytes, nullptr);
    unsigned i = 0;
    for (; bins[i]; ++i) {
      carry = merge_by_address(bins[i], carry);
      bins[i] = nullptr;
    }
    bins[i] = carry;
  }
  std::byte* sorted = nullptr;
  for (std::byte* bin : bins)
    if (bin) sorted = merge_by_address(bin, sorted);
  return sorted;
}

/// How far the bump went in a chunk's first region (before a step back too, once span lists exist: a temporary
/// given back above a freed span), for its site to learn, less the span lists when nothing was
/// allocated after they were made (at a free as the chunk ended, a coroutine's frame say; the next allocation
/// after a free takes the slow path, which notes it): a region without room for them drops that free, which
/// costs nothing when nothing is allocated after it.
std::size_t first_region_extent(const chunk_header* chunk, const child_meta* meta) noexcept {
  std::byte* bump = child_meta::load(meta->bump);
  const auto* lists = reinterpret_cast<std::byte*>(chunk->span_lists);
  if (!lists) return static_cast<std::size_t>(bump - chunk->first_free);
  if (lists + span_lists_bytes == bump && !chunk->allocated_after_lists) bump -= span_lists_bytes;
  return std::max<std::size_t>(static_cast<std::size_t>(bump - chunk->first_free), chunk->stepped_back_from);
}

}  // namespace

void chunk_header::file_span(std::byte* start, std::size_t n) noexcept {
  const unsigned span_class = span_class_of(n);
  const std::uint64_t bit = std::uint64_t{1} << span_class;
  std::byte* span_end = start + n;
  write_tag(span_end, n, (span_mask & bit) ? span_lists[span_class] : nullptr);
  span_lists[span_class] = span_end;
  span_mask |= bit;
}

bool chunk_header::ensure_span_lists() noexcept {
  // Bumped from the current block, outside what is in use; a free in a block too full for them is not reused
  // until the chunk grows or is released (at most a small first region's worth).
  if (span_lists) return true;
  std::byte* const bump = child_meta::load(meta->bump);
  if (static_cast<std::size_t>(end - bump) < span_lists_bytes) return false;
  track::internal_access(bump, span_lists_bytes);
  span_lists = reinterpret_cast<std::byte**>(bump);
  allocated_after_lists = false;
  stepped_back_from = 0;
  meta->move_cursor(bump + span_lists_bytes);
  if (child_meta::load(meta->fast_limit) < bump + span_lists_bytes)
    child_meta::store(meta->fast_limit, bump + span_lists_bytes);
  return true;
}

void chunk_header::keep_span(std::byte* start, std::size_t n, bool freed) noexcept {
  // A block's tail or an alignment gap is kept only when the lists exist: making them would move the bump.
#ifndef NDEBUG
  if (freed) check_freed_range(start, n);  // before the lists are made: that moves the bump
#endif
  if (freed ? !ensure_span_lists() : !span_lists) return;
  if (!span_mask) freed_since_merge = 0;  // nothing waits to be merged
  if (freed) {
    freed_since_merge += n;
    child_meta::store(meta->fast_limit, child_meta::load(meta->bump));  // to the slow path: reuse first
  }
  file_span(start, n);
}

void* chunk_header::take_span(std::size_t n) noexcept {
  // First fit among the first few spans of the request's own class: a span freed at this size is found.
  const unsigned own_class = span_class_of(n);
  std::byte* found = nullptr;
  span_tag tag{};
  if (span_mask & (std::uint64_t{1} << own_class)) {
    std::byte* before = nullptr;
    std::size_t before_bytes = 0;
    std::byte* span_end = span_lists[own_class];
    for (int looked = 0; span_end && looked < 8; ++looked) {
      tag = read_tag(span_end);
      if (tag.bytes >= n) {
        found = span_end;
        if (before) write_tag(before, before_bytes, tag.next);
        else if (!(span_lists[own_class] = tag.next)) span_mask &= ~(std::uint64_t{1} << own_class);
        break;
      }
      before = span_end;
      before_bytes = tag.bytes;
      span_end = tag.next;
    }
  }
  // Else the head of the smallest larger class: every span there fits.
  if (!found && own_class + 1 < span_class_count) {
    const std::uint64_t larger = span_mask & (~std::uint64_t{0} << (own_class + 1));
    if (!larger) return nullptr;
    const unsigned span_class = static_cast<unsigned>(std::countr_zero(larger));
    found = span_lists[span_class];
    tag = read_tag(found);
    if (!(span_lists[span_class] = tag.next)) span_mask &= ~(std::uint64_t{1} << span_class);
  }
  if (!found) return nullptr;
  std::byte* start = found - tag.bytes;
  if (tag.bytes > n) file_span(start + n, tag.bytes - n);
  return start;
}

std::byte* chunk_header::take_span(std::size_t n, std::size_t alignment) noexcept {
  // An over-aligned request takes a span with room to slide up to its alignment, and gives the rest back.
  const std::size_t slack = alignment - min_alignment;
  auto* start = static_cast<std::byte*>(take_span(n + slack));
  if (!start || !slack) return start;
  std::byte* p = align_up(start, alignment);
  const auto front = static_cast<std::size_t>(p - start);
  if (front) file_span(start, front);
  if (front != slack) file_span(p + n, slack - front);
  return p;
}

void chunk_header::merge_spans() noexcept {
  // Every span into one list, sorted by address, then one sweep: adjacent spans become one, and the span
  // that ends at the bump folds back into it.
  std::byte* all = nullptr;
  for (std::uint64_t mask = span_mask; mask; mask &= mask - 1) {
    for (std::byte* span_end = span_lists[std::countr_zero(mask)]; span_end;) {
      const span_tag tag = read_tag(span_end);
      write_tag(span_end, tag.bytes, all);
      all = span_end;
      span_end = tag.next;
    }
  }
  span_mask = 0;
  freed_since_merge = 0;
  std::byte* run_start = nullptr;
  std::byte* run_end = nullptr;
  const auto close_run = [&] {
    if (!run_end) return;
    if (run_end == child_meta::load(meta->bump)) {
      note_step_back(run_end);
      child_meta::store(meta->fast_limit, run_start);  // the caller resumes bumping
      meta->move_cursor(run_start);  // one change: a reader never sees the bump back and counted_to not
    } else {
      file_span(run_start, static_cast<std::size_t>(run_end - run_start));
    }
  };
  for (std::byte* span_end = sort_by_address(all); span_end;) {
    const span_tag tag = read_tag(span_end);
    std::byte* const start = span_end - tag.bytes;
#ifndef NDEBUG
    if (start < run_end)
      misuse("deallocate was given a size larger than was allocated: two freed ranges overlap", start);
#endif
    if (start != run_end) {
      close_run();
      run_start = start;
    }
    run_end = span_end;
    span_end = tag.next;
  }
  close_run();
}

void chunk_header::grow(std::size_t min_bytes) {
  const unsigned needed = block_class_for(min_bytes + sizeof(block_header));
  const unsigned wanted = std::max<unsigned>(next_block_class, needed);
  block_header* block;
  try {
    block = take_block_anywhere(top, wanted);  // may throw: nothing has changed yet
  } catch (const std::bad_alloc&) {
    // The geometric step is a wish, not a need: near the end of the reservation, settle for a block that
    // holds this request rather than fail while the top still has one.
    if (wanted == needed) throw;
    block = take_block_anywhere(top, needed);
  }
  std::byte* const bump = child_meta::load(meta->bump);
  if (end - bump >= static_cast<std::ptrdiff_t>(min_alignment))
    keep_span(bump, static_cast<std::size_t>(end - bump), false);
  block->next = more_blocks;
  more_blocks = block;
  set_block_owner(block, meta);
  end = block->end();
  meta->move_cursor(block->payload());
  resume_bumping();
  meta->add_held(static_cast<std::ptrdiff_t>(block->bytes));
  if (next_block_class < max_growth_class) ++next_block_class;
}

void* chunk_header::allocate_own_block(std::size_t bytes, std::size_t n, std::size_t alignment) {
  // Blocks start page-aligned; a larger alignment needs room to slide the allocation up. n + slide is at
  // most what allocate_slow admitted.
  const std::size_t slide = alignment > page_bytes ? alignment - page_bytes : 0;
  const unsigned size_class = block_class_for(n + slide);
  // The block first: when the top cannot give it, the chunk has not changed at all (not even its peak).
  block_header* block = take_block_anywhere(top, size_class);
  own_block* record;
  try {
    record = static_cast<own_block*>(meta->allocate(sizeof(own_block), alignof(own_block)));
  } catch (...) {  // the record needed a new bump block, and there was none
    give_block_anywhere(top, block);
    throw;
  }
  meta->count(-footprint(sizeof(own_block)));  // bookkeeping, not user memory
  set_block_owner(block, meta);
  auto* start = reinterpret_cast<std::byte*>(block);
  std::byte* p = align_up(start, alignment);
  *record = {start, p, nullptr, own_blocks, block->map_entry, size_class};
  if (own_blocks) own_blocks->prev = record;
  own_blocks = record;
  meta->add_held(static_cast<std::ptrdiff_t>(block_bytes_of(size_class)));
  meta->count(n);
  track::taken_back(start, block_bytes_of(size_class));
  track::handed_out(p, bytes);
  return p;
}

void* chunk_header::allocate_slow(std::size_t bytes, std::size_t alignment) {
  if (!std::has_single_bit(alignment))
    throw std::invalid_argument("perfloc: alignment " + std::to_string(alignment) + " is not a power of two");
  // The admission check (arena.hpp): below it, nothing computed from bytes and alignment can wrap.
  const std::size_t admitted = admitted_bytes(bytes, alignment, top->max_request_bytes);
  if (!admitted) throw std::bad_alloc();
  if (alignment < min_alignment) alignment = min_alignment;
  const std::size_t n = footprint(bytes);
  allocated_after_lists = true;  // read once span lists exist (first_region_extent)
  if (admitted > large_request_bytes) return allocate_own_block(bytes, n, alignment);  // may_need_own_block

  std::byte* p = nullptr;
  if (span_mask) p = take_span(n, alignment);
  // About to grow: merge what was freed since the last merge first, if that is enough to be worth a sort.
  if (!p && span_mask && align_up(child_meta::load(meta->bump), alignment) + n > end &&
      freed_since_merge >= std::max(n, meta->held_bytes.load(std::memory_order_relaxed) / 16)) {
    merge_spans();
    if (span_mask) p = take_span(n, alignment);
  }
  if (p) {
    meta->count(n);
    // Keep reusing while spans are left.
    if (span_mask) child_meta::store(meta->fast_limit, child_meta::load(meta->bump));
    else resume_bumping();
  } else {
    p = align_up(child_meta::load(meta->bump), alignment);
    if (p + n > end) {
      grow(n + alignment);
      p = align_up(child_meta::load(meta->bump), alignment);
    }
    std::byte* const bump = child_meta::load(meta->bump);
    if (p != bump) keep_span(bump, static_cast<std::size_t>(p - bump), false);  // the alignment gap
    meta->move_cursor(p);  // the gap is not in use
    child_meta::store(meta->bump, p + n);
    resume_bumping();  // no span fits requests like this one: back to bumping
  }
  track::handed_out(p, bytes);
  return p;
}

void chunk_header::check_freed_range(const std::byte* start, std::size_t n) noexcept {
  // A freed range lies in one block of the chunk, and in the current block below the bump.
  const auto check_in = [&](block_header* block, const std::byte* limit) {
    if (start < block->payload() || start >= block->end()) return false;
    if (start + n > limit) misuse("deallocate was given a size larger than was allocated", start);
    return true;
  };
  block_header* current = more_blocks ? more_blocks : first_block();
  if (check_in(current, child_meta::load(meta->bump))) return;
  if (check_in(first_block(), first_block()->end())) return;
  for (block_header* block = more_blocks; block; block = block->next)
    if (check_in(block, block->end())) return;
}

bool chunk_header::free_own_block(std::byte* p, std::size_t n) noexcept {
  own_block* record = own_blocks;
  while (record && record->payload != p) record = record->next;  // few: only allocations above 256 KiB
  if (!record) return false;  // a large request that fit the current block
  meta->give_back(n, child_meta::load(meta->bump));
  if (record->prev) record->prev->next = record->next;
  else own_blocks = record->next;
  if (record->next) record->next->prev = record->prev;
  meta->add_held(-static_cast<std::ptrdiff_t>(block_bytes_of(record->size_class)));
  give_block_anywhere(top, rebuild_own_block(record));
  meta->count(footprint(sizeof(own_block)));
  meta->deallocate(record, sizeof(own_block), alignof(own_block));
  return true;
}

child_meta* open_chunk_slow(top_state* top, std::string_view label, std::source_location where) {
  thread_cache* cache = cache_for(top);
  if (!cache) return open_chunk_at_exit(top, label, where);  // past this thread's thread_local teardown
  cache_section section(cache);
  if (cache->attention.load(std::memory_order_relaxed) & ~thread_cache::reclaim_bit) drain_released_elsewhere(cache);
  const unsigned site = site_of(where);
  const unsigned region_class = cache->site_class[site];
  block_header* first = nullptr;
  if (child_meta* parked; cache->take_parked(region_class, parked)) {  // as the fast path: it first
    cache->unlink(parked);  // opened as any free region, linked again below
    first = parked->chunk->first_block();
  } else {
    first = cache->take_region(region_class, site);
  }
  if (!first) {
    refill_region(cache, region_class);  // may throw; nothing was taken
    first = cache->take_region(region_class, site);
  }
  return open_region<true>(cache, top, first, site, label, where);
}

void release_chunk_slow(child_meta* meta) noexcept {
  chunk_header* chunk = meta->chunk;
  if (chunk->cleanups) chunk->run_cleanups();
  // Every object made in the chunk is destroyed now, trivially destructible ones included.
  meta->objects_destroyed.store(meta->objects_made.load(std::memory_order_relaxed), std::memory_order_relaxed);
  top_state* top = chunk->top;
  if (top->release_hook) call_release_hook(chunk);
  // What its site learns: the most it had in use at once (a temporary given back before the end counts), or
  // more if its first region's bump went further, or when it grew, what it has in use now if more.
  const bool outgrew = chunk->more_blocks;
  const bool grew = outgrew || chunk->own_blocks;
  const std::size_t used = std::max(meta->peak_in_use_bytes.load(std::memory_order_relaxed),
                                    grew ? meta->in_use() : first_region_extent(chunk, meta));
  const bool whole = chunk->region_class == whole_block_region;
  const cache_binding& binding = current_binding;
  const bool home = binding.cache == meta->home && binding.id == top->id;  // where it was opened
  // Its site learns first: the blocks a chunk in a small region grew go back to the OS when its site's chunks open
  // in small regions from now on (give_back_blocks).
  bool blocks_to_os = false;
  if (home && grew) {
    cache_section section(binding.cache);
    binding.cache->learn(chunk, used, outgrew);
    blocks_to_os = !whole && binding.cache->site_class[chunk->site] < whole_block_region;
  }
  if (grew) chunk->give_back_blocks(blocks_to_os);
  chunk->empty_for_open();  // before the region is free again: the next open does not write these
  // A site's first chunk (a whole block) had its learn_below moved below every bump (thread_cache::take_region).
  if (whole) chunk->learn_below = learn_below_of(whole_block_region, chunk->first_free);
  block_header* first = chunk->first_block();
  if (home) {
    cache_section section(binding.cache);
    if (!grew) binding.cache->learn(chunk, used, outgrew);
    leave_live_list(binding.cache, meta);
    if (whole) return binding.cache->give_shell(first);  // the meta stays attached (or goes to the cache's metas)
    return give_region(binding.cache, first, false);
  }
  end_generation(meta);
  release_elsewhere(meta, !whole);  // hands the meta back to its home cache, and a small region with it
  if (whole) adopt_first_block(top, first);
}

void chunk_header::run_cleanups() noexcept {
  // Newest first. A destructor may use the chunk, which edits the list: take the head off before running
  // it, and mark the object as released, so that any destructor's destroy() of it does nothing. Then:
  // - destroy() of an object whose destructor ran or runs now (a younger one, or one in the call chain):
  //   nothing (destroy() reads released_bit);
  // - destroy() of an object still waiting (an older one): destroyed at once, its record unlinked, so
  //   this loop never reaches it;
  // - make() of a new object: pushed at the head, so this loop destroys it next. An object made during
  //   the release is destroyed by the same release (a destructor that always makes another never ends).
  // Memory freed meanwhile is reused as usual until the blocks go back.
  while (cleanup_record* record = cleanups) {
    cleanups = record->next;
    if (cleanups) cleanups->prev = nullptr;
    auto* header = reinterpret_cast<object_header*>(record + 1);
    header->word |= object_header::released_bit;
    record->destroy(header + 1);
  }
}

void chunk_header::give_back_blocks(bool to_os) noexcept {
  // Own blocks first: their records live in the bump blocks.
  for (own_block* record = own_blocks; record; record = record->next)
    give_block_anywhere(top, rebuild_own_block(record));
  own_blocks = nullptr;
  // `to_os`: the chunk grew out of a small region and its site's chunks open in small regions (release_chunk_slow):
  // it is one its site did not expect (an outlier, or one of a new site's burst opened before the site learned),
  // no chunk after it is likely to grow into its blocks, and the pages it touched would otherwise stay resident
  // as long as retain_bytes allows (the HTTP demo's warm-up: up to 25 request chunks grew a 128 KiB block each,
  // 8 KiB of it touched, 200 KiB resident for good beside the slabs of the requests after them). Otherwise the
  // blocks go to the thread's cache and the top as usual: a site that learned whole blocks reuses them.
  while (block_header* block = more_blocks) {
    more_blocks = block->next;
    set_block_owner(block, nullptr);
    if (to_os) top_give_block_to_os(top, block);
    else give_block_anywhere(top, block);
  }
}

// ------------------------------------------------------------------------------------------------------------
// The std::pmr view
// ------------------------------------------------------------------------------------------------------------

void* chunk_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  return chunk_.meta()->allocate(bytes, alignment);
}
void chunk_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  chunk_.meta()->deallocate(p, bytes, alignment);
}
bool chunk_resource::do_is_equal(const std::pmr::memory_resource& other) const noexcept { return this == &other; }

// ------------------------------------------------------------------------------------------------------------
// What statistics read: labels, figures, the release hook
// ------------------------------------------------------------------------------------------------------------

namespace {

/// The valid UTF-8 character at `s` (Unicode's table 3-7), or else the bytes one U+FFFD replaces (the
/// maximal subpart of a character, at least one byte).
struct utf8_step {
  std::size_t bytes;
  bool valid;
};
utf8_step next_character(const unsigned char* s, std::size_t n) noexcept {
  const unsigned char c = s[0];
  if (c < 0x80) return {1, c != 0};  // a NUL would end the label early
  std::size_t length;
  unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    length = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    length = 3;
    if (c == 0xE0) low = 0xA0;   // no overlong forms
    if (c == 0xED) high = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    length = 4;
    if (c == 0xF0) low = 0x90;
    if (c == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return {1, false};
  }
  std::size_t i = 1;
  for (; i < length && i < n; ++i)
    if (s[i] < (i == 1 ? low : 0x80) || s[i] > (i == 1 ? high : 0xBF)) return {i, false};
  return {i, i == length};
}

std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// opened_ns of a chunk opened while its top's release hook ran on the thread: the hook is not told of it,
/// so that a hook may use a scratch chunk of its own top without calling itself forever.
constexpr std::int64_t opened_in_hook = INT64_MIN;

/// The release hooks running on this thread, innermost first (a hook may release chunks of another top).
struct running_hook {
  const top_state* top;
  const running_hook* outer;
};
thread_local const running_hook* running_hooks = nullptr;

bool hook_is_running(const top_state* top) noexcept {
  for (const running_hook* h = running_hooks; h; h = h->outer)
    if (h->top == top) return true;
  return false;
}

}  // namespace

void copy_label(child_meta* meta, std::string_view label) noexcept {
  // Valid UTF-8, cut on a character boundary: the label goes into SVG, JSON and terminals as it is. Through
  // atomic_ref, inside the open's change: a walker on another thread reads one label, whole.
  char kept[label_capacity];
  std::size_t length = 0;
  const auto* bytes = reinterpret_cast<const unsigned char*>(label.data());
  for (std::size_t at = 0; at < label.size();) {
    const utf8_step step = next_character(bytes + at, label.size() - at);
    const char* piece = step.valid ? label.data() + at : "\xEF\xBF\xBD";  // U+FFFD
    const std::size_t piece_bytes = step.valid ? step.bytes : 3;
    if (length + piece_bytes > label_capacity - 1) break;
    std::copy_n(piece, piece_bytes, kept + length);
    length += piece_bytes;
    at += step.bytes;
  }
  for (std::size_t i = 0; i < length; ++i)
    std::atomic_ref<char>(meta->label[i]).store(kept[i], std::memory_order_relaxed);
  std::atomic_ref<char>(meta->label[length]).store('\0', std::memory_order_relaxed);
}

void note_open_time(child_meta* meta) noexcept {
  const bool in_hook = running_hooks && hook_is_running(meta->chunk->top);
  meta->opened_ns.store(in_hook ? opened_in_hook : steady_ns(), std::memory_order_relaxed);
}

chunk_figures figures_of(const child_meta* meta, std::int64_t now_ns) noexcept {
  chunk_figures figures{};
  std::int64_t opened_ns;
  // A seqlock read: retry while the owner is in a change, or when one happened meanwhile. The owner itself
  // never retries (its count is even and cannot move under it).
  for (unsigned attempt = 0;; ++attempt) {
    const std::uint32_t before = meta->changes.load(std::memory_order_acquire);
    if (before & 1) {
      if (attempt > 64) std::this_thread::yield();  // the owner was preempted in the middle of a change
      continue;
    }
    for (std::size_t i = 0; i < label_capacity; ++i) {
      figures.label[i] = std::atomic_ref<char>(const_cast<char&>(meta->label[i])).load(std::memory_order_relaxed);
      if (!figures.label[i]) break;
    }
    figures.in_use_bytes = meta->in_use();
    figures.peak_in_use_bytes = meta->peak_in_use_bytes.load(std::memory_order_relaxed);
    figures.held_bytes = meta->held_bytes.load(std::memory_order_relaxed);
    figures.blocks = meta->blocks.load(std::memory_order_relaxed);
    figures.objects_made = meta->objects_made.load(std::memory_order_relaxed);
    figures.objects_destroyed = meta->objects_destroyed.load(std::memory_order_relaxed);
    figures.opened_at = meta->where_opened();
    opened_ns = meta->opened_ns.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);  // the reads above come before the second count
    if (meta->changes.load(std::memory_order_relaxed) == before) break;
  }
  figures.label[label_capacity - 1] = '\0';
  figures.peak_in_use_bytes = std::max(figures.peak_in_use_bytes, figures.in_use_bytes);
  figures.lifetime_ns = now_ns >= 0 && opened_ns != opened_in_hook ? std::max<std::int64_t>(now_ns - opened_ns, 0) : -1;
  figures.identity = meta;
  return figures;
}

std::int64_t steady_clock_ns() noexcept { return steady_ns(); }

void call_release_hook(chunk_header* chunk) noexcept {
  if (chunk->meta->opened_ns.load(std::memory_order_relaxed) == opened_in_hook) return;
  const chunk_figures figures = figures_of(chunk->meta, steady_ns());
  const running_hook self{chunk->top, running_hooks};
  running_hooks = &self;
  chunk->top->release_hook(chunk->top->release_hook_context, figures);
  running_hooks = self.outer;
}

// ------------------------------------------------------------------------------------------------------------
// Misuse
// ------------------------------------------------------------------------------------------------------------

void misuse(const char* message, const void* where) noexcept {
  if (where) std::fprintf(stderr, "perfloc: %s (at %p)\n", message, where);
  else std::fprintf(stderr, "perfloc: %s\n", message);
  std::abort();
}

void stale_handle(const child_meta* meta, unsigned generation) noexcept {
  // The label still names the released chunk while no other chunk has been opened from its meta.
  const unsigned now = meta->generation.load(std::memory_order_relaxed);
  const bool reopened = meta->state.load(std::memory_order_relaxed) == meta_state::live;
  char message[400];
  if (!reopened && ((now - 1) & 0xffff) == generation)
    std::snprintf(message, sizeof message,
                  "a perfloc::allocator, perfloc::vector or std::pmr resource was used after its chunk '%s' was "
                  "released (chunk generation %u of its meta)",
                  meta->label[0] ? meta->label : "(no label)", generation);
  else
    std::snprintf(message, sizeof message,
                  "a perfloc::allocator, perfloc::vector or std::pmr resource was used after its chunk was released "
                  "(chunk generation %u of its meta; the meta is now at generation %u%s%s%s)",
                  generation, now & 0xffff, reopened ? ", chunk '" : "",
                  reopened ? (meta->label[0] ? meta->label : "(no label)") : "", reopened ? "'" : "");
  misuse(message, meta);
}

void check_destroy(const object_header* header, const void* object) noexcept {
  if (!is_live_meta(header->meta()))
    misuse("perfloc::destroy was given a pointer that process_chunk::make did not return, or whose chunk was "
           "already released",
           object);
  if (header->word & object_header::destroyed_bit) misuse("perfloc::destroy was called twice on one object", object);
}

namespace {
bool block_contains(block_header* block, const void* p) {
  const auto* at = static_cast<const std::byte*>(p);
  return at >= block->payload() && at < block->end();
}
}  // namespace

bool chunk_contains(chunk_header* chunk, const void* p) noexcept {
  if (block_contains(chunk->first_block(), p)) return true;
  for (block_header* b = chunk->more_blocks; b; b = b->next)
    if (block_contains(b, p)) return true;
  for (own_block* b = chunk->own_blocks; b; b = b->next)
    if (p >= b->start && p < b->start + block_bytes_of(b->size_class)) return true;
  return false;
}

void check_outlives(chunk_header* owner, const void* object) noexcept {
  const cache_binding& binding = current_binding;
  if (binding.id != owner->top->id || owner->meta->home != binding.cache) return;
  // The live list is newest first: every chunk before the owner's was opened after it on this thread.
  for (child_meta* m = binding.cache->live.next.load(std::memory_order_relaxed); m != owner->meta && m != &binding.cache->live;
       m = m->next.load(std::memory_order_relaxed)) {
    if (m->state.load(std::memory_order_relaxed) != meta_state::live || !chunk_contains(m->chunk, object)) continue;
    char message[256];
    std::snprintf(message, sizeof message,
                  "perfloc::vector holds a reference into chunk '%s', opened after the vector's chunk '%s': it "
                  "will be released first and leave the reference dangling",
                  m->label[0] ? m->label : "(no label)", owner->meta->label[0] ? owner->meta->label : "(no label)");
    misuse(message, object);
  }
}

}  // namespace perfloc::detail
