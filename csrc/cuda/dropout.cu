// Dropout kernels: the mask and transform of fusednn/dropout.h. Each thread
// takes 4 consecutive elements, one Philox call; the 8 lanes that cover one
// 32-element mask word OR their nibbles together with warp shuffles and one of
// them stores the word, so the mask costs 1 bit of traffic per element.
#include "cuda/dropout.cuh"
#include "cuda/launch.cuh"
#include "fusednn/dropout.h"

namespace fusednn {
namespace cuda {

namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullWarp = 0xffffffffu;
// The forward loop hands whole warps their work; blocks must be whole warps.
static_assert(kThreads % kWarp == 0, "blocks of whole warps");
// Elements per block per grid-stride pass: 4 per thread.
constexpr int64_t kBlockElems = 4 * kThreads;

// Four consecutive elements as one aligned access (128-bit loads for float).
template <typename T>
struct alignas(4 * sizeof(T)) Quad {
  T v[4];
};

template <typename T>
bool quad_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % sizeof(Quad<T>) == 0;
}

// Applies keep bits 0..3 of `nib` to elements e0 .. e0 + 3 (those < n) of in -> out.
template <typename T, typename F>
__device__ __forceinline__ void apply_quad(const T* __restrict__ in, T* __restrict__ out,
                                           int64_t e0, int64_t n, uint32_t nib, bool vec, F f) {
  if (vec && e0 + 4 <= n) {
    const Quad<T> a = *reinterpret_cast<const Quad<T>*>(in + e0);
    Quad<T> b;
#pragma unroll
    for (int j = 0; j < 4; ++j) b.v[j] = f((nib >> j) & 1u, a.v[j]);
    *reinterpret_cast<Quad<T>*>(out + e0) = b;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (e0 + j < n) out[e0 + j] = f((nib >> j) & 1u, in[e0 + j]);
  }
}

// Quad q of the tensor (elements 4 q .. 4 q + 3) is lane q % 32 of warp-chunk
// q / 32; a chunk is 4 mask words. The loop bound depends on the warp index
// only, so every lane of a warp runs the same iterations and reaches the
// shuffles together; lanes past the end compute draws they do not use.
template <typename T, bool kStore>
__global__ void forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                               uint32_t* __restrict__ mask, int64_t n, uint64_t seed,
                               uint64_t step, const uint64_t* step_at, uint32_t thr,
                               DropoutCoef<T> c, bool vec) {
  if (step_at != nullptr) step = *step_at;
  const unsigned lane = threadIdx.x % kWarp;
  const int64_t nwords = (n + 31) / 32;
  const int64_t nchunks = (nwords + 3) / 4;
  for (int64_t chunk = thread_index() / kWarp; chunk < nchunks; chunk += grid_stride() / kWarp) {
    const int64_t q = chunk * kWarp + lane;
    const uint32_t nib = dropout_nibble(seed, step, uint64_t(q), thr);
    apply_quad(x, y, 4 * q, n, nib, vec,
               [&](bool keep, T v) { return dropout_apply<T>(keep, v, c); });
    if constexpr (kStore) {
      // Lanes 8 k .. 8 k + 7 hold the nibbles of word 4 chunk + k.
      uint32_t word = nib << (4 * (lane % 8));
      word |= __shfl_xor_sync(kFullWarp, word, 1);
      word |= __shfl_xor_sync(kFullWarp, word, 2);
      word |= __shfl_xor_sync(kFullWarp, word, 4);
      const int64_t w = q / 8;
      if (lane % 8 == 0 && w < nwords) mask[w] = word;
    }
  }
}

template <typename T, bool kStored>
__global__ void backward_kernel(const T* __restrict__ dy, const uint32_t* __restrict__ mask,
                                T* __restrict__ dx, int64_t n, uint64_t seed, uint64_t step,
                                uint32_t thr, DropoutCoef<T> c, bool vec) {
  const int64_t nquads = (n + 3) / 4;
  for (int64_t q = thread_index(); q < nquads; q += grid_stride()) {
    uint32_t nib;
    if constexpr (kStored)
      nib = (mask[q / 8] >> (4 * (q % 8))) & 0xFu;
    else
      nib = dropout_nibble(seed, step, uint64_t(q), thr);
    apply_quad(dy, dx, 4 * q, n, nib, vec,
               [&](bool keep, T g) { return dropout_grad<T>(keep, g, c); });
  }
}

