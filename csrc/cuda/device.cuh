// The CUDA kernels under the signatures cpu/device.h gives the CPU ones, so
// that code built for either device (the bindings, compiled once per module)
// makes one call. The GEMMs read the TF32 switch (cublaslt.cuh); the relu
// bit mask's layout is cuBLASLt's and stays here; block_rows is the CPU's.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <initializer_list>

#include "cuda/batchnorm.cuh"
#include "cuda/cublaslt.cuh"
#include "cuda/dropout.cuh"
#include "cuda/kernels.cuh"
#include "cuda/loss.cuh"

namespace fusednn {
namespace dev {

using Stream = cudaStream_t;

// cuBLASLt's RELU_AUX mask: one bit per element of the m x n output, each
// sample's n bits padded to a multiple of 128.
inline int64_t relu_mask_ld(int64_t n) { return (n + 127) / 128 * 128; }
inline int64_t relu_mask_bytes(int64_t m, int64_t n) { return m * relu_mask_ld(n) / 8; }
using cuda::batchnorm_workspace;

using cuda::activation_backward;
using cuda::activation_forward;
using cuda::batchnorm_backward;
using cuda::batchnorm_forward;
using cuda::dropout_backward;
using cuda::dropout_forward;
using cuda::dropout_mask;
using cuda::philox4x32_10;
using cuda::point_loss;
using cuda::softmax_cross_entropy;

template <typename T>
bool dense_forward(const T* x, const T* w, const T* b, T* y, T* z, void* mask, int64_t m,
                   int64_t k, int64_t n, Act a, T alpha, Stream s, int64_t = 0) {
  return cuda::dense_forward<T>(x, w, b, y, z, mask, relu_mask_ld(n), m, k, n, a, alpha,
                                cuda::lt::tf32(), s);
}

template <typename T>
void dense_backward(const T* dy, const T* sv, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha, Stream s) {
  cuda::dense_backward<T>(dy, sv, x, w, dz_buf, dx, dw, db, m, k, n, a, alpha, cuda::lt::tf32(),
                          s);
}

template <typename T>
void dense_backward_weight(const T* dz, const T* x, T* dw, T* db, int64_t m, int64_t k,
                           int64_t n, Stream s) {
  cuda::dense_backward_weight<T>(dz, x, dw, db, m, k, n, cuda::lt::tf32(), s);
}

template <typename T>
void dense_backward_input(const T* dz, const T* w, const T* s_prev, const void* mask_prev,
                          T* dz_prev, T* db_prev, int64_t m, int64_t k, int64_t n, Act a_prev,
                          T alpha_prev, Stream s) {
  cuda::dense_backward_input<T>(dz, w, s_prev, mask_prev, relu_mask_ld(k), dz_prev, db_prev, m, k,
                                n, a_prev, alpha_prev, cuda::lt::tf32(), s);
}

template <typename T>
void gemm(const T* a, const T* b, T* c, int64_t m, int64_t k, int64_t n, Stream s) {
  dense_forward<T>(a, b, nullptr, c, nullptr, nullptr, m, k, n, Act::Linear, T(0), s);
}

template <typename T>
void optimizer_step(Opt kind, const OptStep<double>& h, OptTensor<T>* tensors, int64_t count,
                    Clip clip_mode, double clip, double* norms, Stream s,
                    const OptStep<double>* h_at = nullptr) {
  cuda::optimizer_step<T>(kind, h, tensors, count, clip_mode, clip, norms, s, h_at);
}

// cpu/device.h's UpdateBeside under the same calls: on the GPU the update is
// one multi-tensor launch after the backward (the stream orders it), which
// the step makes itself when finish() says nothing was begun.
template <typename T>
struct UpdateBeside {
  UpdateBeside(Opt, const OptStep<double>&, OptTensor<T>*, int64_t, Clip,
               const OptStep<double>* = nullptr) {}
  void ready(std::initializer_list<const void*>) {}
  bool finish() { return false; }
};

}  // namespace dev
}  // namespace fusednn
