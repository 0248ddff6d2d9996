// Fused loss + gradient on the CPU. The softmax cross-entropy works row by
// row while the row is in cache: the maximum, then e = exp(z - m) written
// straight into the gradient row while its sum is taken, then the gradient
// in place from e. Rows are split over the OpenMP team and the loss is
// summed in double with an OpenMP reduction.
#include "cpu/loss.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

#include "cpu/threads.h"

namespace fusednn {
namespace cpu {

namespace {
// Elements per chunk of the thread pool (cpu/threads.h).
constexpr int64_t kGrain = 1 << 14;
// Elements per work item of the unweighted element-wise losses.
constexpr int64_t kSpan = 4096;

// One row of the softmax cross-entropy; returns its loss times `scale`.
// Dense: y is the row's labels, else t is its class index. Plain function
// with by-value pointers so that the three loops vectorise.
template <typename T, bool Dense>
double xent_row(const T* __restrict z, const T* __restrict y, int64_t t, bool t_ok,
                T* __restrict g, int64_t c, double eps, double scale) {
  T m = -std::numeric_limits<T>::infinity();
  // A NaN is skipped here but reaches s below, so the row still turns NaN.
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < c; ++j) m = z[j] > m ? z[j] : m;

  const double md = double(m);
  double s = 0, sz = 0, sy = 0, syz = 0;
  if (Dense) {
#pragma omp simd reduction(+ : s, sz, sy, syz)
    for (int64_t j = 0; j < c; ++j) {
      const T e = math::exp_nonpos(z[j] - m);
      g[j] = e;
      s += double(e);
      const double d = double(z[j]) - md;
      sz += d;
      sy += double(y[j]);
      syz += xent_ydot(double(y[j]), d);
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < c; ++j) {
      const T e = math::exp_nonpos(z[j] - m);
      g[j] = e;
      s += double(e);
    }
    // sz only enters the loss through smoothing (xent_row_loss): a second
    // pass over the row, in cache, only then
    if (eps > 0.0) {
#pragma omp simd reduction(+ : sz)
      for (int64_t j = 0; j < c; ++j) sz += double(z[j]) - md;
    }
    sy = 1.0;
    syz = t_ok ? double(z[t]) - md : 0.0;
  }

  XentRow r{s, sz, sy, syz};
  if (!Dense && !t_ok) r = xent_invalidate(r);
  const XentCoef<T> k = xent_coef<T>(r, eps, c, scale);
  if (Dense) {
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) g[j] = xent_grad(k, g[j], y[j]);
  } else {
    // The one-hot term applies to column t only: added after the loop
    // rather than selected per column.
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) g[j] = xent_grad(k, g[j], T(0));
    if (t_ok) g[t] -= k.b;
  }
  return scale * xent_row_loss(r, eps, c);
}

template <typename T, typename L, bool Dense>
double xent_rows(const T* z, const L* labels, const T* y, const T* w, T* g, int64_t n, int64_t c,
                 double eps, double inv_d) {
  return parallel_sum(n, std::max<int64_t>(1, kGrain / std::max<int64_t>(1, c)),
                      [&](int64_t lo, int64_t hi) {
    double total = 0;
    for (int64_t i = lo; i < hi; ++i) {
      const double scale = (w ? double(w[i]) : 1.0) * inv_d;
      const int64_t off = i * c;
      if (Dense) {
        total += xent_row<T, true>(z + off, y + off, 0, true, g + off, c, eps, scale);
      } else {
        const L t = labels[i];
        const bool ok = xent_label_ok(t, c);
        total += xent_row<T, false>(z + off, nullptr, ok ? int64_t(t) : 0, ok, g + off, c, eps,
                                    scale);
      }
    }
    return total;
  });
}

