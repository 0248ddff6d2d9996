#include <omp.h>

#include "cpu/kernels.h"

namespace fusednn {
namespace cpu {

namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

// Plain functions with by-value arguments: a loop inside a lambda that
// captures by reference reloads its pointers every iteration and does not
// vectorise.
template <typename T, Act A>
void forward_loop(T alpha, const T* z, T* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = act_forward<T>(A, z[i], alpha);
}

template <typename T, Act A>
void backward_loop(T alpha, const T* dy, const T* s, T* dz, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dz[i] = dy[i] * act_grad<T>(A, s[i], alpha);
}
}  // namespace

template <typename T>
void activation_forward(Act a, T alpha, const T* z, T* y, int64_t n) {
  dispatch_act(a, [&](auto act) { forward_loop<T, decltype(act)::value>(alpha, z, y, n); });
}

template <typename T>
void activation_backward(Act a, T alpha, const T* dy, const T* s, T* dz, int64_t n) {
  dispatch_act(a, [&](auto act) { backward_loop<T, decltype(act)::value>(alpha, dy, s, dz, n); });
}

template void activation_forward<float>(Act, float, const float*, float*, int64_t);
template void activation_forward<double>(Act, double, const double*, double*, int64_t);
template void activation_backward<float>(Act, float, const float*, const float*, float*, int64_t);
template void activation_backward<double>(Act, double, const double*, const double*, double*,
                                          int64_t);

}  // namespace cpu
}  // namespace fusednn
