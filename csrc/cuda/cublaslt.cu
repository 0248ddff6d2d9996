#include "cuda/cublaslt.cuh"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>

#include "cuda/launch.cuh"
#include "cuda/scratch.cuh"

namespace fusednn {
namespace cuda {
namespace lt {

namespace {

// The most workspace the heuristic may ask for. Only what the chosen
// algorithm needs is taken, from the caller's stream (cuda/scratch.cuh), so
// GEMMs on two streams never share a workspace (split-K algorithms write
// partial products into it).
constexpr size_t kMaxWorkspaceBytes = size_t(32) << 20;

[[noreturn]] void fail(cublasStatus_t s, const char* what) {
  throw std::runtime_error(std::string("cuBLASLt: ") + what + " failed: " +
                           cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) + ")");
}

void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail(s, what);
}

// The handle of the current device, created at its first use and kept for the
// life of the process: destroying it from a static destructor would race the
// CUDA runtime's own teardown at exit. A handle is not tied to a stream and
// may be used from several threads at once.
cublasLtHandle_t handle_for(int dev) {
  static std::mutex mu;
  static std::map<int, cublasLtHandle_t> table;
  std::lock_guard<std::mutex> lock(mu);
  cublasLtHandle_t& h = table[dev];
  if (h == nullptr) check(cublasLtCreate(&h), "cublasLtCreate");
  return h;
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

// ---------------------------------------------------------------- the cache

// Everything the heuristic's answer depends on: the device, the types, the
// shape, the leading dimensions, the epilogue with its operands' presence and
// aux leading dimension, and the pointers' alignments.
using Key = std::tuple<int, int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int, bool, bool, int64_t, uint32_t, uint32_t, uint32_t>;

struct Choice {
  bool ok = false;  // false: cuBLASLt has no algorithm for this GEMM
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
};

Key key_of(int dev, const Gemm& g) {
  return Key(dev, int(g.type), int(g.compute), g.trans_a, g.trans_b, g.rows, g.cols, g.inner,
             g.lda, g.ldb, g.ldd, int(g.epilogue), g.bias != nullptr, g.aux != nullptr, g.aux_ld,
             alignment(g.a), alignment(g.b), alignment(g.d));
}

std::mutex cache_mu;
std::map<Key, Choice>& cache() {
  static std::map<Key, Choice> c;
  return c;
}

// ------------------------------------------------------ counts and switches

std::atomic<bool> g_activation_epilogues{true};
std::atomic<bool> g_tf32{false};

struct Counts {
  std::atomic<int64_t> used{0}, refused{0};
};

const std::pair<cublasLtEpilogue_t, const char*> kEpilogues[] = {
    {CUBLASLT_EPILOGUE_DEFAULT, "DEFAULT"},
    {CUBLASLT_EPILOGUE_BIAS, "BIAS"},
    {CUBLASLT_EPILOGUE_RELU, "RELU"},
    {CUBLASLT_EPILOGUE_RELU_BIAS, "RELU_BIAS"},
    {CUBLASLT_EPILOGUE_RELU_AUX, "RELU_AUX"},
    {CUBLASLT_EPILOGUE_RELU_AUX_BIAS, "RELU_AUX_BIAS"},
    {CUBLASLT_EPILOGUE_GELU_AUX, "GELU_AUX"},
    {CUBLASLT_EPILOGUE_GELU_AUX_BIAS, "GELU_AUX_BIAS"},
    {CUBLASLT_EPILOGUE_DRELU, "DRELU"},
    {CUBLASLT_EPILOGUE_DRELU_BGRAD, "DRELU_BGRAD"},
    {CUBLASLT_EPILOGUE_DGELU, "DGELU"},
    {CUBLASLT_EPILOGUE_DGELU_BGRAD, "DGELU_BGRAD"},
    {CUBLASLT_EPILOGUE_BGRADA, "BGRADA"},
};
constexpr int kNumEpilogues = int(sizeof(kEpilogues) / sizeof(kEpilogues[0]));
Counts g_counts[kNumEpilogues];

int epilogue_index(cublasLtEpilogue_t e) {
  for (int i = 0; i < kNumEpilogues; ++i)
    if (kEpilogues[i].first == e) return i;
  return 0;
}

bool log_refusals() {
  static const bool on = [] {
    const char* v = std::getenv("FUSEDNN_LOG_EPILOGUES");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }();
  return on;
}

// Counted at every refused call; printed (when asked) at the first one of a
// shape, the one that asked the heuristic.
void note_refusal(const Gemm& g, cublasStatus_t s, bool first) {
  const int i = epilogue_index(g.epilogue);
  g_counts[i].refused.fetch_add(1, std::memory_order_relaxed);
  if (first && log_refusals())
    std::fprintf(stderr,
                 "fusednn: cuBLASLt refused epilogue %s (%s, %s, D %lld x %lld, inner %lld, aux ld "
                 "%lld): %s; taking the fallback\n",
                 kEpilogues[i].second, g.type == CUDA_R_64F ? "float64" : "float32",
                 g.compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? "tf32" : "full precision",
                 (long long)g.rows, (long long)g.cols, (long long)g.inner, (long long)g.aux_ld,
                 cublasLtGetStatusName(s));
}

// ------------------------------------------------------------------- a GEMM

struct Descriptors {
  Desc desc;
  Layout la, lb, ld;
};

void describe(const Gemm& g, Descriptors& d) {
  const bool f64 = g.compute == CUBLAS_COMPUTE_64F;
  check(cublasLtMatmulDescCreate(&d.desc.h, g.compute, f64 ? CUDA_R_64F : CUDA_R_32F),
        "cublasLtMatmulDescCreate");
  set(d.desc.h, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N));
  set(d.desc.h, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N));
  set(d.desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(g.epilogue));
  // Bias and aux types are left unset: they then default to D's type, which
  // is what we store; setting them explicitly is rejected for some types.
  if (g.bias != nullptr) set(d.desc.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  if (g.aux != nullptr) {
    set(d.desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux);
    set(d.desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, g.aux_ld);
  }
  layout(d.la, g.type, g.trans_a ? g.inner : g.rows, g.trans_a ? g.rows : g.inner, g.lda);
  layout(d.lb, g.type, g.trans_b ? g.cols : g.inner, g.trans_b ? g.inner : g.cols, g.ldb);
  layout(d.ld, g.type, g.rows, g.cols, g.ldd);
}

// The heuristic's first choice, or ok = false where it has none.
Choice choose(cublasLtHandle_t h, const Gemm& g, const Descriptors& d, cublasStatus_t* why) {
  Pref pref;
  check(cublasLtMatmulPreferenceCreate(&pref.h), "cublasLtMatmulPreferenceCreate");
  set(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(kMaxWorkspaceBytes));
  set(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment(g.a));
  set(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment(g.b));
  set(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment(g.d));
  set(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment(g.d));
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h, d.desc.h, d.la.h, d.lb.h, d.ld.h, d.ld.h,
                                                    pref.h, 1, &heur, &found);
  if (s == CUBLAS_STATUS_SUCCESS && (found == 0 || heur.state != CUBLAS_STATUS_SUCCESS))
    s = CUBLAS_STATUS_NOT_SUPPORTED;
  *why = s;
  Choice c;
  if (s != CUBLAS_STATUS_SUCCESS) {
    if (!unsupported(s)) check(s, "cublasLtMatmulAlgoGetHeuristic");
    return c;
  }
  c.ok = true;
  c.algo = heur.algo;
  c.workspace = heur.workspaceSize;
  return c;
}

bool run(const Gemm& g, cudaStream_t stream, bool required) {
  int dev = 0;
  FUSEDNN_CUDA_CHECK(cudaGetDevice(&dev));
  const cublasLtHandle_t h = handle_for(dev);
  Descriptors d;
  describe(g, d);

  // The heuristic costs more than a small GEMM: ask it once per shape.
  const Key key = key_of(dev, g);
  Choice c;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(cache_mu);
    auto it = cache().find(key);
    if (it != cache().end()) c = it->second, cached = true;
  }
  cublasStatus_t s = CUBLAS_STATUS_NOT_SUPPORTED;
  if (!cached) {
    c = choose(h, g, d, &s);
    std::lock_guard<std::mutex> lock(cache_mu);
    cache()[key] = c;
  }
  if (!c.ok) {
    if (!required) {
      note_refusal(g, s, !cached);
      return false;
    }
    check(s, "cublasLtMatmulAlgoGetHeuristic");
  }

  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const bool f64 = g.compute == CUBLAS_COMPUTE_64F;
  const void* alpha = f64 ? static_cast<const void*>(&one_d) : &one_f;
  const void* beta = f64 ? static_cast<const void*>(&zero_d) : &zero_f;
  const Scratch ws(c.workspace, stream);
  // beta = 0: C is never read, D doubles as C.
  s = cublasLtMatmul(h, d.desc.h, alpha, g.a, d.la.h, g.b, d.lb.h, beta, g.d, d.ld.h, g.d, d.ld.h,
                     &c.algo, ws.get(), c.workspace, stream);
  if (!required && s == CUBLAS_STATUS_NOT_SUPPORTED) {
    note_refusal(g, s, true);
    std::lock_guard<std::mutex> lock(cache_mu);
    cache()[key].ok = false;
    return false;
  }
  check(s, "cublasLtMatmul");
  g_counts[epilogue_index(g.epilogue)].used.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace

bool try_matmul(const Gemm& g, cudaStream_t stream) { return run(g, stream, false); }

void matmul(const Gemm& g, cudaStream_t stream) { run(g, stream, true); }

void set_activation_epilogues(bool on) { g_activation_epilogues.store(on); }
bool activation_epilogues() { return g_activation_epilogues.load(); }

void set_tf32(bool on) { g_tf32.store(on); }
bool tf32() { return g_tf32.load(); }

std::vector<EpilogueCount> epilogue_counts() {
  std::vector<EpilogueCount> out;
  for (int i = 0; i < kNumEpilogues; ++i)
    out.push_back({kEpilogues[i].second, g_counts[i].used.load(), g_counts[i].refused.load()});
  return out;
}

}  // namespace lt
}  // namespace cuda
}  // namespace fusednn
