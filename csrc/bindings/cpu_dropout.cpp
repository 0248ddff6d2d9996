// fusednn._C bindings of the CPU dropout kernels and the raw Philox generator.
// The Python layer (fusednn.ops.dropout) checks the user's arguments; the
// checks here keep a direct call from reading or writing out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/cpu_checks.h"
#include "bindings/registry.h"
#include "cpu/dispatch.h"
#include "cpu/dropout.h"

namespace py = pybind11;
using namespace fusednn::bind;

namespace {

py::array new_words(int64_t n) {
  const py::ssize_t words = py::ssize_t(fusednn::cpu::dropout_words(n));
  return new_output(py::dtype::of<uint32_t>(), {words});
}

// The mask of an n-element tensor: uint32, C-contiguous, dropout_words(n) words.
const uint32_t* mask_data(const py::object& mask, int64_t n) {
  if (mask.is_none()) return nullptr;
  if (!py::isinstance<py::array>(mask))
    throw py::type_error("dropout_backward: mask must be a numpy array or None");
  py::array m = mask.cast<py::array>();
  require_flat(m, "mask", py::dtype::of<uint32_t>(), fusednn::cpu::dropout_words(n), false);
  return const_data<uint32_t>(m);
}

template <typename T>
py::tuple forward_t(const py::array& x, double rate, bool alpha, uint64_t seed, uint64_t step,
                    bool store_mask) {
  const int64_t n = int64_t(x.size());
  py::array y = new_output(x.dtype(), shape_of(x));
  py::object mask_obj = py::none();
  uint32_t* mp = nullptr;
  if (store_mask) {
    py::array m = new_words(n);
    mp = mutable_data<uint32_t>(m);
    mask_obj = std::move(m);
  }
  const T* xp = const_data<T>(x);
  T* yp = mutable_data<T>(y);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().dropout_forward(xp, yp, mp, n, seed, step, rate, alpha);
  }
  return py::make_tuple(y, mask_obj);
}

template <typename T>
py::array backward_t(const py::array& dy, const uint32_t* mp, double rate, bool alpha,
                     uint64_t seed, uint64_t step) {
  const int64_t n = int64_t(dy.size());
  py::array dx = new_output(dy.dtype(), shape_of(dy));
  const T* dyp = const_data<T>(dy);
  T* dxp = mutable_data<T>(dx);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().dropout_backward(dyp, mp, dxp, n, seed, step, rate, alpha);
  }
  return dx;
}

void require_c_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": must be C-contiguous");
}

fusednn::bind::Registrar reg([](py::module_& m) {
  m.def(
      "dropout_forward",
      [](const py::array& x, double rate, bool alpha, uint64_t seed, uint64_t step,
         bool store_mask) -> py::tuple {
        checked_float_dtype(x, "x");
        require_c_contiguous(x, "x");
        check_rate("dropout_forward", rate);
        return is_f64(x) ? forward_t<double>(x, rate, alpha, seed, step, store_mask)
                         : forward_t<float>(x, rate, alpha, seed, step, store_mask);
      },
      py::arg("x"), py::arg("rate"), py::arg("alpha"), py::arg("seed"), py::arg("step"),
      py::arg("store_mask"),
      "(y, mask): y = keep ? x * kept_mul + kept_add : dropped (fusednn/dropout.h); mask the "
      "ceil(x.size / 32) uint32 words of keep bits, or None unless store_mask.");

  m.def(
      "dropout_backward",
      [](const py::array& dy, const py::object& mask, double rate, bool alpha, uint64_t seed,
         uint64_t step) -> py::array {
        checked_float_dtype(dy, "dy");
        require_c_contiguous(dy, "dy");
        check_rate("dropout_backward", rate);
        const uint32_t* mp = mask_data(mask, int64_t(dy.size()));
        return is_f64(dy) ? backward_t<double>(dy, mp, rate, alpha, seed, step)
                          : backward_t<float>(dy, mp, rate, alpha, seed, step);
      },
      py::arg("dy"), py::arg("mask"), py::arg("rate"), py::arg("alpha"), py::arg("seed"),
      py::arg("step"),
      "dx = keep ? dy * kept_mul : 0, keep from mask (uint32 words) or, when mask is None, "
      "regenerated from (seed, step).");

  m.def(
      "dropout_mask",
      [](int64_t n, double rate, uint64_t seed, uint64_t step) -> py::array_t<uint32_t> {
        if (n < 0) throw py::value_error("dropout_mask: n must be >= 0, got " + std::to_string(n));
        check_rate("dropout_mask", rate);
        py::array words = new_words(n);
        uint32_t* wp = mutable_data<uint32_t>(words);
        const int64_t nw = int64_t(words.size());
        {
          py::gil_scoped_release nogil;
          fusednn::cpu::kernel_table().dropout_mask(wp, nw, seed, step, rate);
        }
        return words;
      },
      py::arg("n"), py::arg("rate"), py::arg("seed"), py::arg("step"),
      "The ceil(n / 32) uint32 mask words of an n-element tensor: element e kept iff bit e % 32 "
      "of word e / 32 is set.");

  m.def(
      "philox4x32_10",
      [](const py::array& counters, const py::array& key) -> py::array_t<uint32_t> {
        const py::dtype u32 = py::dtype::of<uint32_t>();
        require(counters, "counters", u32, {-1, 4});
        require(key, "key", u32, {2});
        const int64_t count = counters.shape(0);
        py::array_t<uint32_t> out(std::vector<py::ssize_t>{py::ssize_t(count), 4});
        const uint32_t* cp = const_data<uint32_t>(counters);
        const uint32_t kp[2] = {const_data<uint32_t>(key)[0], const_data<uint32_t>(key)[1]};
        uint32_t* op = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          fusednn::cpu::kernel_table().philox4x32_10(cp, kp, op, count);
        }
        return out;
      },
      py::arg("counters"), py::arg("key"),
      "Philox4x32-10 of each row of counters (N, 4) under key (2,), all uint32: (N, 4) uint32.");
});

}  // namespace
