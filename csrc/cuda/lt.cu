#include "cuda/lt.cuh"

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda/launch.cuh"

namespace fusednn {
namespace cuda {
namespace lt {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

[[noreturn]] void fail(cublasStatus_t s, const char* what) {
  throw std::runtime_error(std::string("cuBLASLt: ") + what + " failed: " +
                           cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) + ")");
}

void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail(s, what);
}

struct Device {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// Created on first use on each device and kept for the life of the process:
// destroying them from a static destructor would race the CUDA runtime's own
// teardown at exit. cudaMalloc is outside any stream, so the first GEMM on a
// device must not happen during CUDA graph capture.
Device device_state() {
  static std::mutex mu;
  static std::map<int, Device> table;
  int dev = 0;
  FUSEDNN_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  Device& d = table[dev];
  if (d.workspace == nullptr) FUSEDNN_CUDA_CHECK(cudaMalloc(&d.workspace, kWorkspaceBytes));
  if (d.handle == nullptr) check(cublasLtCreate(&d.handle), "cublasLtCreate");
  return d;
}

template <typename H, cublasStatus_t (*destroy)(H)>
struct Owned {
  H h = nullptr;
  Owned() = default;
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() {
    if (h != nullptr) destroy(h);
  }
};
using Desc = Owned<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using Layout = Owned<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using Pref = Owned<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

template <typename V>
void set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const V& v) {
  check(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)), "cublasLtMatmulDescSetAttribute");
}

template <typename V>
void set(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr, const V& v) {
  check(cublasLtMatmulPreferenceSetAttribute(p, attr, &v, sizeof(v)),
        "cublasLtMatmulPreferenceSetAttribute");
}

void layout(Layout& l, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  check(cublasLtMatrixLayoutCreate(&l.h, type, uint64_t(rows), uint64_t(cols), ld),
        "cublasLtMatrixLayoutCreate");
}

// The heuristic cannot see the A/B/D pointers; telling it their alignment keeps
// it from picking a vectorised kernel that an offset view would break.
uint32_t alignment(const void* p) {
  uint32_t a = 256;
  while (a > 1 && reinterpret_cast<uintptr_t>(p) % a != 0) a /= 2;
  return a;
}

bool unsupported(cublasStatus_t s) {
  return s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_INVALID_VALUE;
}

bool run(const Gemm& g, cudaStream_t stream, bool required) {
  const Device dev = device_state();
  const bool f64 = g.compute == CUBLAS_COMPUTE_64F;

  Desc desc;
  check(cublasLtMatmulDescCreate(&desc.h, g.compute, f64 ? CUDA_R_64F : CUDA_R_32F),
        "cublasLtMatmulDescCreate");
  set(desc.h, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N));
  set(desc.h, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N));
  set(desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(g.epilogue));
  // Bias and aux types are left unset: they then default to D's type, which
  // is what we store; setting them explicitly is rejected for some types.
  if (g.bias != nullptr) set(desc.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  if (g.aux != nullptr) {
    set(desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux);
    set(desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, g.aux_ld);
  }

  Layout la, lb, ld;
  layout(la, g.type, g.trans_a ? g.inner : g.rows, g.trans_a ? g.rows : g.inner, g.lda);
  layout(lb, g.type, g.trans_b ? g.cols : g.inner, g.trans_b ? g.inner : g.cols, g.ldb);
  layout(ld, g.type, g.rows, g.cols, g.ldd);

  Pref pref;
  check(cublasLtMatmulPreferenceCreate(&pref.h), "cublasLtMatmulPreferenceCreate");
  set(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(kWorkspaceBytes));
  set(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment(g.a));
  set(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment(g.b));
  set(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment(g.d));
  set(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment(g.d));

  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(dev.handle, desc.h, la.h, lb.h, ld.h, ld.h,
                                                    pref.h, 1, &heur, &found);
  if (s == CUBLAS_STATUS_SUCCESS && (found == 0 || heur.state != CUBLAS_STATUS_SUCCESS))
    s = CUBLAS_STATUS_NOT_SUPPORTED;
  if (!required && unsupported(s)) return false;
  check(s, "cublasLtMatmulAlgoGetHeuristic");

  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const void* alpha = f64 ? static_cast<const void*>(&one_d) : &one_f;
  const void* beta = f64 ? static_cast<const void*>(&zero_d) : &zero_f;
  // beta = 0: C is never read, D doubles as C.
  s = cublasLtMatmul(dev.handle, desc.h, alpha, g.a, la.h, g.b, lb.h, beta, g.d, ld.h, g.d, ld.h,
                     &heur.algo, dev.workspace, kWorkspaceBytes, stream);
  if (!required && s == CUBLAS_STATUS_NOT_SUPPORTED) return false;
  check(s, "cublasLtMatmul");
  return true;
}

}  // namespace

bool try_matmul(const Gemm& g, cudaStream_t stream) { return run(g, stream, false); }

void matmul(const Gemm& g, cudaStream_t stream) { run(g, stream, true); }

}  // namespace lt
}  // namespace cuda
}  // namespace fusednn
