// Batch normalisation + activation + dropout on the CPU.
//
// Passes over the (m x n) data:
//   forward, training:  statistics (read x), then normalise + scale + shift +
//                       activation + dropout (read x, write y and the mask bits)
//   forward, inference: the second pass only
//   backward, training: dz and its column sums (read dy, x, y, mask; write dz
//                       into dx), then dx from dz (read dz, x; write dx)
//   backward, inference: one pass
// The element-wise passes walk the flat index in chunks of kChunk elements (a
// multiple of 32, so each chunk owns whole mask words), cut at row ends into
// contiguous segments that vectorise; column sums go to per-chunk arrays,
// combined in chunk order (the same bits at any thread count).
#include "cpu/batchnorm.h"
#include "cpu/dropout.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/threads.h"

namespace fusednn {
namespace cpu {

namespace {

constexpr int64_t kChunk = 4096;
static_assert(kChunk % (32 * kBlockWords) == 0,
              "a chunk owns whole blocks of mask words (cpu/dropout.h)");
// Elements per chunk of the thread pool (cpu/threads.h) at least.
constexpr int64_t kGrain = 1 << 15;

void unpack_bits(const uint32_t* words, int64_t count, uint32_t* keep) {
  const int64_t nw = (count + 31) / 32;
  for (int64_t w = 0; w < nw; ++w) {
    const uint32_t word = words[w];
#pragma omp simd
    for (int j = 0; j < 32; ++j) keep[32 * w + j] = (word >> j) & 1u;
  }
}

// Column coefficient pointers, offset to the segment's first column.
template <typename T>
struct ColPtrs {
  const T* mh;
  const T* ml;
  const T* sc;
  const T* sh;
  const T* is;
};

template <typename T>
ColPtrs<T> col_ptrs(const T* cols, int64_t n, int64_t j) {
  return {cols + kBnMeanHi * n + j, cols + kBnMeanLo * n + j, cols + kBnScale * n + j,
          cols + kBnShift * n + j, cols + kBnInvStd * n + j};
}

template <typename T, Act A, bool Drop>
void forward_segment(const T* x, T* y, const uint32_t* keep, int64_t len, const T* mh,
                     const T* ml, const T* sc, const T* sh, T alpha, T kept_mul, T kept_add,
                     T dropped) {
#pragma omp simd
  for (int64_t k = 0; k < len; ++k) {
    const T a = bn_activation<T, A>(x[k], mh[k], ml[k], sc[k], sh[k], alpha);
    y[k] = Drop ? dropout_apply(keep[k] != 0, a, DropoutCoef<T>{kept_mul, kept_add, dropped}) : a;
  }
}

// Calls seg(e, len, j, keep + (e - e0)) for the row segments of chunk [e0, e0 + cnt).
template <typename F>
void for_segments(int64_t e0, int64_t cnt, int64_t n, const uint32_t* keep, F&& seg) {
  const int64_t end = e0 + cnt;
  for (int64_t e = e0; e < end;) {
    const int64_t j = e % n;
    const int64_t len = std::min(n - j, end - e);
    seg(e, len, j, keep + (e - e0));
    e += len;
  }
}

template <typename T, Act A, bool Drop>
void forward_pass(const T* x, T* y, uint32_t* mask, int64_t total, int64_t n, const T* cols,
                  T alpha, DropoutCoef<T> c, uint64_t seed, uint64_t step, uint32_t threshold) {
  const int64_t nchunks = (total + kChunk - 1) / kChunk;
  const int64_t nwords = (total + 31) / 32;
  parallel_for(nchunks, kGrain / kChunk, [&](int64_t c0, int64_t c1) {
    alignas(64) uint32_t keep[kChunk];
    uint32_t words[kChunk / 32];
    for (int64_t ci = c0; ci < c1; ++ci) {
      const int64_t e0 = ci * kChunk, cnt = std::min(kChunk, total - e0);
      if (Drop) {
        // The mask words of the chunk (bits past the end included, as the
        // standalone dropout op stores them), then one flag per element.
        const int64_t w0 = e0 / 32, nw = std::min<int64_t>(kChunk / 32, nwords - w0);
        for (int64_t b = 0; b < nw; b += kBlockWords)
          dropout_block_words(seed, step, threshold, w0 + b, words + b);
        std::copy(words, words + nw, mask + w0);
        unpack_bits(words, cnt, keep);
      }
      for_segments(e0, cnt, n, keep, [&](int64_t e, int64_t len, int64_t j, const uint32_t* kp) {
        const ColPtrs<T> p = col_ptrs(cols, n, j);
        forward_segment<T, A, Drop>(x + e, y + e, kp, len, p.mh, p.ml, p.sc, p.sh, alpha,
                                    c.kept_mul, c.kept_add, c.dropped);
      });
    }
  });
}

// dz = dL/dz into out (times scale unless Stats), and the column sums
// s1 += dz, s2 += dz x_hat.
template <typename T, Act A, bool Drop, BnSaved S, bool Stats>
void backward_segment(const T* dy, const T* x, const T* y, const uint32_t* keep, T* out,
                      int64_t len, const T* mh, const T* ml, const T* sc, const T* sh,
                      const T* is, double* s1, double* s2, T alpha, T kept_mul,
                      T inv_kept_mul) {
#pragma omp simd
  for (int64_t k = 0; k < len; ++k) {
    const T xc = bn_centered(x[k], mh[k], ml[k]);
    const T dz = bn_dz<T, A, S>(dy[k], xc * sc[k] + sh[k], y[k], Drop ? keep[k] != 0 : true,
                                kept_mul, inv_kept_mul, alpha);
    out[k] = Stats ? dz : dz * sc[k];
    s1[k] += double(dz);
    s2[k] += double(dz) * double(xc * is[k]);
  }
}

template <typename T, Act A, bool Drop, BnSaved S, bool Stats>
void backward_pass(const T* dy, const T* x, const T* y, const uint32_t* mask, T* dx,
                   int64_t total, int64_t n, const T* cols, T alpha, DropoutCoef<T> c,
                   std::vector<double>& part) {
  const int64_t nchunks = (total + kChunk - 1) / kChunk;
  const int64_t groups = chunk_count(nchunks, kGrain / kChunk);
  part.assign(size_t(groups) * 2 * size_t(n), 0.0);
  parallel_chunks(groups, [&](int64_t g) {
    int64_t c0, c1;
    chunk_range(nchunks, groups, g, &c0, &c1);
    alignas(64) uint32_t keep[kChunk];
    double* s1 = part.data() + g * 2 * n;
    double* s2 = s1 + n;
    const T inv_kept_mul = T(1) / c.kept_mul;
    for (int64_t ci = c0; ci < c1; ++ci) {
      const int64_t e0 = ci * kChunk, cnt = std::min(kChunk, total - e0);
      if (Drop) unpack_bits(mask + e0 / 32, cnt, keep);
      for_segments(e0, cnt, n, keep, [&](int64_t e, int64_t len, int64_t j, const uint32_t* kp) {
        const ColPtrs<T> p = col_ptrs(cols, n, j);
        backward_segment<T, A, Drop, S, Stats>(dy + e, x + e, y + e, kp, dx + e, len, p.mh, p.ml,
                                               p.sc, p.sh, p.is, s1 + j, s2 + j, alpha,
                                               c.kept_mul, inv_kept_mul);
      });
    }
  });
}

// dx = scale (dz - mean(dz) - x_hat mean(dz x_hat)), dz read from dx.
template <typename T>
void backward_stats_row(const T* x, T* dx, int64_t n, const T* mh, const T* ml, const T* sc,
                        const T* is, const T* mdz, const T* mdzx) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    dx[j] = bn_dx_train(dx[j], bn_centered(x[j], mh[j], ml[j]) * is[j], sc[j], mdz[j], mdzx[j]);
  }
}

// Shifted sums of rows blk[0..rows) into s1, s2 (n each), shift k0: the rows
// are summed in T in registers, column by column, and each column's block
// sums are added to the double totals once. One load and three arithmetic
// operations per element, instead of a conversion to double and a load and
// a store of both totals; the block's rounding in T stays below 2^-21 of
// its sums (at most kStatsRows terms). 8 rows: with 16, rows 4 KiB apart (1024
// float32 features) map to one L1 set and evict each other, twice as slow.
constexpr int64_t kStatsRows = 8;

template <typename T, int64_t R>
void stats_block(const T* blk, const T* k0, int64_t rows, int64_t n, double* s1, double* s2) {
  const int64_t nr = R > 0 ? R : rows;  // a constant trip count unrolls
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    T a1 = 0, a2 = 0;
    for (int64_t i = 0; i < nr; ++i) {
      const T d = blk[i * n + j] - k0[j];
      a1 += d;
      a2 += d * d;
    }
    s1[j] += double(a1);
    s2[j] += double(a2);
  }
}

