// Fused loss + gradient kernels. The softmax cross-entropy gives each row to
// a group of threads (a warp for short rows, a block for long ones) that
// reduces the row's maximum and sums in registers and shared memory, then
// writes the gradient, recomputing exp(z - m) rather than storing it: a
// second read of z that the first pass left in cache, instead of a write and
// a read of the gradient. Each thread keeps the loss of its rows in a double;
// each block adds its partial sum to the device loss with one atomicAdd.
#include <limits>
#include <stdexcept>
#include <string>

#include "cuda/launch.cuh"
#include "cuda/loss.cuh"

namespace fusednn {
namespace cuda {

namespace {

constexpr int kWarps = kThreads / 32;
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block shape");
// Rows of up to this many classes take one warp each (32 columns a lane);
// longer rows one block each, so that a long row is not left to 32 threads.
constexpr int64_t kWarpRowMax = 1024;

// max that keeps NaN: the same result whatever the order, so every lane of
// a butterfly reduction agrees on m.
template <typename T>
__device__ __forceinline__ T nan_max(T a, T b) {
  return (b > a || b != b) ? b : a;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The maximum over a group of Group threads (32: the warp, kThreads: the
// block), returned to every thread of the group. The block version needs
// every thread of the block.
template <int Group, typename T>
__device__ __forceinline__ T group_max(T v, T* scratch /* [kWarps] */) {
  v = warp_max(v);
  if constexpr (Group == kThreads) {
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    v = scratch[0];
    for (int i = 1; i < kWarps; ++i) v = nan_max(v, scratch[i]);
    __syncthreads();  // scratch is reused right after
  }
  return v;
}

// v[0..N) summed over the group, returned to every thread of it, in a fixed
// order.
template <int Group, int N>
__device__ __forceinline__ void group_sum(double (&v)[N], double (*scratch)[kWarps]) {
  for (int i = 0; i < N; ++i) v[i] = warp_sum(v[i]);
  if constexpr (Group == kThreads) {
    if ((threadIdx.x & 31) == 0)
      for (int i = 0; i < N; ++i) scratch[i][threadIdx.x >> 5] = v[i];
    __syncthreads();
    for (int i = 0; i < N; ++i) {
      double s = 0;
      for (int j = 0; j < kWarps; ++j) s += scratch[i][j];
      v[i] = s;
    }
    __syncthreads();
  }
}

// Adds the block's sum of `acc` to *loss. Every thread of the block calls it.
__device__ __forceinline__ void block_add_loss(double acc, double* loss,
                                               double (*scratch)[kWarps]) {
  double v[1] = {acc};
  group_sum<kThreads, 1>(v, scratch);
  if (threadIdx.x == 0) atomicAdd(loss, v[0]);
}

// One row per group of Group threads, rows grid-strided. Dense: label rows
// y, else class indices `labels`.
template <typename T, typename L, bool Dense, int Group>
__global__ void xent_kernel(const T* __restrict__ z, const L* __restrict__ labels,
                            const T* __restrict__ y, const T* __restrict__ w, T* __restrict__ g,
                            double* __restrict__ loss, int64_t n, int64_t c, double eps,
                            double inv_d) {
  constexpr int kRowsPerBlock = kThreads / Group;
  __shared__ double scratch[4][kWarps];
  __shared__ T tscratch[kWarps];
  const int lane = int(threadIdx.x) % Group;
  double acc = 0;
  // The row is uniform over the group, so the group's barriers are safe.
  for (int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + int(threadIdx.x) / Group; row < n;
       row += int64_t(gridDim.x) * kRowsPerBlock) {
    const T* zr = z + row * c;
    T* gr = g + row * c;
    const T* yr = Dense ? y + row * c : nullptr;

    T m = -std::numeric_limits<T>::infinity();
    for (int64_t j = lane; j < c; j += Group) m = nan_max(m, zr[j]);
    m = group_max<Group>(m, tscratch);

    const double md = double(m);
    double v[4] = {0, 0, 0, 0};  // s, sz, sy, syz
    for (int64_t j = lane; j < c; j += Group) {
      const T zj = zr[j];
      const double d = double(zj) - md;
      v[0] += double(math::exp_nonpos(zj - m));
      v[1] += d;
      if (Dense) {
        const double yj = double(yr[j]);
        v[2] += yj;
        v[3] += xent_ydot(yj, d);
      }
    }
    group_sum<Group, 4>(v, scratch);

    XentRow r{v[0], v[1], v[2], v[3]};
    int64_t t = -1;  // matches no column
    if (!Dense) {
      const L lt = labels[row];
      const bool ok = xent_label_ok(lt, c);
      r.sy = 1.0;
      r.syz = ok ? double(zr[int64_t(lt)]) - md : 0.0;
      if (ok)
        t = int64_t(lt);
      else
        r = xent_invalidate(r);
    }
    const double scale = (w != nullptr ? double(w[row]) : 1.0) * inv_d;
    const XentCoef<T> k = xent_coef<T>(r, eps, c, scale);
    for (int64_t j = lane; j < c; j += Group) {
      const T e = math::exp_nonpos(zr[j] - m);
      gr[j] = xent_grad(k, e, Dense ? yr[j] : T(j == t ? 1 : 0));
    }
    if (lane == 0) acc += scale * xent_row_loss(r, eps, c);
  }
  block_add_loss(acc, loss, scratch);
}

// Element-wise loss over n*k elements, grid-strided; the weight of element
// i is w[i / k]. scale = inv_d / k.
template <typename T, PointLoss K>
__global__ void point_kernel(const T* __restrict__ p, const T* __restrict__ t,
                             const T* __restrict__ w, T* __restrict__ g,
                             double* __restrict__ loss, int64_t total, int64_t k, double scale) {
  __shared__ double scratch[1][kWarps];
  double acc = 0;
  for (int64_t i = thread_index(); i < total; i += grid_stride()) {
    const double wi = w != nullptr ? double(w[i / k]) : 1.0;
    const LossGrad<T> r = point_term<T, K>(p[i], t[i]);
    g[i] = T(wi * scale) * r.grad;
    acc += wi * r.loss;
  }
  block_add_loss(acc * scale, loss, scratch);
}

template <typename T, typename L, bool Dense>
void launch_xent(const T* z, const L* labels, const T* y, const T* w, T* dz, double* loss,
                 int64_t n, int64_t c, double eps, double inv_d, cudaStream_t stream) {
  if (c <= kWarpRowMax)
    linear_kernel<kWarps>(xent_kernel<T, L, Dense, 32>, 0, stream, n, z, labels, y, w, dz, loss,
                          n, c, eps, inv_d);
  else
    linear_kernel<1>(xent_kernel<T, L, Dense, kThreads>, 0, stream, n, z, labels, y, w, dz, loss,
                     n, c, eps, inv_d);
}

}  // namespace

template <typename T, typename L>
void softmax_cross_entropy(const T* z, const L* labels, const T* y, const T* w, T* dz,
                           double* loss, int64_t n, int64_t c, double eps, double inv_d,
                           cudaStream_t stream) {
  if (loss == nullptr) throw std::invalid_argument("softmax_cross_entropy: loss is null");
  FUSEDNN_CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(double), stream));
  if (n <= 0 || c <= 0) return;
  if (y != nullptr)
    launch_xent<T, L, true>(z, labels, y, w, dz, loss, n, c, eps, inv_d, stream);
  else
    launch_xent<T, L, false>(z, labels, y, w, dz, loss, n, c, eps, inv_d, stream);
}

template <typename T>
void point_loss(PointLoss kind, const T* p, const T* t, const T* w, T* dp, double* loss,
                int64_t n, int64_t k, double inv_d, cudaStream_t stream) {
  if (int(kind) < 0 || int(kind) >= int(PointLoss::Count))
    throw std::invalid_argument("point_loss: unknown loss kind " + std::to_string(int(kind)));
  if (loss == nullptr) throw std::invalid_argument("point_loss: loss is null");
  FUSEDNN_CUDA_CHECK(cudaMemsetAsync(loss, 0, sizeof(double), stream));
  if (n <= 0 || k <= 0) return;
  const int64_t total = n * k;
  const double scale = inv_d / double(k);
  // Written out rather than through dispatch_point_loss, which nvcc's device
  // pass does not see (see with_act in launch.cuh).
  if (kind == PointLoss::SigmoidBCE)
    linear_kernel(point_kernel<T, PointLoss::SigmoidBCE>, 0, stream, total, p, t, w, dp, loss,
                  total, k, scale);
  else
    linear_kernel(point_kernel<T, PointLoss::MSE>, 0, stream, total, p, t, w, dp, loss, total, k,
                  scale);
}

#define FUSEDNN_INSTANTIATE(T)                                                                \
  template void softmax_cross_entropy<T, int32_t>(const T*, const int32_t*, const T*,          \
                                                  const T*, T*, double*, int64_t, int64_t,     \
                                                  double, double, cudaStream_t);               \
  template void softmax_cross_entropy<T, int64_t>(const T*, const int64_t*, const T*,          \
                                                  const T*, T*, double*, int64_t, int64_t,     \
                                                  double, double, cudaStream_t);               \
  template void point_loss<T>(PointLoss, const T*, const T*, const T*, T*, double*, int64_t,   \
                              int64_t, double, cudaStream_t);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cuda
}  // namespace fusednn
