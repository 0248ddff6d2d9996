// Non-temporal ("streaming") stores for outputs far larger than the caches.
//
// An ordinary store to a line that is not in the cache first reads the line
// from memory (read for ownership), so writing an output that will not be read
// again before it leaves the caches moves its bytes twice. A streaming store
// writes the line without reading it. Passes that write such outputs compute
// a chunk into a buffer in L1 and stream it out with stream_copy.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace fusednn {
namespace cpu {

// Outputs of at least this many bytes are streamed: beyond any last-level
// cache of the machines the library targets, so the next reader finds them in
// memory either way.
constexpr int64_t kStreamMinBytes = int64_t(64) << 20;

// Whether stream_copy can stream to dst (32-byte aligned) and the output is
// large enough to be worth it.
template <typename T>
inline bool stream_worthwhile(const T* dst, int64_t count) {
#if defined(__AVX__)
  return count * int64_t(sizeof(T)) >= kStreamMinBytes &&
         (reinterpret_cast<uintptr_t>(dst) & 31) == 0;
#else
  (void)dst;
  (void)count;
  return false;
#endif
}

// dst[0..count) = src[0..count) with streaming stores where dst is 32-byte
// aligned (plain stores for the rest). Call stream_fence() before other
// threads read dst.
template <typename T>
inline void stream_copy(T* dst, const T* src, int64_t count) {
#if defined(__AVX__)
  constexpr int64_t kLanes = 32 / int64_t(sizeof(T));
  int64_t i = 0;
  while (i < count && (reinterpret_cast<uintptr_t>(dst + i) & 31) != 0) {
    dst[i] = src[i];
    ++i;
  }
  for (; i + kLanes <= count; i += kLanes) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + i), v);
  }
  for (; i < count; ++i) dst[i] = src[i];
#else
  std::memcpy(dst, src, size_t(count) * sizeof(T));
#endif
}

// Orders this thread's streaming stores before its later stores (and so
// before the barrier that ends a parallel loop).
inline void stream_fence() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

}  // namespace cpu
}  // namespace fusednn
