// The two extension modules, built from the same binding files (see
// bindings/tensor.h): fusednn._C, the CPU kernels with their thread pool and
// BLAS, and, with FUSEDNN_BIND_CUDA, fusednn._C_cuda, the CUDA kernels. Each
// op family registers its functions from its own file (bindings/registry.h);
// this file holds what belongs to one module only: the enums and records
// that cross the seam (registered once, in fusednn._C) and the runtime's
// controls and reports.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "bindings/registry.h"
#include "bindings/tensor.h"

#if FUSEDNN_BIND_CUDA
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "cuda/cublaslt.cuh"
#else
#include <dlfcn.h>
#include <pybind11/numpy.h>

#include "cpu/blas.h"
#include "cpu/dispatch.h"
#include "cpu/host_cache.h"
#include "cpu/kernels.h"
#include "cpu/threads.h"
#include "fusednn/activation.h"
#include "fusednn/batchnorm.h"
#include "fusednn/loss.h"
#include "fusednn/optimizer.h"
#endif

namespace py = pybind11;
using namespace fusednn::bind;

namespace {

#if FUSEDNN_BIND_CUDA

// The CUDA version a driver supports, as CUDART_VERSION counts (13000 for
// 13.0), printed as "13.0".
std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

py::tuple runtime_status() {
  // With no driver, cudart_static reports an error here instead of failing to
  // load, which is what makes this safe on a machine without a GPU. A driver
  // of an older CUDA major version than the runtime's is named as such
  // (cudaGetDeviceCount would only say "CUDA driver version is
  // insufficient"); within a major version, minor version compatibility lets
  // an older driver run the newer runtime.
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    cudaGetLastError();
    return py::make_tuple(false, std::string("no NVIDIA driver (libcuda.so not found)"));
  }
  if (driver / 1000 < CUDART_VERSION / 1000) {
    cudaGetLastError();
    return py::make_tuple(false, "driver too old: it supports CUDA " +
                                     cuda_version_string(driver) +
                                     ", fusednn was built with CUDA " +
                                     cuda_version_string(CUDART_VERSION) +
                                     " (update the NVIDIA driver)");
  }
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n < 1) e = cudaErrorNoDevice;
  int dev = 0;
  cudaDeviceProp prop{};
  if (e == cudaSuccess) e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, dev);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it, so no later call reports it as its own
    return py::make_tuple(false, std::string(cudaGetErrorString(e)));
  }
  return py::make_tuple(true, std::string(prop.name) + ", cc " + std::to_string(prop.major) + "." +
                                  std::to_string(prop.minor) + ", " + std::to_string(n) +
                                  (n == 1 ? " device" : " devices") + ", driver CUDA " +
                                  cuda_version_string(driver));
}

py::dict epilogue_counts() {
  py::dict d;
  for (const auto& c : fusednn::cuda::lt::epilogue_counts()) {
    py::dict row;
    row["used"] = c.used;
    row["refused"] = c.refused;
    d[c.name] = row;
  }
  return d;
}

py::dict build_info() {
  py::dict d;
  d["cuda_runtime_version"] = int(CUDART_VERSION);
  d["cublaslt_version"] = py::int_(cublasLtGetVersion());
  d["archs"] = std::string(FUSEDNN_CUDA_ARCHS);
  d["cublaslt_source"] = std::string(FUSEDNN_CUBLASLT_SOURCE);
  return d;
}

#else

// One py::enum_ from (name, member) pairs: the members are listed once, here.
template <typename E>
void bind_enum(py::module_& m, const char* name, const char* doc,
               std::initializer_list<std::pair<const char*, E>> members) {
  py::enum_<E> e(m, name, doc);
  for (const auto& [member, value] : members) e.value(member, value);
}

