// CPU kernels. Inputs are assumed valid (checked at the binding): contiguous
// row-major arrays of the sizes given.
#pragma once
#include <cstdint>

#include "fusednn/activation.h"
#include "fusednn/optimizer.h"

namespace fusednn {
namespace cpu {

// y[i] = f(z[i]); y may alias z.
template <typename T>
void activation_forward(Act a, T alpha, const T* z, T* y, int64_t n);

// dz[i] = dy[i] * f'(s[i]), s the saved value (see saves_input).
template <typename T>
void activation_backward(Act a, T alpha, const T* dy, const T* s, T* dz, int64_t n);

// y = f(x @ w + b), x: m x k, w: k x n, b: n or null. z (m x n) receives the
// pre-activation when saves_input(a), else must be null. The GEMM runs per
// tile of the output (cpu/blas.h), each followed at once by the
// bias+activation epilogue while the tile is still in cache; block_rows > 0
// cuts rows into tiles of that many rows instead.
template <typename T>
void dense_forward(const T* x, const T* w, const T* b, T* y, T* z, int64_t m, int64_t k,
                   int64_t n, Act a, T alpha, int64_t block_rows);

// dz = dy * f'(s); db = sum_rows dz; dw = x^T dz; dx = dz w^T.
// dz_buf (m x n) is scratch, unused for linear; dx and db may be null.
template <typename T>
void dense_backward(const T* dy, const T* s, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha);

// dw = x^T dz; db = column sums of dz when db is non-null.
template <typename T>
void dense_backward_weight(const T* dz, const T* x, T* dw, T* db, int64_t m, int64_t k, int64_t n);

// Backward through two stacked dense layers: this layer's input x (m x k) is
// the previous layer's output f_prev(z_prev). dz_prev = (dz w^T) * f_prev'(s_prev),
// db_prev = column sums of dz_prev (when non-null), the dx GEMM row-blocked
// with the f' and column-sum pass applied to each block while it is in cache.
// a_prev = Linear gives plain dx (s_prev unused).
template <typename T>
void dense_backward_input(const T* dz, const T* w, const T* s_prev, T* dz_prev, T* db_prev,
                          int64_t m, int64_t k, int64_t n, Act a_prev, T alpha_prev);

// dst[0..bytes) = src[0..bytes) on all threads (the copy-bandwidth roofline).
void parallel_copy(void* dst, const void* src, int64_t bytes);
// out row i = x row rows[i] (row_bytes each; rows in range, out apart from x:
// the caller checks), rows at a time on the pool.
void parallel_take_rows(void* out, const void* x, const int64_t* rows, int64_t m,
                        int64_t row_bytes);

// One optimizer step over `count` tensors in one parallel region: effective
// gradient (penalties, clipping), decoupled weight decay and the rule of
// fusednn/optimizer.h, then the max-norm rescale of tensors with
// max_norm > 0. h.clipvalue bounds Clip::Value; `clip` bounds the norm modes.
template <typename T>
void optimizer_step(Opt k, const OptStep<double>& h, OptTensor<T>* tensors, int64_t count,
                    Clip clip_mode, double clip);

// Elements [b, e) of one tensor through the same update as optimizer_step,
// for a step that needs nothing across tensors (clip_mode Off or Value, no
// max_norm): what optimizer_step does to them, bit for bit, in any order.
template <typename T>
void optimizer_chunk(Opt k, const OptStep<double>& h, const OptTensor<T>& t, int64_t b,
                     int64_t e, Clip clip_mode);

}  // namespace cpu
}  // namespace fusednn
