// view() and empty() of bindings/tensor.h for the module this file is
// compiled into (host memory, or device memory with FUSEDNN_BIND_CUDA).
#include "bindings/tensor.h"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <limits>
#include <new>
#include <string>
#include <vector>

#if !FUSEDNN_BIND_CUDA
#include "cpu/host_cache.h"
#endif

namespace fusednn {
namespace bind {

namespace {

const char* const kMemory = kDevice ? "GPU (device) memory" : "host memory";

// DLPack's C ABI (dlpack.h v0.8), the parts read here. device_type: 1 CPU,
// 2 CUDA, 3 CUDA host (pinned), 13 CUDA managed; dtype code: 0 int, 1 uint,
// 2 float, 5 complex, 6 bool.
struct DLTensor {
  void* data;
  int32_t device_type, device_id;
  int32_t ndim;
  uint8_t code, bits;
  uint16_t lanes;
  int64_t *shape, *strides;  // strides in elements; null: C-contiguous
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};

// (kind, bytes, name) of each DType, in its order.
constexpr struct {
  char kind;
  int64_t size;
  const char* name;
} kTypes[] = {{'f', 4, "float32"}, {'f', 8, "float64"}, {'u', 1, "uint8"},
                               {'u', 4, "uint32"},  {'i', 4, "int32"},   {'i', 8, "int64"},
                               {'?', 1, "other"}};

[[noreturn]] void type_error(const char* name, const std::string& what) {
  throw py::type_error(std::string(name) + ": " + what);
}
[[noreturn]] void value_error(const char* name, const std::string& what) {
  throw py::value_error(std::string(name) + ": " + what);
}

DType from_kind(char kind, int64_t size) {
  for (int i = 0; i < int(DType::Other); ++i)
    if (kTypes[i].kind == kind && kTypes[i].size == size) return DType(i);
  return DType::Other;
}

// NumPy's name of a dtype given as kind and size ("float16", "complex64").
// A size no dtype has (an array interface's typestr may say anything) is
// named as the typestr spells it: 8 * size could overflow.
std::string describe(char kind, int64_t size) {
  if (size <= 0 || size > 64) return std::string(1, kind) + std::to_string(size);
  const std::string bits = std::to_string(8 * size);
  return kind == 'f' ? "float" + bits : kind == 'i' ? "int" + bits : kind == 'u' ? "uint" + bits
       : kind == 'c' ? "complex" + bits : kind == 'b' ? "bool" : std::string("kind ") + kind;
}

// The checks common to every source: dtype (`type` names it, built only for
// the error), dims, C order (strides in bytes, null: C-contiguous), alignment.
template <typename Describe>
Tensor& finish(Tensor& t, const char* name, int nd, const int64_t* dims, const int64_t* strides,
               Describe type) {
  if (t.dtype == DType::Other) type_error(name, "dtype " + std::string(type()) + " unsupported");
  if (nd > kMaxDims) value_error(name, "has " + std::to_string(nd) + " dims, at most 8 allowed");
  t.name = name;
  t.ndim = nd;
  t.size = 1;
  for (int i = 0; i < nd; ++i) {
    check(dims[i] >= 0, name, "negative dimension");
    t.size = count(name, t.size, t.shape[i] = dims[i]);
  }
  // Its bytes too must count in int64_t (an array interface may describe
  // memory no array has): the C-order strides below are partial products of
  // them.
  count(name, t.size, itemsize(t.dtype));
  for (int64_t i = nd - 1, step = itemsize(t.dtype); strides != nullptr && t.size > 0 && i >= 0;
       step *= dims[i--])
    check(dims[i] == 1 || strides[i] == step, name, "must be C-contiguous");
  check(t.size == 0 || reinterpret_cast<uintptr_t>(t.ptr) % itemsize(t.dtype) == 0, name,
        "is not aligned to its element size");
  return t;
}

Tensor from_numpy(py::handle h, const char* name) {
  auto a = py::reinterpret_borrow<py::array>(h);
  const py::dtype dt = a.dtype();
  Tensor t;
  t.ptr = const_cast<void*>(a.data());
  t.dtype = dt.byteorder() == '>' ? DType::Other : from_kind(dt.kind(), dt.itemsize());
  t.writable = a.writeable();
  check(a.flags() & py::array::c_style, name, "must be C-contiguous");
  int64_t dims[kMaxDims];
  for (int i = 0; i < a.ndim() && i < kMaxDims; ++i) dims[i] = a.shape(i);
  return finish(t, name, int(a.ndim()), dims, nullptr, [&] { return std::string(py::str(dt)); });
}

// __array_interface__ / __cuda_array_interface__ (version 3): shape,
// typestr, data = (address, read-only), strides (None: C-contiguous).
Tensor from_interface(const py::dict& d, const char* name) {
  Tensor t;
  const std::string ts = py::str(d["typestr"]);
  if (ts.size() < 3 || !d.contains("data") || !py::isinstance<py::tuple>(d["data"]))
    type_error(name, "its array interface has no typestr or (address, read-only) data");
  const int64_t size = std::stoll(ts.substr(2));
  t.dtype = ts[0] == '>' ? DType::Other : from_kind(ts[1], size);
  const py::tuple data = d["data"];
  t.ptr = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  t.writable = !data[1].cast<bool>();
  std::vector<int64_t> dims, strides;
  for (auto s : d["shape"].cast<py::tuple>()) dims.push_back(s.cast<int64_t>());
  const bool strided = d.contains("strides") && !d["strides"].is_none();
  if (strided)
    for (auto s : d["strides"].cast<py::tuple>()) strides.push_back(s.cast<int64_t>());
  check(!strided || strides.size() == dims.size(), name, "strides do not match shape");
  return finish(t, name, int(dims.size()), dims.data(), strided ? strides.data() : nullptr,
                [&] { return ts[0] == '>' ? "big-endian " + ts : describe(ts[1], size); });
}

Tensor from_dlpack(py::handle h, const char* name) {
  py::object cap = h.attr("__dlpack__")();
  auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  if (mt == nullptr) {
    PyErr_Clear();
    type_error(name, "__dlpack__ returned no unused 'dltensor' capsule");
  }
  // From here the tensor is ours: its deleter runs when `keep` goes.
  PyCapsule_SetName(cap.ptr(), "used_dltensor");
  Tensor t;
  t.keep = py::capsule(mt, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter != nullptr) m->deleter(m);
  });
  const DLTensor& dl = mt->dl;
  const int dev = dl.device_type;
  if (kDevice ? (dev != 2 && dev != 13) : (dev != 1 && dev != 3 && dev != 13))
    type_error(name, "a DLPack tensor on device type " + std::to_string(dev) +
                         ", these kernels need " + kMemory);
  const char kind = dl.code < 7 ? "iuf??cb"[dl.code] : '?';
  t.dtype = dl.lanes == 1 ? from_kind(kind, dl.bits / 8) : DType::Other;
  t.ptr = static_cast<char*>(dl.data) + dl.byte_offset;
  t.writable = true;  // unversioned DLPack has no read-only flag
  std::vector<int64_t> strides;
  // In bytes; a stride too large for that is no C-order stride (-1: refused
  // by finish unless its dimension is 1, where any stride is allowed).
  for (int i = 0; dl.strides != nullptr && i < dl.ndim && i < kMaxDims; ++i) {
    int64_t bytes;
    if (__builtin_mul_overflow(dl.strides[i], int64_t(dl.bits / 8), &bytes)) bytes = -1;
    strides.push_back(bytes);
  }
  return finish(t, name, dl.ndim, dl.shape, dl.strides ? strides.data() : nullptr,
                [&] { return describe(kind, dl.bits / 8); });
}

#if FUSEDNN_BIND_CUDA
PyObject* g_allocator = nullptr;
#else
// A NumPy array of `bytes`, large ones from the host buffer cache.
py::array host_array(DType dt, const std::vector<py::ssize_t>& dims, int64_t bytes) {
  static const py::dtype dtypes[] = {py::dtype::of<float>(),   py::dtype::of<double>(),
                                     py::dtype::of<uint8_t>(), py::dtype::of<uint32_t>(),
                                     py::dtype::of<int32_t>(), py::dtype::of<int64_t>()};
  if (size_t(bytes) < cpu::kHostCacheMin) return py::array(dtypes[int(dt)], dims);
  struct Block {
    void *p = nullptr;
    size_t size = 0;
  }* b = new Block;
  py::capsule owner(b, [](void* q) {  // owns the block from here on, also on an exception
    Block* blk = static_cast<Block*>(q);
    if (blk->p != nullptr) cpu::host_cache_release(blk->p, blk->size);
    delete blk;
  });
  b->p = cpu::host_cache_acquire(size_t(bytes), &b->size);
  if (b->p == nullptr) throw std::bad_alloc();
  return py::array(dtypes[int(dt)], dims, b->p, owner);
}
#endif

}  // namespace

