// fusednn._C_cuda: the CUDA kernels for CuPy arrays. Arrays arrive as device
// addresses (Python ints) already checked by the Python layer for shape, dtype,
// contiguity and device; here we check what a wrong call could still turn into
// an out-of-bounds write (sizes, null pointers, the activation kind), then call
// the kernel with the GIL released, on the caller's stream.
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "bindings/cuda_checks.h"
#include "bindings/registry.h"
#include "cuda/kernels.cuh"
#include "cuda/cublaslt.cuh"
#include "fusednn/batchnorm.h"
#include "fusednn/dropout.h"

namespace py = pybind11;
using fusednn::Act;
using namespace fusednn::bind;

namespace {

// The CUDA version a driver supports, as CUDART_VERSION counts (13000 for
// 13.0), printed as "13.0".
std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

py::tuple runtime_status() {
  // With no driver, cudart_static reports an error here instead of failing to
  // load, which is what makes this safe on a machine without a GPU. A driver
  // of an older CUDA major version than the runtime's is named as such
  // (cudaGetDeviceCount would only say "CUDA driver version is
  // insufficient"); within a major version, minor version compatibility lets
  // an older driver run the newer runtime.
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    cudaGetLastError();
    return py::make_tuple(false, std::string("no NVIDIA driver (libcuda.so not found)"));
  }
  if (driver / 1000 < CUDART_VERSION / 1000) {
    cudaGetLastError();
    return py::make_tuple(false, "driver too old: it supports CUDA " +
                                     cuda_version_string(driver) +
                                     ", fusednn was built with CUDA " +
                                     cuda_version_string(CUDART_VERSION) +
                                     " (update the NVIDIA driver)");
  }
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n < 1) e = cudaErrorNoDevice;
  int dev = 0;
  cudaDeviceProp prop{};
  if (e == cudaSuccess) e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, dev);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it, so no later call reports it as its own
    return py::make_tuple(false, std::string(cudaGetErrorString(e)));
  }
  return py::make_tuple(true, std::string(prop.name) + ", cc " + std::to_string(prop.major) + "." +
                                  std::to_string(prop.minor) + ", " + std::to_string(n) +
                                  (n == 1 ? " device" : " devices") + ", driver CUDA " +
                                  cuda_version_string(driver));
}

py::dict epilogue_counts() {
  py::dict d;
  for (const auto& c : fusednn::cuda::lt::epilogue_counts()) {
    py::dict row;
    row["used"] = c.used;
    row["refused"] = c.refused;
    d[c.name] = row;
  }
  return d;
}

py::dict build_info() {
  py::dict d;
  d["cuda_runtime_version"] = int(CUDART_VERSION);
  d["cublaslt_version"] = py::int_(cublasLtGetVersion());
  d["archs"] = std::string(FUSEDNN_CUDA_ARCHS);
  d["cublaslt_source"] = std::string(FUSEDNN_CUBLASLT_SOURCE);
  return d;
}

void activation_forward(const std::string& dtype, Act kind, double alpha, int64_t n,
                        uintptr_t z_ptr, uintptr_t y_ptr, uintptr_t stream) {
  const char* fn = "activation_forward";
  const DType t = parse_dtype(fn, dtype);
  const Act a = parse_kind(fn, kind);
  check_size(fn, "n", n);
  check_ptr(fn, "z", z_ptr, n);
  check_ptr(fn, "y", y_ptr, n);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::activation_forward<T>(a, T(alpha), ptr(tag, z_ptr), ptr(tag, y_ptr), n,
                                         as_stream(stream));
  });
}

void activation_backward(const std::string& dtype, Act kind, double alpha, int64_t n,
                         uintptr_t dy_ptr, uintptr_t s_ptr, uintptr_t dz_ptr, uintptr_t stream) {
  const char* fn = "activation_backward";
  const DType t = parse_dtype(fn, dtype);
  const Act a = parse_kind(fn, kind);
  check_size(fn, "n", n);
  check_ptr(fn, "dy", dy_ptr, n);
  if (a != Act::Linear) check_ptr(fn, "s", s_ptr, n);
  check_ptr(fn, "dz", dz_ptr, n);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::activation_backward<T>(a, T(alpha), ptr(tag, dy_ptr), ptr(tag, s_ptr),
                                          ptr(tag, dz_ptr), n, as_stream(stream));
  });
}

// Element counts of a dense layer x (m x k) @ w (k x n) = y (m x n).
struct DenseSizes {
  int64_t mk, kn, mn;
};

