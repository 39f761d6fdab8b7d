// src/perfloc/os.hpp — the only place perfloc talks to the operating system about memory.
#pragma once

#include <cstddef>

namespace perfloc::detail::os {

/// Reserves address space: no memory, no swap, inaccessible until committed. nullptr when refused.
void* reserve(std::size_t bytes) noexcept;
/// Makes [p, p + bytes) readable and writable; pages are backed on first touch. false when refused.
bool commit(void* p, std::size_t bytes) noexcept;
/// Backs every page of [p, p + bytes) (committed) now, in one call, where the caller is about to touch them
/// all: a page fault per page costs more. Best effort: without MADV_POPULATE_WRITE (Linux 5.14), faults do it.
void populate(void* p, std::size_t bytes) noexcept;
/// Gives the pages of [p, p + bytes) back to the OS; they stay accessible and read as zero afterwards.
void decommit(void* p, std::size_t bytes) noexcept;
/// A zero-filled, readable and writable table whose pages are backed on first touch. nullptr when refused.
void* map_table(std::size_t bytes) noexcept;
/// Returns a whole reservation (or table).
void release(void* p, std::size_t bytes) noexcept;
/// A full memory barrier executed by every running thread of the process before this returns: the heavy
/// side of an asymmetric fence, whose light side is a compiler barrier (see reclaim_caches).
void heavy_barrier() noexcept;

}  // namespace perfloc::detail::os
