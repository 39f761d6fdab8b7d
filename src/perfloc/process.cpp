// src/perfloc/process.cpp — a process chunk's slow paths: growth, reuse of freed spans, large allocations,
// release, and the debug checks.
//
// The fast path (arena.hpp, child_meta::allocate) is a bump within the current block. It falls through to
// here when the block is full, when the alignment is above 16, for allocate(0), or right after a free:
// deallocate sets `fast_limit` to `bump`, so the fast path costs nothing extra for knowing that memory
// waits for reuse. Spans
// wait in segregated stacks: exact 16-byte classes up to 512 bytes, then powers of two; a request takes
// the smallest non-empty class that is sure to fit and gives the remainder back. Allocation stays on the
// slow path while freed spans serve it, and goes back to bumping at the first request none of them fits.
// The tail of a full block and alignment gaps are kept too, but only for when the block is full: they
// do not take the fast path away.
#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

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

// A span's link is its last 8 bytes; a span above 512 bytes keeps its size in the 8 before.
std::byte** link_of(std::byte* span_end) { return reinterpret_cast<std::byte**>(span_end - 8); }
std::size_t* size_of(std::byte* span_end) { return reinterpret_cast<std::size_t*>(span_end - 16); }

}  // namespace

void chunk_header::keep_span(std::byte* start, std::size_t n, bool reuse_first) noexcept {
  const unsigned span_class = span_class_of(n);
  const std::uint64_t bit = std::uint64_t{1} << span_class;
  std::byte* span_end = start + n;
  const std::size_t bookkeeping = n > 512 ? 16 : 8;
  track::internal_access(span_end - bookkeeping, bookkeeping);
  if (n > 512) *size_of(span_end) = n;
  *link_of(span_end) = (span_mask & bit) ? span_lists[span_class] : nullptr;
  track::taken_back(span_end - bookkeeping, bookkeeping);
  span_lists[span_class] = span_end;
  span_mask |= bit;
  if (reuse_first) child_meta::store(meta->fast_limit, child_meta::load(meta->bump));  // to the slow path
}

void* chunk_header::take_span(std::size_t n) noexcept {
  const unsigned first = first_span_class_for(n);
  const std::uint64_t candidates = span_mask & (~std::uint64_t{0} << first);
  if (!candidates) return nullptr;
  const unsigned span_class = static_cast<unsigned>(std::countr_zero(candidates));
  std::byte* span_end = span_lists[span_class];
  const bool sized = span_class >= small_span_classes;
  track::internal_access(span_end - (sized ? 16 : 8), sized ? 16 : 8);
  const std::size_t span_bytes = sized ? *size_of(span_end) : (span_class + 1) * 16;
  std::byte* next = *link_of(span_end);
  span_lists[span_class] = next;
  if (!next) span_mask &= ~(std::uint64_t{1} << span_class);
  std::byte* start = span_end - span_bytes;
  track::taken_back(start, span_bytes);
  if (span_bytes > n) keep_span(start + n, span_bytes - n, false);
  return start;
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
  meta->settle();
  end = block->end();
  child_meta::store(meta->bump, block->payload());
  child_meta::store(meta->counted_to, block->payload());
  resume_bumping();
  meta->add_held(static_cast<std::ptrdiff_t>(block->bytes));
  if (next_block_class < max_growth_class) ++next_block_class;
}

void* chunk_header::allocate_own_block(std::size_t bytes, std::size_t n, std::size_t alignment) {
  // Blocks start page-aligned; a larger alignment needs room to slide the allocation up.
  const std::size_t slide = alignment > page_bytes ? alignment - page_bytes : 0;
  const unsigned size_class = block_class_for(n + slide);
  auto* record = static_cast<own_block*>(meta->allocate(sizeof(own_block), alignof(own_block)));
  meta->count(-footprint(sizeof(own_block)));  // bookkeeping, not user memory
  block_header* block;
  try {
    block = take_block_anywhere(top, size_class);
  } catch (...) {
    meta->count(footprint(sizeof(own_block)));
    meta->deallocate(record, sizeof(own_block), alignof(own_block));
    throw;
  }
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
  if (bytes > top->max_request_bytes) throw std::bad_alloc();
  if (alignment < min_alignment) alignment = min_alignment;
  const std::size_t n = footprint(bytes);
  if (may_need_own_block(n, alignment)) return allocate_own_block(bytes, n, alignment);

  std::byte* p = nullptr;
  if (span_mask && alignment == min_alignment) p = static_cast<std::byte*>(take_span(n));
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
    meta->settle();
    child_meta::store(meta->counted_to, p);  // the gap is not in use
    child_meta::store(meta->bump, p + n);
    resume_bumping();  // no span fits requests like this one: back to bumping
  }
  track::handed_out(p, bytes);
  return p;
}

bool chunk_header::free_own_block(std::byte* p) noexcept {
  own_block* record = own_blocks;
  while (record && record->payload != p) record = record->next;  // few: only allocations above 256 KiB
  if (!record) return false;  // a large request that fit the current block
  if (record->prev) record->prev->next = record->next;
  else own_blocks = record->next;
  if (record->next) record->next->prev = record->prev;
  meta->add_held(-static_cast<std::ptrdiff_t>(block_bytes_of(record->size_class)));
  give_block_anywhere(top, rebuild_own_block(record));
  meta->count(footprint(sizeof(own_block)));
  meta->deallocate(record, sizeof(own_block), alignof(own_block));
  return true;
}

