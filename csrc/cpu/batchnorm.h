// CPU batch normalisation + activation + dropout (math: fusednn/batchnorm.h).
// Inputs are assumed valid (checked at the binding): contiguous row-major
// x (m x n), per-feature arrays of n, `cols` a (kBnCols x n) array.
#pragma once
#include <cstdint>

#include "fusednn/batchnorm.h"

namespace fusednn {
namespace cpu {

// Training: batch mean and biased variance into mean/var (n doubles); the
// moving statistics updated in place when moving_mean is non-null; cols
// filled; y = drop(act(gamma x_hat + beta)). gamma/beta null: 1/0.
template <typename T>
void batchnorm_forward_train(const T* x, const T* gamma, const T* beta, T* moving_mean,
                             T* moving_var, double momentum, double epsilon, BnConvention conv,
                             T* y, T* cols, double* mean, double* var, uint32_t* mask, int64_t m,
                             int64_t n, Act a, T alpha, const BnDropout& d);

// Inference: the same with the moving statistics, in one element-wise pass.
template <typename T>
void batchnorm_forward_infer(const T* x, const T* gamma, const T* beta, const T* moving_mean,
                             const T* moving_var, double epsilon, T* y, T* cols, uint32_t* mask,
                             int64_t m, int64_t n, Act a, T alpha, const BnDropout& d);

// Backward from dy = dL/dy, y the forward output, cols and mask from forward.
// dgamma = sum dz x_hat, dbeta = sum dz (each may be null), dz = dL/dz.
// batch_stats (training): dx = scale (dz - mean(dz) - x_hat mean(dz x_hat)),
// two passes; else dx = scale dz, one pass.
template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* y, const T* cols, const uint32_t* mask,
                        T* dx, T* dgamma, T* dbeta, int64_t m, int64_t n, Act a, T alpha,
                        const BnDropout& d, bool batch_stats);

}  // namespace cpu
}  // namespace fusednn