DenseSizes check_dense_sizes(const char* fn, int64_t m, int64_t k, int64_t n) {
  check_size(fn, "m", m);
  check_size(fn, "k", k);
  check_size(fn, "n", n);
  return {count(fn, m, k), count(fn, k, n), count(fn, m, n)};
}

// A relu bitmask for `rows` features by m samples. cuBLASLt takes its leading
// dimension in bits, a multiple of 128 and at least the rows of D.
constexpr int64_t kMaskAlignBits = 128;

// (bytes, leading dimension in bits) of the relu bitmask of an m x n output:
// what the caller allocates for dense_forward's mask.
py::tuple relu_mask_layout(int64_t m, int64_t n) {
  const char* fn = "relu_mask_layout";
  check_size(fn, "m", m);
  check_size(fn, "n", n);
  const int64_t ld = (n + kMaskAlignBits - 1) / kMaskAlignBits * kMaskAlignBits;
  return py::make_tuple(count(fn, m, ld) / 8, ld);
}

void check_mask(const char* fn, const char* ld_name, int64_t ld, const char* rows_name,
                int64_t rows, int64_t m) {
  if (ld < rows || ld % kMaskAlignBits != 0)
    throw py::value_error(std::string(fn) + ": " + ld_name + " must be a multiple of 128 and >= " +
                          rows_name + " = " + std::to_string(rows) + ", got " +
                          std::to_string(ld));
  count(fn, m, ld);
}

void check_relu_mask(const char* fn, const char* name, Act a, Act kind) {
  if (a != Act::Relu)
    throw py::value_error(std::string(fn) + ": " + name +
                          " must be null (0) unless the activation is relu (kind " +
                          std::to_string(int(Act::Relu)) + "), got kind " + std::to_string(int(kind)));
}

bool dense_forward(const std::string& dtype, int64_t m, int64_t k, int64_t n, uintptr_t x_ptr,
                   uintptr_t w_ptr, uintptr_t b_ptr, uintptr_t y_ptr, uintptr_t z_ptr,
                   uintptr_t mask_ptr, int64_t mask_ld, Act kind, double alpha, bool tf32,
                   uintptr_t stream) {
  const char* fn = "dense_forward";
  const DType t = parse_dtype(fn, dtype);
  const Act a = parse_kind(fn, kind);
  const DenseSizes sz = check_dense_sizes(fn, m, k, n);
  check_ptr(fn, "x", x_ptr, sz.mk);
  check_ptr(fn, "w", w_ptr, sz.kn);
  check_ptr(fn, "y", y_ptr, sz.mn);
  if (fusednn::saves_input(a))
    check_ptr(fn, "z", z_ptr, sz.mn);
  else if (z_ptr != 0)
    throw py::value_error(std::string(fn) + ": z must be null (0) for activation kind " +
                          std::to_string(int(kind)) + ", which saves its output");
  if (mask_ptr != 0) {
    check_relu_mask(fn, "mask", a, kind);
    check_mask(fn, "mask_ld", mask_ld, "n", n, m);
  }
  bool mask_written = false;
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    mask_written = fusednn::cuda::dense_forward<T>(
        ptr(tag, x_ptr), ptr(tag, w_ptr), ptr(tag, b_ptr), ptr(tag, y_ptr), ptr(tag, z_ptr),
        reinterpret_cast<void*>(mask_ptr), mask_ld, m, k, n, a, T(alpha), tf32, as_stream(stream));
  });
  return mask_written;
}

void dense_backward(const std::string& dtype, int64_t m, int64_t k, int64_t n, uintptr_t dy_ptr,
                    uintptr_t s_ptr, uintptr_t x_ptr, uintptr_t w_ptr, uintptr_t dz_ptr,
                    uintptr_t dx_ptr, uintptr_t dw_ptr, uintptr_t db_ptr, Act kind, double alpha,
                    bool tf32, uintptr_t stream) {
  const char* fn = "dense_backward";
  const DType t = parse_dtype(fn, dtype);
  const Act a = parse_kind(fn, kind);
  const DenseSizes sz = check_dense_sizes(fn, m, k, n);
  check_ptr(fn, "x", x_ptr, sz.mk);
  check_ptr(fn, "w", w_ptr, sz.kn);
  check_ptr(fn, "dy", dy_ptr, sz.mn);
  check_ptr(fn, "dw", dw_ptr, sz.kn);
  if (a != Act::Linear) {
    check_ptr(fn, "s", s_ptr, sz.mn);
    check_ptr(fn, "dz", dz_ptr, sz.mn);
  }
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::dense_backward<T>(ptr(tag, dy_ptr), ptr(tag, s_ptr), ptr(tag, x_ptr),
                                     ptr(tag, w_ptr), ptr(tag, dz_ptr), ptr(tag, dx_ptr),
                                     ptr(tag, dw_ptr), ptr(tag, db_ptr), m, k, n, a, T(alpha),
                                     tf32, as_stream(stream));
  });
}

