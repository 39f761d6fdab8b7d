// src/perfloc/os.cpp — reserve, commit, decommit and release, on Linux.
//
// A reservation is PROT_NONE and MAP_NORESERVE: address space only, so a top chunk can reserve gigabytes up
// front and still cost nothing until blocks are handed out. Committing is mprotect to read-write (pages are
// backed on first touch); decommitting is MADV_DONTNEED, which frees the pages at once and keeps the range
// usable, so a decommitted block can be handed out again without another system call.
#include "os.hpp"

#include <sys/mman.h>

namespace perfloc::detail::os {

void* reserve(std::size_t bytes) noexcept {
  void* p = ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

bool commit(void* p, std::size_t bytes) noexcept { return ::mprotect(p, bytes, PROT_READ | PROT_WRITE) == 0; }

void decommit(void* p, std::size_t bytes) noexcept { ::madvise(p, bytes, MADV_DONTNEED); }

void* map_table(std::size_t bytes) noexcept {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void release(void* p, std::size_t bytes) noexcept { ::munmap(p, bytes); }

}  // namespace perfloc::detail::os
