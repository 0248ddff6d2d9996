// Element-wise activation kernels: the math of fusednn/activation.h, one
// kernel per (type, activation) so the switch folds away.
#include "cuda/kernels.cuh"
#include "cuda/launch.cuh"

namespace fusednn {
namespace cuda {

namespace {

template <typename T, Act A>
__global__ void forward_kernel(const T* z, T* y, int64_t n, T alpha) {
  for (int64_t i = thread_index(); i < n; i += grid_stride()) y[i] = act_forward<T>(A, z[i], alpha);
}

template <typename T, Act A>
__global__ void backward_kernel(const T* dy, const T* s, T* dz, int64_t n, T alpha) {
  for (int64_t i = thread_index(); i < n; i += grid_stride())
    dz[i] = A == Act::Linear ? dy[i] : dy[i] * act_grad<T>(A, s[i], alpha);
}

}  // namespace

template <typename T>
void activation_forward(Act a, T alpha, const T* z, T* y, int64_t n, cudaStream_t stream) {
  with_act(a, [&](auto act) {
    linear_kernel(forward_kernel<T, decltype(act)::value>, 0, stream, n, z, y, n, alpha);
  });
}

template <typename T>
void activation_backward(Act a, T alpha, const T* dy, const T* s, T* dz, int64_t n,
                         cudaStream_t stream) {
  with_act(a, [&](auto act) {
    linear_kernel(backward_kernel<T, decltype(act)::value>, 0, stream, n, dy, s, dz, n, alpha);
  });
}

#define FUSEDNN_INSTANTIATE(T)                                                             \
  template void activation_forward<T>(Act, T, const T*, T*, int64_t, cudaStream_t);        \
  template void activation_backward<T>(Act, T, const T*, const T*, T*, int64_t, cudaStream_t);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cuda
}  // namespace fusednn
