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
#include <type_traits>

namespace fusednn {

// Calls f(std::integral_constant<E, v>{}) for the one of Values that v is, so
// that a loop written once is compiled per enum value with the value's
// switches folded away; nothing for any other v.
template <typename E, E... Values, typename F>
inline void dispatch_enum(E v, F&& f) {
  (void)((v == Values ? (f(std::integral_constant<E, Values>{}), true) : false) || ...);
}

}  // namespace fusednn

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
#if defined(__CUDA_ARCH__)
FUSEDNN_HD float expm1(float x) { return ::expm1f(x); }
FUSEDNN_HD float scaled_expm1_neg(float x, float alpha) { return alpha * ::expm1f(x); }
FUSEDNN_HD float exp_nonpos(float x) { return ::expf(x); }
FUSEDNN_HD float log1p_unit(float x) { return ::log1pf(x); }
FUSEDNN_HD float tanh(float x) { return ::tanhf(x); }
#else
// The float32 exponential family on the host, written out so that the
// vectorised loops inline it instead of calling libmvec's AVX2 functions:
// expm1 (softplus' derivative), scaled_expm1_neg (ELU, SELU, tanh),
// exp_nonpos (the sigmoid family and the losses), log1p_unit and tanh. The
// exponentials reduce x = n ln2 + r, |r| <= ln2 / 2, and take expm1(r) from
// this degree-7 Taylor polynomial (its truncation
// error is below 2^-26 relative), in Estrin's form for a short dependency
// chain, with r added last so that one rounding dominates: with r2 = r^2,
//   expm1(r) = r + r2 ((1/2 + r/6) + r2 (1/24 + r/120) + r2^2 (1/720 + r/5040)).
FUSEDNN_HD float expm1_reduced(float r) {
  const float r2 = r * r;
  const float a = __builtin_fmaf(1.0f / 6, r, 0.5f);
  const float b = __builtin_fmaf(1.0f / 120, r, 1.0f / 24);
  const float c = __builtin_fmaf(1.0f / 5040, r, 1.0f / 720);
  return __builtin_fmaf(r2, __builtin_fmaf(r2 * r2, c, __builtin_fmaf(r2, b, a)), r);
}
// 1.5 * 2^23: adding it to |v| < 2^22 rounds v to an integer, which then sits
// in the low mantissa bits of the sum.
constexpr float kRoundShifter = 12582912.0f;
// r = x - n ln2 with n = round(x / ln2), |r| <= ln2 / 2, for |x| < 2^21;
// *k = n + kRoundShifter (see pow2_of_shifted). ln2 is split in two so that
// n ln2_hi is exact.
FUSEDNN_HD float reduce_ln2(float x, float* k) {
  *k = __builtin_fmaf(x, 1.44269504088896341f, kRoundShifter);
  const float n = *k - kRoundShifter;
  return __builtin_fmaf(n, -1.428606765330187045e-06f, __builtin_fmaf(n, -0.693145751953125f, x));
}

// 2^(n + e) as a float, for k = n + kRoundShifter and n + e in [-126, 127].
FUSEDNN_HD float pow2_of_shifted(float k, int e) {
  // unsigned: for an x outside that range (the callers discard the result),
  // the arithmetic wraps instead of overflowing
  const unsigned bits = (__builtin_bit_cast(unsigned, k) - 0x4B400000u + unsigned(127 + e)) << 23;
  return __builtin_bit_cast(float, bits);
}

// expm1(x), max relative error 1.3e-7 over every float (checked against the
// double expm1).
//   expm1(x) = 2 (2^(n-1) expm1(r) + 2^(n-1) - 1/2)
// is exact arithmetic on expm1(r) for n = 0 and keeps 2^(n-1) finite up to
// n = 128. x is clamped to [-87, 88.75]: expm1 rounds to -1 below and
// overflows to inf above.
// |x| < 2^-24 returns x (expm1(x) rounds to x there; it also keeps denormals
// and -0), and NaN stays NaN.
FUSEDNN_HD float expm1(float x) {
  const float lo = x < -87.0f ? -87.0f : x;
  const float xc = lo > 88.75f ? 88.75f : lo;
  float k;
  const float r = reduce_ln2(xc, &k);
  const float s = pow2_of_shifted(k, -1);
  const float y = 2.0f * __builtin_fmaf(s, expm1_reduced(r), s - 0.5f);
  return ::fabsf(x) >= 0x1p-24f ? y : x;
}

// alpha expm1(x) for x < 0, the negative branch of ELU and SELU: their
// callers select the other branch for x >= 0 and NaN, where the value
// returned here is unspecified. The narrower domain makes it about half as
// costly as alpha * expm1(x) inside a vectorised loop (ELU after the BN
// normalisation: 0.29 against 0.6 ns per element more than the
// normalisation alone, one Zen 3 core): only the lower clamp; ln2 in one
// float, whose error (1.9e-9 per unit of n) scales e^x, which is then below
// 2^-|n|, so it stays below 2^-27 of |expm1(x)| ~ 1 - e^x; 2^n needs no
// halving for n <= 0; alpha folds into the scale:
// alpha 2^n expm1(r) + (alpha 2^n - alpha). Max
// relative error 9.8e-8 for alpha = 1, 1.4e-7 for SELU's, over every negative
// float (normal results).
FUSEDNN_HD float scaled_expm1_neg(float x, float alpha) {
  const float xc = x < -87.0f ? -87.0f : x;
  const float k = __builtin_fmaf(xc, 1.44269504088896341f, kRoundShifter);
  const float r = __builtin_fmaf(k - kRoundShifter, -0.693147182464599609375f, xc);
  const float s = alpha * pow2_of_shifted(k, 0);
  return __builtin_fmaf(s, expm1_reduced(r), s - alpha);
}

