// Fused dense layer on the CPU: the GEMM tiled over the thread pool
// (cpu/blas.h), each tile's bias + activation applied right after its GEMM,
// on the same thread, while the tile is in cache.
#include <algorithm>
#include <vector>

#include "cpu/blas.h"
#include "cpu/kernels.h"
#include "cpu/threads.h"

namespace fusednn {
namespace cpu {

namespace {

// Elements per chunk of the element-wise passes (cpu/threads.h).
constexpr int64_t kGrain = 1 << 14;

// On the tile (rows x cols, row stride ld): pre = pre + b (kept when the
// activation saves its input); y = f(pre + b). pre and y are the same buffer
// when the activation saves its output. b points at the tile's first column.
template <typename T, Act A>
void epilogue(T* pre, T* y, const T* b, int64_t rows, int64_t cols, int64_t ld, T alpha) {
  constexpr bool keep_pre = saves_input(A);
  for (int64_t r = 0; r < rows; ++r) {
    T* pr = pre + r * ld;
    T* yr = y + r * ld;
    if (b != nullptr) {
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) {
        const T v = pr[j] + b[j];
        if (keep_pre) pr[j] = v;
        yr[j] = act_forward<T>(A, v, alpha);
      }
    } else {
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) yr[j] = act_forward<T>(A, pr[j], alpha);
    }
  }
}

// On rows [r0, r1) of m x n: dz = dy * f'(s) (dz may alias dy; dz null for
// linear) and, when acc is given, acc += column sums of dz, in one pass.
template <typename T, Act A>
void grad_rows(const T* dy, const T* s, T* dz, double* acc, int64_t r0, int64_t r1, int64_t n,
               T alpha) {
  for (int64_t r = r0; r < r1; ++r) {
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

// Per-chunk column sums in double, combined in chunk order: the same bits
// whatever thread ran which chunk.
struct ColumnPartials {
  std::vector<double> part;
  int64_t n;
  ColumnPartials(int64_t chunks, int64_t n_) : part(size_t(chunks) * size_t(n_), 0.0), n(n_) {}
  double* of(int64_t chunk) { return part.data() + size_t(chunk) * size_t(n); }
  template <typename T>
  void store(T* out) const {
    const int64_t chunks = n > 0 ? int64_t(part.size()) / n : 0;
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t c = 0; c < chunks; ++c) s += part[size_t(c) * size_t(n) + size_t(j)];
      out[j] = T(s);
    }
  }
};

// dz = dy * f'(s) over all m rows and db = column sums of dz (db may be null).
template <typename T, Act A>
void grad_and_bias(const T* dy, const T* s, T* dz, T* db, int64_t m, int64_t n, T alpha) {
  const int64_t rows_grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, n));
  const int64_t chunks = chunk_count(m, rows_grain);
  ColumnPartials acc(db != nullptr ? chunks : 0, n);
  parallel_chunks(chunks, [&](int64_t c) {
    int64_t r0, r1;
    chunk_range(m, chunks, c, &r0, &r1);
    grad_rows<T, A>(dy, s, dz, db != nullptr ? acc.of(c) : nullptr, r0, r1, n, alpha);
  });
  if (db != nullptr) {
    if (m == 0) std::fill(db, db + n, T(0));
    else acc.store(db);
  }
}

}  // namespace

template <typename T>
void dense_forward(const T* x, const T* w, const T* b, T* y, T* z, int64_t m, int64_t k,
                   int64_t n, Act a, T alpha, int64_t block_rows) {
  if (m == 0 || n == 0) return;
  T* pre = saves_input(a) ? z : y;
  const bool need_epilogue = a != Act::Linear || b != nullptr;
  dispatch_act(a, [&](auto act) {
    constexpr Act A = decltype(act)::value;
    parallel_gemm<T>(false, false, m, n, k, T(1), x, k, w, n, T(0), pre, n,
                     [&](const Tile& t) {
                       if (!need_epilogue) return;
                       const int64_t off = t.r0 * n + t.c0;
                       epilogue<T, A>(pre + off, y + off, b != nullptr ? b + t.c0 : nullptr,
                                      t.rows, t.cols, n, alpha);
                     },
                     block_rows);
  });
}

