// Activation functions and their derivatives, written once as per-element
// math for the CPU loops and the CUDA kernels.
//
// Convention: `forward(z)` gives y = f(z). `grad(s)` gives dy/dz from the
// saved value `s`, which is the OUTPUT y for the activations that allow it
// (relu, leaky_relu, elu, selu, sigmoid, tanh, softplus, linear) and the
// INPUT z for the others (gelu, gelu_tanh, swish, mish). `saves_input(kind)`
// says which; this is what lets a dense layer keep one buffer, not two.
//
// NaN: forward returns NaN for a NaN input, and grad returns NaN for a NaN
// saved value, so a NaN propagates through training instead of vanishing.
#pragma once

#include "fusednn/common.h"

namespace fusednn {

// Exported to Python as fusednn._C.Act (bindings/cpu_types.cpp); Python names
// members, never numbers.
enum class Act : int {
  Linear = 0,
  Relu = 1,
  LeakyRelu = 2,  // alpha = negative slope (>= 0)
  Elu = 3,        // alpha = saturation value (>= 0)
  Selu = 4,
  Gelu = 5,       // exact: z * Phi(z)
  GeluTanh = 6,   // tanh approximation (Hendrycks & Gimpel 2016)
  Swish = 7,      // alpha = beta in z * sigmoid(beta z); silu is beta = 1
  Mish = 8,
  Sigmoid = 9,
  Tanh = 10,
  Softplus = 11,
  Count = 12
};

FUSEDNN_HD constexpr bool saves_input(Act a) {
  return a == Act::Gelu || a == Act::GeluTanh || a == Act::Swish || a == Act::Mish;
}

namespace act_detail {

// Klambauer et al. 2017, "Self-Normalizing Neural Networks".
constexpr double kSeluLambda = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kInvSqrt2 = 0.70710678118654752440084436210485;
constexpr double kInvSqrt2Pi = 0.39894228040143267793994605993438;
constexpr double kSqrt2OverPi = 0.79788456080286535587989211986876;
constexpr double kGeluTanhC = 0.044715;

// The functions below never exponentiate a positive number: they take
// e = exp(-|z|) in (0, 1] once (math::exp_neg_abs) and select per sign.
template <typename T>
FUSEDNN_HD T sigmoid(T z) {
  return math::sigmoid_from_exp(z, math::exp_neg_abs(z));
}

// Softplus: log(1 + e^z) = max(z, 0) + log1p(e).
template <typename T>
FUSEDNN_HD T softplus(T z) {
  const T m = z > T(0) ? z : T(0);
  return m + math::log1p_unit(math::exp_neg_abs(z));
}

// GELU's tanh approximation: 0.5 z (1 + tanh(u)), u = sqrt(2/pi) (z + c z^3).
template <typename T>
FUSEDNN_HD T gelu_tanh_u(T z) {
  return T(kSqrt2OverPi) * (z + T(kGeluTanhC) * z * z * z);
}

// tanh(softplus(z)), Mish's factor, from e: with w = e^z it is
// ((1 + w)^2 - 1) / ((1 + w)^2 + 1) = num / den with
//   z >= 0: num = 1 + 2 e,      den = num + 2 e^2
//   z <  0: num = e (e + 2),    den = num + 2
// and 1 - t^2 = 4 (1 + e)^2 (z >= 0 ? e^2 : 1) / den^2 without cancellation
// (den - num and den + num are both known in closed form).
template <typename T>
struct MishTanh {
  T t, one_minus_t2;
};

template <typename T>
FUSEDNN_HD MishTanh<T> mish_tanh(T z, T e) {
  const bool pos = z >= T(0);
  const T num = pos ? T(1) + T(2) * e : e * (e + T(2));
  const T rd = T(1) / (num + (pos ? T(2) * e * e : T(2)));
  const T ope = T(2) * (T(1) + e) * rd;
  return {num * rd, (pos ? e * e : T(1)) * ope * ope};
}

// Returns g for s > 0, h for s <= 0 and s itself when s is NaN.
template <typename T>
FUSEDNN_HD T piecewise(T s, T g, T h) {
  return s > T(0) ? g : (s <= T(0) ? h : s);
}

}  // namespace act_detail

// y = f(z). `alpha` is the parameter of leaky_relu, elu and swish (beta).
template <typename T>
FUSEDNN_HD T act_forward(Act a, T z, T alpha) {
  using namespace act_detail;
  switch (a) {
    case Act::Linear:
      return z;
    case Act::Relu:
      return z <= T(0) ? T(0) : z;  // written so NaN passes through
    case Act::LeakyRelu:
      return z <= T(0) ? alpha * z : z;
    // The negative branch is evaluated for every z, then selected: written
    // as a conditional call, the compiler's if-conversion of the vectorised
    // loop would merge the callee's clamp into the select's mask. z < 0
    // rather than z <= 0 keeps -0; NaN takes the z branch.
    case Act::Elu: {
      const T neg = math::scaled_expm1_neg(z, alpha);
      return z < T(0) ? neg : z;
    }
    case Act::Selu: {
      const T neg = math::scaled_expm1_neg(z, T(kSeluLambda * kSeluAlpha));
      return z < T(0) ? neg : T(kSeluLambda) * z;
    }
    case Act::Gelu:
      return T(0.5) * z * (T(1) + math::erf(z * T(kInvSqrt2)));
    case Act::GeluTanh:  // (1 + tanh(u)) / 2 = sigmoid(2u): no cancellation for z << 0
      return z * sigmoid(T(2) * gelu_tanh_u(z));
    case Act::Swish:
      return z * sigmoid(alpha * z);
    case Act::Mish:
      return z * mish_tanh(z, math::exp_neg_abs(z)).t;
    case Act::Sigmoid:
      return sigmoid(z);
    case Act::Tanh:
      return math::tanh(z);
    case Act::Softplus:
      return softplus(z);
    default:
      return z;
  }
}

// dy/dz from the saved value s (y or z, see saves_input).
template <typename T>
FUSEDNN_HD T act_grad(Act a, T s, T alpha) {
  using namespace act_detail;
  switch (a) {
    case Act::Linear:
      return T(1);
    case Act::Relu:
      return piecewise(s, T(1), T(0));
    case Act::LeakyRelu:
      return piecewise(s, T(1), alpha);
    case Act::Elu:  // z <= 0: alpha e^z = y + alpha
      return piecewise(s, T(1), s + alpha);
    case Act::Selu:  // z <= 0: lambda alpha e^z = y + lambda alpha
      return piecewise(s, T(kSeluLambda), s + T(kSeluLambda * kSeluAlpha));
    case Act::Gelu: {  // Phi(z) + z phi(z)
      const T cdf = T(0.5) * (T(1) + math::erf(s * T(kInvSqrt2)));
      const T pdf = T(kInvSqrt2Pi) * math::exp_nonpos(T(-0.5) * s * s);
      return cdf + s * pdf;
    }
    case Act::GeluTanh: {
      // (1 + t) / 2 + z (1 - t^2) u' / 2 with t = tanh(u) = 2 sigma(2u) - 1:
      // sigma(2u) + 2 z u' sigma(2u) (1 - sigma(2u)), sigma (1 - sigma) = e / (1 + e)^2
      const T v = T(2) * gelu_tanh_u(s);
      const T e = math::exp_neg_abs(v);
      const T inv = T(1) / (T(1) + e);
      const T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluTanhC) * s * s);
      // Saturated (sigma (1 - sigma) == 0) at a finite z, the second term is 0:
      // computed, s du could overflow first (|z| > ~1e13 in float32) and make
      // it inf * 0 = NaN. At z = +-inf it stays inf * 0 = NaN, as in the formula.
      const T w = e * inv * inv;
      return math::sigmoid_from_exp(v, e) +
             (w != T(0) || s - s != T(0) ? T(2) * s * du * w : T(0));
    }
    case Act::Swish: {  // sigma(bz) + bz sigma(bz) (1 - sigma(bz)); saturated: as GeluTanh
      const T bz = alpha * s;
      const T sg = sigmoid(bz);
      const T w = sg * (T(1) - sg);
      return sg + (w != T(0) || s - s != T(0) ? bz * w : T(0));
    }
    case Act::Mish: {  // tanh(sp(z)) + z sigma(z) (1 - tanh^2(sp(z)))
      const T e = math::exp_neg_abs(s);
      const MishTanh<T> m = mish_tanh(s, e);
      return m.t + s * math::sigmoid_from_exp(s, e) * m.one_minus_t2;
    }
    case Act::Sigmoid:
      return s * (T(1) - s);
    case Act::Tanh:
      return T(1) - s * s;
    case Act::Softplus:  // sigma(z) = 1 - e^-y, via expm1 for tiny y
      return -math::expm1(-s);
    default:
      return T(1);
  }
}

}  // namespace fusednn

#if !defined(__CUDA_ARCH__)
namespace fusednn {

// Calls f(std::integral_constant<Act, a>{}) so that a loop written once is
// compiled per activation with the switch in act_forward/act_grad folded away.
template <typename F>
inline void dispatch_act(Act a, F&& f) {
  dispatch_enum<Act, Act::Linear, Act::Relu, Act::LeakyRelu, Act::Elu, Act::Selu, Act::Gelu,
                Act::GeluTanh, Act::Swish, Act::Mish, Act::Sigmoid, Act::Tanh, Act::Softplus>(
      a, f);
}

}  // namespace fusednn
#endif
