// fusednn._C_cuda: batch normalisation + activation + dropout (cuda/batchnorm.cuh).
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "bindings/cuda_checks.h"
#include "bindings/registry.h"
#include "cuda/batchnorm.cuh"

namespace py = pybind11;
using fusednn::Act;
using namespace fusednn::bind;

namespace {

fusednn::BnDropout dropout_of(const char* fn, double rate, bool alpha, uint64_t seed,
                              uint64_t step) {
  check_rate(fn, rate);
  return {rate, alpha, seed, step};
}

// m x n with m, n >= 1 and m * n (and the mask words) representable.
int64_t check_shape(const char* fn, int64_t m, int64_t n) {
  if (m < 1 || n < 1)
    throw py::value_error(std::string(fn) + ": m and n must be >= 1, got " + std::to_string(m) +
                          " x " + std::to_string(n));
  return count(fn, m, n);
}

void forward(const std::string& dtype, int64_t m, int64_t n, uintptr_t x_ptr, uintptr_t gamma_ptr,
             uintptr_t beta_ptr, uintptr_t mm_ptr, uintptr_t mv_ptr, bool training,
             double momentum, double epsilon, fusednn::BnConvention convention, uintptr_t y_ptr, uintptr_t cols_ptr,
             uintptr_t mean_ptr, uintptr_t var_ptr, uintptr_t mask_ptr, uintptr_t ws_ptr,
             Act kind, double alpha, double rate, bool alpha_dropout, uint64_t seed,
             uint64_t step, uintptr_t stream) {
  const char* fn = "batchnorm_forward";
  const DType t = parse_dtype(fn, dtype);
  const Act a = parse_kind(fn, kind);
  const int64_t mn = check_shape(fn, m, n);
  const auto d = dropout_of(fn, rate, alpha_dropout, seed, step);
  if (convention != fusednn::BnConvention::Keras && convention != fusednn::BnConvention::Torch)
    throw py::value_error(std::string(fn) + ": convention must be BnConvention.Keras or .Torch");
  if (!(epsilon > 0.0) || !std::isfinite(epsilon))
    throw py::value_error(std::string(fn) + ": epsilon must be a finite number > 0");
  check_ptr(fn, "x", x_ptr, mn);
  check_ptr(fn, "y", y_ptr, mn);
  check_ptr(fn, "cols", cols_ptr, fusednn::kBnCols * n);
  check_ptr(fn, "ws", ws_ptr, fusednn::cuda::batchnorm_workspace(m, n));
  if ((mm_ptr == 0) != (mv_ptr == 0))
    throw py::value_error(std::string(fn) + ": moving_mean and moving_var must both be given or "
                                            "both be null");
  if (training) {
    check_ptr(fn, "mean", mean_ptr, n);
    check_ptr(fn, "var", var_ptr, n);
  } else {
    check_ptr(fn, "moving_mean", mm_ptr, n);
  }
  if (d.rate > 0.0) check_ptr(fn, "mask", mask_ptr, (mn + 31) / 32);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::batchnorm_forward<T>(
        ptr(tag, x_ptr), ptr(tag, gamma_ptr), ptr(tag, beta_ptr), ptr(tag, mm_ptr),
        ptr(tag, mv_ptr), training, momentum, epsilon, convention,
        ptr(tag, y_ptr), ptr(tag, cols_ptr), reinterpret_cast<double*>(mean_ptr),
        reinterpret_cast<double*>(var_ptr), reinterpret_cast<uint32_t*>(mask_ptr),
        reinterpret_cast<double*>(ws_ptr), m, n, a, T(alpha), d, as_stream(stream));
  });
}

