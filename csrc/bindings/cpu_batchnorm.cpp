// fusednn._C: batch normalisation + activation + dropout (csrc/cpu/batchnorm.h),
// alone or after a dense layer (dense_batchnorm_*: one call for the block).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "bindings/cpu_checks.h"
#include "bindings/registry.h"
#include "cpu/dispatch.h"

namespace py = pybind11;
using fusednn::Act;
using fusednn::BnConvention;
using namespace fusednn::bind;

namespace {

// A per-feature array of n elements of dtype dt, or null for None.
template <typename T>
const T* feature(const py::object& o, const char* name, const py::dtype& dt, int64_t n) {
  if (o.is_none()) return nullptr;
  py::array a = o.cast<py::array>();
  require(a, name, dt, {n});
  return const_data<T>(a);
}

template <typename T>
T* feature_out(const py::object& o, const char* name, const py::dtype& dt, int64_t n) {
  if (o.is_none()) return nullptr;
  py::array a = o.cast<py::array>();
  require(a, name, dt, {n});
  if (!a.writeable()) throw py::value_error(std::string(name) + ": is read-only");
  return mutable_data<T>(a);
}

fusednn::BnDropout dropout_of(const char* fn, double rate, bool alpha, uint64_t seed,
                              uint64_t step) {
  check_rate(fn, rate);
  return {rate, alpha, seed, step};
}

int64_t mask_words(int64_t m, int64_t n) { return (m * n + 31) / 32; }

// The dense stage of a Dense -> BN block: w (k x n) and bias (n or null);
// w null for batch norm alone.
template <typename T>
struct DenseStage {
  const T* w = nullptr;
  const T* bias = nullptr;
  int64_t k = 0;
};

template <typename T>
DenseStage<T> dense_stage(const py::array& x, const py::object& w, const py::object& bias,
                          int64_t* n) {
  DenseStage<T> s;
  if (w.is_none()) return s;
  py::array wa = w.cast<py::array>();
  require(wa, "w", x.dtype(), {x.shape(1), -1});
  s.w = const_data<T>(wa);
  s.k = x.shape(1);
  *n = wa.shape(1);
  if (!bias.is_none()) {
    py::array ba = bias.cast<py::array>();
    require(ba, "b", x.dtype(), {*n});
    s.bias = const_data<T>(ba);
  }
  return s;
}

// Batch norm of x, or with w given of z = x @ w + b (returned last, None
// otherwise): the GEMM and the batch norm passes in one call, the GIL
// released once.
template <typename T>
py::tuple forward_t(const py::array& x, const py::object& w, const py::object& bias,
                    const py::object& gamma, const py::object& beta,
                    const py::object& moving_mean, const py::object& moving_var, bool training,
                    double momentum, double epsilon, BnConvention convention, Act a, double alpha,
                    const fusednn::BnDropout& d) {
  const py::dtype dt = x.dtype();
  const int64_t m = x.shape(0);
  int64_t n = x.shape(1);
  const DenseStage<T> dense = dense_stage<T>(x, w, bias, &n);
  const T* g = feature<T>(gamma, "gamma", dt, n);
  const T* b = feature<T>(beta, "beta", dt, n);
  T* mm = feature_out<T>(moving_mean, "moving_mean", dt, n);
  T* mv = feature_out<T>(moving_var, "moving_var", dt, n);
  if ((mm == nullptr) != (mv == nullptr))
    throw py::value_error("moving_mean and moving_var must both be given or both be None");
  if (!training && mm == nullptr)
    throw py::value_error("inference needs moving_mean and moving_var");
  if (m < 1 || n < 1 || (dense.w != nullptr && dense.k < 1))
    throw py::value_error("x: needs at least one row and one column");
  if (convention != BnConvention::Keras && convention != BnConvention::Torch)
    throw py::value_error("convention must be BnConvention.Keras or BnConvention.Torch");
  py::object z = py::none();
  T* zp = nullptr;
  if (dense.w != nullptr) {
    py::array za = new_output(dt, {(py::ssize_t)m, (py::ssize_t)n});
    zp = mutable_data<T>(za);
    z = za;
  }
  py::array y = new_output(dt, {(py::ssize_t)m, (py::ssize_t)n});
  py::array cols = new_output(dt, {fusednn::kBnCols, (py::ssize_t)n});
  uint32_t* maskp;
  py::object mask = optional_out<uint32_t>(d.rate > 0.0, py::dtype::of<uint32_t>(),
                                           {(py::ssize_t)mask_words(m, n)}, &maskp);
  double *meanp, *varp;
  py::object mean = optional_out<double>(training, py::dtype::of<double>(), {(py::ssize_t)n}, &meanp);
  py::object var = optional_out<double>(training, py::dtype::of<double>(), {(py::ssize_t)n}, &varp);
  const T* xp = const_data<T>(x);
  T* yp = mutable_data<T>(y);
  T* cp = mutable_data<T>(cols);
  {
    py::gil_scoped_release nogil;
    if (zp != nullptr) {
      fusednn::cpu::kernels<T>().dense_forward(xp, dense.w, dense.bias, zp, nullptr, m, dense.k, n,
                                     Act::Linear, T(0), 0);
      xp = zp;
    }
    if (training)
      fusednn::cpu::kernels<T>().batchnorm_forward_train(xp, g, b, mm, mv, momentum, epsilon,
                                               convention, yp, cp, meanp,
                                               varp, maskp, m, n, a, T(alpha), d);
    else
      fusednn::cpu::kernels<T>().batchnorm_forward_infer(xp, g, b, mm, mv, epsilon, yp, cp, maskp, m, n, a,
                                               T(alpha), d);
  }
  return py::make_tuple(y, cols, mean, var, mask, z);
}

// Backward of forward_t: (dx, dgamma, dbeta) for batch norm alone; with w
// given (x is then z = x_in @ w + b) also through the dense layer:
// (dx_in or None, dgamma, dbeta, dw, db or None).
template <typename T>
py::tuple backward_t(const py::array& dy, const py::array& x, const py::array& y,
                     const py::array& cols, const py::object& mask, bool need_dgamma,
                     bool need_dbeta, Act a, double alpha, const fusednn::BnDropout& d,
                     bool batch_stats, const py::object& x_in, const py::object& w,
                     bool has_bias, bool need_dx) {
  const py::dtype dt = x.dtype();
  const int64_t m = x.shape(0), n = x.shape(1);
  require(dy, "dy", dt, {m, n});
  require(y, "y", dt, {m, n});
  require(cols, "cols", dt, {fusednn::kBnCols, n});
  const uint32_t* maskp = nullptr;
  if (d.rate > 0.0) {
    if (mask.is_none()) throw py::value_error("mask: required when dropout was applied");
    py::array ma = mask.cast<py::array>();
    require_flat(ma, "mask", py::dtype::of<uint32_t>(), mask_words(m, n), false);
    maskp = const_data<uint32_t>(ma);
  }
  const bool dense = !w.is_none();
  const T *xinp = nullptr, *wp = nullptr;
  int64_t k = 0;
  if (dense) {
    if (x_in.is_none()) throw py::value_error("x_in: required with w");
    py::array xa = x_in.cast<py::array>();
    require(xa, "x_in", dt, {m, -1});
    k = xa.shape(1);
    py::array wa = w.cast<py::array>();
    require(wa, "w", dt, {k, n});
    xinp = const_data<T>(xa);
    wp = const_data<T>(wa);
  }
  // dL/d(BN input): the result alone, or scratch before the dense backward.
  py::array dz = new_output(dt, {(py::ssize_t)m, (py::ssize_t)n});
  T *dgp, *dbp;
  py::object dgamma = optional_out<T>(need_dgamma, dt, {(py::ssize_t)n}, &dgp);
  py::object dbeta = optional_out<T>(need_dbeta, dt, {(py::ssize_t)n}, &dbp);
  T *dxp = nullptr, *dwp = nullptr, *dbiasp = nullptr;
  py::object dx = py::none(), dw = py::none(), dbias = py::none();
  if (dense) {
    dx = optional_out<T>(need_dx, dt, {(py::ssize_t)m, (py::ssize_t)k}, &dxp);
    dw = optional_out<T>(true, dt, {(py::ssize_t)k, (py::ssize_t)n}, &dwp);
    dbias = optional_out<T>(has_bias, dt, {(py::ssize_t)n}, &dbiasp);
  }
  const T *dyp = const_data<T>(dy), *xp = const_data<T>(x), *yp = const_data<T>(y),
          *cp = const_data<T>(cols);
  T* dzp = mutable_data<T>(dz);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().batchnorm_backward(dyp, xp, yp, cp, maskp, dzp, dgp, dbp, m, n, a, T(alpha),
                                        d, batch_stats);
    if (dense)
      fusednn::cpu::kernels<T>().dense_backward(dzp, nullptr, xinp, wp, nullptr, dxp, dwp, dbiasp, m, k, n,
                                      Act::Linear, T(0));
  }
  if (dense) return py::make_tuple(dx, dgamma, dbeta, dw, dbias);
  return py::make_tuple(dz, dgamma, dbeta);
}

