// CUDA kernels, the counterpart of cpu/kernels.h. Pointers are device memory;
// inputs are assumed valid (checked at the binding): contiguous row-major
// arrays of the sizes given. Everything runs asynchronously on `stream`.
// Plain C++ so that the binding, compiled by the host compiler, can include it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusednn/activation.h"
#include "fusednn/optimizer.h"

namespace fusednn {
namespace cuda {

// y[i] = f(z[i]); y may alias z.
template <typename T>
void activation_forward(Act a, T alpha, const T* z, T* y, int64_t n, cudaStream_t stream);

// dz[i] = dy[i] * f'(s[i]), s the saved value (see saves_input); s is not
// read for linear and may be null there. dz may alias dy.
template <typename T>
void activation_backward(Act a, T alpha, const T* dy, const T* s, T* dz, int64_t n,
                         cudaStream_t stream);

// y = f(x @ w + b), x: m x k, w: k x n, b: n or null. z (m x n) receives the
// pre-activation when saves_input(a), else must be null. tf32 lets float32
// GEMMs use TF32 tensor cores.
// For relu, mask (null for none, else null for every other a) may receive the
// bitmask of x @ w + b > 0 that dense_backward_input reads back: bit
// i * mask_ld + j for y[i][j], mask_ld a multiple of 128 and >= n, so m *
// mask_ld / 8 bytes. Returns whether it was written: only when cuBLASLt fuses
// it into the GEMM, else the mask is left untouched and unusable.
template <typename T>
bool dense_forward(const T* x, const T* w, const T* b, T* y, T* z, void* mask, int64_t mask_ld,
                   int64_t m, int64_t k, int64_t n, Act a, T alpha, bool tf32,
                   cudaStream_t stream);

// dz = dy * f'(s); db = sum_rows dz; dw = x^T dz; dx = dz w^T.
// dz_buf (m x n) is scratch, unused (may be null) for linear; dx and db may be null.
template <typename T>
void dense_backward(const T* dy, const T* s, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha, bool tf32,
                    cudaStream_t stream);

// dw = x^T dz (k x n); db = column sums of dz (n) when db is non-null.
// dz: m x n, the gradient at the layer's pre-activation.
template <typename T>
void dense_backward_weight(const T* dz, const T* x, T* dw, T* db, int64_t m, int64_t k,
                           int64_t n, bool tf32, cudaStream_t stream);

// Backward through two stacked dense layers, this layer's input x (m x k) being
// the previous layer's output f_prev(z_prev): dz_prev = (dz w^T) * f_prev'(s_prev)
// (m x k), db_prev = column sums of dz_prev (k) when db_prev is non-null.
// s_prev (m x k) is the previous layer's saved value (see saves_input), unused
// (may be null) for linear. mask_prev, null for none, is the bitmask that
// dense_forward wrote for a relu previous layer (leading dimension mask_ld_prev
// bits, >= k); s_prev is still required, for when cuBLASLt cannot use the mask.
template <typename T>
void dense_backward_input(const T* dz, const T* w, const T* s_prev, const void* mask_prev,
                          int64_t mask_ld_prev, T* dz_prev, T* db_prev, int64_t m, int64_t k,
                          int64_t n, Act a_prev, T alpha_prev, bool tf32, cudaStream_t stream);

// One optimizer step over `count` tensors (host array `tensors`; every
// pointer inside is device memory), the rule of fusednn/optimizer.h with the
// slots' recurrences in double and the parameter's increment in T, as on the
// CPU:
//  - clip_mode Clip::Norm / Clip::Global: first the sum of squares of each
//    tensor's effective gradient (penalties applied) into norms[0..count)
//    (device doubles, written here, summed in a fixed order), then the update
//    reads them from device memory: no host synchronisation. norms is unused
//    (may be null) otherwise.
//  - the update of all tensors in one launch, whatever `count`.
//  - then, for the tensors with max_norm > 0, the max-norm rescale.
// h.clipvalue is the bound for Clip::Value; `clip` the bound for the norm modes.
// h_at, when non-null, is a device copy of the step record that the update
// reads instead of h when it runs, so that a captured CUDA graph replays with
// the learning rate and step coefficients written there last.
template <typename T>
void optimizer_step(Opt k, const OptStep<double>& h, const OptTensor<T>* tensors, int64_t count,
                    Clip clip_mode, double clip, double* norms, cudaStream_t stream,
                    const OptStep<double>* h_at = nullptr);

}  // namespace cuda
}  // namespace fusednn
