// Dropout on the CPU: per block of mask words, the Philox draws of the whole
// block are computed in one SIMD loop over counters (the 32 x 32 -> 64-bit
// multiplies of a round become vpmuludq), packed into words, and then applied
// to the block's elements word by word while the words are in registers.
#include "cpu/dropout.h"

#include <algorithm>
#include <cstring>

#include "cpu/threads.h"
#include "fusednn/dropout.h"

namespace fusednn {
namespace cpu {

namespace {
// Elements per chunk of the thread pool (cpu/threads.h). Smaller than
// activation.cpp's: 10 Philox rounds per 4 elements make each element dearer
// than an activation.
constexpr int64_t kGrain = 1 << 13;

template <typename T>
FUSEDNN_HD void apply_forward(uint32_t word, const T* x, T* y, int count, T mul, T add,
                              T dropped) {
  const DropoutCoef<T> c{mul, add, dropped};
#pragma omp simd
  for (int j = 0; j < count; ++j) y[j] = dropout_apply<T>((word >> j) & 1u, x[j], c);
}

template <typename T>
FUSEDNN_HD void apply_backward(uint32_t word, const T* dy, T* dx, int count, T mul) {
  const DropoutCoef<T> c{mul, T(0), T(0)};
#pragma omp simd
  for (int j = 0; j < count; ++j) dx[j] = dropout_grad<T>((word >> j) & 1u, dy[j], c);
}

// The one loop of forward and backward: per block, the words (generated, or
// read from mask_in), stored to mask_out when given, then applied to in -> out.
template <typename T, bool kForward>
void run(const T* in, T* out, const uint32_t* mask_in, uint32_t* mask_out, int64_t n,
         uint64_t seed, uint64_t step, uint32_t thr, T mul, T add, T dropped) {
  const int64_t nwords = dropout_words(n);
  const int64_t nblocks = (nwords + kBlockWords - 1) / kBlockWords;
  parallel_for(nblocks, kGrain / (32 * kBlockWords), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t w0 = b * kBlockWords;
      const int nw = int(std::min<int64_t>(kBlockWords, nwords - w0));
      uint32_t words[kBlockWords];
      if (mask_in != nullptr)
        std::memcpy(words, mask_in + w0, sizeof(uint32_t) * nw);
      else
        dropout_block_words(seed, step, thr, w0, words);
      if (mask_out != nullptr) std::memcpy(mask_out + w0, words, sizeof(uint32_t) * nw);
      for (int w = 0; w < nw; ++w) {
        const int64_t e0 = (w0 + w) * 32;
        // Full words get a constant trip count; only the last word can be short.
        const int count = int(std::min<int64_t>(32, n - e0));
        if constexpr (kForward) {
          if (count == 32)
            apply_forward<T>(words[w], in + e0, out + e0, 32, mul, add, dropped);
          else
            apply_forward<T>(words[w], in + e0, out + e0, count, mul, add, dropped);
        } else {
          if (count == 32)
            apply_backward<T>(words[w], in + e0, out + e0, 32, mul);
          else
            apply_backward<T>(words[w], in + e0, out + e0, count, mul);
        }
      }
    }
  });
}
}  // namespace

template <typename T>
void dropout_forward(const T* x, T* y, uint32_t* mask, int64_t n, uint64_t seed, uint64_t step,
                     double rate, bool alpha) {
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(rate, alpha));
  run<T, true>(x, y, nullptr, mask, n, seed, step, dropout_threshold(rate), c.kept_mul,
               c.kept_add, c.dropped);
}

template <typename T>
void dropout_backward(const T* dy, const uint32_t* mask, T* dx, int64_t n, uint64_t seed,
                      uint64_t step, double rate, bool alpha) {
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(rate, alpha));
  run<T, false>(dy, dx, mask, nullptr, n, seed, step, dropout_threshold(rate), c.kept_mul, T(0),
                T(0));
}

void dropout_mask(uint32_t* mask, int64_t nwords, uint64_t seed, uint64_t step, double rate) {
  const uint32_t thr = dropout_threshold(rate);
  const int64_t nblocks = (nwords + kBlockWords - 1) / kBlockWords;
  parallel_for(nblocks, kGrain / (32 * kBlockWords), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t w0 = b * kBlockWords;
      uint32_t words[kBlockWords];
      dropout_block_words(seed, step, thr, w0, words);
      std::memcpy(mask + w0, words,
                  sizeof(uint32_t) * std::min<int64_t>(kBlockWords, nwords - w0));
    }
  });
}

void philox4x32_10(const uint32_t* ctr, const uint32_t key[2], uint32_t* out, int64_t count) {
  const uint32_t k0 = key[0], k1 = key[1];
  for (int64_t i = 0; i < count; ++i) {
    const Philox4x32 r = fusednn::philox4x32_10(ctr[4 * i], ctr[4 * i + 1], ctr[4 * i + 2],
                                                ctr[4 * i + 3], k0, k1);
    for (int l = 0; l < 4; ++l) out[4 * i + l] = r.v[l];
  }
}

template void dropout_forward<float>(const float*, float*, uint32_t*, int64_t, uint64_t,
                                     uint64_t, double, bool);
template void dropout_forward<double>(const double*, double*, uint32_t*, int64_t, uint64_t,
                                      uint64_t, double, bool);
template void dropout_backward<float>(const float*, const uint32_t*, float*, int64_t, uint64_t,
                                      uint64_t, double, bool);
template void dropout_backward<double>(const double*, const uint32_t*, double*, int64_t,
                                       uint64_t, uint64_t, double, bool);

}  // namespace cpu
}  // namespace fusednn
