// A parallel copy: the copy-bandwidth roofline that bench/ holds the
// element-wise kernels (optimizers, batch norm) against, measured with the
// same threads those kernels use; and the row gather of fit's batches.
#include <algorithm>
#include <cstring>

#include "cpu/kernels.h"
#include "cpu/threads.h"

namespace fusednn {
namespace cpu {

void parallel_copy(void* dst, const void* src, int64_t bytes) {
  // Contiguous ranges of whole cache lines: glibc copies large ranges with
  // non-temporal stores, so the destination is not read first and the bytes
  // counted (read + write) are the bytes that move, as in the kernels this
  // roofline is for, which only write what they have just read.
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  const int64_t lines = (bytes + 63) / 64;
  parallel_for(lines, (int64_t(1) << 20) / 64, [&](int64_t l0, int64_t l1) {
    const int64_t b = std::min(bytes, l0 * 64), e = std::min(bytes, l1 * 64);
    if (e > b) std::memcpy(d + b, s + b, size_t(e - b));
  });
}

void parallel_take_rows(void* out, const void* x, const int64_t* rows, int64_t m,
                        int64_t row_bytes) {
  // A shuffled batch's rows come from all over a large x, mostly from DRAM,
  // where NumPy's one-thread gather moved 15-19 GB/s (read + written) and
  // two threads 23-39 on a 2-core machine (bench/data.py). About 64 KiB per
  // chunk.
  if (m <= 0 || row_bytes <= 0) return;
  char* o = static_cast<char*>(out);
  const char* s = static_cast<const char*>(x);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / row_bytes);
  parallel_for(m, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      std::memcpy(o + i * row_bytes, s + rows[i] * row_bytes, size_t(row_bytes));
  });
}

}  // namespace cpu
}  // namespace fusednn
