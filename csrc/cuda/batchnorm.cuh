// CUDA batch normalisation + activation + dropout (math: fusednn/batchnorm.h),
// the counterpart of cpu/batchnorm.h. Pointers are device memory, inputs
// valid (checked at the binding); everything runs asynchronously on `stream`,
// with no host synchronisation.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusednn/batchnorm.h"

namespace fusednn {
namespace cuda {

// Doubles of scratch `ws` that batchnorm_forward / batchnorm_backward need
// for x of m x n: the per-block partial column sums and their totals.
int64_t batchnorm_workspace(int64_t m, int64_t n);

// training: batch statistics into mean/var (n doubles each), the moving
// statistics updated in place when moving_mean is non-null; else the moving
// statistics are used (mean/var unused). cols (kBnCols x n) receives the
// coefficients backward reads; y = drop(act(gamma x_hat + beta)); mask
// (ceil(m n / 32) words) when d.rate > 0. gamma/beta null: 1/0.
template <typename T>
void batchnorm_forward(const T* x, const T* gamma, const T* beta, T* moving_mean, T* moving_var,
                       bool training, double momentum, double epsilon, BnConvention conv, T* y,
                       T* cols, double* mean, double* var, uint32_t* mask, double* ws, int64_t m,
                       int64_t n, Act a, T alpha, const BnDropout& d, cudaStream_t stream);

// dx, dgamma = sum dz x_hat, dbeta = sum dz (each of the two may be null);
// batch_stats: the training formula (two passes), else dx = scale dz.
template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* y, const T* cols, const uint32_t* mask,
                        T* dx, T* dgamma, T* dbeta, double* ws, int64_t m, int64_t n, Act a,
                        T alpha, const BnDropout& d, bool batch_stats, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusednn
