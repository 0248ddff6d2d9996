// Shared by the CPU and CUDA builds: the HOST_DEVICE marker and the scalar
// math wrappers, so per-element functions are written once for both.
#pragma once

#if defined(__CUDACC__)
#define FUSEDNN_HD __host__ __device__ __forceinline__
#else
// always_inline: the activation switch must fold away inside vectorised loops.
#define FUSEDNN_HD inline __attribute__((always_inline))
#endif

#include <cmath>

// Host loops over exp/erf/tanh vectorise only if the compiler knows a SIMD
// variant of each function. glibc >= 2.35 ships them in libmvec but declares
// them only under -ffast-math, which would also drop NaN handling; declaring
// them here keeps IEEE semantics and lets `#pragma omp simd` loops call
// the vector versions. The CPU target defines FUSEDNN_USE_LIBMVEC and links
// libmvec.
#if defined(FUSEDNN_USE_LIBMVEC) && !defined(__CUDACC__) && defined(__GNUC__) && \
    !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) &&         \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
extern "C" {
#define FUSEDNN_SIMD_DECL(ret, fn) __attribute__((simd("notinbranch"))) ret fn(ret) noexcept(true);
FUSEDNN_SIMD_DECL(float, expf)
FUSEDNN_SIMD_DECL(float, expm1f)
FUSEDNN_SIMD_DECL(float, log1pf)
FUSEDNN_SIMD_DECL(float, tanhf)
FUSEDNN_SIMD_DECL(float, erff)
FUSEDNN_SIMD_DECL(double, exp)
FUSEDNN_SIMD_DECL(double, expm1)
FUSEDNN_SIMD_DECL(double, log1p)
FUSEDNN_SIMD_DECL(double, tanh)
FUSEDNN_SIMD_DECL(double, erf)
#undef FUSEDNN_SIMD_DECL
}
#endif

namespace fusednn {
namespace math {

// Overloads instead of std:: so the same call resolves to the CUDA device
// intrinsic (expf, erff, ...) in device code and to libm on the host.
FUSEDNN_HD float exp(float x) { return ::expf(x); }
FUSEDNN_HD double exp(double x) { return ::exp(x); }
FUSEDNN_HD float expm1(float x) { return ::expm1f(x); }
FUSEDNN_HD double expm1(double x) { return ::expm1(x); }
FUSEDNN_HD float log1p(float x) { return ::log1pf(x); }
FUSEDNN_HD double log1p(double x) { return ::log1p(x); }
FUSEDNN_HD float tanh(float x) { return ::tanhf(x); }
FUSEDNN_HD double tanh(double x) { return ::tanh(x); }
FUSEDNN_HD float erf(float x) { return ::erff(x); }
FUSEDNN_HD double erf(double x) { return ::erf(x); }
FUSEDNN_HD float sqrt(float x) { return ::sqrtf(x); }
FUSEDNN_HD double sqrt(double x) { return ::sqrt(x); }
FUSEDNN_HD float pow(float x, float y) { return ::powf(x, y); }
FUSEDNN_HD double pow(double x, double y) { return ::pow(x, y); }
FUSEDNN_HD float fabs(float x) { return ::fabsf(x); }
FUSEDNN_HD double fabs(double x) { return ::fabs(x); }

}  // namespace math
}  // namespace fusednn