__global__ void mask_kernel(uint32_t* __restrict__ mask, int64_t nwords, uint64_t seed,
                            uint64_t step, const uint64_t* step_at, uint32_t thr) {
  if (step_at != nullptr) step = *step_at;
  for (int64_t w = thread_index(); w < nwords; w += grid_stride())
    mask[w] = dropout_mask_word(seed, step, uint64_t(w), thr);
}

__global__ void philox_kernel(const uint32_t* __restrict__ ctr, uint32_t* __restrict__ out,
                              int64_t count, uint32_t k0, uint32_t k1) {
  for (int64_t i = thread_index(); i < count; i += grid_stride()) {
    // Qualified: fusednn::cuda::philox4x32_10 is the host launcher.
    const Philox4x32 r = fusednn::philox4x32_10(ctr[4 * i], ctr[4 * i + 1], ctr[4 * i + 2],
                                                ctr[4 * i + 3], k0, k1);
#pragma unroll
    for (int l = 0; l < 4; ++l) out[4 * i + l] = r.v[l];
  }
}

}  // namespace

template <typename T>
void dropout_forward(const T* x, T* y, uint32_t* mask, int64_t n, uint64_t seed, uint64_t step,
                     double rate, bool alpha, cudaStream_t stream, const uint64_t* step_at) {
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(rate, alpha));
  const uint32_t thr = dropout_threshold(rate);
  const bool vec = quad_aligned(x) && quad_aligned(y);
  if (mask != nullptr)
    linear_kernel<kBlockElems>(forward_kernel<T, true>, 0, stream, n, x, y, mask, n, seed, step,
                               step_at, thr, c, vec);
  else
    linear_kernel<kBlockElems>(forward_kernel<T, false>, 0, stream, n, x, y, mask, n, seed, step,
                               step_at, thr, c, vec);
}

template <typename T>
void dropout_backward(const T* dy, const uint32_t* mask, T* dx, int64_t n, uint64_t seed,
                      uint64_t step, double rate, bool alpha, cudaStream_t stream) {
  const DropoutCoef<T> c = dropout_coef_as<T>(dropout_coef(rate, alpha));
  const uint32_t thr = dropout_threshold(rate);
  const bool vec = quad_aligned(dy) && quad_aligned(dx);
  if (mask != nullptr)
    linear_kernel<kBlockElems>(backward_kernel<T, true>, 0, stream, n, dy, mask, dx, n, seed,
                               step, thr, c, vec);
  else
    linear_kernel<kBlockElems>(backward_kernel<T, false>, 0, stream, n, dy, mask, dx, n, seed,
                               step, thr, c, vec);
}

void dropout_mask(uint32_t* mask, int64_t nwords, uint64_t seed, uint64_t step, double rate,
                  cudaStream_t stream, const uint64_t* step_at) {
  linear_kernel(mask_kernel, 0, stream, nwords, mask, nwords, seed, step, step_at,
                dropout_threshold(rate));
}

void philox4x32_10(const uint32_t* ctr, uint32_t* out, int64_t count, uint32_t k0, uint32_t k1,
                   cudaStream_t stream) {
  linear_kernel(philox_kernel, 0, stream, count, ctr, out, count, k0, k1);
}

#define FUSEDNN_INSTANTIATE(T)                                                                 \
  template void dropout_forward<T>(const T*, T*, uint32_t*, int64_t, uint64_t, uint64_t, double, \
                                   bool, cudaStream_t, const uint64_t*);                       \
  template void dropout_backward<T>(const T*, const uint32_t*, T*, int64_t, uint64_t, uint64_t,  \
                                    double, bool, cudaStream_t);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cuda
}  // namespace fusednn
