// Stream-ordered scratch memory for kernels that need a temporary buffer
// (cuBLASLt workspaces, fixed-order partial sums).
//
// Each allocation comes from a per-device memory pool of our own and is
// released on the same stream once the work queued before the release has
// run, so two threads on two streams never share a buffer, nothing waits on
// the host, and the calls may be captured into a CUDA graph. The pool keeps
// freed memory for reuse instead of returning it to the driver at every
// synchronisation (the default pool's threshold of 0 would), and it is
// separate from the device's default pool, which other libraries configure.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

namespace fusednn {
namespace cuda {

class Scratch {
 public:
  // `bytes` on the current device, usable by work queued on `stream` after
  // this; 0 bytes gives a null pointer. Throws std::runtime_error when the
  // memory cannot be had.
  Scratch(size_t bytes, cudaStream_t stream);
  ~Scratch();  // the release, queued on the stream
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  void* get() const { return p_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_;
  bool pooled_ = true;
};

}  // namespace cuda
}  // namespace fusednn
