// CPU loss kernels: the loss and its gradient in one pass (fusednn/loss.h).
// Inputs are assumed valid (checked at the binding): contiguous row-major
// arrays of the sizes given. Each returns the reduced loss
//     sum_i w_i l_i * inv_d,
// inv_d = 1 / batch ("sum_over_batch_size") or 1 ("sum"), and writes the
// gradient of that value into its output.
#pragma once
#include <cstdint>

#include "fusednn/loss.h"

namespace fusednn {
namespace cpu {

// Softmax cross-entropy of z (n x c) against class indices `labels` (n;
// L = int32_t or int64_t) or label rows y (n x c): exactly one is non-null.
// w: n sample weights or null (all 1). eps: label smoothing. dz (n x c) gets
// w_i inv_d (softmax(z_i) sum(y'_i) - y'_i). A class index outside [0, c)
// gives that row a NaN loss and gradient; it is never used as an index.
template <typename T, typename L>
double softmax_cross_entropy(const T* z, const L* labels, const T* y, const T* w, T* dz,
                             int64_t n, int64_t c, double eps, double inv_d);

// An element-wise loss of p (n x k) against the targets t (n x k), averaged
// over the k outputs of each sample: l_i = mean_j loss(p_ij, t_ij), and
// dp_ij = w_i inv_d / k * dloss/dp. w: n sample weights or null.
template <typename T>
double point_loss(PointLoss kind, const T* p, const T* t, const T* w, T* dp, int64_t n,
                  int64_t k, double inv_d);

}  // namespace cpu
}  // namespace fusednn