void register_batchnorm(py::module_& m) {
  m.def(
      "batchnorm_forward",
      [](const py::array& x, const py::object& gamma, const py::object& beta,
         const py::object& moving_mean, const py::object& moving_var, bool training,
         double momentum, double epsilon, BnConvention convention, Act kind, double alpha,
         double rate, bool alpha_dropout, uint64_t seed, uint64_t step) -> py::tuple {
        const py::dtype dt = checked_float_dtype(x, "x");
        require(x, "x", dt, {-1, -1});
        if (!(epsilon > 0.0) || !std::isfinite(epsilon))
          throw py::value_error("epsilon must be a finite number > 0");
        const auto d = dropout_of("batchnorm_forward", rate, alpha_dropout, seed, step);
        const Act a = to_act(kind);
        const py::object none = py::none();
        py::tuple r = is_f64(x)
                          ? forward_t<double>(x, none, none, gamma, beta, moving_mean, moving_var,
                                              training, momentum, epsilon, convention, a, alpha, d)
                          : forward_t<float>(x, none, none, gamma, beta, moving_mean, moving_var,
                                             training, momentum, epsilon, convention, a, alpha, d);
        return py::make_tuple(r[0], r[1], r[2], r[3], r[4]);
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("moving_mean"),
      py::arg("moving_var"), py::arg("training"), py::arg("momentum"), py::arg("epsilon"),
      py::arg("convention"), py::arg("kind"), py::arg("alpha"), py::arg("rate"),
      py::arg("alpha_dropout"), py::arg("seed"), py::arg("step"),
      "(y, cols, mean, var, mask): y = drop(act(gamma x_hat + beta)); cols the (5, n) "
      "coefficients backward needs; mean/var the batch statistics (training, else None); mask "
      "the bit-packed dropout mask (rate > 0, else None). Training updates moving_* in place.");
  m.def(
      "batchnorm_backward",
      [](const py::array& dy, const py::array& x, const py::array& y, const py::array& cols,
         const py::object& mask, bool need_dgamma, bool need_dbeta, Act kind, double alpha,
         double rate, bool alpha_dropout, bool batch_stats) -> py::tuple {
        const py::dtype dt = checked_float_dtype(x, "x");
        require(x, "x", dt, {-1, -1});
        const auto d = dropout_of("batchnorm_backward", rate, alpha_dropout, 0, 0);
        const Act a = to_act(kind);
        const py::object none = py::none();
        return is_f64(x) ? backward_t<double>(dy, x, y, cols, mask, need_dgamma, need_dbeta, a,
                                              alpha, d, batch_stats, none, none, false, false)
                         : backward_t<float>(dy, x, y, cols, mask, need_dgamma, need_dbeta, a,
                                             alpha, d, batch_stats, none, none, false, false);
      },
      py::arg("dy"), py::arg("x"), py::arg("y"), py::arg("cols"), py::arg("mask"),
      py::arg("need_dgamma"), py::arg("need_dbeta"), py::arg("kind"), py::arg("alpha"),
      py::arg("rate"), py::arg("alpha_dropout"), py::arg("batch_stats"),
      "(dx, dgamma, dbeta) from dy and what batchnorm_forward returned.");
  m.def(
      "dense_batchnorm_forward",
      [](const py::array& x, const py::array& w, const py::object& b, const py::object& gamma,
         const py::object& beta, const py::object& moving_mean, const py::object& moving_var,
         bool training, double momentum, double epsilon, BnConvention convention, Act kind,
         double alpha, double rate, bool alpha_dropout, uint64_t seed, uint64_t step) -> py::tuple {
        const py::dtype dt = checked_float_dtype(x, "x");
        require(x, "x", dt, {-1, -1});
        if (!(epsilon > 0.0) || !std::isfinite(epsilon))
          throw py::value_error("epsilon must be a finite number > 0");
        const auto d = dropout_of("dense_batchnorm_forward", rate, alpha_dropout, seed, step);
        const Act a = to_act(kind);
        return is_f64(x) ? forward_t<double>(x, w, b, gamma, beta, moving_mean, moving_var,
                                             training, momentum, epsilon, convention, a, alpha, d)
                         : forward_t<float>(x, w, b, gamma, beta, moving_mean, moving_var,
                                            training, momentum, epsilon, convention, a, alpha, d);
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("gamma"), py::arg("beta"),
      py::arg("moving_mean"), py::arg("moving_var"), py::arg("training"), py::arg("momentum"),
      py::arg("epsilon"), py::arg("convention"), py::arg("kind"), py::arg("alpha"),
      py::arg("rate"), py::arg("alpha_dropout"), py::arg("seed"), py::arg("step"),
      "(y, cols, mean, var, mask, z): batchnorm_forward of z = x @ w + b, which is returned "
      "last (backward reads it).");
  m.def(
      "dense_batchnorm_backward",
      [](const py::array& dy, const py::array& x_in, const py::array& w, const py::array& z,
         const py::array& y, const py::array& cols, const py::object& mask, bool has_bias,
         bool need_dx, bool need_dgamma, bool need_dbeta, Act kind, double alpha, double rate,
         bool alpha_dropout, bool batch_stats) -> py::tuple {
        const py::dtype dt = checked_float_dtype(z, "z");
        require(z, "z", dt, {-1, -1});
        const auto d = dropout_of("dense_batchnorm_backward", rate, alpha_dropout, 0, 0);
        const Act a = to_act(kind);
        return is_f64(z) ? backward_t<double>(dy, z, y, cols, mask, need_dgamma, need_dbeta, a,
                                              alpha, d, batch_stats, x_in, w, has_bias, need_dx)
                         : backward_t<float>(dy, z, y, cols, mask, need_dgamma, need_dbeta, a,
                                             alpha, d, batch_stats, x_in, w, has_bias, need_dx);
      },
      py::arg("dy"), py::arg("x_in"), py::arg("w"), py::arg("z"), py::arg("y"), py::arg("cols"),
      py::arg("mask"), py::arg("has_bias"), py::arg("need_dx"), py::arg("need_dgamma"),
      py::arg("need_dbeta"), py::arg("kind"), py::arg("alpha"), py::arg("rate"),
      py::arg("alpha_dropout"), py::arg("batch_stats"),
      "(dx or None, dgamma, dbeta, dw, db or None) of the dense -> batch norm block.");
}

const Registrar registrar(register_batchnorm);

}  // namespace
