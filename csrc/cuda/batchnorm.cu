// Batch normalisation + activation + dropout on the GPU.
//
// The column tiling of cuda/columns.cuh: a warp reads 32 consecutive
// elements of one row and every thread stays on one column, so the column
// coefficients are loaded once per thread and the column sums (statistics,
// backward) need no atomics.
//   - column sums: grid (column blocks, row blocks), partials per row block,
//     added per column in a fixed order (deterministic);
//   - element-wise passes: the same tiling, rows in a grid-stride loop.
// Dropout: the bit-packed mask is written first by the dropout op's own mask
// kernel (cuda/dropout.cuh: one Philox call per 4 elements, whole words, no
// atomics; the bits past m n are the generator's, as on the CPU), and the
// normalise pass reads its keep bits back, 1 bit of traffic per element.
#include <algorithm>

#include "cuda/batchnorm.cuh"
#include "cuda/columns.cuh"
#include "cuda/dropout.cuh"
#include "cuda/launch.cuh"
#include "fusednn/dropout.h"

namespace fusednn {
namespace cuda {

namespace {

// Row blocks for the element-wise kernels (they loop over rows).
int64_t elementwise_row_blocks(int64_t m, int64_t cb) {
  const int64_t rows = (m + kColTy - 1) / kColTy;
  return std::max<int64_t>(1, std::min<int64_t>({rows, std::max<int64_t>(1, 8192 / cb), 65535}));
}

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
  block_column_sums<2>({s1, s2}, part, n, col);
}

template <typename T>
__global__ void finalize_train_kernel(const double* part, int64_t rb, const T* x, const T* gamma,
                                      const T* beta, T* moving_mean, T* moving_var,
                                      double momentum, double epsilon, BnConvention conv,
                                      T* cols, double* mean, double* var, int64_t m, int64_t n) {
  for (int64_t j = thread_index(); j < n; j += grid_stride()) {
    double s[2];
    column_totals<2>(part, rb, n, j, s);
    double mu, v;
    bn_finalize_stats(double(x[j]), s[0], s[1], double(m), mu, v);
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

template <typename T, Act A, bool Drop>
__global__ void apply_kernel(const T* x, T* y, const uint32_t* mask, int64_t m, int64_t n,
                             const T* cols, T alpha, DropoutCoef<T> c) {
  const int64_t col = this_column();
  if (col >= n) return;
  const T mh = cols[kBnMeanHi * n + col], ml = cols[kBnMeanLo * n + col];
  const T sc = cols[kBnScale * n + col], sh = cols[kBnShift * n + col];
  for (int64_t r = first_row(); r < m; r += row_stride()) {
    const int64_t e = r * n + col;
    const T a = bn_activation<T, A>(x[e], mh, ml, sc, sh, alpha);
    y[e] = Drop ? dropout_apply(dropout_kept(mask, e), a, c) : a;
  }
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
  block_column_sums<2>({s1, s2}, part, n, col);
}

// dbeta, dgamma and the means of dz and dz x_hat (sums[0..n), sums[n..2n)).
template <typename T>
__global__ void finalize_backward_kernel(const double* part, int64_t rb, T* dgamma, T* dbeta,
                                         double* sums, int64_t m, int64_t n) {
  for (int64_t j = thread_index(); j < n; j += grid_stride()) {
    double s[2];
    column_totals<2>(part, rb, n, j, s);
    if (dbeta) dbeta[j] = T(s[0]);
    if (dgamma) dgamma[j] = T(s[1]);
    sums[j] = s[0] / double(m);
    sums[n + j] = s[1] / double(m);
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
  return column_tiling(m, n).row_blocks * 2 * n + 2 * n;
}

template <typename T>
void batchnorm_forward(const T* x, const T* gamma, const T* beta, T* moving_mean, T* moving_var,
                       bool training, double momentum, double epsilon, BnConvention conv, T* y,
                       T* cols, double* mean, double* var, uint32_t* mask, double* ws, int64_t m,
                       int64_t n, Act a, T alpha, const BnDropout& d, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  const ColumnTiling t = column_tiling(m, n);
  const dim3 block(kColTx, kColTy);
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
  if (drop) dropout_mask(mask, (m * n + 31) / 32, d.seed, d.step, d.rate, stream, d.step_at);
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(d.rate, d.alpha));
  const dim3 grid(unsigned(t.col_blocks), unsigned(elementwise_row_blocks(m, t.col_blocks)));
  with_act(a, [&](auto act) {
    constexpr Act A = decltype(act)::value;
    if (drop)
      apply_kernel<T, A, true><<<grid, block, 0, stream>>>(x, y, mask, m, n, cols, alpha, c);
    else
      apply_kernel<T, A, false><<<grid, block, 0, stream>>>(x, y, mask, m, n, cols, alpha, c);
  });
  FUSEDNN_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* y, const T* cols, const uint32_t* mask,
                        T* dx, T* dgamma, T* dbeta, double* ws, int64_t m, int64_t n, Act a,
                        T alpha, const BnDropout& d, bool batch_stats, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  const ColumnTiling t = column_tiling(m, n);
  const dim3 block(kColTx, kColTy);
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
