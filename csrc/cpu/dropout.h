// CPU dropout kernels (the mask and transform of fusednn/dropout.h). Inputs are
// assumed valid (checked at the binding): contiguous arrays of n elements, a
// mask of dropout_words(n) words, rate in [0, 1).
#pragma once
#include <cstdint>

namespace fusednn {
namespace cpu {

// Words of a bit-packed mask of n elements: ceil(n / 32).
inline int64_t dropout_words(int64_t n) { return (n + 31) / 32; }

// y = keep ? x * kept_mul + kept_add : dropped (fusednn/dropout.h), keep from
// Philox under (seed, step). mask, when non-null, receives the
// dropout_words(n) mask words (bits past n included: they are the generator's
// bits for the elements that would follow).
template <typename T>
void dropout_forward(const T* x, T* y, uint32_t* mask, int64_t n, uint64_t seed, uint64_t step,
                     double rate, bool alpha);

// dx = keep ? dy * kept_mul : 0, keep read from `mask` or, when it is null,
// regenerated from (seed, step).
template <typename T>
void dropout_backward(const T* dy, const uint32_t* mask, T* dx, int64_t n, uint64_t seed,
                      uint64_t step, double rate, bool alpha);

// mask[0..nwords) = mask words 0..nwords of (seed, step, rate).
void dropout_mask(uint32_t* mask, int64_t nwords, uint64_t seed, uint64_t step, double rate);

// out[4 i + l] = lane l of philox4x32_10(ctr[4 i .. 4 i + 3], key): the raw
// generator, for the known-answer test.
void philox4x32_10(const uint32_t* ctr, const uint32_t key[2], uint32_t* out, int64_t count);

}  // namespace cpu
}  // namespace fusednn
