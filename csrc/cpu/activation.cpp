#include "cpu/kernels.h"
#include "cpu/threads.h"

namespace fusednn {
namespace cpu {

namespace {
// Elements per chunk of the thread pool (cpu/threads.h): about 10 us of
// work, so a chunk pays for its claim and a pool call for its wake-up.
constexpr int64_t kGrain = 1 << 14;

// Plain functions with by-value arguments: a loop inside a lambda that
// captures by reference reloads its pointers every iteration and does not
// vectorise.
template <typename T, Act A>
void forward_loop(T alpha, const T* z, T* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = act_forward<T>(A, z[i], alpha);
}

template <typename T, Act A>
void backward_loop(T alpha, const T* dy, const T* s, T* dz, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dz[i] = dy[i] * act_grad<T>(A, s[i], alpha);
}
}  // namespace

template <typename T>
void activation_forward(Act a, T alpha, const T* z, T* y, int64_t n) {
  dispatch_act(a, [&](auto act) {
    parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
      forward_loop<T, decltype(act)::value>(alpha, z + lo, y + lo, hi - lo);
    });
  });
}

template <typename T>
void activation_backward(Act a, T alpha, const T* dy, const T* s, T* dz, int64_t n) {
  dispatch_act(a, [&](auto act) {
    parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
      backward_loop<T, decltype(act)::value>(alpha, dy + lo, s + lo, dz + lo, hi - lo);
    });
  });
}

template void activation_forward<float>(Act, float, const float*, float*, int64_t);
template void activation_forward<double>(Act, double, const double*, double*, int64_t);
template void activation_backward<float>(Act, float, const float*, const float*, float*, int64_t);
template void activation_backward<double>(Act, double, const double*, const double*, double*,
                                          int64_t);

}  // namespace cpu
}  // namespace fusednn