// e^x for x <= 0 (the softmax's exp(z - max), the binary cross-entropy's
// exp(-|z|)): 2^n (1 + expm1(r)) with the reduction of expm1 above; NaN stays
// NaN. Below -87.5, where e^x is no longer a normal float, it returns 0 (an
// absolute error below 2^-126). Max relative error 9.0e-8 over the normal
// results (checked against the double exp).
FUSEDNN_HD float exp_nonpos(float x) {
  const float xc = x < -87.5f ? -87.5f : x;
  float k;
  const float r = reduce_ln2(xc, &k);
  const float s = pow2_of_shifted(k, 0);
  const float y = __builtin_fmaf(s, expm1_reduced(r), s);
  return x < -87.5f ? 0.0f : y;
}

// log1p(x) for x in [0, 1] (the binary cross-entropy's log1p(exp(-|z|))),
// NaN stays NaN: with s = x / (2 + x) in [0, 1/3], log1p(x) = 2 atanh(s)
//   = 2 s (1 + s^2/3 + s^4/5 + ... + s^12/13),
// whose truncation is below 2^-26 relative; x itself is exact, so small x
// loses nothing to 1 + x. Max relative error 3.2e-7 (about 5 ulp, from the
// rounding of 2 + x and of the quotient) over [0, 1], checked against the
// double log1p: enough for a loss term, which is summed.
FUSEDNN_HD float log1p_unit(float x) {
  const float s2 = (x + x) / (2.0f + x);  // 2 s: halving x first would round denormals
  const float t = 0.25f * s2 * s2;
  const float t2 = t * t;
  // 1 + t/3 + t^2/5 + ... + t^6/13, in Estrin's form
  const float a = __builtin_fmaf(1.0f / 3, t, 1.0f);
  const float b = __builtin_fmaf(1.0f / 7, t, 1.0f / 5);
  const float c = __builtin_fmaf(1.0f / 11, t, 1.0f / 9);
  const float q =
      __builtin_fmaf(t2 * t2, __builtin_fmaf(t2, 1.0f / 13, c), __builtin_fmaf(t2, b, a));
  return s2 * q;
}

// tanh(x) = sign(x) u / (2 - u), u = -expm1(-2|x|) in [0, 1): no cancellation
// near 0 (u ~ 2|x|) and 1 for |x| >= 44 (u = 1 after the clamp); -0 and NaN
// are kept. Max relative error 1.9e-7 over every float (checked against the
// double tanh).
FUSEDNN_HD float tanh(float x) {
  const float u = scaled_expm1_neg(-2.0f * ::fabsf(x), -1.0f);
  const float t = u / (2.0f - u);
  return x != x ? x : __builtin_copysignf(t, x);
}
#endif
FUSEDNN_HD double scaled_expm1_neg(double x, double alpha) { return alpha * ::expm1(x); }
FUSEDNN_HD double exp_nonpos(double x) { return ::exp(x); }
FUSEDNN_HD double log1p_unit(double x) { return ::log1p(x); }
FUSEDNN_HD float fma(float a, float b, float c) { return ::fmaf(a, b, c); }
FUSEDNN_HD double fma(double a, double b, double c) { return ::fma(a, b, c); }
FUSEDNN_HD double expm1(double x) { return ::expm1(x); }
FUSEDNN_HD float log1p(float x) { return ::log1pf(x); }
FUSEDNN_HD double log1p(double x) { return ::log1p(x); }
FUSEDNN_HD double tanh(double x) { return ::tanh(x); }
FUSEDNN_HD float erf(float x) { return ::erff(x); }
FUSEDNN_HD double erf(double x) { return ::erf(x); }
FUSEDNN_HD float sqrt(float x) { return ::sqrtf(x); }
FUSEDNN_HD double sqrt(double x) { return ::sqrt(x); }
FUSEDNN_HD float pow(float x, float y) { return ::powf(x, y); }
FUSEDNN_HD double pow(double x, double y) { return ::pow(x, y); }
FUSEDNN_HD float fabs(float x) { return ::fabsf(x); }
FUSEDNN_HD double fabs(double x) { return ::fabs(x); }

// e = exp(-|z|) in (0, 1], never an exponential of a positive number; NaN
// stays NaN. The sigmoid family and the binary cross-entropy start from it.
template <typename T>
FUSEDNN_HD T exp_neg_abs(T z) {
  return exp_nonpos(-fabs(z));
}

// sigmoid(z) from e = exp_neg_abs(z): 1 / (1 + e) for z >= 0, e / (1 + e)
// below; NaN fails the test and gives e / (1 + e) = NaN.
template <typename T>
FUSEDNN_HD T sigmoid_from_exp(T z, T e) {
  const T inv = T(1) / (T(1) + e);
  return z >= T(0) ? inv : e * inv;
}

}  // namespace math
}  // namespace fusednn
