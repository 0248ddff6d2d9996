// A cache of large host buffers for the outputs of the CPU ops.
//
// A training step allocates outputs of the same sizes every step, and blocks
// this large come from the kernel (mmap) and go back to it (munmap) on free,
// so every step pays a page fault and the zeroing of every page of every
// output: about half the time of a memory-bound op's own pass over it. The
// cache keeps freed blocks and hands them out again (like the caching
// allocators of the GPU frameworks): the steady state of a training loop
// touches no new pages.
//
// Blocks of at least kHostCacheMin bytes, rounded up to 2 MiB and mapped
// with a transparent-huge-page hint. Idle blocks are kept up to a limit
// (FUSEDNN_HOST_CACHE_MB; default 1 GiB or an eighth of the physical memory,
// whichever is less; 0 turns the cache off), the oldest returned to the
// kernel first. Contents of a block handed out are unspecified, as with
// np.empty.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fusednn {
namespace cpu {

constexpr size_t kHostCacheMin = size_t(1) << 20;

// A block of at least `bytes` (>= kHostCacheMin); *block gets its size, to
// pass back to host_cache_release. Null when the system has no memory left.
void* host_cache_acquire(size_t bytes, size_t* block);
void host_cache_release(void* p, size_t block);

struct HostCacheInfo {
  size_t idle_bytes;   // in the cache, not in use
  size_t used_bytes;   // handed out and not yet released
  size_t limit_bytes;  // the most idle_bytes kept
  uint64_t hits;       // acquisitions served from the cache
  uint64_t misses;     // acquisitions that mapped a new block
};
HostCacheInfo host_cache_info();
void host_cache_empty();               // returns every idle block to the kernel
void host_cache_set_limit(size_t bytes);  // and trims the idle blocks to it

}  // namespace cpu
}  // namespace fusednn