void register_types(py::module_& m) {
  using fusednn::Act;
  bind_enum<Act>(m, "Act", "Activation kernels (fusednn/activation.h).",
                 {{"Linear", Act::Linear}, {"Relu", Act::Relu}, {"LeakyRelu", Act::LeakyRelu},
                  {"Elu", Act::Elu}, {"Selu", Act::Selu}, {"Gelu", Act::Gelu},
                  {"GeluTanh", Act::GeluTanh}, {"Swish", Act::Swish}, {"Mish", Act::Mish},
                  {"Sigmoid", Act::Sigmoid}, {"Tanh", Act::Tanh}, {"Softplus", Act::Softplus}});
  using fusednn::BnConvention;
  bind_enum<BnConvention>(m, "BnConvention",
                          "How momentum updates the moving statistics (fusednn/batchnorm.h).",
                          {{"Keras", BnConvention::Keras}, {"Torch", BnConvention::Torch}});
  using fusednn::PointLoss;
  bind_enum<PointLoss>(m, "PointLoss", "Element-wise losses (fusednn/loss.h).",
                       {{"SigmoidBCE", PointLoss::SigmoidBCE}, {"MSE", PointLoss::MSE}});
  using fusednn::Opt;
  bind_enum<Opt>(m, "Opt", "Optimizer update rules (fusednn/optimizer.h).",
                 {{"SGD", Opt::SGD}, {"Adagrad", Opt::Adagrad}, {"RMSprop", Opt::RMSprop},
                  {"Adam", Opt::Adam}, {"Adamax", Opt::Adamax}, {"Nadam", Opt::Nadam},
                  {"Ftrl", Opt::Ftrl}});
  using fusednn::Clip;
  bind_enum<Clip>(m, "Clip", "Gradient clipping modes, one at most (fusednn/optimizer.h).",
                  {{"Off", Clip::Off}, {"Value", Clip::Value}, {"Norm", Clip::Norm},
                   {"Global", Clip::Global}});

  using Step = fusednn::OptStep<double>;
  py::class_<Step> step(m, "OptStep",
                        "The scalars of one optimizer step (fusednn::OptStep): zero-initialised; "
                        "each rule sets the fields it reads.");
  step.def(py::init<>());
  using Field = std::pair<const char*, double Step::*>;
  for (const auto& [name, field] : std::initializer_list<Field>{
           {"lr", &Step::lr}, {"beta_1", &Step::beta_1}, {"beta_2", &Step::beta_2},
           {"rho", &Step::rho}, {"momentum", &Step::momentum}, {"epsilon", &Step::epsilon},
           {"step_size", &Step::step_size}, {"m_weight", &Step::m_weight},
           {"g_weight", &Step::g_weight}, {"v_correction", &Step::v_correction},
           {"decay", &Step::decay}, {"clipvalue", &Step::clipvalue}, {"l1", &Step::l1},
           {"l2", &Step::l2}, {"shrinkage", &Step::shrinkage}, {"lr_power", &Step::lr_power}})
    step.def_readwrite(name, field);
  step.def_readwrite("nesterov", &Step::nesterov)
      .def_readwrite("centered", &Step::centered)
      .def_readwrite("amsgrad", &Step::amsgrad);
}

#endif

}  // namespace

