// The dense layer y = f(x @ w + b), its backward passes and the bare GEMM:
// OpenBLAS tiles with fused epilogues on the CPU, cuBLASLt with its
// epilogues on the GPU.
#include "bindings/registry.h"
#include "bindings/tensor.h"

namespace py = pybind11;
using fusednn::Act;
using namespace fusednn::bind;
using namespace pybind11::literals;
namespace dev = fusednn::dev;

namespace {

// x (m x k, float) and w (k x n) of its dtype; returns n.
int64_t check_xw(const Tensor& x, const Tensor& w) {
  expect(x, float_dtype(x), {-1, -1});
  expect(w, x.dtype, {x.dim(1), -1});
  return w.dim(1);
}

// The saved y or z of an activation (rows x cols): required unless linear.
void check_saved(const Tensor& s, Act a, DType dt, int64_t rows, int64_t cols) {
  if (a != Act::Linear) require_given(s, "for a non-linear activation");
  if (a != Act::Linear) expect(s, dt, {rows, cols});
}

py::tuple forward(py::handle x_obj, py::handle w_obj, py::handle b_obj, Act kind, double alpha,
                  uintptr_t stream, int64_t block_rows) {
  const Tensor x = view(x_obj, "x"), w = view(w_obj, "w"), b = view_or_none(b_obj, "b");
  const int64_t m = x.dim(0), k = x.dim(1), n = check_xw(x, w);
  if (!b.none()) expect(b, x.dtype, {n});
  const Act a = to_act(kind);
  const Stream st = as_stream(stream);
  const Tensor y = empty(x.dtype, {m, n}), z = empty_if(fusednn::saves_input(a), x.dtype, {m, n});
  // cuBLASLt's relu bit mask (none on the CPU); y's size has been checked.
  const int64_t mask_bytes = a == Act::Relu ? dev::relu_mask_bytes(m, n) : 0;
  const Tensor mask = empty_if(mask_bytes > 0, DType::U8, {mask_bytes});
  bool wrote = false;
  FUSEDNN_DISPATCH(
      x.dtype, wrote = dev::dense_forward<T>(
                   x.data<T>(), w.data<T>(), b.data_or_null<T>(), y.data<T>(), z.data_or_null<T>(),
                   mask.data_or_null<void>(), m, k, n, a, T(alpha), st, block_rows));
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
  const Tensor dw = empty(dt, {k, n}), db = empty_if(has_bias, dt, {n}),
               dx = empty_if(need_dx, dt, {m, k}),
               dz = empty_if(a != Act::Linear, dt, {m, n});  // scratch: dy * f'(s)
  FUSEDNN_DISPATCH(
      dt, dev::dense_backward<T>(dy.data<T>(), saved.data_or_null<T>(), x.data<T>(), w.data<T>(),
                                 dz.data_or_null<T>(), dx.data_or_null<T>(), dw.data<T>(),
                                 db.data_or_null<T>(), m, k, n, a, T(alpha), st));
  return py::make_tuple(result(dx), dw.keep, result(db));
}

py::tuple backward_weight(py::handle dz_obj, py::handle x_obj, bool need_db, uintptr_t stream) {
  const Tensor x = view(x_obj, "x"), dz = view(dz_obj, "dz");
  expect(x, float_dtype(x), {-1, -1});
  expect(dz, x.dtype, {x.dim(0), -1});
  const int64_t m = x.dim(0), k = x.dim(1), n = dz.dim(1);
  const Stream st = as_stream(stream);
  const Tensor dw = empty(x.dtype, {k, n}), db = empty_if(need_db, x.dtype, {n});
  FUSEDNN_DISPATCH(x.dtype, dev::dense_backward_weight<T>(dz.data<T>(), x.data<T>(), dw.data<T>(),
                                                          db.data_or_null<T>(), m, k, n, st));
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
  // Required with a mask too: the GPU's fallback reads it when cuBLASLt
  // refuses the DRELU epilogue.
  const Tensor saved = view_or_none(saved_obj, "saved_prev");
  check_saved(saved, a, dz.dtype, m, k);
  const Stream st = as_stream(stream);
  const Tensor out = empty(dz.dtype, {m, k}), db = empty_if(need_db_prev, dz.dtype, {k});
  const Tensor mask = view_or_none(mask_obj, "mask_prev");
  if (!mask.none()) {  // out's size has been checked
    if (!kDevice || a != Act::Relu)
      throw py::value_error("mask_prev: only the GPU's relu layers have one");
    expect_size(mask, DType::U8, dev::relu_mask_bytes(m, k));
  }
  FUSEDNN_DISPATCH(
      dz.dtype, dev::dense_backward_input<T>(dz.data<T>(), w.data<T>(), saved.data_or_null<T>(),
                                             mask.data_or_null<void>(), out.data<T>(),
                                             db.data_or_null<T>(), m, k, n, a, T(alpha_prev), st));
  return py::make_tuple(out.keep, result(db));
}

py::object gemm(py::handle a_obj, py::handle b_obj, uintptr_t stream) {
  const Tensor a = view(a_obj, "a"), b = view(b_obj, "b");
  const int64_t m = a.dim(0), k = a.dim(1), n = check_xw(a, b);
  const Stream st = as_stream(stream);
  const Tensor c = empty(a.dtype, {m, n});
  FUSEDNN_DISPATCH(a.dtype, dev::gemm<T>(a.data<T>(), b.data<T>(), c.data<T>(), m, k, n, st));
  return c.keep;
}

const Registrar reg([](py::module_& m) {
  m.def("dense_forward", &forward, "x"_a, "w"_a, "b"_a, "kind"_a, "alpha"_a, "stream"_a = 0,
        "block_rows"_a = 0,
        "(y, z, mask): y = f(z), z = x @ w + b (kept if f saves it), mask: the GPU's relu bits.");
  m.def("dense_backward", &backward, "dy"_a, "saved"_a, "x"_a, "w"_a, "has_bias"_a, "need_dx"_a,
        "kind"_a, "alpha"_a, "stream"_a = 0,
        "(dx, dw, db): dz = dy * f'(saved), dw = x^T dz, db = sum_rows dz, dx = dz w^T.");
  m.def("dense_backward_weight", &backward_weight, "dz"_a, "x"_a, "need_db"_a, "stream"_a = 0,
        "(dw, db): dw = x^T dz, db = sum_rows dz.");
  m.def("dense_backward_input", &backward_input, "dz"_a, "w"_a, "saved_prev"_a, "mask_prev"_a,
        "kind_prev"_a, "alpha_prev"_a, "need_db_prev"_a, "stream"_a = 0,
        "(dz_prev, db_prev): dz_prev = (dz w^T) * f_prev'(saved_prev), db_prev = sum_rows.");
  m.def("gemm", &gemm, "a"_a, "b"_a, "stream"_a = 0, "a @ b: the roofline bench/ compares with.");
});

}  // namespace
