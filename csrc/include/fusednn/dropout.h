// Dropout and alpha dropout, per element, shared by the CPU loops and the CUDA
// kernels (the standalone dropout op and the fused batch-norm op alike).
//
// The mask. Element e (the flat, row-major index of the tensor) is kept iff
//     u(e) >= threshold,   threshold = floor(rate * 2^32),
// where u(e) is lane e % 4 of Philox4x32-10 with
//     counter = (lo(e / 4), hi(e / 4), lo(step), hi(step)),  key = (lo(seed), hi(seed)).
// So P(keep) = 1 - threshold / 2^32 = 1 - rate to within 2^-32, and the same
// (seed, step, e) gives the same bit on every device and in every order.
// Layers derive their own seed (one per layer); `step` is the training step.
//
// Stored masks are bit-packed: word w (uint32) holds elements 32 w .. 32 w + 31,
// element e at bit e % 32, so a mask of n elements takes ceil(n / 32) words.
//
// The transform of kept and dropped elements is affine, so that inverted
// dropout and alpha dropout are one code path with different coefficients:
//     y = keep ? x * kept_mul + kept_add : dropped
//     dx = keep ? dy * kept_mul : 0
#pragma once

#include <cstdint>

#include "fusednn/common.h"
#include "fusednn/philox.h"

namespace fusednn {

template <typename T>
struct DropoutCoef {
  T kept_mul;  // inverted dropout: 1 / (1 - rate); alpha dropout: a
  T kept_add;  // inverted dropout: 0; alpha dropout: b
  T dropped;   // inverted dropout: 0; alpha dropout: a * alpha' + b
};

namespace dropout_detail {
// alpha' = -lambda * alpha of SELU (Klambauer et al. 2017): the value SELU
// saturates to, which alpha dropout gives to the dropped units.
constexpr double kAlphaPrime = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717;
}  // namespace dropout_detail

// Coefficients for `rate` in [0, 1). Alpha dropout (Keras AlphaDropout,
// torch.nn.AlphaDropout): x -> a (x keep + alpha' (1 - keep)) + b with
// a = ((1 - rate)(1 + rate alpha'^2))^-1/2 and b = -a alpha' rate, which keeps
// zero mean and unit variance of standardised inputs.
inline DropoutCoef<double> dropout_coef(double rate, bool alpha) {
  if (!alpha) return {1.0 / (1.0 - rate), 0.0, 0.0};
  const double ap = dropout_detail::kAlphaPrime;
  const double a = 1.0 / std::sqrt((1.0 - rate) * (1.0 + rate * ap * ap));
  const double b = -a * ap * rate;
  return {a, b, a * ap + b};
}

template <typename T>
inline DropoutCoef<T> dropout_coef_as(const DropoutCoef<double>& c) {
  return {T(c.kept_mul), T(c.kept_add), T(c.dropped)};
}

// Words of a stored mask of n elements: ceil(n / 32).
FUSEDNN_HD constexpr int64_t mask_words(int64_t n) { return (n + 31) / 32; }

// floor(rate * 2^32) for rate in [0, 1): the drop threshold on a 32-bit draw.
inline uint32_t dropout_threshold(double rate) {
  const double t = rate * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : (t <= 0.0 ? 0u : uint32_t(t));
}

// The Philox draws for elements 4 q .. 4 q + 3.
FUSEDNN_HD Philox4x32 dropout_draws(uint64_t seed, uint64_t step, uint64_t q) {
  return philox4x32_10(uint32_t(q), uint32_t(q >> 32), uint32_t(step), uint32_t(step >> 32),
                       uint32_t(seed), uint32_t(seed >> 32));
}

// Keep bits of elements 4 q .. 4 q + 3 in bits 0..3.
FUSEDNN_HD uint32_t dropout_nibble(uint64_t seed, uint64_t step, uint64_t q, uint32_t threshold) {
  const Philox4x32 r = dropout_draws(seed, step, q);
  return uint32_t(r.v[0] >= threshold) | (uint32_t(r.v[1] >= threshold) << 1) |
         (uint32_t(r.v[2] >= threshold) << 2) | (uint32_t(r.v[3] >= threshold) << 3);
}

// Mask word w: the keep bits of elements 32 w .. 32 w + 31 (bits past the end
// of the tensor are computed like the others and never read).
FUSEDNN_HD uint32_t dropout_mask_word(uint64_t seed, uint64_t step, uint64_t w,
                                      uint32_t threshold) {
  uint32_t word = 0;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int j = 0; j < 8; ++j) word |= dropout_nibble(seed, step, 8 * w + j, threshold) << (4 * j);
  return word;
}

// Whether element e is kept, from a bit-packed mask.
FUSEDNN_HD bool dropout_kept(const uint32_t* mask, int64_t e) {
  return (mask[e >> 5] >> (e & 31)) & 1u;
}

template <typename T>
FUSEDNN_HD T dropout_apply(bool keep, T x, const DropoutCoef<T>& c) {
  return keep ? x * c.kept_mul + c.kept_add : c.dropped;
}

template <typename T>
FUSEDNN_HD T dropout_grad(bool keep, T dy, const DropoutCoef<T>& c) {
  return keep ? dy * c.kept_mul : T(0);
}

}  // namespace fusednn