void dense_backward_weight(const std::string& dtype, int64_t m, int64_t k, int64_t n,
                           uintptr_t dz_ptr, uintptr_t x_ptr, uintptr_t dw_ptr, uintptr_t db_ptr,
                           bool tf32, uintptr_t stream) {
  const char* fn = "dense_backward_weight";
  const DType t = parse_dtype(fn, dtype);
  const DenseSizes sz = check_dense_sizes(fn, m, k, n);
  check_ptr(fn, "dz", dz_ptr, sz.mn);
  check_ptr(fn, "x", x_ptr, sz.mk);
  check_ptr(fn, "dw", dw_ptr, sz.kn);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::dense_backward_weight<T>(ptr(tag, dz_ptr), ptr(tag, x_ptr), ptr(tag, dw_ptr),
                                            ptr(tag, db_ptr), m, k, n, tf32, as_stream(stream));
  });
}

void dense_backward_input(const std::string& dtype, int64_t m, int64_t k, int64_t n,
                          uintptr_t dz_ptr, uintptr_t w_ptr, uintptr_t dzprev_ptr,
                          uintptr_t dbprev_ptr, Act prev_kind, double prev_alpha,
                          uintptr_t prev_saved_ptr, uintptr_t prev_mask_ptr, int64_t prev_mask_ld,
                          bool tf32, uintptr_t stream) {
  const char* fn = "dense_backward_input";
  const DType t = parse_dtype(fn, dtype);
  const Act a = parse_kind(fn, prev_kind);
  const DenseSizes sz = check_dense_sizes(fn, m, k, n);
  check_ptr(fn, "dz", dz_ptr, sz.mn);
  check_ptr(fn, "w", w_ptr, sz.kn);
  check_ptr(fn, "dzprev", dzprev_ptr, sz.mk);
  // Required with a mask too: it is what the fallback reads when cuBLASLt
  // refuses the DRELU epilogue.
  if (a != Act::Linear) check_ptr(fn, "prev_saved", prev_saved_ptr, sz.mk);
  if (prev_mask_ptr != 0) {
    check_relu_mask(fn, "prev_mask", a, prev_kind);
    check_mask(fn, "prev_mask_ld", prev_mask_ld, "k", k, m);
  }
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::dense_backward_input<T>(
        ptr(tag, dz_ptr), ptr(tag, w_ptr), ptr(tag, prev_saved_ptr),
        reinterpret_cast<const void*>(prev_mask_ptr), prev_mask_ld, ptr(tag, dzprev_ptr),
        ptr(tag, dbprev_ptr), m, k, n, a, T(prev_alpha), tf32, as_stream(stream));
  });
}

// (p, g, s0, s1, s2, n, l1, l2, max_norm, outer, mid, inner); slot 0 = unused.
using OptTensorTuple = std::tuple<uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, int64_t,
                                  double, double, double, int64_t, int64_t, int64_t>;

