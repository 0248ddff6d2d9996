#include "cuda/engine.cuh"
#include "cuda/launch.cuh"

namespace fusednn {
namespace cuda {

namespace {

// One block: each thread sums the hits of rows tid, tid + kThreads, ...; the
// partial sums are added in thread order by thread 0.
template <typename T, typename L>
__global__ void tally_kernel(engine::LossKind kind, bool accuracy, double threshold,
                             const T* __restrict__ out, const L* __restrict__ labels,
                             const T* __restrict__ target, const double* __restrict__ loss,
                             int64_t m, int64_t c, engine::Tally* tally) {
  __shared__ int64_t part[kThreads];
  int64_t hits = 0;
  if (accuracy)
    for (int64_t i = threadIdx.x; i < m; i += blockDim.x)
      hits += engine::row_hits<T, L>(kind, threshold, out, labels, target, i, c);
  part[threadIdx.x] = hits;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t total = 0;
    for (int i = 0; i < int(blockDim.x); ++i) total += part[i];
    engine::tally_add(*tally, *loss, m, total);
  }
}

}  // namespace

template <typename T, typename L>
void step_tally(engine::LossKind kind, bool accuracy, double threshold, const T* out,
                const L* labels, const T* target, const double* loss, int64_t m, int64_t c,
                engine::Tally* tally, cudaStream_t stream) {
  tally_kernel<T, L><<<1, kThreads, 0, stream>>>(kind, accuracy, threshold, out, labels, target,
                                                 loss, m, c, tally);
  FUSEDNN_CUDA_CHECK(cudaGetLastError());
}

#define FUSEDNN_INSTANTIATE(T, L)                                                            \
  template void step_tally<T, L>(engine::LossKind, bool, double, const T*, const L*, const T*, \
                                 const double*, int64_t, int64_t, engine::Tally*, cudaStream_t);
FUSEDNN_INSTANTIATE(float, int32_t)
FUSEDNN_INSTANTIATE(float, int64_t)
FUSEDNN_INSTANTIATE(double, int32_t)
FUSEDNN_INSTANTIATE(double, int64_t)
#undef FUSEDNN_INSTANTIATE

}  // namespace cuda
}  // namespace fusednn
