// CPU dropout kernels (the mask and transform of fusednn/dropout.h). Inputs are
// assumed valid (checked at the binding): contiguous arrays of n elements, a
// mask of dropout_words(n) words, rate in [0, 1).
#pragma once
#include <cstdint>

#include "fusednn/dropout.h"

namespace fusednn {
namespace cpu {

// Words of a bit-packed mask of n elements: ceil(n / 32).
inline int64_t dropout_words(int64_t n) { return (n + 31) / 32; }

// Mask words per block: 512 elements, 128 Philox calls, enough for full vectors
// at any SIMD width while the draws stay in L1.
constexpr int kBlockWords = 16;
constexpr int kBlockQuads = 8 * kBlockWords;

// words[0..kBlockWords) = mask words w0 (a multiple of kBlockWords) .. w0 + kBlockWords - 1, the whole
// block even past the end of the tensor (the extra words are only computed,
// never stored), so the SIMD loop has a constant trip count.
inline void dropout_block_words(uint64_t seed, uint64_t step, uint32_t thr, int64_t w0,
                                uint32_t* words) {
  uint32_t nib[kBlockQuads];
  const uint64_t q0 = uint64_t(w0) * 8;
  // q0 is a multiple of kBlockQuads, which divides 2^32: the block's counters
  // share their high word, so the loop carries 32-bit lanes only.
  const uint32_t lo0 = uint32_t(q0), hi = uint32_t(q0 >> 32);
#pragma omp simd
  for (int k = 0; k < kBlockQuads; ++k) {
    const uint64_t q = (uint64_t(hi) << 32) | uint64_t(lo0 + uint32_t(k));
    nib[k] = dropout_nibble(seed, step, q, thr);
  }
  for (int w = 0; w < kBlockWords; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < 8; ++j) word |= nib[8 * w + j] << (4 * j);
    words[w] = word;
  }
}

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
