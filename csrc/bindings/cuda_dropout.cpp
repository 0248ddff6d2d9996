// fusednn._C_cuda bindings of the CUDA dropout kernels and the raw Philox
// generator. Arrays arrive as device addresses; the checks here stop a wrong
// call from becoming an out-of-bounds access (sizes, null pointers, rate).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "bindings/cuda_checks.h"
#include "bindings/registry.h"
#include "cuda/dropout.cuh"

namespace py = pybind11;
using namespace fusednn::bind;

namespace {

void dropout_forward(const std::string& dtype, int64_t n, double rate, bool alpha, uint64_t seed,
                     uint64_t step, uintptr_t x_ptr, uintptr_t y_ptr, uintptr_t mask_ptr,
                     uintptr_t stream) {
  const char* fn = "dropout_forward";
  const DType t = parse_dtype(fn, dtype);
  check_size(fn, "n", n);
  check_rate(fn, rate);
  check_ptr(fn, "x", x_ptr, n);
  check_ptr(fn, "y", y_ptr, n);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::dropout_forward<T>(ptr(tag, x_ptr), ptr(tag, y_ptr),
                                      reinterpret_cast<uint32_t*>(mask_ptr), n, seed, step, rate,
                                      alpha, as_stream(stream));
  });
}

void dropout_backward(const std::string& dtype, int64_t n, double rate, bool alpha,
                      uint64_t seed, uint64_t step, uintptr_t dy_ptr, uintptr_t mask_ptr,
                      uintptr_t dx_ptr, uintptr_t stream) {
  const char* fn = "dropout_backward";
  const DType t = parse_dtype(fn, dtype);
  check_size(fn, "n", n);
  check_rate(fn, rate);
  check_ptr(fn, "dy", dy_ptr, n);
  check_ptr(fn, "dx", dx_ptr, n);
  py::gil_scoped_release nogil;
  with_dtype(t, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fusednn::cuda::dropout_backward<T>(ptr(tag, dy_ptr),
                                       reinterpret_cast<const uint32_t*>(mask_ptr),
                                       ptr(tag, dx_ptr), n, seed, step, rate, alpha,
                                       as_stream(stream));
  });
}

void dropout_mask(int64_t nwords, double rate, uint64_t seed, uint64_t step, uintptr_t mask_ptr,
                  uintptr_t stream) {
  const char* fn = "dropout_mask";
  check_size(fn, "nwords", nwords);
  check_rate(fn, rate);
  check_ptr(fn, "mask", mask_ptr, nwords);
  py::gil_scoped_release nogil;
  fusednn::cuda::dropout_mask(reinterpret_cast<uint32_t*>(mask_ptr), nwords, seed, step, rate,
                              as_stream(stream));
}

void philox4x32_10(int64_t count, uintptr_t ctr_ptr, uint32_t k0, uint32_t k1, uintptr_t out_ptr,
                   uintptr_t stream) {
  const char* fn = "philox4x32_10";
  check_size(fn, "count", count);
  const int64_t words = fusednn::bind::count(fn, count, 4);
  check_ptr(fn, "counters", ctr_ptr, words);
  check_ptr(fn, "out", out_ptr, words);
  py::gil_scoped_release nogil;
  fusednn::cuda::philox4x32_10(reinterpret_cast<const uint32_t*>(ctr_ptr),
                               reinterpret_cast<uint32_t*>(out_ptr), count, k0, k1,
                               as_stream(stream));
}

fusednn::bind::Registrar reg([](py::module_& m) {
  m.def("dropout_forward", &dropout_forward, py::arg("dtype"), py::arg("n"), py::arg("rate"),
        py::arg("alpha"), py::arg("seed"), py::arg("step"), py::arg("x_ptr"), py::arg("y_ptr"),
        py::arg("mask_ptr"), py::arg("stream"),
        "y = keep ? x * kept_mul + kept_add : dropped over n elements (fusednn/dropout.h); "
        "mask_ptr (0: none) receives the ceil(n / 32) uint32 mask words.");
  m.def("dropout_backward", &dropout_backward, py::arg("dtype"), py::arg("n"), py::arg("rate"),
        py::arg("alpha"), py::arg("seed"), py::arg("step"), py::arg("dy_ptr"),
        py::arg("mask_ptr"), py::arg("dx_ptr"), py::arg("stream"),
        "dx = keep ? dy * kept_mul : 0, keep from the ceil(n / 32) words at mask_ptr or, when it "
        "is 0, regenerated from (seed, step).");
  m.def("dropout_mask", &dropout_mask, py::arg("nwords"), py::arg("rate"), py::arg("seed"),
        py::arg("step"), py::arg("mask_ptr"), py::arg("stream"),
        "Mask words 0 .. nwords - 1 of (seed, step, rate) into mask_ptr (uint32).");
  m.def("philox4x32_10", &philox4x32_10, py::arg("count"), py::arg("counters_ptr"),
        py::arg("k0"), py::arg("k1"), py::arg("out_ptr"), py::arg("stream"),
        "Philox4x32-10 of count uint32 counter quadruples under key (k0, k1) into out_ptr.");
});

}  // namespace