// Shifted sums of the rows [r0, r1) into s1, s2 (n each), shift = row 0.
template <typename T>
void stats_rows(const T* x, int64_t r0, int64_t r1, int64_t n, double* s1, double* s2) {
  for (int64_t i = r0; i < r1; i += kStatsRows) {
    const int64_t rows = std::min(kStatsRows, r1 - i);
    if (rows == kStatsRows)
      stats_block<T, kStatsRows>(x + i * n, x, rows, n, s1, s2);
    else
      stats_block<T, 0>(x + i * n, x, rows, n, s1, s2);
  }
}

// Rows per chunk of the statistics and dx passes: at least kGrain elements.
int64_t rows_grain(int64_t n) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, n)); }

// Column j's totals of the per-chunk partial sums (2 n per chunk: s1, s2), in
// chunk order.
void column_totals(const std::vector<double>& part, int64_t n, int64_t j, double* s1, double* s2) {
  const int64_t chunks = n > 0 ? int64_t(part.size()) / (2 * n) : 0;
  *s1 = *s2 = 0.0;
  for (int64_t c = 0; c < chunks; ++c) {
    *s1 += part[size_t(c * 2 * n + j)];
    *s2 += part[size_t(c * 2 * n + n + j)];
  }
}

template <typename T>
void apply(const T* x, T* y, uint32_t* mask, int64_t m, int64_t n, const T* cols, Act a, T alpha,
           const BnDropout& d) {
  const int64_t total = m * n;
  const bool drop = d.rate > 0.0;
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(d.rate, d.alpha));
  const uint32_t thr = dropout_threshold(d.rate);
  const uint64_t step = d.step_at ? *d.step_at : d.step;
  dispatch_act(a, [&](auto act) {
    constexpr Act A = decltype(act)::value;
    if (drop)
      forward_pass<T, A, true>(x, y, mask, total, n, cols, alpha, c, d.seed, step, thr);
    else
      forward_pass<T, A, false>(x, y, mask, total, n, cols, alpha, c, d.seed, step, thr);
  });
}

}  // namespace

