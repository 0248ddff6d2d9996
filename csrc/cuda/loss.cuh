// CUDA loss kernels, the counterpart of cpu/loss.h: the loss and its
// gradient in one pass (fusednn/loss.h). Pointers are device memory;
// inputs are assumed valid (checked at the binding). Everything runs
// asynchronously on `stream`: the reduced loss
//     sum_i w_i l_i * inv_d
// is accumulated into the device double *loss (zeroed here with
// cudaMemsetAsync, then one atomicAdd per block), so nothing waits for it.
// Plain C++ so that the binding, compiled by the host compiler, can include it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "fusednn/loss.h"

namespace fusednn {
namespace cuda {

// Softmax cross-entropy of z (n x c) against class indices `labels` (n;
// L = int32_t or int64_t) or label rows y (n x c): exactly one is non-null.
// w: n sample weights or null. dz (n x c) gets w_i inv_d (softmax(z_i)
// sum(y'_i) - y'_i). A class index outside [0, c) gives that row a NaN loss
// and gradient and is never used as an index. Rows of up to 1024 classes
// take one warp each, longer rows one block each.
template <typename T, typename L>
void softmax_cross_entropy(const T* z, const L* labels, const T* y, const T* w, T* dz,
                           double* loss, int64_t n, int64_t c, double eps, double inv_d,
                           cudaStream_t stream);

// An element-wise loss of p (n x k) against t (n x k), averaged over the k
// outputs of each sample; dp_ij = w_i inv_d / k * dloss/dp. w: n or null.
template <typename T>
void point_loss(PointLoss kind, const T* p, const T* t, const T* w, T* dp, double* loss,
                int64_t n, int64_t k, double inv_d, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusednn
