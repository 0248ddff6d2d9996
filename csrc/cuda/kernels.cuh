// CUDA kernels, the counterpart of cpu/kernels.h. Pointers are device memory;
// inputs are assumed valid (checked at the binding): contiguous row-major
// arrays of the sizes given. Everything runs asynchronously on `stream`.
// Plain C++ so that the binding, compiled by the host compiler, can include it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusednn/activations.h"

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
template <typename T>
void dense_forward(const T* x, const T* w, const T* b, T* y, T* z, int64_t m, int64_t k,
                   int64_t n, Act a, T alpha, bool tf32, cudaStream_t stream);

// dz = dy * f'(s); db = sum_rows dz; dw = x^T dz; dx = dz w^T.
// dz_buf (m x n) is scratch, unused (may be null) for linear; dx and db may be null.
template <typename T>
void dense_backward(const T* dy, const T* s, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha, bool tf32,
                    cudaStream_t stream);

}  // namespace cuda
}  // namespace fusednn
