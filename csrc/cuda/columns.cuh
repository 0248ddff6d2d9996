// Column-wise work on row-major (m x n) arrays, shared by the batch-norm and
// bias-gradient kernels.
//
// Blocks are kColTx columns x kColTy rows, so a warp reads 32 consecutive
// elements of one row (coalesced) and every thread stays on one column.
// Column sums need no atomics and come out the same in every run: each thread
// sums a fixed, strided set of rows of its column in double, the block
// reduces its kColTy rows in shared memory in a fixed order and writes one
// partial per (row block, column), and a per-column pass adds the partials in
// row-block order.
#pragma once
#include <algorithm>
#include <cstdint>

namespace fusednn {
namespace cuda {

constexpr int kColTx = 32;  // columns per block: one warp
constexpr int kColTy = 8;   // rows per block

struct ColumnTiling {
  int64_t col_blocks;
  int64_t row_blocks;
};

// Row blocks for a column reduction: about 1024 blocks in all (several per
// multiprocessor on a large GPU), at least `min_rows` rows per thread, never
// more blocks than the rows need.
inline ColumnTiling column_tiling(int64_t m, int64_t n, int64_t min_rows = 1) {
  const int64_t cb = (n + kColTx - 1) / kColTx;
  const int64_t rows = (m + kColTy * min_rows - 1) / (kColTy * min_rows);
  int64_t rb = std::min(std::max<int64_t>(1, 1024 / cb), rows);
  rb = std::max<int64_t>(1, std::min<int64_t>(rb, 65535));
  return {cb, rb};
}

__device__ __forceinline__ int64_t first_row() { return int64_t(blockIdx.y) * kColTy + threadIdx.y; }
__device__ __forceinline__ int64_t row_stride() { return int64_t(gridDim.y) * kColTy; }
__device__ __forceinline__ int64_t this_column() {
  return int64_t(blockIdx.x) * kColTx + threadIdx.x;
}

// The block's column sums of v[0..K) over its kColTy rows, into
// part[(blockIdx.y * K + k) * n + col]. Every thread of the block calls it.
template <int K>
__device__ void block_column_sums(const double (&v)[K], double* part, int64_t n, int64_t col) {
  __shared__ double sh[K][kColTy][kColTx];
#pragma unroll
  for (int k = 0; k < K; ++k) sh[k][threadIdx.y][threadIdx.x] = v[k];
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      double s = 0.0;
#pragma unroll
      for (int i = 0; i < kColTy; ++i) s += sh[k][i][threadIdx.x];
      part[(int64_t(blockIdx.y) * K + k) * n + col] = s;
    }
  }
}

// Column j's totals of the partials of rb row blocks, in row-block order.
template <int K>
__device__ __forceinline__ void column_totals(const double* part, int64_t rb, int64_t n,
                                              int64_t j, double (&out)[K]) {
#pragma unroll
  for (int k = 0; k < K; ++k) out[k] = 0.0;
  for (int64_t r = 0; r < rb; ++r)
#pragma unroll
    for (int k = 0; k < K; ++k) out[k] += part[(r * K + k) * n + j];
}

}  // namespace cuda
}  // namespace fusednn
