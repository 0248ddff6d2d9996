// fusednn._C: the fused losses (cpu/loss.h). fusednn.ops.loss checks user
// input and names the public arguments; the checks here keep a direct call
// with inconsistent arrays from reading or writing out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/cpu_checks.h"
#include "bindings/registry.h"
#include "cpu/dispatch.h"

namespace py = pybind11;
using fusednn::PointLoss;
using namespace fusednn::bind;

namespace {

// A C-contiguous array of dtype dt and exactly these dims.
void require_shape(const py::array& a, const char* name, const py::dtype& dt,
                   const std::vector<py::ssize_t>& dims) {
  if (!a.dtype().is(dt))
    throw py::type_error(std::string(name) + ": dtype " + std::string(py::str(a.dtype())) +
                         ", expected " + std::string(py::str(dt)));
  bool same = a.ndim() == py::ssize_t(dims.size());
  for (size_t i = 0; same && i < dims.size(); ++i) same = a.shape(i) == dims[i];
  if (!same) {
    std::string want, got;
    for (py::ssize_t d : dims) want += std::to_string(d) + ",";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) got += std::to_string(a.shape(i)) + ",";
    throw py::value_error(std::string(name) + ": shape (" + got + "), expected (" + want + ")");
  }
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": must be C-contiguous");
}

double inverse_divisor(bool mean, int64_t n) { return mean && n > 0 ? 1.0 / double(n) : 1.0; }

template <typename T>
const T* optional_weights(const py::object& w, const py::dtype& dt, int64_t n, py::array* keep) {
  if (w.is_none()) return nullptr;
  *keep = w.cast<py::array>();
  require_shape(*keep, "sample_weight", dt, {py::ssize_t(n)});
  return const_data<T>(*keep);
}

template <typename T, typename L>
double xent_call(const T* z, const L* labels, const T* y, const T* w, T* dz, int64_t n, int64_t c,
                 double eps, double inv_d) {
  py::gil_scoped_release nogil;
  return fusednn::cpu::kernels<T>().softmax_cross_entropy(z, labels, y, w, dz, n, c, eps, inv_d);
}

template <typename T>
py::tuple xent_t(const py::array& z, const py::object& labels, const py::object& y,
                 const py::object& w, double eps, bool mean) {
  const py::dtype dt = z.dtype();
  const int64_t n = z.shape(0), c = z.shape(1);
  py::array wa, la, ya;
  const T* wp = optional_weights<T>(w, dt, n, &wa);
  py::array dz = new_output(dt, {py::ssize_t(n), py::ssize_t(c)});
  const T* zp = const_data<T>(z);
  T* dzp = mutable_data<T>(dz);
  const double inv_d = inverse_divisor(mean, n);
  double loss;
  if (!y.is_none()) {
    ya = y.cast<py::array>();
    require_shape(ya, "y", dt, {py::ssize_t(n), py::ssize_t(c)});
    loss = xent_call<T, int64_t>(zp, nullptr, const_data<T>(ya), wp, dzp, n, c, eps, inv_d);
  } else {
    la = labels.cast<py::array>();
    if (la.dtype().is(py::dtype::of<int32_t>())) {
      require_shape(la, "labels", la.dtype(), {py::ssize_t(n)});
      loss = xent_call<T, int32_t>(zp, const_data<int32_t>(la), nullptr, wp, dzp, n, c, eps, inv_d);
    } else if (la.dtype().is(py::dtype::of<int64_t>())) {
      require_shape(la, "labels", la.dtype(), {py::ssize_t(n)});
      loss = xent_call<T, int64_t>(zp, const_data<int64_t>(la), nullptr, wp, dzp, n, c, eps, inv_d);
    } else {
      throw py::type_error("labels: dtype " + std::string(py::str(la.dtype())) +
                           ", expected int32 or int64");
    }
  }
  return py::make_tuple(loss, dz);
}

template <typename T>
py::tuple point_t(PointLoss kind, const py::array& p, const py::array& t, const py::object& w,
                  bool mean) {
  const py::dtype dt = p.dtype();
  const int64_t n = p.shape(0), k = p.ndim() == 2 ? p.shape(1) : 1;
  const std::vector<py::ssize_t> shape = shape_of(p);
  require_shape(t, "target", dt, shape);
  py::array wa;
  const T* wp = optional_weights<T>(w, dt, n, &wa);
  py::array dp = new_output(dt, shape);
  const T* pp = const_data<T>(p);
  const T* tp = const_data<T>(t);
  T* dpp = mutable_data<T>(dp);
  const double inv_d = inverse_divisor(mean, n);
  double loss;
  {
    py::gil_scoped_release nogil;
    loss = fusednn::cpu::kernels<T>().point_loss(kind, pp, tp, wp, dpp, n, k, inv_d);
  }
  return py::make_tuple(loss, dp);
}

void register_losses(py::module_& m) {
  m.def(
      "softmax_cross_entropy",
      [](const py::array& z, const py::object& labels, const py::object& y, const py::object& w,
         double eps, bool mean) -> py::tuple {
        checked_float_dtype(z, "z");
        if (z.ndim() != 2) throw py::value_error("z: must have 2 dims (batch, classes)");
        if (!(z.flags() & py::array::c_style)) throw py::value_error("z: must be C-contiguous");
        if (z.shape(1) < 1) throw py::value_error("z: needs at least one class");
        if (labels.is_none() == y.is_none())
          throw py::value_error("exactly one of labels (class indices) and y (label rows) "
                                "must be given");
        if (!(eps >= 0.0 && eps <= 1.0))
          throw py::value_error("eps: label smoothing must be in [0, 1], got " +
                                std::to_string(eps));
        return is_f64(z) ? xent_t<double>(z, labels, y, w, eps, mean)
                         : xent_t<float>(z, labels, y, w, eps, mean);
      },
      py::arg("z"), py::arg("labels"), py::arg("y"), py::arg("sample_weight"), py::arg("eps"),
      py::arg("mean"),
      "(loss, dz): softmax cross-entropy of z (batch x classes) against class indices labels "
      "(int32/int64, batch) or label rows y (batch x classes), one of them None; mean: divide "
      "by the batch size, else sum.");

  m.def(
      "point_loss",
      [](PointLoss kind, const py::array& p, const py::array& t, const py::object& w,
         bool mean) -> py::tuple {
        if (int(kind) < 0 || int(kind) >= int(PointLoss::Count))
          throw py::value_error("point loss kind out of range: " + std::to_string(int(kind)));
        checked_float_dtype(p, "p");
        if (p.ndim() != 1 && p.ndim() != 2)
          throw py::value_error("p: must have 1 or 2 dims (batch,) or (batch, outputs)");
        if (!(p.flags() & py::array::c_style)) throw py::value_error("p: must be C-contiguous");
        if (p.ndim() == 2 && p.shape(1) < 1)
          throw py::value_error("p: needs at least one output per sample");
        const PointLoss k = kind;
        return is_f64(p) ? point_t<double>(k, p, t, w, mean) : point_t<float>(k, p, t, w, mean);
      },
      py::arg("kind"), py::arg("p"), py::arg("target"), py::arg("sample_weight"),
      py::arg("mean"),
      "(loss, dp): element-wise loss kind (0 sigmoid binary cross-entropy on logits, 1 squared "
      "error) of p (batch,) or (batch, outputs), averaged over the outputs of each sample.");
}

const Registrar reg(register_losses);

}  // namespace
