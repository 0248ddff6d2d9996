#include "cpu/host_cache.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <list>
#include <mutex>
#include <utility>

// Under AddressSanitizer (FUSEDNN_SANITIZE, tools/sanitize.sh) the cache's
// blocks are mapped here, not by ASan's allocator, so ASan would see all of
// a block as addressable: an idle block, and the rounding past the bytes
// asked for, are poisoned by hand instead, so that a use after release or a
// write past an output's end is reported as it is for a malloc'd array.
// Without ASan the macros do nothing.
#if defined(__has_include)
#if __has_include(<sanitizer/asan_interface.h>)
#include <sanitizer/asan_interface.h>
#endif
#endif
#ifndef ASAN_POISON_MEMORY_REGION
#define ASAN_POISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#endif

namespace fusednn {
namespace cpu {

namespace {

constexpr size_t kGranule = size_t(2) << 20;  // a transparent huge page

// FUSEDNN_HOST_CACHE_MB when it is a number, else 1 GiB or an eighth of the
// physical memory, whichever is less.
size_t default_limit() {
  const char* env = std::getenv("FUSEDNN_HOST_CACHE_MB");
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    const unsigned long long mb = std::strtoull(env, &end, 10);
    if (end != env && *end == '\0' && mb <= (1ull << 40)) return size_t(mb) << 20;
  }
  size_t limit = size_t(1) << 30;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0 && size_t(pages) / 8 < limit / size_t(page))
    limit = size_t(pages) / 8 * size_t(page);
  return limit;
}

struct Cache {
  std::mutex mu;
  // Idle blocks, oldest first: (size, address).
  std::list<std::pair<size_t, void*>> idle;
  size_t idle_bytes = 0, used_bytes = 0, limit = default_limit();
  uint64_t hits = 0, misses = 0;

  // Unmaps idle blocks, oldest first, until idle_bytes + room <= limit.
  // Returns what to unmap; the caller unmaps outside the lock.
  std::list<std::pair<size_t, void*>> trim(size_t room) {
    std::list<std::pair<size_t, void*>> out;
    while (!idle.empty() && idle_bytes + room > limit) {
      idle_bytes -= idle.front().first;
      out.splice(out.end(), idle, idle.begin());
    }
    return out;
  }
};

Cache& cache() {
  // Never destroyed: arrays may release their blocks during interpreter
  // shutdown, after static destructors would have run.
  static Cache* c = new Cache();
  return *c;
}

// Returns a block to the kernel. Its poison goes first: the addresses may
// be mapped again, by anyone.
void unmap(void* p, size_t size) {
  ASAN_UNPOISON_MEMORY_REGION(p, size);
  munmap(p, size);
}

void unmap_all(const std::list<std::pair<size_t, void*>>& blocks) {
  for (const auto& b : blocks) unmap(b.second, b.first);
}

// A block handed out for `bytes`: those addressable, the rest poisoned.
void* hand_out(void* p, size_t bytes, size_t size) {
  ASAN_UNPOISON_MEMORY_REGION(p, bytes);
  ASAN_POISON_MEMORY_REGION(static_cast<char*>(p) + bytes, size - bytes);
  return p;
}

}  // namespace

void* host_cache_acquire(size_t bytes, size_t* block) {
  const size_t size = (bytes + kGranule - 1) / kGranule * kGranule;
  *block = size;
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    // The most recently released block of this size: likeliest still in cache.
    for (auto it = c.idle.rbegin(); it != c.idle.rend(); ++it) {
      if (it->first == size) {
        void* p = it->second;
        c.idle.erase(std::next(it).base());
        c.idle_bytes -= size;
        c.used_bytes += size;
        ++c.hits;
        return hand_out(p, bytes, size);
      }
    }
    ++c.misses;
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    // Idle blocks of other sizes may be what stands in the way.
    host_cache_empty();
    p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
  }
#if defined(MADV_HUGEPAGE)
  madvise(p, size, MADV_HUGEPAGE);  // a hint: fewer faults and TLB misses
#endif
  std::lock_guard<std::mutex> lock(c.mu);
  c.used_bytes += size;
  return hand_out(p, bytes, size);
}

void host_cache_release(void* p, size_t block) {
  Cache& c = cache();
  std::list<std::pair<size_t, void*>> drop;
  ASAN_POISON_MEMORY_REGION(p, block);
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.used_bytes -= block;
    if (block <= c.limit) {
      drop = c.trim(block);
      c.idle.emplace_back(block, p);
      c.idle_bytes += block;
      p = nullptr;
    }
  }
  unmap_all(drop);
  if (p != nullptr) unmap(p, block);
}

HostCacheInfo host_cache_info() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return {c.idle_bytes, c.used_bytes, c.limit, c.hits, c.misses};
}

void host_cache_empty() {
  Cache& c = cache();
  std::list<std::pair<size_t, void*>> drop;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    drop.swap(c.idle);
    c.idle_bytes = 0;
  }
  unmap_all(drop);
}

void host_cache_set_limit(size_t bytes) {
  Cache& c = cache();
  std::list<std::pair<size_t, void*>> drop;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.limit = bytes;
    drop = c.trim(0);
  }
  unmap_all(drop);
}

}  // namespace cpu
}  // namespace fusednn