template <typename T>
void batchnorm_forward_train(const T* x, const T* gamma, const T* beta, T* moving_mean,
                             T* moving_var, double momentum, double epsilon, BnConvention conv,
                             T* y, T* cols, double* mean, double* var, uint32_t* mask, int64_t m,
                             int64_t n, Act a, T alpha, const BnDropout& d) {
  const int64_t chunks = chunk_count(m, rows_grain(n));
  std::vector<double> part(size_t(chunks) * 2 * size_t(n), 0.0);
  parallel_chunks(chunks, [&](int64_t c) {
    int64_t r0, r1;
    chunk_range(m, chunks, c, &r0, &r1);
    double* s1 = part.data() + c * 2 * n;
    stats_rows(x, r0, r1, n, s1, s1 + n);
  });
  for (int64_t j = 0; j < n; ++j) {
    double s1, s2;
    column_totals(part, n, j, &s1, &s2);
    bn_finalize_stats(double(x[j]), s1, s2, double(m), mean[j], var[j]);
    if (moving_mean)
      bn_update_moving(moving_mean[j], moving_var[j], mean[j], var[j], momentum, double(m), conv);
    bn_column<T>(mean[j], 1.0 / std::sqrt(var[j] + epsilon), gamma ? double(gamma[j]) : 1.0,
                 beta ? double(beta[j]) : 0.0, cols, n, j);
  }
  apply(x, y, mask, m, n, cols, a, alpha, d);
}

