// The one tensor type at the Python/C++ seam. Every binding file is compiled
// into fusednn._C (host memory, the CPU kernels) and, with FUSEDNN_BIND_CUDA,
// into fusednn._C_cuda (device memory, the CUDA kernels): one function body
// checks a call, allocates its outputs and calls fusednn::dev, the kernels
// of its device under one signature (cpu/device.h, cuda/device.cuh).
//
// view() reads a NumPy array directly (the fast path), and otherwise any
// object with __array_interface__ (host), __cuda_array_interface__ (device)
// or __dlpack__; arrays must be C-contiguous, aligned and in native byte
// order. empty() makes outputs: NumPy arrays (large ones from the host buffer
// cache), or on the GPU arrays of the allocator Python registers (CuPy's
// pool, on the current device).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "fusednn/activation.h"

#if FUSEDNN_BIND_CUDA
#include "cuda/device.cuh"
#else
#include "cpu/device.h"
#endif

namespace fusednn {
namespace bind {

namespace py = pybind11;

constexpr bool kDevice = FUSEDNN_BIND_CUDA;
using dev::Stream;

enum class DType : uint8_t { F32, F64, U8, U32, I32, I64, Other };
const char* dtype_name(DType t);
int64_t itemsize(DType t);

constexpr int kMaxDims = 8;

// A C-contiguous array seen from C++. ndim < 0: the argument was None.
struct Tensor {
  void* ptr = nullptr;
  DType dtype = DType::Other;
  int ndim = -1;
  int64_t shape[kMaxDims] = {};
  int64_t size = 0;
  bool writable = false;
  const char* name = "";
  py::object keep;  // owns the memory when the caller's argument does not

  bool none() const { return ndim < 0; }
  int64_t dim(int i) const { return shape[i]; }
  template <typename T>
  T* data() const { return static_cast<T*>(ptr); }
  template <typename T>
  T* data_or_null() const { return none() ? nullptr : static_cast<T*>(ptr); }
};

// The array `h`, named `name` in errors: TypeError for a non-array, a dtype
// not in DType or an array of the other device; ValueError for a layout the
// kernels cannot read. view_or_none also takes None (Tensor::none()).
Tensor view(py::handle h, const char* name);
Tensor view_or_none(py::handle h, const char* name);

// A new output of this module's device (contents unspecified); empty_if
// gives a None tensor unless `want`; result() is what goes back to Python.
Tensor empty(DType t, std::initializer_list<int64_t> shape);
Tensor empty_shape(DType t, int ndim, const int64_t* shape);
inline Tensor empty_like(const Tensor& a) { return empty_shape(a.dtype, a.ndim, a.shape); }
inline Tensor empty_if(bool want, DType t, std::initializer_list<int64_t> shape) {
  return want ? empty(t, shape) : Tensor{};
}
inline py::object result(const Tensor& t) { return t.none() ? py::object(py::none()) : t.keep; }

// Checks raising TypeError / ValueError that name the array: float32 or
// float64 (returned); dtype and dims (-1: any); dtype and size; writable;
// not None; and check(): ValueError "<name>: <what>" unless ok.
DType float_dtype(const Tensor& t);
void expect(const Tensor& t, DType dt, std::initializer_list<int64_t> dims);
void expect_size(const Tensor& t, DType dt, int64_t n);
void expect_writable(const Tensor& t);
void require_given(const Tensor& t, const char* why);
inline void check(bool ok, const char* name, const char* what) {
  if (!ok) throw py::value_error(std::string(name) + ": " + what);
}

// a * b, refusing a product that overflows int64.
int64_t count(const char* what, int64_t a, int64_t b);
// The stream argument: a CUDA stream handle; the CPU kernels take 0.
Stream as_stream(uintptr_t s);
// A dropout rate in [0, 1): NaN or 1 would break 1 / (1 - rate).
void check_rate(const char* fn, double rate);
#if FUSEDNN_BIND_CUDA
// Where empty() takes device memory: f(shape, dtype name) -> an array with
// __cuda_array_interface__ on the current device.
void set_allocator(py::object f);
#endif

// An enum value built from any int (fusednn._C.Act(99)) is refused.
template <typename E>
E in_range(const char* what, E v, E count) {
  if (int(v) < 0 || int(v) >= int(count))
    throw py::value_error(std::string(what) + " out of range: " + std::to_string(int(v)));
  return v;
}
inline Act to_act(Act a) { return in_range("activation kind", a, Act::Count); }

// The kernel call for T, the float type of t, with the GIL released:
//   FUSEDNN_DISPATCH(x.dtype, dev::gemm<T>(...));  (as PyTorch's AT_DISPATCH_*)
template <typename F>
void run_floating(DType t, F&& f) {
  py::gil_scoped_release nogil;
  if (t == DType::F64)
    f(double{});
  else
    f(float{});
}
#define FUSEDNN_DISPATCH(dt, ...) \
  ::fusednn::bind::run_floating(dt, [&](auto tag_) { using T = decltype(tag_); __VA_ARGS__; })

}  // namespace bind
}  // namespace fusednn
