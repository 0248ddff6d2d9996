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
  constexpr int64_t kBlock = int64_t(1) << 20;
  const int64_t blocks = (bytes + kBlock - 1) / kBlock;
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t off = b * kBlock;
    std::memcpy(d + off, s + off, size_t(std::min(kBlock, bytes - off)));
  }
}

}  // namespace cpu
}  // namespace fusednn
