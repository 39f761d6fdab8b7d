// src/perfloc/os.cpp — reserve, commit, decommit and release, on Linux.
//
// A reservation is PROT_NONE and MAP_NORESERVE: address space only, so a top chunk can reserve gigabytes up
// front and still cost nothing until blocks are handed out. Committing is mprotect to read-write (pages are
// backed on first touch); decommitting is MADV_DONTNEED, which frees the pages at once and keeps the range
// usable, so a decommitted block can be handed out again without another system call.
//
// heavy_barrier is membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (Linux 4.14), which interrupts every CPU
// running a thread of this process; where it is refused, a change of a page's protection does the same
// through the TLB shootdown it forces (folly's asymmetricHeavyBarrier takes the same fallback).
#include "os.hpp"

#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace perfloc::detail::os {

void* reserve(std::size_t bytes) noexcept {
  void* p = ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

bool commit(void* p, std::size_t bytes) noexcept { return ::mprotect(p, bytes, PROT_READ | PROT_WRITE) == 0; }

void populate(void* p, std::size_t bytes) noexcept {
#ifdef MADV_POPULATE_WRITE
  ::madvise(p, bytes, MADV_POPULATE_WRITE);
#else
  (void)p, (void)bytes;
#endif
}

void decommit(void* p, std::size_t bytes) noexcept { ::madvise(p, bytes, MADV_DONTNEED); }

void* map_table(std::size_t bytes) noexcept {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void release(void* p, std::size_t bytes) noexcept { ::munmap(p, bytes); }

void heavy_barrier() noexcept {
  static const bool expedited = ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (expedited && ::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return;
  }
  static std::mutex mutex;
  static auto* page = static_cast<volatile char*>(
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  std::lock_guard lock(mutex);
  ::mprotect(const_cast<char*>(page), 4096, PROT_READ | PROT_WRITE);
  *page = 0;  // the page must be resident for the protection change to shoot down other CPUs' TLBs
  ::mprotect(const_cast<char*>(page), 4096, PROT_READ);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace perfloc::detail::os
