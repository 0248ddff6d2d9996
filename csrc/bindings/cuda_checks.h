// Boundary checks shared by the binding files of fusednn._C_cuda. Arrays
// arrive as device addresses (Python ints); these checks stop a wrong call
// from turning into an out-of-bounds access (sizes, null pointers, kinds).
#pragma once
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>

#include "bindings/common_checks.h"
#include "fusednn/activation.h"

namespace fusednn {
namespace bind {

namespace py = pybind11;

enum class DType { F32, F64 };

inline DType parse_dtype(const char* fn, const std::string& dtype) {
  if (dtype == "float32") return DType::F32;
  if (dtype == "float64") return DType::F64;
  throw py::value_error(std::string(fn) + ": dtype must be 'float32' or 'float64', got '" + dtype +
                        "'");
}

// fusednn._C.Act(n) can hold any int: refuse one outside the enum.
inline Act parse_kind(const char* fn, Act kind) {
  if (int(kind) < 0 || int(kind) >= int(Act::Count))
    throw py::value_error(std::string(fn) + ": activation kind must be in [0, " +
                          std::to_string(int(Act::Count)) + "), got " +
                          std::to_string(int(kind)));
  return kind;
}

inline void check_size(const char* fn, const char* name, int64_t v) {
  if (v < 0)
    throw py::value_error(std::string(fn) + ": " + name + " must be >= 0, got " +
                          std::to_string(v));
}

// a * b, refusing sizes whose element count overflows int64.
inline int64_t count(const char* fn, int64_t a, int64_t b) {
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a)
    throw py::value_error(std::string(fn) + ": size " + std::to_string(a) + " x " +
                          std::to_string(b) + " overflows");
  return a * b;
}

// A buffer of `elems` elements must have an address unless it is empty.
inline void check_ptr(const char* fn, const char* name, uintptr_t p, int64_t elems) {
  if (p == 0 && elems > 0)
    throw py::value_error(std::string(fn) + ": " + name + " is null for " +
                          std::to_string(elems) + " elements");
}

// Calls f with a typed null of the requested dtype, so one lambda serves both.
template <typename F>
inline void with_dtype(DType t, F&& f) {
  if (t == DType::F32)
    f(static_cast<float*>(nullptr));
  else
    f(static_cast<double*>(nullptr));
}

template <typename T>
inline T* ptr(T*, uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

}  // namespace bind
}  // namespace fusednn
