// A parallel copy: the copy-bandwidth roofline that bench/ holds the
// element-wise kernels (optimizers, batch norm) against, measured with the
// same threads those kernels use.
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

}  // namespace cpu
}  // namespace fusednn
