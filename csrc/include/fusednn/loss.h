// Loss functions with their gradient, written once for the CPU loops and the
// CUDA kernels. Each op returns the reduced loss and the gradient with respect
// to the logits (or the prediction) in one pass over the data; the backends
// differ only in how they iterate and reduce.
//
// Softmax cross-entropy of one row z (C logits) against labels y (C values,
// one-hot for a class index t), smoothed as y' = (1 - eps) y + eps / C:
//     l = -sum_c y'_c log softmax(z)_c = sum(y') log(s) - sum_c y'_c (z_c - m)
//     dl/dz_c = softmax(z)_c sum(y') - y'_c
// with m = max_c z_c and s = sum_c e_c, e_c = exp(z_c - m): exponentials of
// non-positive numbers only, so logits of any magnitude stay finite. Row
// statistics are accumulated in double (XentRow); the gradient is formed from
// e_c with coefficients computed once per row (XentCoef).
//
// Element-wise losses (PointLoss) give one loss term and its derivative with
// respect to the prediction; the callers average over the K outputs of a
// sample and apply the sample weight and the batch reduction.
//
// NaN: a NaN logit gives a NaN loss and a NaN gradient (the whole row for the
// softmax, since s is NaN; the element for the point losses).
#pragma once

#include <cstdint>
#include <limits>

#include "fusednn/common.h"

namespace fusednn {

// Exported to Python as fusednn._C.PointLoss (bindings/cpu_types.cpp).
enum class PointLoss : int {
  SigmoidBCE = 0,  // binary cross-entropy on logits
  MSE = 1,         // squared error
  Count = 2
};

namespace loss_detail {
// log is needed once per row or element, so it lives here rather than with
// the vectorised wrappers of common.h.
FUSEDNN_HD float log(float x) { return ::logf(x); }
FUSEDNN_HD double log(double x) { return ::log(x); }
}  // namespace loss_detail

template <typename T>
FUSEDNN_HD T loss_nan() {
  return std::numeric_limits<T>::quiet_NaN();
}

// ------------------------------------------------------- softmax cross-entropy

// Sums over one row, with m its maximum and d_c = z_c - m (in double):
// s = sum e_c, sz = sum d_c, sy = sum y_c, syz = sum y_c d_c, for the labels
// before smoothing. A class index t gives sy = 1 and syz = d_t.
struct XentRow {
  double s, sz, sy, syz;
};

// Whether a class index addresses a column of a row of c logits. A row whose
// label fails this gets s = NaN (xent_invalidate): NaN loss and gradient, and
// no column is read at t.
template <typename L>
FUSEDNN_HD bool xent_label_ok(L t, int64_t c) {
  return t >= L(0) && int64_t(t) < c;
}

FUSEDNN_HD XentRow xent_invalidate(XentRow r) {
  r.s = loss_nan<double>();
  return r;
}

// sum(y') for smoothing eps: (1 - eps) sum(y) + eps.
FUSEDNN_HD double xent_label_sum(const XentRow& r, double eps) { return (1.0 - eps) * r.sy + eps; }

// A label row's term y_c d_c of syz: 0 where y_c is 0, so that a -inf logit
// (a masked class) without label mass leaves the loss finite with label rows
// as it does with class indices (0 * -inf would be NaN).
FUSEDNN_HD double xent_ydot(double y, double d) { return y != 0.0 ? y * d : 0.0; }

// The loss of one row, -sum_c y'_c log softmax(z)_c, unweighted.
FUSEDNN_HD double xent_row_loss(const XentRow& r, double eps, int64_t c) {
  // sum y'_c d_c; sz only with smoothing, so that a -inf logit (a masked
  // class, d = -inf) leaves the unsmoothed loss finite; syz only without full
  // smoothing (eps = 1 ignores the labels: 0 * -inf would be NaN, not +inf)
  const double ydot = (eps < 1.0 ? (1.0 - eps) * r.syz : 0.0) +
                      (eps > 0.0 ? eps / double(c) * r.sz : 0.0);
  return xent_label_sum(r, eps) * loss_detail::log(r.s) - ydot;
}

// dl/dz_c scaled by the row's weight: scale (softmax_c sum(y') - y'_c)
//   = a e_c - b y_c - off, with a = scale sum(y') / s, b = scale (1 - eps),
// off = scale eps / C, y the labels before smoothing.
template <typename T>
struct XentCoef {
  T a, b, off;
};

template <typename T>
FUSEDNN_HD XentCoef<T> xent_coef(const XentRow& r, double eps, int64_t c, double scale) {
  XentCoef<T> k;
  k.a = T(scale * xent_label_sum(r, eps) / r.s);
  k.b = T(scale * (1.0 - eps));
  k.off = T(scale * eps / double(c));
  return k;
}

// The gradient at one column from e_c = exp(z_c - m) and the label y_c
// (0 or 1 for a class index).
template <typename T>
FUSEDNN_HD T xent_grad(const XentCoef<T>& k, T e, T y) {
  return k.a * e - k.b * y - k.off;
}

// ------------------------------------------------------------- point losses

// One loss term (double: it is summed, and the squared error of float32
// values can exceed the float32 range) and its derivative with respect to
// the prediction (storage type).
template <typename T>
struct LossGrad {
  double loss;
  T grad;
};

// Binary cross-entropy on the logit z against the target y in [0, 1]:
//     l = max(z, 0) - z y + log1p(exp(-|z|)),   dl/dz = sigmoid(z) - y,
// one exponential for both, never of a positive number. The term is formed
// in T: max(z, 0) - z y is one fma (the product is not rounded, so z y
// cancels exactly against z for y = 1), and both parts of l are >= 0 for y
// in [0, 1], so their sum does not cancel. Squared error:
//     l = (p - t)^2,   dl/dp = 2 (p - t).
// Branch-free selects, so the CPU loops vectorise. (act_detail::sigmoid and
// softplus of activation.h would each take their own exponential; the term
// shares one, math::exp_neg_abs, as they do.)

// The binary cross-entropy term given e = exp(-|z|) (point_term computes it;
// the CPU loop computes a block of them first, in a loop of its own).
template <typename T>
FUSEDNN_HD LossGrad<T> bce_term(T z, T y, T e) {
  LossGrad<T> r;
  const T pos = z > T(0) ? z : T(0);
  r.loss = double(math::fma(-z, y, pos) + math::log1p_unit(e));
  r.grad = math::sigmoid_from_exp(z, e) - y;
  return r;
}

template <typename T, PointLoss L>
FUSEDNN_HD LossGrad<T> point_term(T z, T y) {
  if (L == PointLoss::SigmoidBCE) return bce_term(z, y, math::exp_neg_abs(z));
  LossGrad<T> r;
  const double d = double(z) - double(y);
  r.loss = d * d;
  r.grad = T(2) * (z - y);
  return r;
}

}  // namespace fusednn

#if !defined(__CUDA_ARCH__)
#include <type_traits>
namespace fusednn {

// Calls f(std::integral_constant<PointLoss, k>{}) for the runtime value k,
// so each loss gets its own loop.
template <typename F>
inline bool dispatch_point_loss(PointLoss k, F&& f) {
  switch (k) {
    case PointLoss::SigmoidBCE:
      f(std::integral_constant<PointLoss, PointLoss::SigmoidBCE>{});
      return true;
    case PointLoss::MSE:
      f(std::integral_constant<PointLoss, PointLoss::MSE>{});
      return true;
    default:
      return false;
  }
}

}  // namespace fusednn
#endif