template <typename T>
void dense_backward_weight(const T* dz, const T* x, T* dw, T* db, int64_t m, int64_t k, int64_t n) {
  if (db != nullptr) grad_and_bias<T, Act::Linear>(dz, dz, nullptr, db, m, n, T(0));
  parallel_gemm<T>(true, false, k, n, m, T(1), x, k, dz, n, T(0), dw, n);
}

template <typename T>
void dense_backward_input(const T* dz, const T* w, const T* s_prev, T* dz_prev, T* db_prev,
                          int64_t m, int64_t k, int64_t n, Act a_prev, T alpha_prev) {
  if (m == 0 || k == 0) {
    if (db_prev != nullptr) std::fill(db_prev, db_prev + k, T(0));
    return;
  }
  // The bias gradient's partial sums follow fixed row chunks (the same bits
  // at any thread count), so it is a pass of its own after the dx GEMM; f'
  // alone rides on each tile while it is in cache.
  const bool fuse_grad = a_prev != Act::Linear && db_prev == nullptr;
  dispatch_act(a_prev, [&](auto act) {
    constexpr Act A = decltype(act)::value;
    parallel_gemm<T>(false, true, m, k, n, T(1), dz, n, w, n, T(0), dz_prev, k,
                     [&](const Tile& t) {
                       if (!fuse_grad) return;
                       for (int64_t r = t.r0; r < t.r0 + t.rows; ++r) {
                         T* out = dz_prev + r * k + t.c0;
                         const T* sr = s_prev + r * k + t.c0;
#pragma omp simd
                         for (int64_t j = 0; j < t.cols; ++j)
                           out[j] = out[j] * act_grad<T>(A, sr[j], alpha_prev);
                       }
                     });
    if (db_prev != nullptr)
      grad_and_bias<T, A>(dz_prev, A == Act::Linear ? dz_prev : s_prev,
                          A == Act::Linear ? nullptr : dz_prev, db_prev, m, k, alpha_prev);
  });
}

template <typename T>
void dense_backward(const T* dy, const T* s, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha) {
  const T* dz = dy;
  if (a != Act::Linear || db != nullptr) {
    // dz and db in one pass over dy.
    dispatch_act(a, [&](auto act) {
      grad_and_bias<T, decltype(act)::value>(dy, s, a == Act::Linear ? nullptr : dz_buf, db, m,
                                             n, alpha);
    });
    if (a != Act::Linear) dz = dz_buf;
  }
  // dW = x^T dz and dx = dz w^T read the same dz, write apart, and have as
  // many FMAs. When each would be cut into two pieces (a batch of 128
  // through 100-wide layers), cutting them uses two threads anyway and pays
  // a hand-off and a re-packing of an operand per piece; instead the two run
  // side by side, one whole product per chunk (the caller takes both when no
  // worker is awake). A product run in a chunk is cut into the same pieces,
  // run in order on that thread: the same bits. The W1 step at batch 128 in
  // one process, the two ways switched between rounds: 1.03x as fast on idle
  // cores, 0.96-1.05x beside a busy process.
  //
  // Products of one piece each (batch 32) stay one after the other on the
  // caller. Side by side they put the idle core to work: 1.03-1.15x as fast
  // on idle cores, but 0.74-0.93x beside one busy process, where the worker,
  // kept awake through the whole step, competes with the caller for the
  // cores and the caller waits for it (fit at batch 32, 9 rounds: 1.14x idle,
  // 0.74x busy). A check that backed off after long waits for a worker did
  // not tell the two apart: the cost under load is many short waits and the
  // worker's share of the cores, not a few long ones.
  // (Two pieces imply a pool of two threads or more.)
  if (dx != nullptr && gemm_pieces(k, n, m) == 2 && gemm_pieces(m, k, n) == 2) {
    parallel_chunks(2, [&](int64_t i) {
      if (i == 0)
        dense_backward_weight<T>(dz, x, dw, nullptr, m, k, n);
      else
        dense_backward_input<T>(dz, w, nullptr, dx, nullptr, m, k, n, Act::Linear, T(0));
    });
    return;
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
