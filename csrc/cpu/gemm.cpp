// The GEMM wrappers, compiled into fusednn._C and into every level's kernel
// library (cpu/dispatch.h): thin calls into the one OpenBLAS all of them load.
#include <cstdint>
#include <type_traits>

#include "cblas.h"
#include "cpu/blas.h"

namespace fusednn {
namespace cpu {

namespace {
CBLAS_TRANSPOSE tr(bool t) { return t ? CblasTrans : CblasNoTrans; }

// Degenerate shapes never reach OpenBLAS: an empty product is beta * C.
template <typename T>
bool degenerate(int64_t m, int64_t n, int64_t k, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return true;
  if (k > 0) return false;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
  return true;
}
}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (degenerate(m, n, k, beta, c, ldc)) return;
  scipy_cblas_sgemm(CblasRowMajor, tr(ta), tr(tb), (blasint)m, (blasint)n, (blasint)k, alpha, a,
                    (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                  int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (degenerate(m, n, k, beta, c, ldc)) return;
  scipy_cblas_dgemm(CblasRowMajor, tr(ta), tr(tb), (blasint)m, (blasint)n, (blasint)k, alpha, a,
                    (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

namespace {
// The CBLAS row-major/transpose enums are C ints in every BLAS.
template <typename T, typename I>
using CblasGemm = void (*)(int, int, int, I, I, I, T, const T*, I, const T*, I, T, T*, I);

template <typename T>
bool peer_call(void* fn, int int64, bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha,
               const T* a, int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const int order = CblasRowMajor, ta_ = tr(ta), tb_ = tr(tb);
  if (int64) {
    reinterpret_cast<CblasGemm<T, int64_t>>(fn)(order, ta_, tb_, m, n, k, alpha, a, lda, b, ldb,
                                                beta, c, ldc);
  } else {
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
        ldc > INT32_MAX)
      return false;
    reinterpret_cast<CblasGemm<T, int32_t>>(fn)(order, ta_, tb_, int32_t(m), int32_t(n),
                                                int32_t(k), alpha, a, int32_t(lda), b,
                                                int32_t(ldb), beta, c, int32_t(ldc));
  }
  return true;
}
}  // namespace

template <typename T>
bool peer_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
               int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  const PeerBlas* p = peer_blas();
  if (p == nullptr || k == 0) return false;
  void* fn = std::is_same_v<T, float> ? p->sgemm : p->dgemm;
  return peer_call<T>(fn, p->int64, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template bool peer_gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*,
                               int64_t, const float*, int64_t, float, float*, int64_t);
template bool peer_gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                int64_t, const double*, int64_t, double, double*, int64_t);

void blas_single_thread() {
  if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
}

}  // namespace cpu
}  // namespace fusednn
