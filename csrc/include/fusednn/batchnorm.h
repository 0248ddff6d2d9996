// Batch normalisation, per column and per element, shared by the CPU loops
// and the CUDA kernels. x is (m, n) row-major: m samples, n features.
//
// Training, per feature j over the m samples:
//   mean_j, var_j (biased)                 batch statistics
//   x_hat = (x - mean_j) / sqrt(var_j + eps)
//   z = gamma_j x_hat + beta_j,  y = drop(act(z))
// Inference uses the moving statistics instead of the batch's.
//
// Numerics. The statistics are shifted sums, shifted by the column's first
// sample K_j: S1 = sum (x - K), S2 = sum (x - K)^2, so a column with mean 1e4
// and std 1e-2 loses nothing to cancellation. They are totalled in double
// (the CPU sums blocks of 8 rows in T first; the CUDA kernels sum in double).
// In the element-wise pass the mean is split into m_hi + m_lo (m_hi its value in T,
// m_lo the rest), and x - mean is taken as (x - m_hi) - m_lo: x - m_hi is
// exact for x near the mean, which float32 arithmetic on x - mean would not
// be (ulp(1e4) = 1e-3 in float32, a tenth of that column's std).
#pragma once

#include <cstdint>
#include <type_traits>

#include "fusednn/activation.h"
#include "fusednn/common.h"
#include "fusednn/dropout.h"

namespace fusednn {

// The per-column coefficients of the element-wise passes, stored as the rows
// of one (kBnCols, n) array of T: forward z = ((x - m_hi) - m_lo) * scale + shift,
// x_hat = ((x - m_hi) - m_lo) * invstd.
enum BnCol : int { kBnMeanHi = 0, kBnMeanLo = 1, kBnScale = 2, kBnShift = 3, kBnInvStd = 4 };
constexpr int kBnCols = 5;

// Moving statistics conventions.
//  Keras:   moving = moving * momentum + batch * (1 - momentum), biased variance.
//  PyTorch: running = running * (1 - momentum) + batch * momentum, unbiased
//           variance (m / (m - 1)); torch's momentum 0.1 is Keras' 0.9.
enum class BnConvention : int { Keras = 0, Torch = 1, Count };

// Dropout after the activation; rate == 0: none. The mask (ceil(m n / 32)
// words of fusednn/dropout.h, the same words as the standalone dropout op's
// for (seed, step)) is written by forward and read by backward. step_at,
// when non-null, holds the step instead (device memory on the GPU), read
// when the work runs: a captured CUDA graph replays with the step its caller
// wrote there last.
struct BnDropout {
  double rate;
  bool alpha;
  uint64_t seed;
  uint64_t step;
  const uint64_t* step_at = nullptr;
};

// mean and biased variance from the shifted sums of m samples (m >= 1).
FUSEDNN_HD void bn_finalize_stats(double shift, double s1, double s2, double m, double& mean,
                                  double& var) {
  const double d = s1 / m;
  mean = shift + d;
  const double v = s2 / m - d * d;
  var = v < 0.0 ? 0.0 : v;  // rounding can make a constant column slightly negative; NaN stays
}

template <typename T>
FUSEDNN_HD void bn_update_moving(T& moving_mean, T& moving_var, double mean, double var,
                                 double momentum, double m, BnConvention conv) {
  if (conv == BnConvention::Keras) {
    moving_mean = T(double(moving_mean) * momentum + mean * (1.0 - momentum));
    moving_var = T(double(moving_var) * momentum + var * (1.0 - momentum));
  } else {
    const double unbiased = m > 1.0 ? var * m / (m - 1.0) : var;
    moving_mean = T(double(moving_mean) * (1.0 - momentum) + mean * momentum);
    moving_var = T(double(moving_var) * (1.0 - momentum) + unbiased * momentum);
  }
}

// The column coefficients (see BnCol) for mean and 1/sqrt(var + eps).
template <typename T>
FUSEDNN_HD void bn_column(double mean, double invstd, double gamma, double beta, T* cols,
                          int64_t n, int64_t j) {
  const T hi = T(mean);
  cols[kBnMeanHi * n + j] = hi;
  cols[kBnMeanLo * n + j] = T(mean - double(hi));
  cols[kBnScale * n + j] = T(gamma * invstd);
  cols[kBnShift * n + j] = T(beta);
  cols[kBnInvStd * n + j] = T(invstd);
}

// x - mean, accurate for x near the mean (see the numerics note above).
template <typename T>
FUSEDNN_HD T bn_centered(T x, T m_hi, T m_lo) {
  return (x - m_hi) - m_lo;
}

// What the activation derivative is computed from in backward (see
// activation.h: the input z for gelu/swish/mish, the output a otherwise).
// a is recovered from the op's output y when the transform after the
// activation is a plain scale (no dropout, or inverted dropout): a = y / kept_mul,
// exact up to rounding for kept elements, and irrelevant for dropped ones
// (their gradient is 0). After alpha dropout y = a * kept_mul + kept_add would
// lose a's low bits to cancellation, so a is recomputed from z there.
enum class BnSaved : int { FromZ = 0, FromY = 1, Recompute = 2 };

template <typename T, Act A, BnSaved S>
FUSEDNN_HD T bn_act_grad(T z, T y, T inv_kept_mul, T alpha) {
  if (saves_input(A) || S == BnSaved::FromZ) return act_grad<T>(A, z, alpha);
  if (S == BnSaved::FromY) return act_grad<T>(A, y * inv_kept_mul, alpha);
  return act_grad<T>(A, act_forward<T>(A, z, alpha), alpha);
}

// act(gamma x_hat + beta) through the column coefficients.
template <typename T, Act A>
FUSEDNN_HD T bn_activation(T x, T m_hi, T m_lo, T scale, T shift, T alpha) {
  return act_forward<T>(A, bn_centered(x, m_hi, m_lo) * scale + shift, alpha);
}

// dL/dz from dL/dy through dropout (keep, kept_mul; keep = true and
// kept_mul = 1 without dropout) and the activation.
template <typename T, Act A, BnSaved S>
FUSEDNN_HD T bn_dz(T dy, T z, T y, bool keep, T kept_mul, T inv_kept_mul, T alpha) {
  return keep ? dy * kept_mul * bn_act_grad<T, A, S>(z, y, inv_kept_mul, alpha) : T(0);
}

// Calls f(std::bool_constant<drop>, std::integral_constant<BnSaved, s>) for
// the backward variant of a forward with or without dropout: the activation's
// output is read back from y, except after alpha dropout (see BnSaved). Host
// code, visible to nvcc's device pass so the kernels it instantiates exist.
template <typename F>
inline void bn_backward_variant(bool drop, bool alpha_dropout, F&& f) {
  using FromY = std::integral_constant<BnSaved, BnSaved::FromY>;
  using Recompute = std::integral_constant<BnSaved, BnSaved::Recompute>;
  if (!drop)
    f(std::false_type{}, FromY{});
  else if (alpha_dropout)
    f(std::true_type{}, Recompute{});
  else
    f(std::true_type{}, FromY{});
}

// Training dx from dz: scale (dz - mean(dz) - x_hat mean(dz x_hat)).
template <typename T>
FUSEDNN_HD T bn_dx_train(T dz, T x_hat, T scale, T mean_dz, T mean_dz_xhat) {
  return scale * (dz - mean_dz - x_hat * mean_dz_xhat);
}

}  // namespace fusednn