int64_t itemsize(DType t) { return kTypes[int(t)].size; }
const char* dtype_name(DType t) { return kTypes[int(t)].name; }

Tensor view(py::handle h, const char* name) {
  if (!kDevice && py::isinstance<py::array>(h)) return from_numpy(h, name);
  const char* own = kDevice ? "__cuda_array_interface__" : "__array_interface__";
  const char* other = kDevice ? "__array_interface__" : "__cuda_array_interface__";
  if (py::hasattr(h, own)) return from_interface(h.attr(own).cast<py::dict>(), name);
  if (py::hasattr(h, "__dlpack__")) return from_dlpack(h, name);
  const std::string type = py::str(py::type::handle_of(h).attr("__name__"));
  if (py::isinstance<py::array>(h) || py::hasattr(h, other))
    type_error(name, "a " + type + " array, these kernels need " + kMemory);
  type_error(name, "expected an array, got " + type);
}

Tensor view_or_none(py::handle h, const char* name) {
  return h.is_none() ? Tensor{nullptr, DType::Other, -1, {}, 0, false, name} : view(h, name);
}

Tensor empty(DType dt, std::initializer_list<int64_t> shape) {
  return empty_shape(dt, int(shape.size()), shape.begin());
}

Tensor empty_shape(DType dt, int nd, const int64_t* shape) {
  int64_t bytes = itemsize(dt);
  std::vector<py::ssize_t> dims(shape, shape + nd);
  for (int64_t d : dims) bytes = count("output", bytes, d);
#if FUSEDNN_BIND_CUDA
  if (g_allocator == nullptr) throw std::runtime_error("fusednn._C_cuda: no allocator set");
  py::object a = py::reinterpret_borrow<py::object>(g_allocator)(py::tuple(py::cast(dims)),
                                                                 dtype_name(dt));
  Tensor t = view(a, "output");
  if (t.dtype != dt || t.size * itemsize(dt) != bytes)
    throw std::runtime_error("fusednn._C_cuda: the allocator returned a wrong array");
#else
  py::array a = host_array(dt, dims, bytes);
  Tensor t;
  t.ptr = a.mutable_data();
  t.dtype = dt;
  finish(t, "output", nd, shape, nullptr, [] { return ""; });
  t.writable = true;
#endif
  t.keep = std::move(a);
  return t;
}

