// Batch normalisation + activation + dropout on the GPU.
//
// Blocks are 32 columns x 8 rows, so a warp reads 32 consecutive elements of
// one row (coalesced) and every thread stays on one column: the column
// coefficients are loaded once per thread, and column sums need no atomics.
//   - column sums (statistics, backward): grid (column blocks, row blocks);
//     each thread sums a strided set of rows of its column in double, the
//     block reduces its 8 rows in shared memory and writes one partial per
//     (row block, column); a per-column kernel adds the partials.
//   - element-wise passes: the same tiling, rows in a grid-stride loop.
// Dropout bits: each thread draws its element's Philox lane; a warp's 32 keep
// bits (one ballot) cover 32 consecutive flat indices, which straddle at
// most two mask words, OR-ed in with atomics (the mask is zeroed first); the
// last word is then rewritten whole, so its bits past the end are the
// generator's, as in the CPU kernel and the standalone dropout op.
#include <algorithm>

#include "cuda/batchnorm.cuh"
#include "cuda/launch.cuh"
#include "fusednn/dropout.h"

namespace fusednn {
namespace cuda {

namespace {

constexpr int kTx = 32;  // columns per block: one warp
constexpr int kTy = 8;   // rows per block

struct Tiling {
  int64_t col_blocks;
  int64_t row_blocks;
};

// Row blocks for the column-sum kernels: about 1024 blocks in all (a wave on
// a large GPU), never more than the rows need.
Tiling reduce_tiling(int64_t m, int64_t n) {
  const int64_t cb = (n + kTx - 1) / kTx;
  const int64_t rows = (m + kTy - 1) / kTy;
  int64_t rb = std::min(std::max<int64_t>(1, 1024 / cb), rows);
  rb = std::max<int64_t>(1, std::min<int64_t>(rb, 65535));
  return {cb, rb};
}

// Row blocks for the element-wise kernels (they loop over rows).
int64_t elementwise_row_blocks(int64_t m, int64_t cb) {
  const int64_t rows = (m + kTy - 1) / kTy;
  return std::max<int64_t>(1, std::min<int64_t>({rows, std::max<int64_t>(1, 8192 / cb), 65535}));
}

// The block's column sums of (s1, s2) over its kTy rows, into
// part[(blockIdx.y * 2 + {0, 1}) * n + col].
__device__ void block_column_sums(double s1, double s2, double* part, int64_t n, int64_t col) {
  __shared__ double sh[2][kTy][kTx];
  sh[0][threadIdx.y][threadIdx.x] = s1;
  sh[1][threadIdx.y][threadIdx.x] = s2;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    double a = 0.0, b = 0.0;
#pragma unroll
    for (int i = 0; i < kTy; ++i) {
      a += sh[0][i][threadIdx.x];
      b += sh[1][i][threadIdx.x];
    }
    part[(int64_t(blockIdx.y) * 2) * n + col] = a;
    part[(int64_t(blockIdx.y) * 2 + 1) * n + col] = b;
  }
}

__device__ __forceinline__ int64_t first_row() { return int64_t(blockIdx.y) * kTy + threadIdx.y; }
__device__ __forceinline__ int64_t row_stride() { return int64_t(gridDim.y) * kTy; }
__device__ __forceinline__ int64_t this_column() { return int64_t(blockIdx.x) * kTx + threadIdx.x; }

// Shifted sums of each column, shifted by its first sample (batchnorm.h).
template <typename T>
__global__ void stats_kernel(const T* x, int64_t m, int64_t n, double* part) {
  const int64_t col = this_column();
  double s1 = 0.0, s2 = 0.0;
  if (col < n) {
    const double k = double(x[col]);
    for (int64_t r = first_row(); r < m; r += row_stride()) {
      const double d = double(x[r * n + col]) - k;
      s1 += d;
      s2 += d * d;
    }
  }
  block_column_sums(s1, s2, part, n, col);
}

template <typename T>
__global__ void finalize_train_kernel(const double* part, int64_t rb, const T* x, const T* gamma,
                                      const T* beta, T* moving_mean, T* moving_var,
                                      double momentum, double epsilon, BnConvention conv,
                                      T* cols, double* mean, double* var, int64_t m, int64_t n) {
  for (int64_t j = thread_index(); j < n; j += grid_stride()) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t r = 0; r < rb; ++r) {
      s1 += part[(r * 2) * n + j];
      s2 += part[(r * 2 + 1) * n + j];
    }
    double mu, v;
    bn_finalize_stats(double(x[j]), s1, s2, double(m), mu, v);
    mean[j] = mu;
    var[j] = v;
    if (moving_mean) bn_update_moving(moving_mean[j], moving_var[j], mu, v, momentum, double(m), conv);
    bn_column<T>(mu, 1.0 / ::sqrt(v + epsilon), gamma ? double(gamma[j]) : 1.0,
                 beta ? double(beta[j]) : 0.0, cols, n, j);
  }
}

