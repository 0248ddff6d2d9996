// Dropout and alpha dropout with bit-packed counter-based masks
// (fusednn/dropout.h), and the raw Philox4x32-10 generator, in fusednn._C and
// fusednn._C_cuda.
#include <string>

#include "bindings/registry.h"
#include "bindings/tensor.h"
#include "fusednn/dropout.h"

#if FUSEDNN_BIND_CUDA
#include "cuda/dropout.cuh"
#else
#include "cpu/dispatch.h"
#endif

namespace py = pybind11;
using namespace fusednn::bind;

namespace {

py::tuple forward(py::handle x_obj, double rate, bool alpha, uint64_t seed, uint64_t step,
                  bool store_mask, uintptr_t stream) {
  const Tensor x = view(x_obj, "x");
  const DType dt = float_dtype(x);
  check_rate("dropout_forward", rate);
  const Stream st = as_stream(stream);
  Tensor y = empty_like(x);
  Tensor mask = empty_if(store_mask, DType::U32, {fusednn::mask_words(x.size)});
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    uint32_t* mp = mask.data_or_null<uint32_t>();
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::dropout_forward<T>(x.data<T>(), y.data<T>(), mp, x.size, seed, step, rate,
                                      alpha, st);
#else
    fusednn::cpu::kernels<T>().dropout_forward(x.data<T>(), y.data<T>(), mp, x.size, seed, step,
                                               rate, alpha);
#endif
  });
  return py::make_tuple(y.keep, result(mask));
}

py::object backward(py::handle dy_obj, py::handle mask_obj, double rate, bool alpha,
                    uint64_t seed, uint64_t step, uintptr_t stream) {
  const Tensor dy = view(dy_obj, "dy");
  const DType dt = float_dtype(dy);
  check_rate("dropout_backward", rate);
  const Tensor mask = view_or_none(mask_obj, "mask");
  if (!mask.none()) expect_size(mask, DType::U32, fusednn::mask_words(dy.size));
  const Stream st = as_stream(stream);
  Tensor dx = empty_like(dy);
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    const uint32_t* mp = mask.data_or_null<uint32_t>();
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::dropout_backward<T>(dy.data<T>(), mp, dx.data<T>(), dy.size, seed, step, rate,
                                       alpha, st);
#else
    fusednn::cpu::kernels<T>().dropout_backward(dy.data<T>(), mp, dx.data<T>(), dy.size, seed,
                                                step, rate, alpha);
#endif
  });
  return dx.keep;
}

py::object mask(int64_t n, double rate, uint64_t seed, uint64_t step, uintptr_t stream) {
  if (n < 0) throw py::value_error("dropout_mask: n must be >= 0, got " + std::to_string(n));
  check_rate("dropout_mask", rate);
  const Stream st = as_stream(stream);
  Tensor words = empty(DType::U32, {fusednn::mask_words(n)});
  uint32_t* wp = words.data<uint32_t>();
  {
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::dropout_mask(wp, words.size, seed, step, rate, st);
#else
    fusednn::cpu::kernel_table().dropout_mask(wp, words.size, seed, step, rate);
#endif
  }
  return words.keep;
}

py::object philox(py::handle counters_obj, py::handle key_obj, uintptr_t stream) {
  const Tensor ctr = view(counters_obj, "counters");
  expect(ctr, DType::U32, {-1, 4});
  // The key is two host integers on both devices (a NumPy array, tuple or list).
  if (!py::isinstance<py::sequence>(key_obj) || py::len(key_obj) != 2)
    throw py::value_error("key: must hold 2 uint32 values");
  const auto key = py::reinterpret_borrow<py::sequence>(key_obj);
  const uint32_t k[2] = {key[0].cast<uint32_t>(), key[1].cast<uint32_t>()};
  const Stream st = as_stream(stream);
  Tensor out = empty(DType::U32, {ctr.dim(0), 4});
  {
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::philox4x32_10(ctr.data<uint32_t>(), out.data<uint32_t>(), ctr.dim(0), k[0],
                                 k[1], st);
#else
    fusednn::cpu::kernel_table().philox4x32_10(ctr.data<uint32_t>(), k, out.data<uint32_t>(),
                                               ctr.dim(0));
#endif
  }
  return out.keep;
}

const Registrar reg([](py::module_& m) {
  m.def("dropout_forward", &forward, py::arg("x"), py::arg("rate"), py::arg("alpha"),
        py::arg("seed"), py::arg("step"), py::arg("store_mask"), py::arg("stream") = 0,
        "(y, mask): y = keep ? x * kept_mul + kept_add : dropped (fusednn/dropout.h); mask the "
        "ceil(x.size / 32) uint32 words of keep bits, or None unless store_mask.");
  m.def("dropout_backward", &backward, py::arg("dy"), py::arg("mask"), py::arg("rate"),
        py::arg("alpha"), py::arg("seed"), py::arg("step"), py::arg("stream") = 0,
        "dx = keep ? dy * kept_mul : 0, keep from mask (uint32 words) or, when mask is None, "
        "regenerated from (seed, step).");
  m.def("dropout_mask", &mask, py::arg("n"), py::arg("rate"), py::arg("seed"), py::arg("step"),
        py::arg("stream") = 0,
        "The ceil(n / 32) uint32 mask words of an n-element tensor: element e kept iff bit "
        "e % 32 of word e / 32 is set.");
  m.def("philox4x32_10", &philox, py::arg("counters"), py::arg("key"), py::arg("stream") = 0,
        "Philox4x32-10 of each row of counters (N, 4) under key (2 uint32): (N, 4) uint32.");
});

}  // namespace
