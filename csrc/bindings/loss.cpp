// The fused losses (fusednn/loss.h): softmax cross-entropy and the
// element-wise losses, each with its gradient in one pass. The loss comes
// back as a 0-d float64 array of the module's device: a GPU step never waits
// for it.
#include "fusednn/loss.h"

#include <string>

#include "bindings/registry.h"
#include "bindings/tensor.h"

namespace py = pybind11;
using fusednn::PointLoss;
using namespace fusednn::bind;
using namespace pybind11::literals;
namespace dev = fusednn::dev;

namespace {

double inverse_divisor(bool mean, int64_t n) { return mean && n > 0 ? 1.0 / double(n) : 1.0; }

py::tuple softmax_cross_entropy(py::handle z_obj, py::handle labels_obj, py::handle y_obj,
                                py::handle w_obj, double eps, bool mean, uintptr_t stream) {
  const Tensor z = view(z_obj, "z"), labels = view_or_none(labels_obj, "labels"),
               y = view_or_none(y_obj, "y"), w = view_or_none(w_obj, "sample_weight");
  const DType dt = float_dtype(z);
  check(z.ndim == 2, "z", "must have 2 dims (batch, classes)");
  const int64_t n = z.dim(0), c = z.dim(1);
  check(c >= 1, "z", "needs at least one class");
  check(labels.none() != y.none(), "labels, y", "exactly one must be given");
  if (!y.none()) expect(y, dt, {n, c});
  if (!labels.none()) expect(labels, labels.dtype == DType::I32 ? DType::I32 : DType::I64, {n});
  if (!w.none()) expect(w, dt, {n});
  check(eps >= 0.0 && eps <= 1.0, "eps", "label smoothing must be in [0, 1]");
  const Stream st = as_stream(stream);
  const Tensor dz = empty_like(z), loss = empty(DType::F64, {});
  run_floating(dt, [&](auto tag) {
    using T = decltype(tag);
    const T *zp = z.data<T>(), *wp = w.data_or_null<T>();
    double* lp = loss.data<double>();
    const double inv_d = inverse_divisor(mean, n);
    if (labels.dtype == DType::I32)
      dev::softmax_cross_entropy<T, int32_t>(zp, labels.data<int32_t>(), nullptr, wp, dz.data<T>(),
                                             lp, n, c, eps, inv_d, st);
    else
      dev::softmax_cross_entropy<T, int64_t>(zp, labels.data_or_null<int64_t>(),
                                             y.data_or_null<T>(), wp, dz.data<T>(), lp, n, c, eps,
                                             inv_d, st);
  });
  return py::make_tuple(loss.keep, dz.keep);
}

py::tuple point_loss(PointLoss kind, py::handle p_obj, py::handle t_obj, py::handle w_obj,
                     bool mean, uintptr_t stream) {
  in_range("point loss kind", kind, PointLoss::Count);
  const Tensor p = view(p_obj, "p"), t = view(t_obj, "target"),
               w = view_or_none(w_obj, "sample_weight");
  const DType dt = float_dtype(p);
  check(p.ndim == 1 || p.ndim == 2, "p", "must have 1 or 2 dims (batch,) or (batch, outputs)");
  const int64_t n = p.dim(0), k = p.ndim == 2 ? p.dim(1) : 1;
  check(k >= 1, "p", "needs at least one output per sample");
  expect_size(t, dt, p.size);
  check(t.ndim == p.ndim && t.dim(0) == n, "target", "must have p's shape");
  if (!w.none()) expect(w, dt, {n});
  const Stream st = as_stream(stream);
  const Tensor dp = empty_like(p), loss = empty(DType::F64, {});
  FUSEDNN_DISPATCH(
      dt, dev::point_loss<T>(kind, p.data<T>(), t.data<T>(), w.data_or_null<T>(), dp.data<T>(),
                             loss.data<double>(), n, k, inverse_divisor(mean, n), st));
  return py::make_tuple(loss.keep, dp.keep);
}

const Registrar reg([](py::module_& m) {
  m.def("softmax_cross_entropy", &softmax_cross_entropy, "z"_a, "labels"_a, "y"_a,
        "sample_weight"_a, "eps"_a, "mean"_a, "stream"_a = 0,
        "(loss, dz): softmax cross-entropy of z against class indices labels or label rows y.");
  m.def("point_loss", &point_loss, "kind"_a, "p"_a, "target"_a, "sample_weight"_a, "mean"_a,
        "stream"_a = 0, "(loss, dp): an element-wise loss, averaged over each sample's outputs.");
});

}  // namespace