child_meta* open_chunk_slow(top_state* top, std::string_view label, const std::source_location& where) {
  thread_cache* cache = cache_for(top);
  if (!cache) return open_chunk_at_exit(top, label, where);  // past this thread's thread_local teardown
  if (cache->released_elsewhere.load(std::memory_order_relaxed)) drain_released_elsewhere(cache);
  cache_section section(cache);
  if (!cache->free_blocks[0]) cache->push_free(refill_shell(cache), 0);  // may throw; nothing was taken
  return open_shell<true>(cache, top, label, where);
}

void release_chunk_slow(chunk_header* chunk) noexcept {
  if (chunk->cleanups) chunk->run_cleanups();
  top_state* top = chunk->top;
  if (top->release_hook) call_release_hook(chunk);
  if (chunk->more_blocks || chunk->own_blocks) chunk->give_back_blocks();
  child_meta* meta = chunk->meta;
  block_header* first = chunk->first_block();
  const cache_binding& binding = current_binding;
  if (binding.cache == meta->home && binding.top == top && binding.id == top->id) {  // where it was opened
    thread_cache* cache = binding.cache;
    cache->unlink(meta);
    meta->state.store(meta_state::free, std::memory_order_relaxed);
    cache_section section(cache);
    cache->give_shell(first);  // the meta stays attached (or goes back to the cache if it is full)
    return;
  }
  release_elsewhere(meta);  // hands the meta back to its home cache
  adopt_first_block(top, first);
}

void chunk_header::run_cleanups() noexcept {
  // Newest first; a destructor may destroy() or make() objects of this chunk, which edits the list: take
  // the head off before running it.
  while (cleanup_record* record = cleanups) {
    cleanups = record->next;
    if (cleanups) cleanups->prev = nullptr;
    record->destroy(reinterpret_cast<std::byte*>(record + 1) + sizeof(object_header));
    child_meta::add(meta->objects_destroyed, 1);
  }
}

void chunk_header::give_back_blocks() noexcept {
  // Own blocks first: their records live in the bump blocks.
  for (own_block* record = own_blocks; record; record = record->next)
    give_block_anywhere(top, rebuild_own_block(record));
  own_blocks = nullptr;
  while (block_header* block = more_blocks) {
    more_blocks = block->next;
    set_block_owner(block, nullptr);
    give_block_anywhere(top, block);
  }
}

// ------------------------------------------------------------------------------------------------------------
// The std::pmr view
// ------------------------------------------------------------------------------------------------------------

void* chunk_resource::do_allocate(std::size_t bytes, std::size_t alignment) {
  return chunk_->meta->allocate(bytes, alignment);
}
void chunk_resource::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  chunk_->meta->deallocate(p, bytes, alignment);
}
bool chunk_resource::do_is_equal(const std::pmr::memory_resource& other) const noexcept { return this == &other; }

void copy_label(child_meta* meta, std::string_view label) noexcept {
  // Through atomic_ref: a statistics walk on another thread may read the label of a meta being reused.
  const std::size_t length = label.size() < label_capacity - 1 ? label.size() : label_capacity - 1;
  for (std::size_t i = 0; i < length; ++i)
    std::atomic_ref<char>(meta->label[i]).store(label[i], std::memory_order_relaxed);
  std::atomic_ref<char>(meta->label[length]).store('\0', std::memory_order_relaxed);
}

namespace {
std::int64_t steady_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void note_open_time(child_meta* meta) noexcept { meta->opened_ns.store(steady_ns(), std::memory_order_relaxed); }

chunk_figures figures_of(const child_meta* meta) noexcept {
  chunk_figures figures{};
  for (std::size_t i = 0; i < label_capacity; ++i) {
    figures.label[i] = std::atomic_ref<char>(const_cast<char&>(meta->label[i])).load(std::memory_order_relaxed);
    if (!figures.label[i]) break;
  }
  figures.label[label_capacity - 1] = '\0';
  figures.in_use_bytes = meta->in_use();
  figures.peak_in_use_bytes = std::max(meta->peak_in_use_bytes.load(std::memory_order_relaxed), figures.in_use_bytes);
  figures.held_bytes = meta->held_bytes.load(std::memory_order_relaxed);
  figures.blocks = meta->blocks.load(std::memory_order_relaxed);
  figures.objects_made = meta->objects_made.load(std::memory_order_relaxed);
  figures.objects_destroyed = meta->objects_destroyed.load(std::memory_order_relaxed);
  figures.lifetime_ns = -1;
  figures.opened_at = meta->where_opened();
  figures.identity = meta;
  return figures;
}

void call_release_hook(chunk_header* chunk) noexcept {
  chunk_figures figures = figures_of(chunk->meta);
  figures.lifetime_ns = steady_ns() - chunk->meta->opened_ns.load(std::memory_order_relaxed);
  chunk->top->release_hook(chunk->top->release_hook_context, figures);
}

// ------------------------------------------------------------------------------------------------------------
// Misuse
// ------------------------------------------------------------------------------------------------------------

void misuse(const char* message, const void* where) noexcept {
  if (where) std::fprintf(stderr, "perfloc: %s (at %p)\n", message, where);
  else std::fprintf(stderr, "perfloc: %s\n", message);
  std::abort();
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
bool chunk_contains(chunk_header* chunk, const void* p) {
  if (block_contains(chunk->first_block(), p)) return true;
  for (block_header* b = chunk->more_blocks; b; b = b->next)
    if (block_contains(b, p)) return true;
  for (own_block* b = chunk->own_blocks; b; b = b->next)
    if (p >= b->start && p < b->start + block_bytes_of(b->size_class)) return true;
  return false;
}
}  // namespace

void check_outlives(chunk_header* owner, const void* object) noexcept {
  const cache_binding& binding = current_binding;
  if (binding.top != owner->top || binding.id != owner->top->id || owner->meta->home != binding.cache) return;
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
