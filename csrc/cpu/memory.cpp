// A parallel copy: the copy-bandwidth roofline that bench/ holds the
// element-wise kernels (optimizers, batch norm) against, measured with the
// same threads those kernels use.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "cpu/kernels.h"

namespace fusednn {
namespace cpu {

void parallel_copy(void* dst, const void* src, int64_t bytes) {
  // One contiguous range per thread: glibc copies large ranges with
  // non-temporal stores, so the destination is not read first and the bytes
  // counted (read + write) are the bytes that move, as in the kernels this
  // roofline is for, which only write what they have just read.
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t per = (bytes / nt + 63) / 64 * 64;
    const int64_t b = std::min(bytes, t * per), e = std::min(bytes, b + per);
    if (e > b) std::memcpy(d + b, s + b, size_t(e - b));
  }
}

}  // namespace cpu
}  // namespace fusednn