DType float_dtype(const Tensor& t) {
  if (t.dtype == DType::F32 || t.dtype == DType::F64) return t.dtype;
  type_error(t.name, std::string("dtype ") + dtype_name(t.dtype) + ", expected float32 or 64");
}

void expect(const Tensor& t, DType dt, std::initializer_list<int64_t> dims) {
  expect_size(t, dt, t.size);
  if (t.ndim != int(dims.size()))
    value_error(t.name, "has " + std::to_string(t.ndim) + " dims, expected " +
                            std::to_string(dims.size()));
  int i = 0;
  for (int64_t d : dims) {
    if (d >= 0 && t.shape[i] != d)
      value_error(t.name, "dim " + std::to_string(i) + " is " + std::to_string(t.shape[i]) +
                              ", expected " + std::to_string(d));
    // OpenBLAS here takes 32-bit dimensions.
    if (t.shape[i++] > std::numeric_limits<int32_t>::max() && !kDevice)
      value_error(t.name, "dimension too large for 32-bit BLAS");
  }
}

void expect_size(const Tensor& t, DType dt, int64_t n) {
  if (t.dtype != dt)
    type_error(t.name, std::string("dtype ") + dtype_name(t.dtype) + ", expected " +
                           dtype_name(dt));
  if (t.size != n)
    value_error(t.name, "has " + std::to_string(t.size) + " elements, not " + std::to_string(n));
}

void expect_writable(const Tensor& t) { check(t.writable, t.name, "is read-only"); }

void require_given(const Tensor& t, const char* why) {
  if (t.none()) value_error(t.name, std::string("required ") + why);
}

int64_t count(const char* what, int64_t a, int64_t b) {
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a)
    value_error(what, "size " + std::to_string(a) + " x " + std::to_string(b) + " overflows");
  return a * b;
}

Stream as_stream(uintptr_t s) {
#if FUSEDNN_BIND_CUDA
  return reinterpret_cast<cudaStream_t>(s);
#else
  if (s != 0) value_error("stream", "the CPU kernels take 0, got " + std::to_string(s));
  return {};
#endif
}

void check_rate(const char* fn, double rate) {
  check(rate >= 0.0 && rate < 1.0, fn, "rate must be in [0, 1)");
}

#if FUSEDNN_BIND_CUDA
void set_allocator(py::object f) {
  Py_XDECREF(g_allocator);
  g_allocator = f.release().ptr();
}
#endif

}  // namespace bind
}  // namespace fusednn
