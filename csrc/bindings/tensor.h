// The one tensor type at the Python/C++ seam. Every binding file is compiled
// twice: into fusednn._C (host memory, the CPU kernels) and, with
// FUSEDNN_BIND_CUDA=1, into fusednn._C_cuda (device memory, the CUDA
// kernels). Both read their arguments through view() and allocate their
// outputs through empty(), so one function body checks and shapes a call for
// both devices; only the kernel call itself differs (#if FUSEDNN_BIND_CUDA).
//
// view() reads a NumPy array directly (the fast path), and otherwise any
// object with __array_interface__ (host), __cuda_array_interface__ (device)
// or __dlpack__. Every array must be C-contiguous, aligned and in native byte
// order. Outputs are NumPy arrays (large ones from the host buffer cache) or,
// on the GPU, arrays of the allocator Python registers (CuPy's pool, on the
// current device).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "fusednn/activation.h"

#if FUSEDNN_BIND_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fusednn {
namespace bind {

namespace py = pybind11;

#if FUSEDNN_BIND_CUDA
constexpr bool kDevice = true;
using Stream = cudaStream_t;
#else
constexpr bool kDevice = false;
struct Stream {};
#endif

enum class DType : uint8_t { F32, F64, U8, U32, I32, I64, Other };

const char* dtype_name(DType t);

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  else if constexpr (std::is_same_v<T, double>) return DType::F64;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::U8;
  else if constexpr (std::is_same_v<T, uint32_t>) return DType::U32;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::I32;
  else return DType::I64;
}

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
  py::object keep;  // what owns the memory when it is not the caller's argument

  bool none() const { return ndim < 0; }
  int64_t dim(int i) const { return shape[i]; }
  template <typename T>
  T* data() const { return static_cast<T*>(ptr); }
  // The pointer, or null for None.
  template <typename T>
  T* data_or_null() const { return none() ? nullptr : static_cast<T*>(ptr); }
};

// The array `h` (named `name` in errors): TypeError for a non-array or an
// array of the other device, ValueError for a layout the kernels cannot read.
Tensor view(py::handle h, const char* name);
// As view(), None allowed (Tensor::none()).
Tensor view_or_none(py::handle h, const char* name);

// A new C-contiguous output of this module's device, contents unspecified.
Tensor empty(DType t, std::initializer_list<int64_t> shape);
Tensor empty_shape(DType t, int ndim, const int64_t* shape);
// empty() of like's dtype and shape.
Tensor empty_like(const Tensor& like);
// empty() when `want`, else a None tensor.
Tensor empty_if(bool want, DType t, std::initializer_list<int64_t> shape);
// What a Tensor from empty()/empty_if() returns to Python (None for none()).
inline py::object result(const Tensor& t) { return t.none() ? py::object(py::none()) : t.keep; }

// dtype float32 or float64, else TypeError naming the array.
DType float_dtype(const Tensor& t);
// dtype `dt` and these dims (-1: any), else TypeError / ValueError.
void expect(const Tensor& t, DType dt, std::initializer_list<int64_t> dims);
// dtype `dt` and `n` elements in any shape.
void expect_size(const Tensor& t, DType dt, int64_t n);
// Written in place: refuse a read-only array.
void expect_writable(const Tensor& t);
// Required unless `optional`: a None tensor is refused with the reason.
void require_given(const Tensor& t, const char* why);

// a * b, refusing a product that overflows int64.
int64_t count(const char* what, int64_t a, int64_t b);

#if FUSEDNN_BIND_CUDA
// Where empty() takes device memory from: f(shape tuple, dtype name) -> an
// array with __cuda_array_interface__ on the current device.
void set_allocator(py::object f);
#endif

// The stream argument: CUDA's stream handle; the CPU kernels take 0.
Stream as_stream(uintptr_t s);

// A dropout rate in [0, 1): NaN and 1.0 would make the drop threshold and the
// 1 / (1 - rate) scale meaningless.
void check_rate(const char* fn, double rate);

// An enum value built from any int (fusednn._C.Act(99)) is refused.
template <typename E>
E in_range(const char* what, E v, E count) {
  if (int(v) < 0 || int(v) >= int(count))
    throw py::value_error(std::string(what) + " out of range: " + std::to_string(int(v)));
  return v;
}
inline Act to_act(Act a) { return in_range("activation kind", a, Act::Count); }

// Calls f with a typed null of t (float32 or float64), so one lambda serves both.
template <typename F>
void floating(DType t, F&& f) {
  if (t == DType::F64)
    f(static_cast<double*>(nullptr));
  else
    f(static_cast<float*>(nullptr));
}

}  // namespace bind
}  // namespace fusednn

// The element type of the tag `floating` passes.
#define FUSEDNN_T(tag) std::remove_pointer_t<decltype(tag)>
