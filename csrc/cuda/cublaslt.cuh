// cuBLASLt plumbing: one handle per device, the chosen algorithm cached per
// GEMM shape, and one call that runs a column-major GEMM with an epilogue on
// the caller's stream (its workspace from that stream's scratch memory).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>
#include <vector>

namespace fusednn {
namespace cuda {
namespace lt {

// Column-major D (rows x cols, ld ldd) = op(A) op(B), op(A): rows x inner,
// op(B): inner x cols. A is stored rows x inner (inner x rows when trans_a),
// B inner x cols (cols x inner when trans_b).
struct Gemm {
  cudaDataType_t type = CUDA_R_32F;  // of A, B, D, bias and aux
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  bool trans_a = false, trans_b = false;
  int64_t rows = 0, cols = 0, inner = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* d = nullptr;
  int64_t ldd = 0;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;  // BIAS: input of length rows; BGRADA, D*_BGRAD: output, length rows
  // rows x cols, laid out like D with leading dimension aux_ld. GELU_AUX: output, the GELU
  // input (aux_ld in elements, a multiple of 8); RELU_AUX: output, the bitmask of D > 0
  // (aux_ld in bits, a multiple of 128). DGELU, DRELU: the same, read back as input.
  const void* aux = nullptr;
  int64_t aux_ld = 0;
};

// An empty descriptor for T (float or double) with the compute type the
// caller asked for; scale type follows (float for the 32F variants).
template <typename T>
Gemm gemm_for(bool tf32) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "type");
  Gemm g;
  if (std::is_same<T, double>::value) {
    g.type = CUDA_R_64F;
    g.compute = CUBLAS_COMPUTE_64F;
  } else {
    g.type = CUDA_R_32F;
    g.compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  }
  return g;
}

// Runs g on stream. Returns false, having written nothing, when cuBLASLt has no
// algorithm for this combination (epilogue, type, alignment): the caller then
// takes its fallback. Throws std::runtime_error on any other failure.
bool try_matmul(const Gemm& g, cudaStream_t stream);

// As try_matmul, but a missing algorithm is an error too.
void matmul(const Gemm& g, cudaStream_t stream);

// Epilogue vectors and matrices need this alignment in cuBLASLt.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Whether the dense kernels may use cuBLASLt's activation epilogues (RELU,
// GELU and their AUX / D* / BGRAD forms). On by default. Off, cuBLASLt does
// the GEMM (and the bias) and the activation runs in the kernels shared with
// the CPU: NaN propagates through relu as on the CPU (cuBLASLt's relu is
// max(z, 0), which maps NaN to 0), and GELU is the float32 tanh of
// fusednn/activation.h rather than cuBLASLt's faster approximation.
void set_activation_epilogues(bool on);
bool activation_epilogues();

// Whether float32 GEMMs may use TF32 tensor cores (fusednn's
// set_float32_matmul_precision("high")); off by default.
void set_tf32(bool on);
bool tf32();

// How often each epilogue ran and how often cuBLASLt refused it (the caller
// then took its fallback), since the process started. Refusals are also
// printed to stderr, once per GEMM shape, when FUSEDNN_LOG_EPILOGUES=1.
struct EpilogueCount {
  const char* name;
  int64_t used, refused;
};
std::vector<EpilogueCount> epilogue_counts();

}  // namespace lt
}  // namespace cuda
}  // namespace fusednn
