// Shared by the CPU and CUDA builds: the HOST_DEVICE marker and the scalar
// math wrappers, so per-element functions are written once for both.
#pragma once

#if defined(__CUDACC__)
#define FUSEDNN_HD __host__ __device__ __forceinline__
#else
#define FUSEDNN_HD inline
#endif

#include <cmath>

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
FUSEDNN_HD float fabs(float x) { return ::fabsf(x); }
FUSEDNN_HD double fabs(double x) { return ::fabs(x); }

}  // namespace math
}  // namespace fusednn
