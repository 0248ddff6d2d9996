// Boundary checks and array helpers shared by the CPU binding files of
// fusednn._C. Each binding file registers its functions through
// bindings/registry.h; module.cpp creates the module and runs them.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "bindings/common_checks.h"
#include "cpu/host_cache.h"
#include "fusednn/activation.h"

namespace fusednn {
namespace bind {

namespace py = pybind11;

// fusednn._C.Act(n) can hold any int: refuse one outside the enum.
inline Act to_act(Act kind) {
  if (int(kind) < 0 || int(kind) >= static_cast<int>(Act::Count))
    throw py::value_error("activation kind out of range: " + std::to_string(int(kind)));
  return kind;
}

inline bool is_f64(const py::array& a) { return a.dtype().is(py::dtype::of<double>()); }

// A C-contiguous float32/float64 array of the given dims (-1: any) and dtype.
inline void require(const py::array& a, const char* name, const py::dtype& dt,
                    std::initializer_list<int64_t> dims) {
  if (!a.dtype().is(dt))
    throw py::type_error(std::string(name) + ": dtype " + std::string(py::str(a.dtype())) +
                         ", expected " + std::string(py::str(dt)));
  if (a.ndim() != (py::ssize_t)dims.size())
    throw py::value_error(std::string(name) + ": has " + std::to_string(a.ndim()) +
                          " dims, expected " + std::to_string(dims.size()));
  int i = 0;
  for (int64_t d : dims) {
    if (d >= 0 && a.shape(i) != d)
      throw py::value_error(std::string(name) + ": dim " + std::to_string(i) + " is " +
                            std::to_string(a.shape(i)) + ", expected " + std::to_string(d));
    ++i;
  }
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": must be C-contiguous");
  // OpenBLAS here takes 32-bit dimensions.
  for (py::ssize_t j = 0; j < a.ndim(); ++j)
    if (a.shape(j) > std::numeric_limits<int32_t>::max())
      throw py::value_error(std::string(name) + ": dimension too large for 32-bit BLAS");
}

// A C-contiguous array of dtype dt with n elements (n < 0: any), writable
// when `out`: what the flat per-element kernels (optimizers) need.
inline void require_flat(const py::array& a, const char* name, const py::dtype& dt, int64_t n,
                         bool out) {
  if (!a.dtype().is(dt))
    throw py::type_error(std::string(name) + ": dtype " + std::string(py::str(a.dtype())) +
                         ", expected " + std::string(py::str(dt)));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (n >= 0 && int64_t(a.size()) != n)
    throw py::value_error(std::string(name) + ": has " + std::to_string(a.size()) +
                          " elements, expected " + std::to_string(n));
  if (out && !a.writeable()) throw py::value_error(std::string(name) + ": is read-only");
}

template <typename T>
inline T* mutable_data(py::array& a) { return static_cast<T*>(a.mutable_data()); }
template <typename T>
inline const T* const_data(const py::array& a) { return static_cast<const T*>(a.data()); }

inline std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

// A new C-contiguous array for an op's output, contents unspecified: from the
// host buffer cache (cpu/host_cache.h) when it is large, else from NumPy.
inline py::array new_output(const py::dtype& dt, const std::vector<py::ssize_t>& shape) {
  size_t bytes = size_t(dt.itemsize());
  for (py::ssize_t d : shape) bytes *= size_t(d);
  if (bytes < cpu::kHostCacheMin) return py::array(dt, shape);
  struct Block {
    void* p;
    size_t size;
  };
  Block* b = new Block{nullptr, 0};
  // The capsule owns the block from here on, also if an exception follows.
  py::capsule owner(b, [](void* q) {
    Block* blk = static_cast<Block*>(q);
    if (blk->p != nullptr) cpu::host_cache_release(blk->p, blk->size);
    delete blk;
  });
  b->p = cpu::host_cache_acquire(bytes, &b->size);
  if (b->p == nullptr) throw std::bad_alloc();
  return py::array(dt, shape, b->p, owner);
}

// A new array of `shape` when `want`, else None; *data gets its pointer or null.
template <typename T>
inline py::object optional_out(bool want, const py::dtype& dt,
                               const std::vector<py::ssize_t>& shape, T** data) {
  *data = nullptr;
  if (!want) return py::none();
  py::array a = new_output(dt, shape);
  *data = mutable_data<T>(a);
  return std::move(a);
}

// The saved y or z of an activation (rows x cols), null for linear.
template <typename T>
inline const T* saved_data(const py::object& s, const char* name, Act a, const py::dtype& dt,
                           int64_t rows, int64_t cols) {
  if (a == Act::Linear) return nullptr;
  if (s.is_none())
    throw py::value_error(std::string(name) + ": required for a non-linear activation");
  py::array sa = s.cast<py::array>();
  require(sa, name, dt, {rows, cols});
  return const_data<T>(sa);
}

inline void require_flat_same(const py::array& a, const char* name, const py::array& ref) {
  if (!a.dtype().is(ref.dtype())) throw py::type_error(std::string(name) + ": dtype mismatch");
  if (a.size() != ref.size()) throw py::value_error(std::string(name) + ": size mismatch");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": must be C-contiguous");
}

inline py::dtype checked_float_dtype(const py::array& a, const char* name) {
  py::dtype dt = a.dtype();
  if (!dt.is(py::dtype::of<float>()) && !dt.is(py::dtype::of<double>()))
    throw py::type_error(std::string(name) + ": dtype " + std::string(py::str(dt)) +
                         ", expected float32 or float64");
  return dt;
}


}  // namespace bind
}  // namespace fusednn
