// GEMM on row-major matrices through OpenBLAS (scipy-openblas32: 32-bit
// integers, symbols prefixed scipy_).
#pragma once
#include <cstdint>
#include <string>

namespace fusednn {
namespace cpu {

// C[m x n] = alpha * op(A) op(B) + beta * C, all row-major. op(A) is m x k.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Runs OpenBLAS's parallel jobs on the OpenMP team (one thread pool for GEMMs
// and element-wise loops). Skipped when FUSEDNN_BLAS_THREADS=native; returns
// whether the callback is in place.
bool install_blas_threads();
uint64_t blas_callback_calls();  // calls that went through it, for tests

int blas_num_threads();
void set_num_threads(int n);  // OpenBLAS and OpenMP alike
int num_threads();            // OpenMP's
std::string blas_config();

}  // namespace cpu
}  // namespace fusednn
