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

// dz = dy * f'(s) (dz may alias dy; dz null for linear) and, when db_acc is
// given, db_acc += column sums of dz, in one pass. Column sums accumulate in
// double per thread, then combine.
template <typename T, Act A>
void grad_and_bias(const T* dy, const T* s, T* dz, double* db_acc, int64_t m, int64_t n, T alpha) {
  const int nt = (m * n >= kParallelMin) ? std::max(1, std::min<int>(omp_get_max_threads(), (int)m)) : 1;
  std::vector<double> part(db_acc != nullptr ? (size_t)nt * n : 0, 0.0);
#pragma omp parallel num_threads(nt)
  {
    double* acc = db_acc != nullptr ? part.data() + (size_t)omp_get_thread_num() * n : nullptr;
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
      } else if (A != Act::Linear) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) dzr[j] = dyr[j] * act_grad<T>(A, sr[j], alpha);
      }
    }
  }
  if (db_acc != nullptr)
    for (int t = 0; t < nt; ++t)
      for (int64_t j = 0; j < n; ++j) db_acc[j] += part[(size_t)t * n + j];
}

template <typename T>
void store(const std::vector<double>& acc, T* out) {
  for (size_t j = 0; j < acc.size(); ++j) out[j] = (T)acc[j];
}

}  // namespace

int64_t dense_block_rows(int64_t m, int64_t k, int64_t n, int64_t elem_size) {
  // Each block re-packs w (k x n) inside OpenBLAS. A block of r rows costs
  // about 2 r k n / rate seconds of GEMM and k n elem_size / bandwidth of
  // re-packing, so re-packing stays near 1% of the work only for r in the
  // thousands when w comes from memory (rate / bandwidth ~ 15 flop/byte on a
  // 2-core AVX2 machine), and in the hundreds when w sits in L2. Within
  // that, keep the block's output about the size of the L2 caches so the
  // epilogue reads it from cache.
  const int64_t out_row = std::max<int64_t>(1, n * elem_size);
  const int64_t cache_rows = std::max<int64_t>(1, (int64_t(1) << 20) * num_threads() / out_row);
  const int64_t w_bytes = k * n * elem_size;
  const int64_t min_rows = w_bytes <= (int64_t(512) << 10) ? 512 : 4096;
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
void dense_backward_weight(const T* dz, const T* x, T* dw, T* db, int64_t m, int64_t k, int64_t n) {
  if (db != nullptr) {
    std::vector<double> acc(n, 0.0);
    grad_and_bias<T, Act::Linear>(dz, dz, nullptr, acc.data(), m, n, T(0));
    store(acc, db);
  }
  gemm<T>(true, false, k, n, m, T(1), x, k, dz, n, T(0), dw, n);
}

template <typename T>
void dense_backward_input(const T* dz, const T* w, const T* s_prev, T* dz_prev, T* db_prev,
                          int64_t m, int64_t k, int64_t n, Act a_prev, T alpha_prev) {
  // The same row blocking as the forward pass: each block's dx GEMM is
  // followed at once by the previous layer's f' and bias-gradient pass.
  if (m == 0 || k == 0) {
    if (db_prev != nullptr) std::fill(db_prev, db_prev + k, T(0));
    return;
  }
  const int64_t block_rows = dense_block_rows(m, n, k, sizeof(T));
  std::vector<double> acc(db_prev != nullptr ? k : 0, 0.0);
  double* accp = db_prev != nullptr ? acc.data() : nullptr;
  const bool need_epilogue = a_prev != Act::Linear || accp != nullptr;
  dispatch_act(a_prev, [&](auto act) {
    constexpr Act A = decltype(act)::value;
    for (int64_t r0 = 0; r0 < m; r0 += block_rows) {
      const int64_t rows = std::min(block_rows, m - r0);
      T* out = dz_prev + r0 * k;
      gemm<T>(false, true, rows, k, n, T(1), dz + r0 * n, n, w, n, T(0), out, k);
      if (need_epilogue)
        grad_and_bias<T, A>(out, A == Act::Linear ? out : s_prev + r0 * k,
                            A == Act::Linear ? nullptr : out, accp, rows, k, alpha_prev);
    }
  });
  if (db_prev != nullptr) store(acc, db_prev);
}

template <typename T>
void dense_backward(const T* dy, const T* s, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha) {
  const T* dz = dy;
  if (a != Act::Linear || db != nullptr) {
    // dz and db in one pass over dy.
    std::vector<double> acc(db != nullptr ? n : 0, 0.0);
    dispatch_act(a, [&](auto act) {
      grad_and_bias<T, decltype(act)::value>(dy, s, a == Act::Linear ? nullptr : dz_buf,
                                             db != nullptr ? acc.data() : nullptr, m, n, alpha);
    });
    if (db != nullptr) store(acc, db);
    if (a != Act::Linear) dz = dz_buf;
  }
  dense_backward_weight<T>(dz, x, dw, nullptr, m, k, n);
  if (dx != nullptr)
    dense_backward_input<T>(dz, w, nullptr, dx, nullptr, m, k, n, Act::Linear, T(0));
}

#define FUSEDNN_INSTANTIATE(T)                                                                   \
  template void dense_forward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t, \
                                 Act, T, int64_t);                                               \
  template void dense_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, T*,         \
                                  int64_t, int64_t, int64_t, Act, T);                            \
  template void dense_backward_weight<T>(const T*, const T*, T*, T*, int64_t, int64_t, int64_t);  \
  template void dense_backward_input<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,  \
                                        int64_t, Act, T);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cpu
}  // namespace fusednn
