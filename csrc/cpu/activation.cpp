#include <omp.h>

#include "cpu/kernels.h"

namespace fusednn {
namespace cpu {

namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;
}  // namespace

template <typename T>
void activation_forward(Act a, T alpha, const T* z, T* y, int64_t n) {
  dispatch_act(a, [&](auto act) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) y[i] = act_forward<T>(act.value, z[i], alpha);
  });
}

template <typename T>
void activation_backward(Act a, T alpha, const T* dy, const T* s, T* dz, int64_t n) {
  dispatch_act(a, [&](auto act) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) dz[i] = dy[i] * act_grad<T>(act.value, s[i], alpha);
  });
}

template void activation_forward<float>(Act, float, const float*, float*, int64_t);
template void activation_forward<double>(Act, double, const double*, double*, int64_t);
template void activation_backward<float>(Act, float, const float*, const float*, float*, int64_t);
template void activation_backward<double>(Act, double, const double*, const double*, double*,
                                          int64_t);

}  // namespace cpu
}  // namespace fusednn