template <typename T>
__global__ void finalize_infer_kernel(const T* gamma, const T* beta, const T* moving_mean,
                                      const T* moving_var, double epsilon, T* cols, int64_t n) {
  for (int64_t j = thread_index(); j < n; j += grid_stride())
    bn_column<T>(double(moving_mean[j]), 1.0 / ::sqrt(double(moving_var[j]) + epsilon),
                 gamma ? double(gamma[j]) : 1.0, beta ? double(beta[j]) : 0.0, cols, n, j);
}

__device__ __forceinline__ uint32_t lane_of(const Philox4x32& r, int64_t e) {
  const uint32_t lo = (e & 1) ? r.v[1] : r.v[0];
  const uint32_t hi = (e & 1) ? r.v[3] : r.v[2];
  return (e & 2) ? hi : lo;
}

template <typename T, Act A, bool Drop>
__global__ void apply_kernel(const T* x, T* y, uint32_t* mask, int64_t m, int64_t n,
                             const T* cols, T alpha, DropoutCoef<T> c, uint64_t seed,
                             uint64_t step, uint32_t threshold) {
  const int64_t col = this_column();
  const bool in = col < n;
  T mh = 0, ml = 0, sc = 0, sh = 0;
  if (in) {
    mh = cols[kBnMeanHi * n + col];
    ml = cols[kBnMeanLo * n + col];
    sc = cols[kBnScale * n + col];
    sh = cols[kBnShift * n + col];
  }
  // The trip count depends on threadIdx.y only: whole warps stay together
  // for the ballot.
  for (int64_t r = first_row(); r < m; r += row_stride()) {
    const int64_t e = r * n + col;
    bool keep = true;
    if (Drop) {
      keep = in && lane_of(dropout_draws(seed, step, uint64_t(e) >> 2), e) >= threshold;
      const uint32_t bits = __ballot_sync(0xFFFFFFFFu, keep);
      if (threadIdx.x == 0) {
        const int64_t e0 = r * n + int64_t(blockIdx.x) * kTx;  // lane 0's element
        const int off = int(e0 & 31);
        const uint32_t low = bits << off;
        if (low) atomicOr(mask + (e0 >> 5), low);
        // Nonzero only when lanes past the word boundary hold kept elements,
        // which then exist: the next word is inside the mask.
        if (off && (bits >> (32 - off))) atomicOr(mask + (e0 >> 5) + 1, bits >> (32 - off));
      }
    }
    if (in) {
      const T a = bn_activation<T, A>(x[e], mh, ml, sc, sh, alpha);
      y[e] = Drop ? dropout_apply(keep, a, c) : a;
    }
  }
}

// The last mask word in full (its bits past m n included).
__global__ void last_word_kernel(uint32_t* mask, int64_t w, uint64_t seed, uint64_t step,
                                 uint32_t threshold) {
  mask[w] = dropout_mask_word(seed, step, uint64_t(w), threshold);
}

