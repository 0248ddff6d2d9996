#include "cuda/scratch.cuh"

#include <cstdint>
#include <map>
#include <mutex>

#include "cuda/launch.cuh"

namespace fusednn {
namespace cuda {

namespace {

// The device's pool, created at its first use and kept for the life of the
// process (destroying it from a static destructor would race the runtime's
// own teardown). Null where the device has no memory pools (old drivers,
// some virtualised GPUs): allocations then fall back to cudaMalloc.
cudaMemPool_t pool_for(int dev) {
  static std::mutex mu;
  static std::map<int, cudaMemPool_t> pools;
  std::lock_guard<std::mutex> lock(mu);
  auto it = pools.find(dev);
  if (it != pools.end()) return it->second;
  int supported = 0;
  cudaMemPool_t pool = nullptr;
  if (cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, dev) == cudaSuccess &&
      supported) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = dev;
    if (cudaMemPoolCreate(&pool, &props) == cudaSuccess) {
      // Keep what was freed: scratch sizes repeat every step.
      uint64_t keep = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    } else {
      pool = nullptr;
    }
  }
  cudaGetLastError();  // an unsupported query must not surface in a later check
  pools[dev] = pool;
  return pool;
}

}  // namespace

Scratch::Scratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
  if (bytes == 0) return;
  int dev = 0;
  FUSEDNN_CUDA_CHECK(cudaGetDevice(&dev));
  cudaMemPool_t pool = pool_for(dev);
  if (pool != nullptr) {
    FUSEDNN_CUDA_CHECK(cudaMallocFromPoolAsync(&p_, bytes, pool, stream));
  } else {
    // No pools: a plain allocation, released after the stream has drained.
    pooled_ = false;
    FUSEDNN_CUDA_CHECK(cudaMalloc(&p_, bytes));
  }
}

Scratch::~Scratch() {
  if (p_ == nullptr) return;
  // Errors cannot be thrown from here; a failed release leaks the block.
  if (pooled_) {
    cudaFreeAsync(p_, stream_);
  } else {
    cudaStreamSynchronize(stream_);
    cudaFree(p_);
  }
}

}  // namespace cuda
}  // namespace fusednn
