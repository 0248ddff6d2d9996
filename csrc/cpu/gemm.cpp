// The GEMM wrappers, compiled into fusednn._C and into every level's kernel
// library (cpu/dispatch.h): thin calls into the one OpenBLAS all of them load.
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

void blas_single_thread() {
  if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
}

}  // namespace cpu
}  // namespace fusednn