// dz into dx (times scale unless Stats) and the block's column sums of dz
// and dz x_hat.
template <typename T, Act A, bool Drop, BnSaved S, bool Stats>
__global__ void backward_reduce_kernel(const T* dy, const T* x, const T* y, const uint32_t* mask,
                                       T* dx, int64_t m, int64_t n, const T* cols, T alpha,
                                       T kept_mul, T inv_kept_mul, double* part) {
  const int64_t col = this_column();
  double s1 = 0.0, s2 = 0.0;
  if (col < n) {
    const T mh = cols[kBnMeanHi * n + col], ml = cols[kBnMeanLo * n + col];
    const T sc = cols[kBnScale * n + col], sh = cols[kBnShift * n + col];
    const T is = cols[kBnInvStd * n + col];
    for (int64_t r = first_row(); r < m; r += row_stride()) {
      const int64_t e = r * n + col;
      const T xc = bn_centered(x[e], mh, ml);
      const bool keep = Drop ? dropout_kept(mask, e) : true;
      const T dz = bn_dz<T, A, S>(dy[e], xc * sc + sh, y[e], keep, kept_mul, inv_kept_mul, alpha);
      dx[e] = Stats ? dz : dz * sc;
      s1 += double(dz);
      s2 += double(dz) * double(xc * is);
    }
  }
  block_column_sums(s1, s2, part, n, col);
}

// dbeta, dgamma and the means of dz and dz x_hat (sums[0..n), sums[n..2n)).
template <typename T>
__global__ void finalize_backward_kernel(const double* part, int64_t rb, T* dgamma, T* dbeta,
                                         double* sums, int64_t m, int64_t n) {
  for (int64_t j = thread_index(); j < n; j += grid_stride()) {
    double s1 = 0.0, s2 = 0.0;
    for (int64_t r = 0; r < rb; ++r) {
      s1 += part[(r * 2) * n + j];
      s2 += part[(r * 2 + 1) * n + j];
    }
    if (dbeta) dbeta[j] = T(s1);
    if (dgamma) dgamma[j] = T(s2);
    sums[j] = s1 / double(m);
    sums[n + j] = s2 / double(m);
  }
}

template <typename T>
__global__ void backward_apply_kernel(const T* x, T* dx, int64_t m, int64_t n, const T* cols,
                                      const double* sums) {
  const int64_t col = this_column();
  if (col >= n) return;
  const T mh = cols[kBnMeanHi * n + col], ml = cols[kBnMeanLo * n + col];
  const T sc = cols[kBnScale * n + col], is = cols[kBnInvStd * n + col];
  const T mdz = T(sums[col]), mdzx = T(sums[n + col]);
  for (int64_t r = first_row(); r < m; r += row_stride()) {
    const int64_t e = r * n + col;
    dx[e] = bn_dx_train(dx[e], bn_centered(x[e], mh, ml) * is, sc, mdz, mdzx);
  }
}

}  // namespace

int64_t batchnorm_workspace(int64_t m, int64_t n) {
  return reduce_tiling(m, n).row_blocks * 2 * n + 2 * n;
}

