// Optimizer update rules, written once as per-element math for the CPU loop
// and the CUDA multi-tensor kernel (Keras 3 formulas; see
// python/fusednn/optimizers/ for the docstrings and the PyTorch differences).
//
// One step of one element, in the order Keras applies them:
//   1. g += l1 * sign(p) + 2 * l2 * p      penalties of the chosen tensor (zero terms left out)
//   2. g *= clip_scale, or g = clip(g, -clipvalue, clipvalue)
//   3. p -= decay * p                      decoupled weight decay, decay = lr * wd
//   4. the optimizer's rule on (p, g, slots)
// (3 and 4 are applied as one subtraction, p -= decay * p + step, except
// for Ftrl, whose rule reads the decayed p.)
// A max-norm constraint, if any, runs after the step (it needs whole-unit
// norms, so it cannot be per-element).
//
// Step-dependent scalars (bias corrections, Nadam's momentum schedule) are
// computed once per step on the host in double and passed in OptStep, so the
// kernels never see the step count and a learning-rate schedule costs nothing.
//
// NaN: a NaN gradient propagates into the parameter and its slots (Keras and
// PyTorch do the same); nothing is skipped.
#pragma once

#include <cstdint>
#include <type_traits>

#include "fusednn/common.h"

namespace fusednn {

// Exported to Python as fusednn._C.Opt (bindings/module.cpp); Python names
// members, never numbers.
enum class Opt : int {
  SGD = 0,      // slots: momentum (if momentum > 0)
  Adagrad = 1,  // slots: accumulator
  RMSprop = 2,  // slots: velocity, average gradient (centered), momentum (momentum > 0)
  Adam = 3,     // slots: m, v, v_hat (amsgrad); AdamW is Adam with weight decay
  Adamax = 4,   // slots: m, u
  Nadam = 5,    // slots: m, v
  Ftrl = 6,     // slots: accumulator, linear
  Count = 7
};

// Gradient clipping, one mode at most, as in Keras (fusednn._C.Clip).
enum class Clip : int {
  Off = 0,
  Value = 1,   // each component to [-v, v]
  Norm = 2,    // each tensor's L2 norm to at most v
  Global = 3,  // all tensors scaled by min(1, v / global norm)
  Count = 4
};

// Everything a step needs besides the tensors, one field per meaning; Python
// fills it by name (fusednn._C.OptStep, bindings/module.cpp). C is the type of
// the slots' recurrences: double whatever the storage on both backends
// (float32 coefficients would drift from the float64 reference; see
// opt_update). Step coefficients are computed on the host, t = step + 1.
template <typename C>
struct OptStep {
  C lr = 0;        // learning rate of this step (schedule already applied)
  C beta_1 = 0;    // Adam family: first-moment decay
  C beta_2 = 0;    // Adam family: second-moment decay
  C rho = 0;       // RMSprop: second-moment decay
  C momentum = 0;  // SGD, RMSprop (0: no momentum slot)
  C epsilon = 0;
  // Adam: lr * sqrt(1 - beta_2^t) / (1 - beta_1^t); Adamax: lr / (1 - beta_1^t)
  C step_size = 0;
  // Nadam: m_weight = u_{t+1} / (1 - prod_{i<=t+1} u_i), g_weight = (1 - u_t) /
  // (1 - prod_{i<=t} u_i), v_correction = 1 / (1 - beta_2^t)
  C m_weight = 0, g_weight = 0, v_correction = 0;
  C decay = 0;      // lr * weight_decay (decoupled); 0: none
  C clipvalue = 0;  // Clip::Value bound
  // Ftrl
  C l1 = 0;         // l1_regularization_strength
  C l2 = 0;         // l2_regularization_strength + beta / (2 lr), the effective l2
  C shrinkage = 0;  // l2_shrinkage_regularization_strength
  C lr_power = 0;   // learning_rate_power (<= 0)
  bool nesterov = false;  // SGD
  bool centered = false;  // RMSprop
  bool amsgrad = false;   // Adam
};

// One parameter tensor of a step, as the kernels see it. Slots the optimizer
// does not use are null. max_norm > 0: after the update, rescale the tensor
// seen as (outer, mid, inner) so that each of its outer * inner units (norm
// over mid) has L2 norm <= max_norm.
template <typename T>
struct OptTensor {
  T* p = nullptr;
  const T* g = nullptr;
  T* s[3] = {nullptr, nullptr, nullptr};
  int64_t n = 0;
  double l1 = 0, l2 = 0;  // penalties on this tensor (0: none)
  double max_norm = 0;
  int64_t outer = 1, mid = 1, inner = 1;
};

namespace opt_detail {

// sign(NaN) is NaN, as np.sign and Keras' ops.sign: an L1 penalty on a NaN
// parameter carries the NaN into its gradient (and a clipping norm).
template <typename C>
FUSEDNN_HD C sign(C x) {
  return x > C(0) ? C(1) : (x < C(0) ? C(-1) : (x == x ? C(0) : x));
}

template <typename C>
FUSEDNN_HD C max_nan(C a, C b) {  // max that keeps a NaN from either side
  return (a != a || a > b) ? a : b;
}

// x^(-lr_power), with the common lr_power = -0.5 as a square root.
template <typename C>
FUSEDNN_HD C ftrl_pow(C x, C lr_power) {
  return lr_power == C(-0.5) ? math::sqrt(x) : math::pow(x, -lr_power);
}

}  // namespace opt_detail

// clipnorm / global_clipnorm factor from a sum of squares: v / max(norm, v)
// (Keras' clip_by_norm and clip_by_global_norm; 1 for a zero gradient, NaN
// for a NaN one).
template <typename C>
FUSEDNN_HD C opt_clip_scale(C sumsq, C clip) {
  const C norm = math::sqrt(sumsq);
  return (norm != norm) ? norm : clip / (norm > clip ? norm : clip);
}

// Keras MaxNorm: w *= min(norm, max_value) / (1e-7 + norm), norm the L2 norm
// of one unit's weights.
template <typename C>
FUSEDNN_HD C opt_max_norm_scale(C sumsq, C max_value) {
  const C norm = math::sqrt(sumsq);
  const C desired = norm > max_value ? max_value : norm;
  return desired / (C(1e-7) + norm);
}

// Steps 1-2: the gradient the rule sees. `scale` is the clipnorm /
// global_clipnorm factor (1 when unused); `clipvalue` the Clip::Value bound
// (+inf when unused). Branch-free on purpose: a select on a loop-invariant
// flag keeps GCC from vectorising the loop. A zero coefficient adds nothing,
// as in Keras' L1L2 (which leaves out a zero term): not 0 * p, which is NaN
// for an infinite p (selects on the coefficients, which vectorise); callers
// without a penalty also pass p = 0. Without penalties and clipvalue it is
// g * scale, and the CPU loop then skips it (a third of an Adam step's
// instructions).
template <typename C>
FUSEDNN_HD C opt_effective_grad(C g, C p, C l1, C l2, C scale, C clipvalue) {
  g += (l1 != C(0) ? l1 * opt_detail::sign(p) : C(0)) + (l2 != C(0) ? C(2) * l2 * p : C(0));
  // NaN stays NaN: neither comparison holds.
  g = g > clipvalue ? clipvalue : g;
  g = g < -clipvalue ? -clipvalue : g;
  return g * scale;
}

// Steps 3-4 for one element: p, slots s0..s2 in and out; g from
// opt_effective_grad. Slots an optimizer does not use are left alone.
//
// Two arithmetic types. C carries the slots' recurrences (s = beta s +
// (1 - beta) g^2 and the like): in double, so that the decay coefficients are
// not rounded to float (float32(0.999) is off by 1.3e-8, which compounds over
// the steps). P carries the parameter and its increment, which is computed
// from the slots rounded to P: the quotient lr g / sqrt(v + eps) in float32
// for float32 parameters is what Keras and PyTorch compute, and on the CPU it
// halves the cost of the step (8 float lanes per AVX2 divide and square root
// instead of 4 double ones, and no conversions of p; the double divide and
// square root, not memory, bound RMSprop there). P = C (the default) is the
// all-double form.
//
// Slots: bit k set when slot k may exist. A loop that knows which slots its
// tensor has passes them, so the options that own a slot (SGD and RMSprop
// momentum, RMSprop's centered average, Adam's amsgrad maximum) are decided
// at compile time instead of computed and discarded in every vector lane. The
// default (all bits) decides them from h at run time.
template <typename C, typename P = C, int Slots = 7>
FUSEDNN_HD void opt_update(Opt k, const OptStep<C>& h, P& p, C g, C& s0, C& s1, C& s2) {
  // Step 3 (decoupled weight decay) joins the rule's step below: p - (decay p
  // + step) rounds once in P, as the all-double form rounds once on storage.
  // Only Ftrl, which sets p from its slots, needs the decayed p first.
  const P decayed = h.decay != C(0) ? P(h.decay) * p : P(0);  // a NaN p stays out of 0 * p
  P step = P(0);  // what the rule subtracts from p
  switch (k) {
    case Opt::SGD: {
      C& velocity = s0;
      if ((Slots & 1) && h.momentum != C(0)) {
        velocity = h.momentum * velocity - h.lr * g;
        step = -P(h.nesterov ? h.momentum * velocity - h.lr * g : velocity);
      } else {
        step = P(h.lr * g);
      }
      break;
    }
    case Opt::Adagrad: {
      C& accumulator = s0;
      accumulator += g * g;
      step = P(h.lr) * P(g) / math::sqrt(P(accumulator + h.epsilon));
      break;
    }
    case Opt::RMSprop: {
      C &mean_square = s0, &mean_grad = s1, &velocity = s2;
      mean_square = h.rho * mean_square + (C(1) - h.rho) * g * g;
      C denom = mean_square + h.epsilon;
      if ((Slots & 2) && h.centered) {
        mean_grad = h.rho * mean_grad + (C(1) - h.rho) * g;
        // v - a^2 is a variance, >= 0 in exact arithmetic; where the gradient
        // barely varies it is all rounding (with or without a contracted FMA)
        // and can fall below 0, below -epsilon to a NaN step: clamped at 0
        // (a NaN passes through).
        const C var = mean_square - mean_grad * mean_grad;
        denom = (var < C(0) ? C(0) : var) + h.epsilon;
      }
      step = P(h.lr) * P(g) / math::sqrt(P(denom));
      if ((Slots & 4) && h.momentum != C(0)) {
        velocity = h.momentum * velocity + C(step);
        step = P(velocity);
      }
      break;
    }
    case Opt::Adam: {
      C &m = s0, &v = s1, &v_max = s2;
      m += (g - m) * (C(1) - h.beta_1);
      v += (g * g - v) * (C(1) - h.beta_2);
      C v_used = v;
      if ((Slots & 4) && h.amsgrad) v_used = v_max = opt_detail::max_nan(v_max, v);
      step = P(h.step_size) * P(m) / (math::sqrt(P(v_used)) + P(h.epsilon));
      break;
    }
    case Opt::Adamax: {
      C &m = s0, &u = s1;  // u: the exponentially weighted infinity norm
      m += (g - m) * (C(1) - h.beta_1);
      u = opt_detail::max_nan(h.beta_2 * u, math::fabs(g));
      step = P(h.step_size) * P(m) / (P(u) + P(h.epsilon));
      break;
    }
    case Opt::Nadam: {
      C &m = s0, &v = s1;
      m += (g - m) * (C(1) - h.beta_1);
      v += (g * g - v) * (C(1) - h.beta_2);
      step = P(h.lr) * (P(h.m_weight) * P(m) + P(h.g_weight) * P(g)) /
             (math::sqrt(P(v) * P(h.v_correction)) + P(h.epsilon));
      break;
    }
    case Opt::Ftrl: {
      C &accumulator = s0, &linear = s1;
      const C pc = C(p - decayed);
      const C n_old = opt_detail::ftrl_pow(accumulator, h.lr_power);
      const C acc = accumulator + g * g;
      const C n_new = opt_detail::ftrl_pow(acc, h.lr_power);
      linear += g + C(2) * h.shrinkage * pc - (n_new - n_old) / h.lr * pc;
      const C quadratic = n_new / h.lr + C(2) * h.l2;
      const C clipped = linear > h.l1 ? h.l1 : (linear < -h.l1 ? -h.l1 : linear);
      p = P((clipped - linear) / quadratic);
      accumulator = acc;
      return;
    }
    default:
      return;
  }
  p -= decayed + step;
}

// Host-side dispatch: calls f(std::integral_constant<Opt, k>{}), so kernels
// take the optimizer as a template parameter and the rule's switch folds
// away in the loop.
template <typename F>
inline void dispatch_opt(Opt k, F&& f) {
  dispatch_enum<Opt, Opt::SGD, Opt::Adagrad, Opt::RMSprop, Opt::Adam, Opt::Adamax, Opt::Nadam,
                Opt::Ftrl>(k, f);
}

}  // namespace fusednn
