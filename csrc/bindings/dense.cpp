// The dense layer, y = f(x @ w + b), its backward passes and the bare GEMM,
// in fusednn._C (OpenBLAS tiles + fused epilogues) and fusednn._C_cuda
// (cuBLASLt with its epilogues).
#include "bindings/registry.h"
#include "bindings/tensor.h"

#if FUSEDNN_BIND_CUDA
#include "cuda/cublaslt.cuh"
#include "cuda/kernels.cuh"
#else
#include "cpu/dispatch.h"
#include "cpu/blas.h"
#endif

namespace py = pybind11;
using fusednn::Act;
using namespace fusednn::bind;

namespace {

// cuBLASLt's relu bitmask (RELU_AUX epilogue): one bit per element of the
// m x n output, each sample's n bits padded to a multiple of 128.
int64_t mask_ld(int64_t n) { return (n + 127) / 128 * 128; }

// x (m x k, float), w (k x n) of x's dtype; returns n.
int64_t check_xw(const Tensor& x, const Tensor& w) {
  expect(x, float_dtype(x), {-1, -1});
  expect(w, x.dtype, {x.dim(1), -1});
  return w.dim(1);
}

// The saved y or z of an activation (rows x cols): required unless linear.
void check_saved(const Tensor& s, Act a, DType dt, int64_t rows, int64_t cols) {
  if (a == Act::Linear) return;
  require_given(s, "for a non-linear activation");
  expect(s, dt, {rows, cols});
}

py::tuple forward(py::handle x_obj, py::handle w_obj, py::handle b_obj, Act kind, double alpha,
                  uintptr_t stream, int64_t block_rows) {
  const Tensor x = view(x_obj, "x"), w = view(w_obj, "w");
  const int64_t m = x.dim(0), k = x.dim(1), n = check_xw(x, w);
  const Tensor b = view_or_none(b_obj, "b");
  if (!b.none()) expect(b, x.dtype, {n});
  const Act a = to_act(kind);
  const Stream st = as_stream(stream);
  Tensor y = empty(x.dtype, {m, n});
  Tensor z = empty_if(fusednn::saves_input(a), x.dtype, {m, n});
  // The relu mask is written by cuBLASLt only: the CPU's backward reads y.
  Tensor mask = empty_if(kDevice && a == Act::Relu, DType::U8, {count("mask", m, mask_ld(n)) / 8});
  bool wrote = false;
  floating(x.dtype, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    (void)block_rows;
    wrote = fusednn::cuda::dense_forward<T>(x.data<T>(), w.data<T>(), b.data_or_null<T>(),
                                            y.data<T>(), z.data_or_null<T>(),
                                            mask.data_or_null<void>(), mask_ld(n), m, k, n, a,
                                            T(alpha), fusednn::cuda::lt::tf32(), st);
#else
    fusednn::cpu::kernels<T>().dense_forward(x.data<T>(), w.data<T>(), b.data_or_null<T>(),
                                             y.data<T>(), z.data_or_null<T>(), m, k, n, a,
                                             T(alpha), block_rows);
#endif
  });
  return py::make_tuple(y.keep, result(z), wrote ? mask.keep : py::object(py::none()));
}

py::tuple backward(py::handle dy_obj, py::handle saved_obj, py::handle x_obj, py::handle w_obj,
                   bool has_bias, bool need_dx, Act kind, double alpha, uintptr_t stream) {
  const Tensor x = view(x_obj, "x"), w = view(w_obj, "w"), dy = view(dy_obj, "dy");
  const int64_t m = x.dim(0), k = x.dim(1), n = check_xw(x, w);
  const DType dt = x.dtype;
  expect(dy, dt, {m, n});
  const Act a = to_act(kind);
  const Tensor saved = view_or_none(saved_obj, "saved");
  check_saved(saved, a, dt, m, n);
  const Stream st = as_stream(stream);
  Tensor dw = empty(dt, {k, n});
  Tensor db = empty_if(has_bias, dt, {n});
  Tensor dx = empty_if(need_dx, dt, {m, k});
  Tensor dz = empty_if(a != Act::Linear, dt, {m, n});  // scratch: dy * f'(s)
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::dense_backward<T>(dy.data<T>(), saved.data_or_null<T>(), x.data<T>(),
                                     w.data<T>(), dz.data_or_null<T>(), dx.data_or_null<T>(),
                                     dw.data<T>(), db.data_or_null<T>(), m, k, n, a, T(alpha),
                                     fusednn::cuda::lt::tf32(), st);
#else
    fusednn::cpu::kernels<T>().dense_backward(dy.data<T>(), saved.data_or_null<T>(), x.data<T>(),
                                              w.data<T>(), dz.data_or_null<T>(),
                                              dx.data_or_null<T>(), dw.data<T>(),
                                              db.data_or_null<T>(), m, k, n, a, T(alpha));
#endif
  });
  return py::make_tuple(result(dx), dw.keep, result(db));
}

py::tuple backward_weight(py::handle dz_obj, py::handle x_obj, bool need_db, uintptr_t stream) {
  const Tensor x = view(x_obj, "x"), dz = view(dz_obj, "dz");
  expect(x, float_dtype(x), {-1, -1});
  expect(dz, x.dtype, {x.dim(0), -1});
  const int64_t m = x.dim(0), k = x.dim(1), n = dz.dim(1);
  const Stream st = as_stream(stream);
  Tensor dw = empty(x.dtype, {k, n});
  Tensor db = empty_if(need_db, x.dtype, {n});
  floating(x.dtype, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::dense_backward_weight<T>(dz.data<T>(), x.data<T>(), dw.data<T>(),
                                            db.data_or_null<T>(), m, k, n,
                                            fusednn::cuda::lt::tf32(), st);
#else
    fusednn::cpu::kernels<T>().dense_backward_weight(dz.data<T>(), x.data<T>(), dw.data<T>(),
                                                     db.data_or_null<T>(), m, k, n);
#endif
  });
  return py::make_tuple(dw.keep, result(db));
}