void optimizer_step(const std::string& dtype, fusednn::Opt kind,
                    const fusednn::OptStep<double>& h, const std::vector<OptTensorTuple>& tensors,
                    fusednn::Clip clip_mode, double clip, uintptr_t norms_ptr, uintptr_t stream) {
  using fusednn::Opt;
  const char* fn = "optimizer_step";
  const DType t = parse_dtype(fn, dtype);
  if (int(kind) < 0 || int(kind) >= int(Opt::Count))
    throw py::value_error(std::string(fn) + ": optimizer kind must be in [0, " +
                          std::to_string(int(Opt::Count)) + "), got " +
                          std::to_string(int(kind)));
  if (clip_mode < fusednn::Clip::Off || clip_mode > fusednn::Clip::Global)
    throw py::value_error(std::string(fn) + ": clip_mode must be in [0, 3], got " +
                          std::to_string(int(clip_mode)));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string name = "tensors[" + std::to_string(i) + "]";
    const auto& x = tensors[i];
    const int64_t n = std::get<5>(x);
    check_size(fn, (name + ".n").c_str(), n);
    check_ptr(fn, (name + ".p").c_str(), std::get<0>(x), n);
    check_ptr(fn, (name + ".g").c_str(), std::get<1>(x), n);
    const double max_norm = std::get<8>(x);
    if (!(max_norm >= 0))
      throw py::value_error(std::string(fn) + ": " + name + ".max_norm must be >= 0, got " +
                            std::to_string(max_norm));
    if (max_norm > 0 && n > 0) {
      const int64_t outer = std::get<9>(x), mid = std::get<10>(x), inner = std::get<11>(x);
      const std::string where = std::string(fn) + ": " + name;
      if (outer < 1 || mid < 1 || inner < 1 ||
          count(where.c_str(), count(where.c_str(), outer, mid), inner) != n)
        throw py::value_error(std::string(fn) + ": " + name +
                              " outer * mid * inner must equal n = " + std::to_string(n) +
                              " (each >= 1) for max_norm > 0, got " + std::to_string(outer) +
                              " x " + std::to_string(mid) + " x " + std::to_string(inner));
    }
  }
  if ((clip_mode == fusednn::Clip::Norm || clip_mode == fusednn::Clip::Global) && norms_ptr == 0 &&
      !tensors.empty())
    throw py::value_error(std::string(fn) + ": norms_ptr is null for clip_mode " +
                          std::to_string(int(clip_mode)));
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    std::vector<fusednn::OptTensor<T>> v(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& x = tensors[i];
      fusednn::OptTensor<T>& o = v[i];
      o.p = ptr(tag, std::get<0>(x));
      o.g = ptr(tag, std::get<1>(x));
      o.s[0] = ptr(tag, std::get<2>(x));
      o.s[1] = ptr(tag, std::get<3>(x));
      o.s[2] = ptr(tag, std::get<4>(x));
      o.n = std::get<5>(x);
      o.l1 = std::get<6>(x);
      o.l2 = std::get<7>(x);
      o.max_norm = std::get<8>(x);
      o.outer = std::get<9>(x);
      o.mid = std::get<10>(x);
      o.inner = std::get<11>(x);
    }
    fusednn::cuda::optimizer_step<T>(kind, h, v.data(), int64_t(v.size()), clip_mode, clip,
                                     reinterpret_cast<double*>(norms_ptr), as_stream(stream));
  });
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "fusednn CUDA kernels (cuBLASLt GEMMs with fused epilogues), called by "
            "fusednn._backend with CuPy device pointers and CuPy's current stream.";
  // The enums and fusednn._C.OptStep are registered by fusednn._C; these
  // functions take them, so it must be loaded first.
  py::module_::import("fusednn._C");

  m.def("runtime_status", &runtime_status,
        "(True, '<device>, cc X.Y, N devices') when a GPU is usable, else (False, reason). "
        "Never raises, also on a machine without a CUDA driver.");
  m.def("build_info", &build_info,
        "CUDA runtime and cuBLASLt versions, compiled archs and where cuBLASLt came from.");
  m.def("set_activation_epilogues", &fusednn::cuda::lt::set_activation_epilogues, py::arg("on"),
        "Whether dense layers may use cuBLASLt's activation epilogues (relu, gelu and their "
        "gradients); off, the activation runs in fusednn's own kernels (NaN-propagating relu, "
        "fusednn's tanh GELU).");
  m.def("activation_epilogues", &fusednn::cuda::lt::activation_epilogues);
  m.def("epilogue_counts", &epilogue_counts,
        "{epilogue name: {'used': n, 'refused': n}}: cuBLASLt GEMMs run with each epilogue, "
        "and calls where cuBLASLt had no algorithm for it (the fallback ran instead).");

  m.def("activation_forward", &activation_forward, py::arg("dtype"), py::arg("kind"),
        py::arg("alpha"), py::arg("n"), py::arg("z_ptr"), py::arg("y_ptr"), py::arg("stream"),
        "y = f(z) over n elements.");
  m.def("activation_backward", &activation_backward, py::arg("dtype"), py::arg("kind"),
        py::arg("alpha"), py::arg("n"), py::arg("dy_ptr"), py::arg("s_ptr"), py::arg("dz_ptr"),
        py::arg("stream"),
        "dz = dy * f'(s), s the saved value (z for gelu/gelu_tanh/swish/mish, y otherwise; "
        "0 for linear).");
  // Sizes of the buffers the caller allocates for the kernels.
  m.def(
      "mask_words",
      [](int64_t n) {
        check_size("mask_words", "n", n);
        return fusednn::mask_words(n);
      },
      py::arg("n"), "uint32 words of a bit-packed dropout mask of n elements (fusednn/dropout.h).");
  m.attr("batchnorm_cols") = fusednn::kBnCols;
  m.def("relu_mask_layout", &relu_mask_layout, py::arg("m"), py::arg("n"),
        "(bytes, leading dimension in bits) of the relu bitmask dense_forward writes for an "
        "m x n output (cuBLASLt's RELU_AUX epilogue: rows padded to 128 bits).");
  m.def("dense_forward", &dense_forward, py::arg("dtype"), py::arg("m"), py::arg("k"),
        py::arg("n"), py::arg("x_ptr"), py::arg("w_ptr"), py::arg("b_ptr"), py::arg("y_ptr"),
        py::arg("z_ptr"), py::arg("mask_ptr"), py::arg("mask_ld"), py::arg("kind"),
        py::arg("alpha"), py::arg("tf32"), py::arg("stream"),
        "y = f(x @ w + b), x: m x k, w: k x n; b_ptr = 0 for no bias; z (m x n) receives "
        "x @ w + b when the activation saves its input, else z_ptr must be 0. For relu, "
        "mask_ptr (m * mask_ld / 8 bytes, mask_ld a multiple of 128 and >= n; 0 for none, and "
        "0 for every other activation) may receive the bitmask of x @ w + b > 0 for "
        "dense_backward_input. Returns True iff the mask was written; False leaves it unusable.");
  m.def("dense_backward", &dense_backward, py::arg("dtype"), py::arg("m"), py::arg("k"),
        py::arg("n"), py::arg("dy_ptr"), py::arg("s_ptr"), py::arg("x_ptr"), py::arg("w_ptr"),
        py::arg("dz_ptr"), py::arg("dx_ptr"), py::arg("dw_ptr"), py::arg("db_ptr"),
        py::arg("kind"), py::arg("alpha"), py::arg("tf32"), py::arg("stream"),
        "dz = dy * f'(s) (into the m x n scratch dz, unused for linear); dw = x^T dz; "
        "db = column sums of dz (db_ptr = 0: none); dx = dz w^T (dx_ptr = 0: skipped).");
  m.def("dense_backward_weight", &dense_backward_weight, py::arg("dtype"), py::arg("m"),
        py::arg("k"), py::arg("n"), py::arg("dz_ptr"), py::arg("x_ptr"), py::arg("dw_ptr"),
        py::arg("db_ptr"), py::arg("tf32"), py::arg("stream"),
        "dw = x^T dz (k x n), dz: m x n the gradient at the pre-activation, x: m x k; "
        "db = column sums of dz (db_ptr = 0: none).");
  m.def("dense_backward_input", &dense_backward_input, py::arg("dtype"), py::arg("m"),
        py::arg("k"), py::arg("n"), py::arg("dz_ptr"), py::arg("w_ptr"), py::arg("dzprev_ptr"),
        py::arg("dbprev_ptr"), py::arg("prev_kind"), py::arg("prev_alpha"),
        py::arg("prev_saved_ptr"), py::arg("prev_mask_ptr"), py::arg("prev_mask_ld"),
        py::arg("tf32"), py::arg("stream"),
        "Backward through two stacked dense layers, this layer's input (m x k) being "
        "f_prev(z_prev): dz_prev = (dz w^T) * f_prev'(saved), dz: m x n, w: k x n; "
        "db_prev = column sums of dz_prev (dbprev_ptr = 0: none). prev_saved is z_prev for "
        "gelu/gelu_tanh/swish/mish, y_prev otherwise (required unless linear); prev_mask_ptr "
        "(0 for none) is the relu bitmask dense_forward reported as written, ld prev_mask_ld.");
  m.def("optimizer_step", &optimizer_step, py::arg("dtype"), py::arg("kind"), py::arg("step"),
        py::arg("tensors"), py::arg("clip_mode"), py::arg("clip"), py::arg("norms_ptr"),
        py::arg("stream"),
        "One optimizer step over all tensors, each (p_ptr, g_ptr, s0_ptr, s1_ptr, s2_ptr, n, l1, "
        "l2, max_norm, outer, mid, inner) (slot ptr 0: unused), hyper the 15 OptStep values; "
        "norms_ptr: len(tensors) float64 scratch for clip_mode 2/3 (0 otherwise).");
  run_registrars(m);
}
