// The fused losses (fusednn/loss.h): softmax cross-entropy and the
// element-wise losses, each with its gradient in one pass, in fusednn._C and
// fusednn._C_cuda. The loss comes back as a 0-d float64 array of the
// module's device, so a GPU step never waits for it.
#include <string>

#include "bindings/registry.h"
#include "bindings/tensor.h"
#include "fusednn/loss.h"

#if FUSEDNN_BIND_CUDA
#include "cuda/loss.cuh"
#else
#include "cpu/dispatch.h"
#endif

namespace py = pybind11;
using fusednn::PointLoss;
using namespace fusednn::bind;

namespace {

double inverse_divisor(bool mean, int64_t n) { return mean && n > 0 ? 1.0 / double(n) : 1.0; }

template <typename T, typename L>
void xent(const T* z, const L* labels, const T* y, const T* w, T* dz, double* loss, int64_t n,
          int64_t c, double eps, double inv_d, Stream st) {
  py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
  fusednn::cuda::softmax_cross_entropy<T, L>(z, labels, y, w, dz, loss, n, c, eps, inv_d, st);
#else
  (void)st;
  *loss = fusednn::cpu::kernels<T>().softmax_cross_entropy(z, labels, y, w, dz, n, c, eps, inv_d);
#endif
}

py::tuple softmax_cross_entropy(py::handle z_obj, py::handle labels_obj, py::handle y_obj,
                                py::handle w_obj, double eps, bool mean, uintptr_t stream) {
  const Tensor z = view(z_obj, "z");
  const DType dt = float_dtype(z);
  if (z.ndim != 2) throw py::value_error("z: must have 2 dims (batch, classes)");
  const int64_t n = z.dim(0), c = z.dim(1);
  if (c < 1) throw py::value_error("z: needs at least one class");
  const Tensor labels = view_or_none(labels_obj, "labels"), y = view_or_none(y_obj, "y");
  if (labels.none() == y.none())
    throw py::value_error("exactly one of labels (class indices) and y (label rows) must be "
                          "given");
  if (!y.none()) expect(y, dt, {n, c});
  if (!labels.none()) {
    if (labels.dtype != DType::I32 && labels.dtype != DType::I64)
      throw py::type_error(std::string("labels: dtype ") + dtype_name(labels.dtype) +
                           ", expected int32 or int64");
    expect(labels, labels.dtype, {n});
  }
  const Tensor w = view_or_none(w_obj, "sample_weight");
  if (!w.none()) expect(w, dt, {n});
  if (!(eps >= 0.0 && eps <= 1.0))
    throw py::value_error("eps: label smoothing must be in [0, 1], got " + std::to_string(eps));
  const Stream st = as_stream(stream);
  Tensor dz = empty_like(z);
  Tensor loss = empty(DType::F64, {});
  const double inv_d = inverse_divisor(mean, n);
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    const T *zp = z.data<T>(), *wp = w.data_or_null<T>();
    if (labels.dtype == DType::I32)
      xent<T, int32_t>(zp, labels.data<int32_t>(), nullptr, wp, dz.data<T>(),
                       loss.data<double>(), n, c, eps, inv_d, st);
    else
      xent<T, int64_t>(zp, labels.data_or_null<int64_t>(), y.data_or_null<T>(), wp,
                       dz.data<T>(), loss.data<double>(), n, c, eps, inv_d, st);
  });
  return py::make_tuple(loss.keep, dz.keep);
}

py::tuple point_loss(PointLoss kind, py::handle p_obj, py::handle t_obj, py::handle w_obj,
                     bool mean, uintptr_t stream) {
  in_range("point loss kind", kind, PointLoss::Count);
  const Tensor p = view(p_obj, "p");
  const DType dt = float_dtype(p);
  if (p.ndim != 1 && p.ndim != 2)
    throw py::value_error("p: must have 1 or 2 dims (batch,) or (batch, outputs)");
  const int64_t n = p.dim(0), k = p.ndim == 2 ? p.dim(1) : 1;
  if (k < 1) throw py::value_error("p: needs at least one output per sample");
  const Tensor t = view(t_obj, "target");
  if (p.ndim == 2)
    expect(t, dt, {n, k});
  else
    expect(t, dt, {n});
  const Tensor w = view_or_none(w_obj, "sample_weight");
  if (!w.none()) expect(w, dt, {n});
  const Stream st = as_stream(stream);
  Tensor dp = empty_like(p);
  Tensor loss = empty(DType::F64, {});
  const double inv_d = inverse_divisor(mean, n);
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::point_loss<T>(kind, p.data<T>(), t.data<T>(), w.data_or_null<T>(),
                                 dp.data<T>(), loss.data<double>(), n, k, inv_d, st);
#else
    *loss.data<double>() = fusednn::cpu::kernels<T>().point_loss(
        kind, p.data<T>(), t.data<T>(), w.data_or_null<T>(), dp.data<T>(), n, k, inv_d);
#endif
  });
  return py::make_tuple(loss.keep, dp.keep);
}

const Registrar reg([](py::module_& m) {
  m.def("softmax_cross_entropy", &softmax_cross_entropy, py::arg("z"), py::arg("labels"),
        py::arg("y"), py::arg("sample_weight"), py::arg("eps"), py::arg("mean"),
        py::arg("stream") = 0,
        "(loss, dz): softmax cross-entropy of z (batch x classes) against class indices labels "
        "(int32/int64, batch) or label rows y (batch x classes), one of them None; eps: label "
        "smoothing; mean: divide by the batch size, else sum. loss: 0-d float64.");
  m.def("point_loss", &point_loss, py::arg("kind"), py::arg("p"), py::arg("target"),
        py::arg("sample_weight"), py::arg("mean"), py::arg("stream") = 0,
        "(loss, dp): element-wise loss kind (PointLoss) of p (batch,) or (batch, outputs), "
        "averaged over the outputs of each sample. loss: 0-d float64.");
});

}  // namespace