// Sum of the loss terms of n elements (times w[j] when w is given); dp =
// sc w[j] dloss/dp. The binary cross-entropy takes its exponentials for a
// block of elements first, in a loop of their own: one loop with the
// exponential, two divisions and the log1p is a dependency chain too long for
// the out-of-order window, and split in two it ran 1.3x faster.
template <typename T, PointLoss K, bool Weighted>
double point_span(const T* __restrict p, const T* __restrict t, const T* __restrict w,
                  T* __restrict g, int64_t n, T sc) {
  constexpr int64_t kExpBlock = 256;
  double acc = 0;
  for (int64_t b = 0; b < n; b += kExpBlock) {
    const int64_t len = std::min(kExpBlock, n - b);
    const T* pb = p + b;
    const T* tb = t + b;
    const T* wb = Weighted ? w + b : nullptr;
    T* gb = g + b;
    alignas(64) T e[kExpBlock];
    if (K == PointLoss::SigmoidBCE) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) e[j] = math::exp_neg_abs(pb[j]);
    }
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < len; ++j) {
      const LossGrad<T> r = K == PointLoss::SigmoidBCE ? bce_term(pb[j], tb[j], e[j])
                                                       : point_term<T, K>(pb[j], tb[j]);
      gb[j] = (Weighted ? wb[j] * sc : sc) * r.grad;
      acc += Weighted ? double(wb[j]) * r.loss : r.loss;
    }
  }
  return acc;
}

template <typename T, PointLoss K>
double point_all(const T* p, const T* t, const T* w, T* g, int64_t n, int64_t k, double inv_d) {
  const double scale = inv_d / double(k);  // the mean over the k outputs
  const int64_t total_n = n * k;
  double total = 0;
  if (w == nullptr || k == 1) {
    // No weight, or one per element (one output per sample): any split of
    // the flat array will do.
    const T sc = T(scale);
    const int64_t spans = (total_n + kSpan - 1) / kSpan;
    total = parallel_sum(spans, std::max<int64_t>(1, kGrain / kSpan), [&](int64_t b0, int64_t b1) {
      double acc = 0;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t begin = b * kSpan, len = std::min(kSpan, total_n - begin);
        acc += w == nullptr
                   ? point_span<T, K, false>(p + begin, t + begin, nullptr, g + begin, len, sc)
                   : point_span<T, K, true>(p + begin, t + begin, w + begin, g + begin, len, sc);
      }
      return acc;
    });
  } else {
    total = parallel_sum(n, std::max<int64_t>(1, kGrain / k), [&](int64_t lo, int64_t hi) {
      double acc = 0;
      for (int64_t i = lo; i < hi; ++i) {
        const int64_t off = i * k;
        acc += double(w[i]) * point_span<T, K, false>(p + off, t + off, nullptr, g + off, k,
                                                      T(double(w[i]) * scale));
      }
      return acc;
    });
  }
  return total * scale;
}

}  // namespace

template <typename T, typename L>
double softmax_cross_entropy(const T* z, const L* labels, const T* y, const T* w, T* dz,
                             int64_t n, int64_t c, double eps, double inv_d) {
  if (n <= 0 || c <= 0) return 0.0;
  return y != nullptr ? xent_rows<T, L, true>(z, labels, y, w, dz, n, c, eps, inv_d)
                      : xent_rows<T, L, false>(z, labels, y, w, dz, n, c, eps, inv_d);
}

template <typename T>
double point_loss(PointLoss kind, const T* p, const T* t, const T* w, T* dp, int64_t n,
                  int64_t k, double inv_d) {
  if (int(kind) < 0 || int(kind) >= int(PointLoss::Count))
    throw std::invalid_argument("point_loss: unknown loss kind " + std::to_string(int(kind)));
  if (n <= 0 || k <= 0) return 0.0;
  double total = 0;
  dispatch_point_loss(kind, [&](auto kc) {
    total = point_all<T, decltype(kc)::value>(p, t, w, dp, n, k, inv_d);
  });
  return total;
}

#define FUSEDNN_INSTANTIATE(T)                                                                   \
  template double softmax_cross_entropy<T, int32_t>(const T*, const int32_t*, const T*, const T*, \
                                                    T*, int64_t, int64_t, double, double);       \
  template double softmax_cross_entropy<T, int64_t>(const T*, const int64_t*, const T*, const T*, \
                                                    T*, int64_t, int64_t, double, double);       \
  template double point_loss<T>(PointLoss, const T*, const T*, const T*, T*, int64_t, int64_t,    \
                                double);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cpu
}  // namespace fusednn