py::tuple backward_input(py::handle dz_obj, py::handle w_obj, py::handle saved_obj,
                         py::handle mask_obj, Act kind_prev, double alpha_prev, bool need_db_prev,
                         uintptr_t stream) {
  const Tensor dz = view(dz_obj, "dz"), w = view(w_obj, "w");
  expect(dz, float_dtype(dz), {-1, -1});
  expect(w, dz.dtype, {-1, dz.dim(1)});
  const int64_t m = dz.dim(0), n = dz.dim(1), k = w.dim(0);
  const Act a = to_act(kind_prev);
  const Tensor saved = view_or_none(saved_obj, "saved_prev");
  // Required with a mask too: the CUDA fallback reads it when cuBLASLt
  // refuses the DRELU epilogue.
  check_saved(saved, a, dz.dtype, m, k);
  const Tensor mask = view_or_none(mask_obj, "mask_prev");
  if (!mask.none()) {
    if (!kDevice || a != Act::Relu)
      throw py::value_error("mask_prev: only the CUDA relu layers have one; pass None");
    expect_size(mask, DType::U8, count("mask_prev", m, mask_ld(k)) / 8);
  }
  const Stream st = as_stream(stream);
  Tensor out = empty(dz.dtype, {m, k});
  Tensor db = empty_if(need_db_prev, dz.dtype, {k});
  floating(dz.dtype, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::dense_backward_input<T>(dz.data<T>(), w.data<T>(), saved.data_or_null<T>(),
                                           mask.data_or_null<void>(), mask_ld(k), out.data<T>(),
                                           db.data_or_null<T>(), m, k, n, a, T(alpha_prev),
                                           fusednn::cuda::lt::tf32(), st);
#else
    fusednn::cpu::kernels<T>().dense_backward_input(dz.data<T>(), w.data<T>(),
                                                    saved.data_or_null<T>(), out.data<T>(),
                                                    db.data_or_null<T>(), m, k, n, a,
                                                    T(alpha_prev));
#endif
  });
  return py::make_tuple(out.keep, result(db));
}

py::object gemm(py::handle a_obj, py::handle b_obj, uintptr_t stream) {
  const Tensor a = view(a_obj, "a"), b = view(b_obj, "b");
  expect(a, float_dtype(a), {-1, -1});
  expect(b, a.dtype, {a.dim(1), -1});
  const int64_t m = a.dim(0), k = a.dim(1), n = b.dim(1);
  const Stream st = as_stream(stream);
  Tensor c = empty(a.dtype, {m, n});
  floating(a.dtype, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::dense_forward<T>(a.data<T>(), b.data<T>(), nullptr, c.data<T>(), nullptr,
                                    nullptr, 0, m, k, n, Act::Linear, T(0),
                                    fusednn::cuda::lt::tf32(), st);
#else
    fusednn::cpu::parallel_gemm<T>(false, false, m, n, k, T(1), a.data<T>(), k, b.data<T>(), n,
                                   T(0), c.data<T>(), n);
#endif
  });
  return c.keep;
}

const Registrar reg([](py::module_& m) {
  m.def("dense_forward", &forward, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("kind"),
        py::arg("alpha"), py::arg("stream") = 0, py::arg("block_rows") = 0,
        "(y, z, mask): y = f(x @ w + b), x: m x k, w: k x n, b: n or None; z = x @ w + b when "
        "the activation saves its input (gelu, swish, mish), else None; mask: for relu on the "
        "GPU, cuBLASLt's bitmask of z > 0 (uint8, each row's bits padded to 128) when it was "
        "written, else None. block_rows: the CPU's rows per task (0: chosen).");
  m.def("dense_backward", &backward, py::arg("dy"), py::arg("saved"), py::arg("x"), py::arg("w"),
        py::arg("has_bias"), py::arg("need_dx"), py::arg("kind"), py::arg("alpha"),
        py::arg("stream") = 0,
        "(dx or None, dw, db or None): dz = dy * f'(saved); dw = x^T dz; db = column sums of "
        "dz; dx = dz w^T.");
  m.def("dense_backward_weight", &backward_weight, py::arg("dz"), py::arg("x"),
        py::arg("need_db"), py::arg("stream") = 0,
        "(dw, db or None): dw = x^T dz, db = column sums of dz.");
  m.def("dense_backward_input", &backward_input, py::arg("dz"), py::arg("w"),
        py::arg("saved_prev"), py::arg("mask_prev"), py::arg("kind_prev"),
        py::arg("alpha_prev"), py::arg("need_db_prev"), py::arg("stream") = 0,
        "(dz_prev, db_prev or None): dz_prev = (dz w^T) * f_prev'(saved_prev), db_prev its "
        "column sums; mask_prev: the relu mask dense_forward returned (GPU), or None.");
  m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("stream") = 0,
        "a @ b, the bare GEMM that bench/ compares the fused layer with.");
#if FUSEDNN_BIND_CUDA
  m.def("set_tf32", &fusednn::cuda::lt::set_tf32, py::arg("on"),
        "Whether float32 GEMMs may use TF32 tensor cores.");
#endif
});

}  // namespace
