// CUDA dropout kernels (the mask and transform of fusednn/dropout.h), the
// counterpart of cpu/dropout.h. Pointers are device memory; inputs are assumed
// valid (checked at the binding): contiguous arrays of n elements, masks of
// ceil(n / 32) words, rate in [0, 1). Everything runs asynchronously on
// `stream`. Plain C++ so that the binding, compiled by the host compiler, can
// include it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace fusednn {
namespace cuda {

// y = keep ? x * kept_mul + kept_add : dropped, keep from Philox under
// (seed, step). mask, when non-null, receives the ceil(n / 32) mask words
// (bits past n included, as on the CPU). step_at, when non-null, is a device
// word read for the step when the kernel runs (a captured graph's replays
// take the step written there; BnDropout::step_at).
template <typename T>
void dropout_forward(const T* x, T* y, uint32_t* mask, int64_t n, uint64_t seed, uint64_t step,
                     double rate, bool alpha, cudaStream_t stream,
                     const uint64_t* step_at = nullptr);

// dx = keep ? dy * kept_mul : 0, keep read from `mask` or, when it is null,
// regenerated from (seed, step).
template <typename T>
void dropout_backward(const T* dy, const uint32_t* mask, T* dx, int64_t n, uint64_t seed,
                      uint64_t step, double rate, bool alpha, cudaStream_t stream);

// mask[0..nwords) = mask words 0..nwords of (seed, step, rate); step_at as
// dropout_forward's.
void dropout_mask(uint32_t* mask, int64_t nwords, uint64_t seed, uint64_t step, double rate,
                  cudaStream_t stream, const uint64_t* step_at = nullptr);

// out[4 i + l] = lane l of philox4x32_10(ctr[4 i .. 4 i + 3], (k0, k1)), i < count.
void philox4x32_10(const uint32_t* ctr, uint32_t* out, int64_t count, uint32_t k0, uint32_t k1,
                   cudaStream_t stream);

}  // namespace cuda
}  // namespace fusednn