template <typename T>
void batchnorm_forward(const T* x, const T* gamma, const T* beta, T* moving_mean, T* moving_var,
                       bool training, double momentum, double epsilon, BnConvention conv, T* y,
                       T* cols, double* mean, double* var, uint32_t* mask, double* ws, int64_t m,
                       int64_t n, Act a, T alpha, const BnDropout& d, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  const Tiling t = reduce_tiling(m, n);
  const dim3 block(kTx, kTy);
  if (training) {
    stats_kernel<T><<<dim3(unsigned(t.col_blocks), unsigned(t.row_blocks)), block, 0, stream>>>(
        x, m, n, ws);
    FUSEDNN_CUDA_CHECK(cudaGetLastError());
    linear_kernel(finalize_train_kernel<T>, 0, stream, n, ws, t.row_blocks, x, gamma, beta,
                  moving_mean, moving_var, momentum, epsilon, conv, cols, mean, var, m, n);
  } else {
    linear_kernel(finalize_infer_kernel<T>, 0, stream, n, gamma, beta, moving_mean, moving_var,
                  epsilon, cols, n);
  }
  const bool drop = d.rate > 0.0;
  if (drop)
    FUSEDNN_CUDA_CHECK(
        cudaMemsetAsync(mask, 0, size_t((m * n + 31) / 32) * sizeof(uint32_t), stream));
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(d.rate, d.alpha));
  const uint32_t thr = dropout_threshold(d.rate);
  const dim3 grid(unsigned(t.col_blocks), unsigned(elementwise_row_blocks(m, t.col_blocks)));
  with_act(a, [&](auto act) {
    constexpr Act A = decltype(act)::value;
    if (drop)
      apply_kernel<T, A, true><<<grid, block, 0, stream>>>(x, y, mask, m, n, cols, alpha, c,
                                                           d.seed, d.step, thr);
    else
      apply_kernel<T, A, false><<<grid, block, 0, stream>>>(x, y, mask, m, n, cols, alpha, c,
                                                            d.seed, d.step, thr);
  });
  FUSEDNN_CUDA_CHECK(cudaGetLastError());
  if (drop && (m * n) % 32 != 0) {
    last_word_kernel<<<1, 1, 0, stream>>>(mask, (m * n) / 32, d.seed, d.step, thr);
    FUSEDNN_CUDA_CHECK(cudaGetLastError());
  }
}

template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* y, const T* cols, const uint32_t* mask,
                        T* dx, T* dgamma, T* dbeta, double* ws, int64_t m, int64_t n, Act a,
                        T alpha, const BnDropout& d, bool batch_stats, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  const Tiling t = reduce_tiling(m, n);
  const dim3 block(kTx, kTy);
  const dim3 rgrid(unsigned(t.col_blocks), unsigned(t.row_blocks));
  const bool drop = d.rate > 0.0;
  // rate 0 gives kept_mul 1: bn_dz then leaves dz = dy f'.
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(d.rate, d.alpha));
  const T inv = T(1) / c.kept_mul;
  with_act(a, [&](auto act) {
    constexpr Act A = decltype(act)::value;
    bn_backward_variant(drop, d.alpha, [&](auto drop_c, auto saved_c) {
      constexpr bool D = decltype(drop_c)::value;
      constexpr BnSaved S = decltype(saved_c)::value;
      if (batch_stats)
        backward_reduce_kernel<T, A, D, S, true><<<rgrid, block, 0, stream>>>(
            dy, x, y, mask, dx, m, n, cols, alpha, c.kept_mul, inv, ws);
      else
        backward_reduce_kernel<T, A, D, S, false><<<rgrid, block, 0, stream>>>(
            dy, x, y, mask, dx, m, n, cols, alpha, c.kept_mul, inv, ws);
    });
  });
  FUSEDNN_CUDA_CHECK(cudaGetLastError());
  double* sums = ws + t.row_blocks * 2 * n;
  linear_kernel(finalize_backward_kernel<T>, 0, stream, n, ws, t.row_blocks, dgamma, dbeta, sums,
                m, n);
  if (!batch_stats) return;
  const dim3 grid(unsigned(t.col_blocks), unsigned(elementwise_row_blocks(m, t.col_blocks)));
  backward_apply_kernel<T><<<grid, block, 0, stream>>>(x, dx, m, n, cols, sums);
  FUSEDNN_CUDA_CHECK(cudaGetLastError());
}

#define FUSEDNN_INSTANTIATE(T)                                                                  \
  template void batchnorm_forward<T>(const T*, const T*, const T*, T*, T*, bool, double, double, \
                                     BnConvention, T*, T*, double*, double*, uint32_t*, double*, \
                                     int64_t, int64_t, Act, T, const BnDropout&, cudaStream_t);  \
  template void batchnorm_backward<T>(const T*, const T*, const T*, const T*, const uint32_t*,  \
                                      T*, T*, T*, double*, int64_t, int64_t, Act, T,             \
                                      const BnDropout&, bool, cudaStream_t);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cuda
}  // namespace fusednn
