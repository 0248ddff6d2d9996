// The one kernel-launch helper, the CUDA error check, and the activation
// dispatch used by the .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "fusednn/activation.h"

namespace fusednn {
namespace cuda {

// Thrown, never abort(): a failed launch must reach Python as RuntimeError.
[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* expr, const char* file,
                                          int line) {
  throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorName(e) + ": " +
                           cudaGetErrorString(e) + " (" + expr + " at " + file + ":" +
                           std::to_string(line) + ")");
}

#define FUSEDNN_CUDA_CHECK(expr)                                                 \
  do {                                                                           \
    const cudaError_t fusednn_err_ = (expr);                                     \
    if (fusednn_err_ != cudaSuccess)                                             \
      ::fusednn::cuda::throw_cuda_error(fusednn_err_, #expr, __FILE__, __LINE__); \
  } while (0)

constexpr int kThreads = 256;
// Grid-stride loops cover any n; more blocks than a few waves only add
// scheduling work.
constexpr int64_t kMaxBlocks = 4096;

// Indices are int64 so arrays of more than 2^31 elements are covered.
__device__ __forceinline__ int64_t thread_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

// Launches `kernel` with kThreads threads per block, enough blocks for n items
// at `per_block` items a block (capped: kernels loop with a grid stride), on
// `stream`. n <= 0 launches nothing, so no launch ever has zero blocks.
// Element-wise kernels take one item per thread (the default); kernels that
// reduce inside a block take a tile of items per block.
template <int64_t per_block = kThreads, typename... KernelArgs, typename... Args>
void linear_kernel(void (*kernel)(KernelArgs...), uint32_t shmem, cudaStream_t stream, int64_t n,
                   Args&&... args) {
  static_assert(sizeof...(KernelArgs) == sizeof...(Args), "kernel argument count");
  if (n <= 0) return;
  const int64_t blocks = std::min((n + per_block - 1) / per_block, kMaxBlocks);
  kernel<<<unsigned(blocks), kThreads, shmem, stream>>>(
      static_cast<KernelArgs>(std::forward<Args>(args))...);
  FUSEDNN_CUDA_CHECK(cudaGetLastError());
}

// Calls f(std::integral_constant<Act, a>{}) for the runtime value a, so each
// activation gets its own kernel with the switch in act_forward/act_grad folded
// away. fusednn::dispatch_act does the same but is hidden from nvcc's device
// pass, which must see the host code that instantiates the kernels.
template <typename F, int... I>
void with_act_impl(Act a, F&& f, std::integer_sequence<int, I...>) {
  (void)((a == Act(I) ? (f(std::integral_constant<Act, Act(I)>{}), true) : false) || ...);
}
template <typename F>
void with_act(Act a, F&& f) {
  with_act_impl(a, std::forward<F>(f), std::make_integer_sequence<int, int(Act::Count)>{});
}

}  // namespace cuda
}  // namespace fusednn
