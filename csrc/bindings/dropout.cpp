// Dropout and alpha dropout with bit-packed counter-based masks
// (fusednn/dropout.h), and the raw Philox4x32-10 generator.
#include "fusednn/dropout.h"

#include <limits>
#include <string>

#include "bindings/registry.h"
#include "bindings/tensor.h"

namespace py = pybind11;
using namespace fusednn::bind;
using namespace pybind11::literals;
namespace dev = fusednn::dev;

namespace {

py::tuple forward(py::handle x_obj, double rate, bool alpha, uint64_t seed, uint64_t step,
                  bool store_mask, uintptr_t stream) {
  const Tensor x = view(x_obj, "x");
  const DType dt = float_dtype(x);
  check_rate("dropout_forward", rate);
  const Stream st = as_stream(stream);
  const Tensor y = empty_like(x);
  const Tensor mask = empty_if(store_mask, DType::U32, {fusednn::mask_words(x.size)});
  FUSEDNN_DISPATCH(
      dt, dev::dropout_forward<T>(x.data<T>(), y.data<T>(), mask.data_or_null<uint32_t>(), x.size,
                                  seed, step, rate, alpha, st));
  return py::make_tuple(y.keep, result(mask));
}

py::object backward(py::handle dy_obj, py::handle mask_obj, double rate, bool alpha, uint64_t seed,
                    uint64_t step, uintptr_t stream) {
  const Tensor dy = view(dy_obj, "dy"), mask = view_or_none(mask_obj, "mask");
  const DType dt = float_dtype(dy);
  check_rate("dropout_backward", rate);
  if (!mask.none()) expect_size(mask, DType::U32, fusednn::mask_words(dy.size));
  const Stream st = as_stream(stream);
  const Tensor dx = empty_like(dy);
  FUSEDNN_DISPATCH(
      dt, dev::dropout_backward<T>(dy.data<T>(), mask.data_or_null<uint32_t>(), dx.data<T>(),
                                   dy.size, seed, step, rate, alpha, st));
  return dx.keep;
}

py::object mask(int64_t n, double rate, uint64_t seed, uint64_t step, uintptr_t stream) {
  // mask_words rounds n + 31 up: an n within 31 of INT64_MAX would overflow there.
  if (n < 0 || n > std::numeric_limits<int64_t>::max() - 31)
    throw py::value_error("dropout_mask: n must be in [0, 2**63 - 32], got " + std::to_string(n));
  check_rate("dropout_mask", rate);
  const Stream st = as_stream(stream);
  const Tensor words = empty(DType::U32, {fusednn::mask_words(n)});
  py::gil_scoped_release nogil;
  dev::dropout_mask(words.data<uint32_t>(), words.size, seed, step, rate, st);
  return words.keep;
}

py::object philox(py::handle counters_obj, py::handle key_obj, uintptr_t stream) {
  const Tensor ctr = view(counters_obj, "counters");
  expect(ctr, DType::U32, {-1, 4});
  // The key is two host integers on both devices (a NumPy array, tuple or list).
  if (!py::isinstance<py::sequence>(key_obj) || py::len(key_obj) != 2)
    throw py::value_error("key: must hold 2 uint32 values");
  const auto key = py::reinterpret_borrow<py::sequence>(key_obj);
  const uint32_t k0 = key[0].cast<uint32_t>(), k1 = key[1].cast<uint32_t>();
  const Stream st = as_stream(stream);
  const Tensor out = empty(DType::U32, {ctr.dim(0), 4});
  py::gil_scoped_release nogil;
  dev::philox4x32_10(ctr.data<uint32_t>(), out.data<uint32_t>(), ctr.dim(0), k0, k1, st);
  return out.keep;
}

const Registrar reg([](py::module_& m) {
  m.def("dropout_forward", &forward, "x"_a, "rate"_a, "alpha"_a, "seed"_a, "step"_a, "store_mask"_a,
        "stream"_a = 0,
        "(y, mask): y = keep ? x * kept_mul + kept_add : dropped; mask: the keep bits (uint32).");
  m.def("dropout_backward", &backward, "dy"_a, "mask"_a, "rate"_a, "alpha"_a, "seed"_a, "step"_a,
        "stream"_a = 0, "dx = keep ? dy * kept_mul : 0, keep from mask or (seed, step).");
  m.def("dropout_mask", &mask, "n"_a, "rate"_a, "seed"_a, "step"_a, "stream"_a = 0,
        "The mask words of n elements: e kept iff bit e % 32 of word e / 32.");
  m.def("philox4x32_10", &philox, "counters"_a, "key"_a, "stream"_a = 0,
        "Philox4x32-10 of each row of counters (N, 4) under key (2 uint32).");
});

}  // namespace