template <typename T>
void batchnorm_forward_infer(const T* x, const T* gamma, const T* beta, const T* moving_mean,
                             const T* moving_var, double epsilon, T* y, T* cols, uint32_t* mask,
                             int64_t m, int64_t n, Act a, T alpha, const BnDropout& d) {
  for (int64_t j = 0; j < n; ++j)
    bn_column<T>(double(moving_mean[j]), 1.0 / std::sqrt(double(moving_var[j]) + epsilon),
                 gamma ? double(gamma[j]) : 1.0, beta ? double(beta[j]) : 0.0, cols, n, j);
  apply(x, y, mask, m, n, cols, a, alpha, d);
}

template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* y, const T* cols, const uint32_t* mask,
                        T* dx, T* dgamma, T* dbeta, int64_t m, int64_t n, Act a, T alpha,
                        const BnDropout& d, bool batch_stats) {
  const int64_t total = m * n;
  std::vector<double> part;  // sized by backward_pass
  const bool drop = d.rate > 0.0;
  // rate 0 gives kept_mul 1: bn_dz then leaves dz = dy f'.
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(d.rate, d.alpha));
  dispatch_act(a, [&](auto act) {
    constexpr Act A = decltype(act)::value;
    bn_backward_variant(drop, d.alpha, [&](auto drop_c, auto saved_c) {
      constexpr bool D = decltype(drop_c)::value;
      constexpr BnSaved S = decltype(saved_c)::value;
      if (batch_stats)
        backward_pass<T, A, D, S, true>(dy, x, y, mask, dx, total, n, cols, alpha, c, part);
      else
        backward_pass<T, A, D, S, false>(dy, x, y, mask, dx, total, n, cols, alpha, c, part);
    });
  });
  // Column sums over the chunks; s1 = sum dz = dbeta, s2 = sum dz x_hat = dgamma.
  std::vector<T> mdz(batch_stats ? n : 0), mdzx(batch_stats ? n : 0);
  for (int64_t j = 0; j < n; ++j) {
    double s1, s2;
    column_totals(part, n, j, &s1, &s2);
    if (dbeta) dbeta[j] = T(s1);
    if (dgamma) dgamma[j] = T(s2);
    if (batch_stats) {
      mdz[j] = T(s1 / double(m));
      mdzx[j] = T(s2 / double(m));
    }
  }
  if (!batch_stats) return;
  const ColPtrs<T> p = col_ptrs(cols, n, 0);
  parallel_for(m, rows_grain(n), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      backward_stats_row(x + i * n, dx + i * n, n, p.mh, p.ml, p.sc, p.is, mdz.data(),
                         mdzx.data());
  });
}

#define FUSEDNN_INSTANTIATE(T)                                                                  \
  template void batchnorm_forward_train<T>(const T*, const T*, const T*, T*, T*, double, double, \
                                           BnConvention, T*, T*, double*, double*, uint32_t*,    \
                                           int64_t, int64_t, Act, T, const BnDropout&);          \
  template void batchnorm_forward_infer<T>(const T*, const T*, const T*, const T*, const T*,    \
                                           double, T*, T*, uint32_t*, int64_t, int64_t, Act, T,  \
                                           const BnDropout&);                                    \
  template void batchnorm_backward<T>(const T*, const T*, const T*, const T*, const uint32_t*,  \
                                      T*, T*, T*, int64_t, int64_t, Act, T, const BnDropout&,    \
                                      bool);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cpu
}  // namespace fusednn