void backward(const std::string& dtype, int64_t m, int64_t n, uintptr_t dy_ptr, uintptr_t x_ptr,
              uintptr_t y_ptr, uintptr_t cols_ptr, uintptr_t mask_ptr, uintptr_t dx_ptr,
              uintptr_t dgamma_ptr, uintptr_t dbeta_ptr, uintptr_t ws_ptr, Act kind, double alpha,
              double rate, bool alpha_dropout, bool batch_stats, uintptr_t stream) {
  const char* fn = "batchnorm_backward";
  const DType t = parse_dtype(fn, dtype);
  const Act a = parse_kind(fn, kind);
  const int64_t mn = check_shape(fn, m, n);
  const auto d = dropout_of(fn, rate, alpha_dropout, 0, 0);
  check_ptr(fn, "dy", dy_ptr, mn);
  check_ptr(fn, "x", x_ptr, mn);
  check_ptr(fn, "y", y_ptr, mn);
  check_ptr(fn, "cols", cols_ptr, fusednn::kBnCols * n);
  check_ptr(fn, "dx", dx_ptr, mn);
  check_ptr(fn, "ws", ws_ptr, fusednn::cuda::batchnorm_workspace(m, n));
  if (d.rate > 0.0) check_ptr(fn, "mask", mask_ptr, (mn + 31) / 32);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::batchnorm_backward<T>(
        ptr(tag, dy_ptr), ptr(tag, x_ptr), ptr(tag, y_ptr), ptr(tag, cols_ptr),
        reinterpret_cast<const uint32_t*>(mask_ptr), ptr(tag, dx_ptr), ptr(tag, dgamma_ptr),
        ptr(tag, dbeta_ptr), reinterpret_cast<double*>(ws_ptr), m, n, a, T(alpha), d,
        batch_stats, as_stream(stream));
  });
}

void register_batchnorm(py::module_& m) {
  m.def(
      "batchnorm_workspace",
      [](int64_t rows, int64_t cols) {
        check_shape("batchnorm_workspace", rows, cols);
        return fusednn::cuda::batchnorm_workspace(rows, cols);
      },
      py::arg("m"), py::arg("n"),
      "float64 elements of scratch batchnorm_forward/backward need for x of m x n.");
  m.def("batchnorm_forward", &forward, py::arg("dtype"), py::arg("m"), py::arg("n"),
        py::arg("x_ptr"), py::arg("gamma_ptr"), py::arg("beta_ptr"), py::arg("moving_mean_ptr"),
        py::arg("moving_var_ptr"), py::arg("training"), py::arg("momentum"), py::arg("epsilon"),
        py::arg("convention"), py::arg("y_ptr"), py::arg("cols_ptr"), py::arg("mean_ptr"),
        py::arg("var_ptr"), py::arg("mask_ptr"), py::arg("ws_ptr"), py::arg("kind"),
        py::arg("alpha"), py::arg("rate"), py::arg("alpha_dropout"), py::arg("seed"),
        py::arg("step"), py::arg("stream"),
        "y = drop(act(gamma x_hat + beta)) for x: m x n; gamma/beta ptr 0: 1/0; moving stats "
        "updated in place when training (ptr 0: none kept); cols: 5 x n out; mean/var: n "
        "float64 out (training); mask: ceil(m n / 32) uint32 out (rate > 0); ws: "
        "batchnorm_workspace(m, n) float64 scratch.");
  m.def("batchnorm_backward", &backward, py::arg("dtype"), py::arg("m"), py::arg("n"),
        py::arg("dy_ptr"), py::arg("x_ptr"), py::arg("y_ptr"), py::arg("cols_ptr"),
        py::arg("mask_ptr"), py::arg("dx_ptr"), py::arg("dgamma_ptr"), py::arg("dbeta_ptr"),
        py::arg("ws_ptr"), py::arg("kind"), py::arg("alpha"), py::arg("rate"),
        py::arg("alpha_dropout"), py::arg("batch_stats"), py::arg("stream"),
        "dx (m x n), dgamma/dbeta (n, ptr 0: skipped) from dy and forward's y, cols, mask.");
}

const Registrar registrar(register_batchnorm);

}  // namespace
