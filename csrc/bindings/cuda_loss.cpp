// fusednn._C_cuda: the fused losses (cuda/loss.cuh). Arrays arrive as
// device addresses already checked by fusednn.ops.loss; here we check what
// a wrong call could still turn into an out-of-bounds access (sizes, null
// pointers, kinds), then queue the kernels on the caller's stream with the
// GIL released. The loss goes to the device double at loss_ptr.
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "bindings/cuda_checks.h"
#include "bindings/registry.h"
#include "cuda/loss.cuh"

namespace py = pybind11;
using fusednn::PointLoss;
using namespace fusednn::bind;

namespace {

double inverse_divisor(bool mean, int64_t n) { return mean && n > 0 ? 1.0 / double(n) : 1.0; }

void require_null(const char* fn, const char* name, uintptr_t p, const char* why) {
  if (p != 0) throw py::value_error(std::string(fn) + ": " + name + " must be 0 " + why);
}

void softmax_cross_entropy(const std::string& dtype, int64_t n, int64_t c, uintptr_t z_ptr,
                           const std::string& labels_kind, uintptr_t labels_ptr, uintptr_t y_ptr,
                           uintptr_t w_ptr, uintptr_t dz_ptr, uintptr_t loss_ptr, double eps,
                           bool mean, uintptr_t stream) {
  const char* fn = "softmax_cross_entropy";
  const DType t = parse_dtype(fn, dtype);
  check_size(fn, "n", n);
  if (c < 1) throw py::value_error(std::string(fn) + ": c must be >= 1, got " + std::to_string(c));
  const int64_t nc = count(fn, n, c);
  check_ptr(fn, "z", z_ptr, nc);
  check_ptr(fn, "dz", dz_ptr, nc);
  check_ptr(fn, "loss", loss_ptr, 1);
  if (!(eps >= 0.0 && eps <= 1.0))
    throw py::value_error(std::string(fn) + ": eps must be in [0, 1], got " + std::to_string(eps));
  enum { I32, I64, Dense } kind;
  if (labels_kind == "int32" || labels_kind == "int64") {
    kind = labels_kind == "int32" ? I32 : I64;
    check_ptr(fn, "labels", labels_ptr, n);
    require_null(fn, "y_ptr", y_ptr, "with class indices");
  } else if (labels_kind == "dense") {
    kind = Dense;
    check_ptr(fn, "y", y_ptr, nc);
    require_null(fn, "labels_ptr", labels_ptr, "with label rows (labels_kind 'dense')");
  } else {
    throw py::value_error(std::string(fn) + ": labels_kind must be 'int32', 'int64' or 'dense', "
                          "got '" + labels_kind + "'");
  }
  const double inv_d = inverse_divisor(mean, n);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    double* loss = reinterpret_cast<double*>(loss_ptr);
    if (kind == I32)
      fusednn::cuda::softmax_cross_entropy<T, int32_t>(
          ptr(tag, z_ptr), reinterpret_cast<const int32_t*>(labels_ptr), nullptr, ptr(tag, w_ptr),
          ptr(tag, dz_ptr), loss, n, c, eps, inv_d, as_stream(stream));
    else
      fusednn::cuda::softmax_cross_entropy<T, int64_t>(
          ptr(tag, z_ptr), reinterpret_cast<const int64_t*>(labels_ptr),
          kind == Dense ? ptr(tag, y_ptr) : nullptr, ptr(tag, w_ptr), ptr(tag, dz_ptr), loss, n,
          c, eps, inv_d, as_stream(stream));
  });
}

void point_loss(const std::string& dtype, PointLoss kind, int64_t n, int64_t k, uintptr_t p_ptr,
                uintptr_t t_ptr, uintptr_t w_ptr, uintptr_t dp_ptr, uintptr_t loss_ptr, bool mean,
                uintptr_t stream) {
  const char* fn = "point_loss";
  const DType t = parse_dtype(fn, dtype);
  if (int(kind) < 0 || int(kind) >= int(PointLoss::Count))
    throw py::value_error(std::string(fn) + ": kind must be in [0, " +
                          std::to_string(int(PointLoss::Count)) + "), got " +
                          std::to_string(int(kind)));
  check_size(fn, "n", n);
  if (k < 1) throw py::value_error(std::string(fn) + ": k must be >= 1, got " + std::to_string(k));
  const int64_t nk = count(fn, n, k);
  check_ptr(fn, "p", p_ptr, nk);
  check_ptr(fn, "t", t_ptr, nk);
  check_ptr(fn, "dp", dp_ptr, nk);
  check_ptr(fn, "loss", loss_ptr, 1);
  const double inv_d = inverse_divisor(mean, n);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::point_loss<T>(kind, ptr(tag, p_ptr), ptr(tag, t_ptr),
                                 ptr(tag, w_ptr), ptr(tag, dp_ptr),
                                 reinterpret_cast<double*>(loss_ptr), n, k, inv_d,
                                 as_stream(stream));
  });
}

void register_losses(py::module_& m) {
  m.def("softmax_cross_entropy", &softmax_cross_entropy, py::arg("dtype"), py::arg("n"),
        py::arg("c"), py::arg("z_ptr"), py::arg("labels_kind"), py::arg("labels_ptr"),
        py::arg("y_ptr"), py::arg("w_ptr"), py::arg("dz_ptr"), py::arg("loss_ptr"),
        py::arg("eps"), py::arg("mean"), py::arg("stream"),
        "Softmax cross-entropy of z (n x c) and its gradient dz (n x c), the loss into the "
        "device float64 at loss_ptr. labels_kind 'int32'/'int64': class indices at labels_ptr "
        "(n), y_ptr 0; 'dense': label rows at y_ptr (n x c), labels_ptr 0. w_ptr: n sample "
        "weights or 0. eps: label smoothing; mean: divide by n, else sum.");
  m.def("point_loss", &point_loss, py::arg("dtype"), py::arg("kind"), py::arg("n"), py::arg("k"),
        py::arg("p_ptr"), py::arg("t_ptr"), py::arg("w_ptr"), py::arg("dp_ptr"),
        py::arg("loss_ptr"), py::arg("mean"), py::arg("stream"),
        "Element-wise loss kind (0 sigmoid binary cross-entropy on logits, 1 squared error) of "
        "p against t (n x k), averaged over k per sample, the loss into the device float64 at "
        "loss_ptr and the gradient into dp. w_ptr: n sample weights or 0.");
}

const Registrar reg(register_losses);

}  // namespace
