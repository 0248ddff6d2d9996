// One optimizer step for all parameter tensors in a few calls of the thread
// pool (cpu/threads.h).
//
// The tensors are cut into chunks of kChunk elements, and the threads share
// the chunks of all tensors, so 300 small tensors cost one pool call, not 300.
// Phases, one pool call each:
//   1. (clipnorm / global_clipnorm) sums of squares of the effective
//      gradients, per chunk, combined per tensor in a fixed order
//      (deterministic whatever the thread count);
//   2. the update of every element (fusednn/optimizer.h): the slots'
//      recurrences in double, which keeps float32 storage within rounding of
//      the float64 reference, and the parameter's increment in the storage
//      type (see opt_update: double divides and square roots, not memory,
//      would bound RMSprop on a two-core AVX2 machine);
//   3. (max-norm) unit norms of the constrained tensors, then their rescale.
#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/threads.h"

namespace fusednn {
namespace cpu {

namespace {

constexpr int64_t kChunk = 1 << 14;
constexpr double kNoClip = std::numeric_limits<double>::infinity();

struct Chunk {
  int64_t tensor, begin, end;
};

// Loops over one chunk live in plain functions: lambda-captured references
// keep GCC from vectorising.
template <typename T>
double chunk_sumsq(const OptTensor<T>& t, int64_t b, int64_t e) {
  const double l1 = t.l1, l2 = t.l2;
  double acc = 0;
  if (l1 == 0 && l2 == 0) {
    // No penalty: the gradient as it is. The penalty term would add 0 * p,
    // which is NaN for a NaN or inf parameter and would carry the NaN into
    // this tensor's norm (and the global norm: every tensor's step).
#pragma omp simd reduction(+ : acc)
    for (int64_t i = b; i < e; ++i) acc += double(t.g[i]) * double(t.g[i]);
    return acc;
  }
#pragma omp simd reduction(+ : acc)
  for (int64_t i = b; i < e; ++i) {
    const double g = opt_effective_grad<double>(t.g[i], t.p[i], l1, l2, 1.0, kNoClip);
    acc += g * g;
  }
  return acc;
}

// The gradient the rule sees: g as it is, g times the clipnorm /
// global_clipnorm scale, opt_effective_grad without penalties (clipvalue:
// given p = 0, since 0 * p is NaN for a NaN or inf parameter) or with them.
// A compile-time choice: a multiply by a scale of 1 would still cost a double
// multiply and the conversion of g in every lane.
enum GradMode : int { kGradPlain = 0, kGradScaled = 1, kGradClip = 2, kGradFull = 3 };

// Mask: bit k set when slot k exists; unused slots are locals that are never
// stored (RMSprop may use velocity and momentum without the centered average,
// so the mask is not always a prefix).
template <Opt K, typename T, int Mask, int G>
void chunk_update(const OptStep<double>& h_in, const OptTensor<T>& t, int64_t b, int64_t e,
                  double scale, Clip clip_mode) {
  // A local copy: stores through p could alias the caller's struct, which
  // would keep its fields from being hoisted out of the vector loop.
  const OptStep<double> h = h_in;
  const double clipvalue = clip_mode == Clip::Value ? h.clipvalue : kNoClip;
  T* p = t.p;
  const T* g = t.g;
  T* s0 = t.s[0];
  T* s1 = t.s[1];
  T* s2 = t.s[2];
  const double l1 = t.l1, l2 = t.l2;
#pragma omp simd
  for (int64_t i = b; i < e; ++i) {
    T pv = p[i];
    double a = (Mask & 1) ? double(s0[i]) : 0.0;
    double c = (Mask & 2) ? double(s1[i]) : 0.0;
    double d = (Mask & 4) ? double(s2[i]) : 0.0;
    const double gv =
        G >= kGradClip
            ? opt_effective_grad<double>(g[i], G == kGradFull ? double(pv) : 0.0, l1, l2, scale,
                                         clipvalue)
            : (G == kGradScaled ? double(g[i]) * scale : double(g[i]));
    opt_update<double, T, Mask>(K, h, pv, gv, a, c, d);
    p[i] = pv;
    if (Mask & 1) s0[i] = T(a);
    if (Mask & 2) s1[i] = T(c);
    if (Mask & 4) s2[i] = T(d);
  }
}

// chunk_update for variant v = slot mask + 8 * grad mode, found from V up.
template <Opt K, typename T, int V = 0>
void chunk_variant(int v, const OptStep<double>& h, const OptTensor<T>& t, int64_t b, int64_t e,
                   double scale, Clip clip_mode) {
  if (v == V) {
    chunk_update<K, T, (V & 7), (V >> 3)>(h, t, b, e, scale, clip_mode);
  } else if constexpr (V + 1 < 8 * 4) {
    chunk_variant<K, T, V + 1>(v, h, t, b, e, scale, clip_mode);
  }
}

template <Opt K, typename T>
void update_chunk(const OptStep<double>& h, const OptTensor<T>& t, int64_t b, int64_t e,
                  double scale, Clip clip_mode) {
  const int grad = (t.l1 != 0 || t.l2 != 0)                                ? kGradFull
                   : clip_mode == Clip::Value                              ? kGradClip
                   : (clip_mode == Clip::Norm || clip_mode == Clip::Global) ? kGradScaled
                                                                           : kGradPlain;
  const int slots = (t.s[0] ? 1 : 0) | (t.s[1] ? 2 : 0) | (t.s[2] ? 4 : 0);
  chunk_variant<K, T>(slots + 8 * grad, h, t, b, e, scale, clip_mode);
}

template <typename T>
void unit_sumsq(const OptTensor<T>& t, int64_t o, int64_t i0, int64_t i1, double* out) {
  for (int64_t i = i0; i < i1; ++i) out[i - i0] = 0;
  for (int64_t j = 0; j < t.mid; ++j) {
    const T* row = t.p + (o * t.mid + j) * t.inner;
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) out[i - i0] += double(row[i]) * double(row[i]);
  }
}

template <typename T>
void unit_rescale(const OptTensor<T>& t, int64_t o, int64_t i0, int64_t i1, const double* sumsq) {
  for (int64_t j = 0; j < t.mid; ++j) {
    T* row = t.p + (o * t.mid + j) * t.inner;
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i)
      row[i] = T(double(row[i]) * opt_max_norm_scale<double>(sumsq[i - i0], t.max_norm));
  }
}

template <Opt K, typename T>
void step(const OptStep<double>& h, OptTensor<T>* ts, int64_t count, Clip clip_mode, double clip) {
  std::vector<Chunk> chunks;
  for (int64_t t = 0; t < count; ++t)
    for (int64_t b = 0; b < ts[t].n; b += kChunk)
      chunks.push_back({t, b, std::min(ts[t].n, b + kChunk)});
  const int64_t nc = int64_t(chunks.size());
  const bool norms = clip_mode == Clip::Norm || clip_mode == Clip::Global;
  std::vector<double> partial(norms ? size_t(nc) : 0);
  std::vector<double> scale(size_t(count), 1.0);

  // Max-norm work items: (tensor, outer index, block of inner columns).
  constexpr int64_t kCols = 512;
  struct Unit {
    int64_t tensor, outer, i0, i1;
  };
  std::vector<Unit> units;
  for (int64_t t = 0; t < count; ++t)
    if (ts[t].max_norm > 0 && ts[t].n > 0)
      for (int64_t o = 0; o < ts[t].outer; ++o)
        for (int64_t i0 = 0; i0 < ts[t].inner; i0 += kCols)
          units.push_back({t, o, i0, std::min(ts[t].inner, i0 + kCols)});
  const int64_t nu = int64_t(units.size());

  int64_t total = 0;
  for (int64_t t = 0; t < count; ++t) total += ts[t].n;
  // Small steps stay on the caller: a pool call would cost more than it saves.
  const bool parallel = total >= 4 * kChunk;
  auto each = [&](int64_t n_items, auto&& f) {
    if (parallel) {
      parallel_chunks(n_items, f);
    } else {
      for (int64_t i = 0; i < n_items; ++i) f(i);
    }
  };

  if (norms) {
    each(nc, [&](int64_t c) {
      partial[c] = chunk_sumsq(ts[chunks[c].tensor], chunks[c].begin, chunks[c].end);
    });
    std::vector<double> sums(size_t(count), 0.0);
    for (int64_t c = 0; c < nc; ++c) sums[chunks[c].tensor] += partial[c];
    if (clip_mode == Clip::Norm) {
      for (int64_t t = 0; t < count; ++t) scale[t] = opt_clip_scale<double>(sums[t], clip);
    } else {
      double all = 0;
      for (double s : sums) all += s;
      std::fill(scale.begin(), scale.end(), opt_clip_scale<double>(all, clip));
    }
  }
  each(nc, [&](int64_t c) {
    const Chunk& ch = chunks[c];
    update_chunk<K, T>(h, ts[ch.tensor], ch.begin, ch.end, scale[ch.tensor], clip_mode);
  });
  if (nu > 0) {
    each(nu, [&](int64_t u) {
      const Unit& w = units[u];
      double sumsq[kCols];
      unit_sumsq(ts[w.tensor], w.outer, w.i0, w.i1, sumsq);
      unit_rescale(ts[w.tensor], w.outer, w.i0, w.i1, sumsq);
    });
  }
}

}  // namespace

template <typename T>
void optimizer_step(Opt k, const OptStep<double>& h, OptTensor<T>* tensors, int64_t count,
                    Clip clip_mode, double clip) {
  dispatch_opt(k, [&](auto kind) {
    step<decltype(kind)::value>(h, tensors, count, clip_mode, clip);
  });
}

template <typename T>
void optimizer_chunk(Opt k, const OptStep<double>& h, const OptTensor<T>& t, int64_t b,
                     int64_t e, Clip clip_mode) {
  dispatch_opt(k, [&](auto kind) {
    update_chunk<decltype(kind)::value, T>(h, t, b, e, 1.0, clip_mode);
  });
}

template void optimizer_step<float>(Opt, const OptStep<double>&, OptTensor<float>*, int64_t, Clip,
                                    double);
template void optimizer_step<double>(Opt, const OptStep<double>&, OptTensor<double>*, int64_t,
                                     Clip, double);
template void optimizer_chunk<float>(Opt, const OptStep<double>&, const OptTensor<float>&,
                                     int64_t, int64_t, Clip);
template void optimizer_chunk<double>(Opt, const OptStep<double>&, const OptTensor<double>&,
                                      int64_t, int64_t, Clip);

}  // namespace cpu
}  // namespace fusednn
