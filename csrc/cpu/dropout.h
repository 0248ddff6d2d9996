// CPU dropout kernels (the mask and transform of fusednn/dropout.h). Inputs are
// assumed valid (checked at the binding): contiguous arrays of n elements, a
// mask of dropout_words(n) words, rate in [0, 1).
#pragma once
#include <cstdint>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "fusednn/dropout.h"

namespace fusednn {
namespace cpu {

// Words of a bit-packed mask of n elements: ceil(n / 32).
inline int64_t dropout_words(int64_t n) { return (n + 31) / 32; }

// Mask words per block: 512 elements, 128 Philox calls, enough for full vectors
// at any SIMD width while the draws stay in L1.
constexpr int kBlockWords = 16;
constexpr int kBlockQuads = 8 * kBlockWords;

#if defined(__AVX2__)
// Philox4x32-10 (fusednn/philox.h) for 8 counters at once. GCC vectorises the
// scalar round of philox.h, but with 64 x 64-bit multiplies emulated from
// three vpmuludq each plus lane shuffles (about 9 ns per call here);
// _mm256_mul_epu32 is the 32 x 32 -> 64-bit multiply the round needs, 4x
// faster. The known-answer and mask tests check it against the scalar form.
namespace philox_avx2 {
// hi and lo halves of a * m for 8 uint32 lanes, m broadcast in every lane.
inline void mulhilo(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// c[g][0..3] <- philox4x32_10(c[g][0..3]; k0, k1), lane by lane, for G groups
// interleaved: a round is a chain of dependent multiplies, so independent
// groups fill the multiplier's latency.
template <int G>
inline void rounds(__m256i (&c)[G][4], uint32_t k0, uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi32(int(philox_detail::kM0));
  const __m256i m1 = _mm256_set1_epi32(int(philox_detail::kM1));
  for (int r = 0; r < 10; ++r) {
    const __m256i key0 = _mm256_set1_epi32(int(k0)), key1 = _mm256_set1_epi32(int(k1));
    for (int g = 0; g < G; ++g) {
      __m256i hi0, lo0, hi1, lo1;
      mulhilo(c[g][0], m0, hi0, lo0);
      mulhilo(c[g][2], m1, hi1, lo1);
      c[g][0] = _mm256_xor_si256(_mm256_xor_si256(hi1, c[g][1]), key0);
      c[g][2] = _mm256_xor_si256(_mm256_xor_si256(hi0, c[g][3]), key1);
      c[g][1] = lo1;
      c[g][3] = lo0;
    }
    k0 += philox_detail::kW0;
    k1 += philox_detail::kW1;
  }
}

// All-ones where v >= thr (unsigned).
inline __m256i at_least(__m256i v, __m256i thr) {
  return _mm256_cmpeq_epi32(_mm256_max_epu32(v, thr), v);
}
}  // namespace philox_avx2
#endif

// words[0..kBlockWords) = mask words w0 (a multiple of kBlockWords) ..
// w0 + kBlockWords - 1, the whole block even past the end of the tensor (the
// extra words are only computed, never stored), so the loops have constant
// trip counts.
inline void dropout_block_words(uint64_t seed, uint64_t step, uint32_t thr, int64_t w0,
                                uint32_t* words) {
  alignas(32) uint32_t nib[kBlockQuads];
  const uint64_t q0 = uint64_t(w0) * 8;
  // q0 is a multiple of kBlockQuads, which divides 2^32: the block's counters
  // share their high word, so the loop carries 32-bit lanes only.
  const uint32_t lo0 = uint32_t(q0), hi = uint32_t(q0 >> 32);
#if defined(__AVX2__)
  using namespace philox_avx2;
  const __m256i t = _mm256_set1_epi32(int(thr));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  constexpr int G = 4;
  static_assert(kBlockQuads % (8 * G) == 0, "whole groups per block");
  for (int k = 0; k < kBlockQuads; k += 8 * G) {
    __m256i c[G][4];
    for (int g = 0; g < G; ++g) {
      c[g][0] = _mm256_add_epi32(_mm256_set1_epi32(int(lo0 + uint32_t(k + 8 * g))), lane);
      c[g][1] = _mm256_set1_epi32(int(hi));
      c[g][2] = _mm256_set1_epi32(int(uint32_t(step)));
      c[g][3] = _mm256_set1_epi32(int(uint32_t(step >> 32)));
    }
    rounds<G>(c, uint32_t(seed), uint32_t(seed >> 32));
    for (int g = 0; g < G; ++g) {
      // The nibble of dropout_nibble: keep bits of lanes 0..3 of the draw.
      const __m256i nibble = _mm256_or_si256(
          _mm256_or_si256(_mm256_and_si256(at_least(c[g][0], t), _mm256_set1_epi32(1)),
                          _mm256_and_si256(at_least(c[g][1], t), _mm256_set1_epi32(2))),
          _mm256_or_si256(_mm256_and_si256(at_least(c[g][2], t), _mm256_set1_epi32(4)),
                          _mm256_and_si256(at_least(c[g][3], t), _mm256_set1_epi32(8))));
      _mm256_store_si256(reinterpret_cast<__m256i*>(nib + k + 8 * g), nibble);
    }
  }
#else
#pragma omp simd
  for (int k = 0; k < kBlockQuads; ++k) {
    const uint64_t q = (uint64_t(hi) << 32) | uint64_t(lo0 + uint32_t(k));
    nib[k] = dropout_nibble(seed, step, q, thr);
  }
#endif
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
