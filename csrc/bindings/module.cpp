// The two extension modules, built from the same binding files
// (bindings/tensor.h): fusednn._C, the CPU kernels with their thread pool and
// BLAS, and with FUSEDNN_BIND_CUDA fusednn._C_cuda. This file holds what one
// module alone has: the enums and records that cross the seam (registered
// once, in fusednn._C) and the runtime's controls and reports.
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <initializer_list>
#include <string>
#include <utility>

#include "bindings/registry.h"
#include "bindings/tensor.h"

#if FUSEDNN_BIND_CUDA
#include <cublasLt.h>

#include "cuda/runtime.cuh"
#else
#include "cpu/host_cache.h"
#include "cpu/kernels.h"
#include "cpu/threads.h"
#endif

namespace py = pybind11;
using namespace fusednn::bind;
using namespace pybind11::literals;

namespace {

#if FUSEDNN_BIND_CUDA

py::dict epilogue_counts() {
  py::dict d;
  for (const auto& c : fusednn::cuda::lt::epilogue_counts())
    d[c.name] = py::dict("used"_a = c.used, "refused"_a = c.refused);
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
  py::module_::import("fusednn._C");  // it registers the enums and OptStep these functions take
  m.def("runtime_status", []() {
    std::string message;
    const bool ok = fusednn::cuda::runtime_status(&message);
    return py::make_tuple(ok, message);
  }, "(True, '<device>, cc X.Y, N devices') or (False, reason); never raises.");
  m.def("build_info", []() {
    return py::dict("cuda_runtime_version"_a = int(CUDART_VERSION),
                    "cublaslt_version"_a = cublasLtGetVersion(), "archs"_a = FUSEDNN_CUDA_ARCHS,
                    "cublaslt_source"_a = FUSEDNN_CUBLASLT_SOURCE);
  }, "CUDA runtime and cuBLASLt versions, compiled archs and where cuBLASLt came from.");
  m.def("set_activation_epilogues", &fusednn::cuda::lt::set_activation_epilogues, "on"_a,
        "Whether dense layers may use cuBLASLt's relu/gelu epilogues (cuda/cublaslt.cuh).");
  m.def("activation_epilogues", &fusednn::cuda::lt::activation_epilogues);
  m.def("set_tf32", &fusednn::cuda::lt::set_tf32, "on"_a,
        "Whether float32 GEMMs may use TF32 tensor cores.");
  m.def("epilogue_counts", &epilogue_counts, "{epilogue: {'used': n, 'refused': n}}.");
  m.def("set_allocator", &set_allocator, "allocate"_a,
        "allocate(shape, dtype name) -> a device array: every output's (cupy.empty).");
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
  m.def("copy_into", [](py::handle dst_obj, py::handle src_obj) {  // bench/'s copy bandwidth
    const Tensor dst = view(dst_obj, "dst"), src = view(src_obj, "src");
    expect_writable(dst);
    expect_size(src, dst.dtype, dst.size);
    py::gil_scoped_release nogil;
    fusednn::cpu::parallel_copy(dst.ptr, src.ptr, dst.size * itemsize(dst.dtype));
  }, "dst"_a, "src"_a);

  // fit's batches of arrays in memory (fusednn.models.batches): out = x[rows],
  // whole rows by fusednn's threads with the GIL released.
  m.def("take_rows", [](py::handle x_obj, py::handle rows_obj, py::handle out_obj) {
    const Tensor x = view(x_obj, "x"), rows = view(rows_obj, "rows"), out = view(out_obj, "out");
    check(x.ndim >= 1, "x", "needs at least one dimension");
    expect(rows, DType::I64, {-1});
    const int64_t n = x.dim(0), m = rows.dim(0);
    check(out.ndim == x.ndim && out.dtype == x.dtype && out.dim(0) == m &&
              std::equal(x.shape + 1, x.shape + x.ndim, out.shape + 1),
          "out", "must have x's dtype and shape but len(rows) rows");
    expect_writable(out);
    const int64_t row_bytes = n > 0 ? x.size / n * itemsize(x.dtype) : 0;
    const char* xb = static_cast<const char*>(x.ptr);
    char* ob = static_cast<char*>(out.ptr);
    check(ob + m * row_bytes <= xb || xb + n * row_bytes <= ob, "out", "must not overlap x");
    const int64_t* r = rows.data<int64_t>();
    for (int64_t i = 0; i < m; ++i)
      if (r[i] < 0 || r[i] >= n)
        throw py::value_error("rows: index " + std::to_string(r[i]) + " is out of range for x's " +
                              std::to_string(n) + " rows");
    py::gil_scoped_release nogil;
    fusednn::cpu::parallel_take_rows(ob, xb, r, m, row_bytes);
  }, "x"_a, "rows"_a, "out"_a, "out = x[rows] (rows: int64 indices into x's first axis).");

  m.def("cpu_dispatch", []() {
    const fusednn::cpu::DispatchInfo& i = fusednn::cpu::dispatch_info();
    return py::dict("level"_a = i.level, "chosen_by"_a = i.chosen_by, "compiled"_a = i.compiled,
                    "supported"_a = i.supported);
  }, "The CPU kernels' level in use, how it was chosen, the levels built and supported.");
  // The pool's limit; fusednn.set_num_threads checks its argument first.
  m.def("set_num_threads", [](int n) {
    check(n >= 1, "set_num_threads", "n must be >= 1");
    fusednn_set_num_threads(n);
  }, "n"_a);
  m.def("num_threads", &fusednn::cpu::num_threads);
  m.def("use_peer_blas", [](const std::string& path) -> py::object {
    const char* symbol = fusednn::cpu::use_peer_blas(path.c_str());
    return symbol == nullptr ? py::object(py::none()) : py::str(symbol);
  }, "path"_a, "Large GEMMs to NumPy's loaded BLAS at `path`: the symbol used, or None.");
  m.def("clear_peer_blas", []() { fusednn::cpu::set_peer_blas(nullptr, nullptr, 0); });
  m.def("pool_stats", []() {
    const fusednn::cpu::PoolStats s = fusednn::cpu::pool_stats();
    return py::dict("calls"_a = s.calls, "worker_chunks"_a = s.worker_chunks,
                    "workers"_a = s.workers, "background"_a = s.background,
                    "background_worker_chunks"_a = s.background_worker_chunks,
                    "background_setting"_a = std::array<const char*, 3>{
                        "auto", "always", "never"}[size_t(fusednn::cpu::background_setting())],
                    "chosen_by"_a = fusednn::cpu::threads_chosen_by());
  }, "The thread pool's counters and what chose its limit.");
  m.def("set_background", [](const std::string& mode) {
    using fusednn::cpu::Background;
    Background b;
    if (mode == "auto")
      b = Background::Auto;
    else if (mode == "always")
      b = Background::Always;
    else if (mode == "never")
      b = Background::Never;
    else
      throw py::value_error("set_background: mode must be 'auto', 'always' or 'never', got '" +
                            mode + "'");
    fusednn::cpu::set_background(b);
  }, "mode"_a,
        "When the CPU step updates a block's parameters on a worker while the backward goes on: "
        "'auto' (on cores where the caller was not preempted lately), 'always', 'never'.");
  m.def("host_cache_info", []() {
    const fusednn::cpu::HostCacheInfo i = fusednn::cpu::host_cache_info();
    return py::dict("idle_bytes"_a = i.idle_bytes, "used_bytes"_a = i.used_bytes,
                    "limit_bytes"_a = i.limit_bytes, "hits"_a = i.hits, "misses"_a = i.misses,
                    "min_block_bytes"_a = fusednn::cpu::kHostCacheMin);
  });
  m.def("host_cache_empty", &fusednn::cpu::host_cache_empty);
  m.def("host_cache_set_limit", [](int64_t bytes) {
    check(bytes >= 0, "host_cache_set_limit", "bytes must be >= 0");
    fusednn::cpu::host_cache_set_limit(size_t(bytes));
  }, "bytes"_a);
  m.def("blas_num_threads", &fusednn::cpu::blas_num_threads);
  m.def("blas_config", &fusednn::cpu::blas_config);
  run_registrars(m);
}
#endif
