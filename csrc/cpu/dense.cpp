// Fused dense layer on the CPU: OpenBLAS GEMM per row block, each block's
// bias + activation applied right after its GEMM while the block is in cache.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu/blas.h"
#include "cpu/kernels.h"

namespace fusednn {
namespace cpu {

namespace {

constexpr int64_t kParallelMin = 1 << 15;

// pre = pre + b (kept when the activation saves its input); y = f(pre + b).
// pre and y are the same buffer when the activation saves its output.
template <typename T, Act A>
void epilogue(T* pre, T* y, const T* b, int64_t rows, int64_t n, T alpha) {
  constexpr bool keep_pre = saves_input(A);
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    T* pr = pre + r * n;
    T* yr = y + r * n;
    if (b != nullptr) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T v = pr[j] + b[j];
        if (keep_pre) pr[j] = v;
        yr[j] = act_forward<T>(A, v, alpha);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) yr[j] = act_forward<T>(A, pr[j], alpha);
    }
  }
}

// dz = dy * f'(s) and, when db is given, db = column sums of dz, in one pass.
// Column sums accumulate in double per thread, then combine.
template <typename T, Act A>
void grad_and_bias(const T* dy, const T* s, T* dz, T* db, int64_t m, int64_t n, T alpha) {
  const int nt = (m * n >= kParallelMin) ? std::max(1, std::min<int>(omp_get_max_threads(), (int)m)) : 1;
  std::vector<double> part(db != nullptr ? (size_t)nt * n : 0, 0.0);
#pragma omp parallel num_threads(nt)
  {
    double* acc = db != nullptr ? part.data() + (size_t)omp_get_thread_num() * n : nullptr;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
      const T* dyr = dy + r * n;
      const T* sr = s + r * n;
      T* dzr = dz != nullptr ? dz + r * n : nullptr;
      if (acc != nullptr) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const T g = A == Act::Linear ? dyr[j] : dyr[j] * act_grad<T>(A, sr[j], alpha);
          if (A != Act::Linear) dzr[j] = g;
          acc[j] += (double)g;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) dzr[j] = dyr[j] * act_grad<T>(A, sr[j], alpha);
      }
    }
  }
  if (db != nullptr) {
    for (int64_t j = 0; j < n; ++j) {
      double v = 0.0;
      for (int t = 0; t < nt; ++t) v += part[(size_t)t * n + j];
      db[j] = (T)v;
    }
  }
}

}  // namespace

int64_t dense_block_rows(int64_t m, int64_t k, int64_t n, int64_t elem_size) {
  // Each block re-packs w (k x n) inside OpenBLAS, so a block must carry
  // enough rows of GEMM work to hide that copy; within that, keep the block's
  // output about the size of the L2 caches so the epilogue reads it from cache.
  const int64_t out_row = std::max<int64_t>(1, n * elem_size);
  const int64_t cache_rows = std::max<int64_t>(1, (int64_t(1) << 20) * num_threads() / out_row);
  const int64_t w_bytes = k * n * elem_size;
  const int64_t min_rows = w_bytes <= (int64_t(256) << 10) ? 64 : 1024;
  return std::min<int64_t>(m, std::max(cache_rows, min_rows));
}

template <typename T>
void dense_forward(const T* x, const T* w, const T* b, T* y, T* z, int64_t m, int64_t k,
                   int64_t n, Act a, T alpha, int64_t block_rows) {
  if (m == 0 || n == 0) return;
  T* pre = saves_input(a) ? z : y;
  if (block_rows <= 0) block_rows = dense_block_rows(m, k, n, sizeof(T));
  const bool need_epilogue = a != Act::Linear || b != nullptr;
  dispatch_act(a, [&](auto act) {
    for (int64_t r0 = 0; r0 < m; r0 += block_rows) {
      const int64_t rows = std::min(block_rows, m - r0);
      gemm<T>(false, false, rows, n, k, T(1), x + r0 * k, k, w, n, T(0), pre + r0 * n, n);
      if (need_epilogue)
        epilogue<T, decltype(act)::value>(pre + r0 * n, y + r0 * n, b, rows, n, alpha);
    }
  });
}

template <typename T>
void dense_backward(const T* dy, const T* s, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha) {
  const T* dz = dy;
  if (a != Act::Linear) {
    dispatch_act(a, [&](auto act) {
      grad_and_bias<T, decltype(act)::value>(dy, s, dz_buf, db, m, n, alpha);
    });
    dz = dz_buf;
  } else if (db != nullptr) {
    grad_and_bias<T, Act::Linear>(dy, dy, nullptr, db, m, n, alpha);
  }
  gemm<T>(true, false, k, n, m, T(1), x, k, dz, n, T(0), dw, n);
  if (dx != nullptr) gemm<T>(false, true, m, k, n, T(1), dz, n, w, n, T(0), dx, k);
}

#define FUSEDNN_INSTANTIATE(T)                                                                   \
  template void dense_forward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t, \
                                 Act, T, int64_t);                                               \
  template void dense_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, T*,         \
                                  int64_t, int64_t, int64_t, Act, T);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cpu
}  // namespace fusednn