#if FUSEDNN_BIND_CUDA
PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "fusednn CUDA kernels (cuBLASLt GEMMs with fused epilogues) for arrays in GPU "
            "memory, on the stream each call names.";
  // The enums and OptStep are registered by fusednn._C; these functions take
  // them, so it must be loaded first.
  py::module_::import("fusednn._C");
  m.def("runtime_status", &runtime_status,
        "(True, '<device>, cc X.Y, N devices') when a GPU is usable, else (False, reason). "
        "Never raises, also on a machine without a CUDA driver.");
  m.def("build_info", &build_info,
        "CUDA runtime and cuBLASLt versions, compiled archs and where cuBLASLt came from.");
  m.def("set_activation_epilogues", &fusednn::cuda::lt::set_activation_epilogues, py::arg("on"),
        "Whether dense layers may use cuBLASLt's activation epilogues (relu, gelu and their "
        "gradients); off, the activation runs in fusednn's own kernels (NaN-propagating relu, "
        "fusednn's tanh GELU).");
  m.def("activation_epilogues", &fusednn::cuda::lt::activation_epilogues);
  m.def("epilogue_counts", &epilogue_counts,
        "{epilogue name: {'used': n, 'refused': n}}: cuBLASLt GEMMs run with each epilogue, "
        "and calls where cuBLASLt had no algorithm for it (the fallback ran instead).");

  m.def("set_allocator", &set_allocator, py::arg("allocate"),
        "allocate(shape, dtype name) -> a device array on the current device: where every "
        "output and scratch buffer comes from (fusednn uses cupy.empty, CuPy's pool).");
  run_registrars(m);
}
#else
PYBIND11_MODULE(_C, m) {
  m.doc() = "fusednn CPU kernels (OpenBLAS GEMM tiles + fused epilogues on one thread pool)";
  // An invalid FUSEDNN_NUM_THREADS is the ImportError of `import fusednn`.
  if (*fusednn::cpu::threads_env_error() != '\0')
    throw std::runtime_error(fusednn::cpu::threads_env_error());
  fusednn::cpu::blas_single_thread();
  // The kernels of this CPU's level (cpu/dispatch.h); an error here, such as
  // an unknown FUSEDNN_CPU_DISPATCH, is the ImportError of `import fusednn`.
  fusednn::cpu::load_kernels(reinterpret_cast<const void*>(&fusednn::cpu::dispatch_info));

  register_types(m);
  m.def(
      "copy_into",
      [](py::array dst, const py::array& src) {
        // For bench/: the machine's copy bandwidth on fusednn's threads.
        if (!(dst.flags() & py::array::c_style) || !(src.flags() & py::array::c_style) ||
            !dst.writeable() || dst.nbytes() != src.nbytes())
          throw py::value_error("copy_into: dst and src must be C-contiguous, dst writable, "
                                "and of equal byte size");
        void* d = dst.mutable_data();
        const void* s = src.data();
        const int64_t bytes = int64_t(src.nbytes());
        py::gil_scoped_release nogil;
        fusednn::cpu::parallel_copy(d, s, bytes);
      },
      py::arg("dst"), py::arg("src"));

  m.def("cpu_dispatch", []() {
    const fusednn::cpu::DispatchInfo& i = fusednn::cpu::dispatch_info();
    py::dict d;
    d["level"] = i.level;
    d["chosen_by"] = i.chosen_by;
    d["compiled"] = i.compiled;
    d["supported"] = i.supported;
    return d;
  }, "The CPU kernels' instruction-set level in use, how it was chosen (cpuid or "
     "FUSEDNN_CPU_DISPATCH), the levels built and those this CPU runs.");
  // The pool's limit; fusednn.set_num_threads checks its argument first.
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    fusednn_set_num_threads(n);
  }, py::arg("n"));
  m.def("num_threads", &fusednn::cpu::num_threads);
  m.def("use_peer_blas", [](const std::string& path) -> py::object {
    // Only a library already loaded (NumPy's): RTLD_NOLOAD never loads one.
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (lib == nullptr) return py::none();
    // (sgemm, dgemm, 64-bit integers): scipy-openblas64 (NumPy's wheels),
    // an OpenBLAS built with a 64_ suffix, then a plain 32-bit CBLAS.
    static const struct { const char *s, *d; int int64; } names[] = {
        {"scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", 1},
        {"cblas_sgemm64_", "cblas_dgemm64_", 1},
        {"scipy_cblas_sgemm", "scipy_cblas_dgemm", 0},
        {"cblas_sgemm", "cblas_dgemm", 0}};
    for (const auto& n : names) {
      void* sg = dlsym(lib, n.s);
      void* dg = dlsym(lib, n.d);
      if (sg != nullptr && dg != nullptr) {
        fusednn::cpu::set_peer_blas(sg, dg, n.int64);
        return py::str(n.s);
      }
    }
    return py::none();
  }, py::arg("path"), "Sends large GEMMs to the cblas_sgemm/dgemm of the already loaded library "
     "at `path` (NumPy's BLAS); the symbol used, or None when none was found.");
  m.def("clear_peer_blas", []() { fusednn::cpu::set_peer_blas(nullptr, nullptr, 0); });
  m.def("pool_stats", []() {
    const fusednn::cpu::PoolStats s = fusednn::cpu::pool_stats();
    py::dict d;
    d["calls"] = s.calls;
    d["worker_chunks"] = s.worker_chunks;
    d["workers"] = s.workers;
    d["chosen_by"] = std::string(fusednn::cpu::threads_chosen_by());
    return d;
  }, "The thread pool's counters: calls that used it, chunks run by workers, workers started, "
     "and what chose the thread limit.");
  m.def("host_cache_info", []() {
    const fusednn::cpu::HostCacheInfo i = fusednn::cpu::host_cache_info();
    py::dict d;
    d["idle_bytes"] = i.idle_bytes;
    d["used_bytes"] = i.used_bytes;
    d["limit_bytes"] = i.limit_bytes;
    d["hits"] = i.hits;
    d["misses"] = i.misses;
    d["min_block_bytes"] = fusednn::cpu::kHostCacheMin;
    return d;
  });
  m.def("host_cache_empty", &fusednn::cpu::host_cache_empty);
  m.def("host_cache_set_limit", [](int64_t bytes) {
    if (bytes < 0)
      throw py::value_error("host_cache_set_limit: bytes must be >= 0, got " +
                            std::to_string(bytes));
    fusednn::cpu::host_cache_set_limit(size_t(bytes));
  }, py::arg("bytes"));
  m.def("blas_num_threads", &fusednn::cpu::blas_num_threads);
  m.def("blas_config", &fusednn::cpu::blas_config);
  run_registrars(m);
}
#endif
