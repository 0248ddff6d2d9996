// One optimizer step over many tensors: the per-element math of
// fusednn/optimizer.h applied multi-tensor style. Every tensor is cut into
// chunks (a power of two between kMinChunk and kMaxChunk elements, the
// largest that still gives every multiprocessor kBlocksPerSM chunks); a
// block handles one (tensor, chunk) pair at a time. The descriptors of up to kMaxTensors tensors travel in the kernel's
// parameters (CUDA >= 12.1 on sm_70+ allows 32764 bytes), with a prefix array
// of chunk starts that each block binary-searches for its tensor, so one
// launch covers them all; more tensors take one launch per group.
//
// Nothing here synchronises the host: the norms the clip modes need go
// through the caller's `norms` buffer, read back by the update kernel on the
// same stream. They are summed in a fixed order (per-chunk partials in
// stream-ordered scratch, then per tensor in chunk order), so a step with
// clipping gives the same bits in every run on the same device.
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/kernels.cuh"
#include "cuda/launch.cuh"
#include "cuda/scratch.cuh"

namespace fusednn {
namespace cuda {

namespace {

// Tensors per launch. The argument structs below stay under 20 KB, well
// inside the 32764-byte limit (static_asserts further down).
constexpr int kMaxTensors = 256;
// Elements per (tensor, chunk) work item: 4 to 256 per thread at kThreads.
// Large chunks keep the per-chunk overhead (finding the tensor, the clip
// scale) small on large models; small ones keep a 1M-parameter model from
// running on a few dozen blocks of a 132-multiprocessor GPU.
constexpr int64_t kMinChunk = 1024;
constexpr int64_t kMaxChunk = 65536;
constexpr int64_t kBlocksPerSM = 4;
constexpr int kWarps = kThreads / 32;
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block shape");

// The type of the slots' recurrences: double for both storage types, as on
// the CPU (float32(0.999) is 1.3e-8 off, which compounds over the steps). The
// parameter's increment is computed in the storage type from the rounded
// slots, as on the CPU and in Keras and PyTorch (opt_update's P). The step
// is bound by memory traffic (28 bytes per float32 parameter for Adam
// against a few dozen double operations, far inside an H100's FP64 rate);
// GPUs with 1/64-rate FP64 would be compute-bound here.
template <typename T>
struct Compute;
template <>
struct Compute<float> {
  using type = double;
};
template <>
struct Compute<double> {
  using type = double;
};

// A group of non-empty tensors as chunks: the update and the norm reduction.
template <typename T>
struct ChunkArgs {
  using C = typename Compute<T>::type;
  T* p[kMaxTensors];
  const T* g[kMaxTensors];
  T* s[3][kMaxTensors];
  int64_t n[kMaxTensors];
  C l1[kMaxTensors];
  C l2[kMaxTensors];
  // Chunks of tensor i: [chunk_start[i], chunk_start[i + 1]); strictly
  // increasing since empty tensors are left out.
  int64_t chunk_start[kMaxTensors + 1];
  int index[kMaxTensors];  // position in the caller's array, i.e. in `norms`
  int count;
  int64_t chunk;     // elements per chunk
  int64_t first;     // this group's first chunk among all groups' (partials)
};

// A group of max-norm constrained tensors as units: (outer, inner) pairs.
template <typename T>
struct MaxNormArgs {
  using C = typename Compute<T>::type;
  T* p[kMaxTensors];
  C max_norm[kMaxTensors];
  int64_t mid[kMaxTensors];
  int64_t inner[kMaxTensors];
  int64_t unit_start[kMaxTensors + 1];  // as chunk_start
  int count;
};

constexpr size_t kMaxParamBytes = 32764;
static_assert(sizeof(ChunkArgs<double>) + sizeof(OptStep<double>) + 64 < kMaxParamBytes,
              "update kernel parameters");
static_assert(sizeof(MaxNormArgs<double>) + 64 < kMaxParamBytes, "max-norm kernel parameters");

// The i with start[i] <= x < start[i + 1], for 0 <= x < start[count]
// (start strictly increasing).
__device__ __forceinline__ int find_group_slot(const int64_t* start, int count, int64_t x) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int m = (lo + hi + 1) >> 1;
    if (start[m] <= x)
      lo = m;
    else
      hi = m - 1;
  }
  return lo;
}

// Sum over the block, valid in thread 0; a fixed order, so every block that
// sums the same values gets the same result. Every thread must call it.
__device__ __forceinline__ double block_sum(double v, double* scratch /* [kWarps] */) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = 0;
  if (warp == 0) {
    v = lane < kWarps ? scratch[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  }
  __syncthreads();  // scratch may be reused right after
  return v;
}

// partial[first + c] = sum of squares of chunk c's effective gradient
// (penalties applied, no clipping).
template <typename T>
__global__ void grad_sumsq_kernel(const ChunkArgs<T> a, double* partial) {
  using C = typename Compute<T>::type;
  __shared__ double scratch[kWarps];
  const int64_t chunks = a.chunk_start[a.count];
  // The chunk loop is uniform over the block, so the barriers are safe.
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int t = find_group_slot(a.chunk_start, a.count, c);
    const int64_t begin = (c - a.chunk_start[t]) * a.chunk;
    const int64_t end = min(begin + a.chunk, a.n[t]);
    const T* __restrict__ p = a.p[t];
    const T* __restrict__ g = a.g[t];
    const C l1 = a.l1[t], l2 = a.l2[t];
    // p only with a penalty: 0 * p is NaN for a NaN or inf parameter (cpu/optimizer.cpp)
    const bool pen = l1 != C(0) || l2 != C(0);
    double acc = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const C e = opt_effective_grad<C>(C(g[i]), pen ? C(p[i]) : C(0), l1, l2, C(1), C(INFINITY));
      acc += double(e) * double(e);
    }
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[a.first + c] = acc;
  }
}

// norms[index[t]] = the sum of tensor t's chunk partials, in chunk order: one
// block per tensor.
template <typename T>
__global__ void tensor_sumsq_kernel(const ChunkArgs<T> a, const double* partial, double* norms) {
  __shared__ double scratch[kWarps];
  for (int t = blockIdx.x; t < a.count; t += gridDim.x) {
    double acc = 0;
    for (int64_t c = a.chunk_start[t] + threadIdx.x; c < a.chunk_start[t + 1]; c += blockDim.x)
      acc += partial[a.first + c];
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) norms[a.index[t]] = acc;
  }
}

// The step for every element of the group. clip_mode Clip::Norm reads
// norms[index[t]], Clip::Global the sum of norms[0..norms_count).
template <typename T, Opt K>
__global__ void update_kernel(const ChunkArgs<T> a, const OptStep<typename Compute<T>::type> h_arg,
                              const OptStep<double>* h_at, Clip clip_mode, double clip,
                              const double* norms, int64_t norms_count) {
  using C = typename Compute<T>::type;
  static_assert(std::is_same<C, double>::value, "h_at holds the record in the kernels' type");
  const OptStep<C> h = h_at != nullptr ? *h_at : h_arg;
  __shared__ double scratch[kWarps];
  __shared__ double global_sumsq;
  C scale = C(1);
  if (clip_mode == Clip::Global) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < norms_count; i += blockDim.x) s += norms[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) global_sumsq = s;
    __syncthreads();
    scale = C(opt_clip_scale<double>(global_sumsq, clip));
  }
  const C clipvalue = clip_mode == Clip::Value ? h.clipvalue : C(INFINITY);
  const int64_t chunks = a.chunk_start[a.count];
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int t = find_group_slot(a.chunk_start, a.count, c);
    const int64_t begin = (c - a.chunk_start[t]) * a.chunk;
    const int64_t end = min(begin + a.chunk, a.n[t]);
    if (clip_mode == Clip::Norm) scale = C(opt_clip_scale<double>(norms[a.index[t]], clip));
    T* __restrict__ p = a.p[t];
    const T* __restrict__ g = a.g[t];
    T* __restrict__ s0p = a.s[0][t];
    T* __restrict__ s1p = a.s[1][t];
    T* __restrict__ s2p = a.s[2][t];
    const C l1 = a.l1[t], l2 = a.l2[t];
    const bool pen = l1 != C(0) || l2 != C(0);  // (see the norms above)
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      T pi = p[i];
      const C gi = opt_effective_grad<C>(C(g[i]), pen ? C(pi) : C(0), l1, l2, scale, clipvalue);
      C s0 = s0p ? C(s0p[i]) : C(0);
      C s1 = s1p ? C(s1p[i]) : C(0);
      C s2 = s2p ? C(s2p[i]) : C(0);
      opt_update<C, T>(K, h, pi, gi, s0, s1, s2);
      p[i] = pi;
      if (s0p) s0p[i] = T(s0);
      if (s1p) s1p[i] = T(s1);
      if (s2p) s2p[i] = T(s2);
    }
  }
}

// One thread per unit (o, i) of a constrained tensor seen as (outer, mid,
// inner): consecutive threads take consecutive i, so the loads over mid are
// coalesced whenever inner is large (a Dense kernel (in, out) with axis 0).
template <typename T>
__global__ void max_norm_kernel(const MaxNormArgs<T> a, int64_t units) {
  using C = typename Compute<T>::type;
  for (int64_t u = thread_index(); u < units; u += grid_stride()) {
    const int t = find_group_slot(a.unit_start, a.count, u);
    const int64_t local = u - a.unit_start[t];
    const int64_t mid = a.mid[t], inner = a.inner[t];
    const int64_t o = local / inner;
    T* __restrict__ w = a.p[t] + o * mid * inner + (local - o * inner);
    double sumsq = 0;
    for (int64_t j = 0; j < mid; ++j) {
      const double v = double(w[j * inner]);
      sumsq += v * v;
    }
    const C f = opt_max_norm_scale<C>(C(sumsq), a.max_norm[t]);
    for (int64_t j = 0; j < mid; ++j) w[j * inner] = T(C(w[j * inner]) * f);
  }
}

template <typename C>
OptStep<C> step_as(const OptStep<double>& d) {
  OptStep<C> h;
  h.lr = C(d.lr);
  h.beta_1 = C(d.beta_1);
  h.beta_2 = C(d.beta_2);
  h.rho = C(d.rho);
  h.momentum = C(d.momentum);
  h.epsilon = C(d.epsilon);
  h.step_size = C(d.step_size);
  h.m_weight = C(d.m_weight);
  h.g_weight = C(d.g_weight);
  h.v_correction = C(d.v_correction);
  h.decay = C(d.decay);
  h.clipvalue = C(d.clipvalue);
  h.l1 = C(d.l1);
  h.l2 = C(d.l2);
  h.shrinkage = C(d.shrinkage);
  h.lr_power = C(d.lr_power);
  h.nesterov = d.nesterov;
  h.centered = d.centered;
  h.amsgrad = d.amsgrad;
  return h;
}

// Elements per chunk for these tensors on the current device: the largest
// power of two in [kMinChunk, kMaxChunk] that gives at least kBlocksPerSM
// chunks per multiprocessor (kMinChunk when none does).
template <typename T>
int64_t chunk_size(const OptTensor<T>* tensors, int64_t count) {
  int dev = 0, sms = 1;
  FUSEDNN_CUDA_CHECK(cudaGetDevice(&dev));
  FUSEDNN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  int64_t chunk = kMaxChunk;
  for (; chunk > kMinChunk; chunk /= 2) {
    int64_t chunks = 0;
    for (int64_t i = 0; i < count; ++i) chunks += (tensors[i].n + chunk - 1) / chunk;
    if (chunks >= kBlocksPerSM * sms) break;
  }
  return chunk;
}

// The non-empty tensors in groups of at most kMaxTensors.
template <typename T>
std::vector<ChunkArgs<T>> chunk_groups(const OptTensor<T>* tensors, int64_t count, int64_t chunk) {
  using C = typename Compute<T>::type;
  std::vector<ChunkArgs<T>> groups;
  ChunkArgs<T>* a = nullptr;
  int64_t first = 0;
  for (int64_t i = 0; i < count; ++i) {
    const OptTensor<T>& x = tensors[i];
    if (x.n <= 0) continue;
    if (a == nullptr || a->count == kMaxTensors) {
      if (a != nullptr) first += a->chunk_start[a->count];
      groups.emplace_back();
      a = &groups.back();
      a->count = 0;
      a->chunk_start[0] = 0;
      a->chunk = chunk;
      a->first = first;
    }
    const int j = a->count++;
    a->p[j] = x.p;
    a->g[j] = x.g;
    for (int s = 0; s < 3; ++s) a->s[s][j] = x.s[s];
    a->n[j] = x.n;
    a->l1[j] = C(x.l1);
    a->l2[j] = C(x.l2);
    a->index[j] = int(i);
    a->chunk_start[j + 1] = a->chunk_start[j] + (x.n + chunk - 1) / chunk;
  }
  return groups;
}

template <typename T, Opt K>
void launch_updates(const std::vector<ChunkArgs<T>>& groups, const OptStep<double>& hd,
                    const OptStep<double>* h_at, Clip clip_mode, double clip, const double* norms,
                    int64_t count, cudaStream_t stream) {
  using C = typename Compute<T>::type;
  const OptStep<C> h = step_as<C>(hd);
  for (const ChunkArgs<T>& a : groups)
    linear_kernel<1>(update_kernel<T, K>, 0, stream, a.chunk_start[a.count], a, h, h_at,
                     clip_mode, clip, norms, count);
}

template <typename T>
void max_norm_step(const OptTensor<T>* tensors, int64_t count, cudaStream_t stream) {
  using C = typename Compute<T>::type;
  MaxNormArgs<T> a;
  a.count = 0;
  a.unit_start[0] = 0;
  auto flush = [&] {
    if (a.count > 0) {
      const int64_t units = a.unit_start[a.count];
      linear_kernel(max_norm_kernel<T>, 0, stream, units, a, units);
    }
    a.count = 0;
  };
  for (int64_t i = 0; i < count; ++i) {
    const OptTensor<T>& x = tensors[i];
    if (!(x.max_norm > 0) || x.n <= 0) continue;
    const int j = a.count++;
    a.p[j] = x.p;
    a.max_norm[j] = C(x.max_norm);
    a.mid[j] = x.mid;
    a.inner[j] = x.inner;
    a.unit_start[j + 1] = a.unit_start[j] + x.outer * x.inner;
    if (a.count == kMaxTensors) flush();
  }
  flush();
}

}  // namespace

template <typename T>
void optimizer_step(Opt k, const OptStep<double>& h, const OptTensor<T>* tensors, int64_t count,
                    Clip clip_mode, double clip, double* norms, cudaStream_t stream,
                    const OptStep<double>* h_at) {
  if (int(k) < 0 || int(k) >= int(Opt::Count))
    throw std::invalid_argument("optimizer_step: unknown optimizer kind " +
                                std::to_string(int(k)));
  if (int(clip_mode) < int(Clip::Off) || int(clip_mode) > int(Clip::Global))
    throw std::invalid_argument("optimizer_step: unknown clip mode " +
                                std::to_string(int(clip_mode)));
  if (count <= 0) return;
  // Before anything is launched, so a bad call changes nothing.
  for (int64_t i = 0; i < count; ++i) {
    const OptTensor<T>& x = tensors[i];
    if (x.max_norm > 0 && x.n > 0 &&
        (x.outer < 1 || x.mid < 1 || x.inner < 1 || x.n / x.outer / x.mid != x.inner ||
         x.n % (x.outer * x.mid) != 0))
      throw std::invalid_argument("optimizer_step: tensor " + std::to_string(i) +
                                  ": outer * mid * inner != n for the max-norm constraint");
  }
  const std::vector<ChunkArgs<T>> groups =
      chunk_groups(tensors, count, chunk_size(tensors, count));
  if (groups.empty()) return;  // every tensor is empty

  const bool norm_clip = clip_mode == Clip::Norm || clip_mode == Clip::Global;
  if (norm_clip) {
    if (norms == nullptr)
      throw std::invalid_argument("optimizer_step: norms is null for a norm clip mode");
    // Every group's norms before any update: the global norm needs them all.
    // Empty tensors have no chunks; their norm is 0.
    FUSEDNN_CUDA_CHECK(cudaMemsetAsync(norms, 0, size_t(count) * sizeof(double), stream));
    const ChunkArgs<T>& last = groups.back();
    const Scratch partial(size_t(last.first + last.chunk_start[last.count]) * sizeof(double),
                          stream);
    for (const ChunkArgs<T>& a : groups) {
      linear_kernel<1>(grad_sumsq_kernel<T>, 0, stream, a.chunk_start[a.count], a,
                       partial.as<double>());
      linear_kernel<1>(tensor_sumsq_kernel<T>, 0, stream, a.count, a, partial.as<double>(),
                       norms);
    }
  }

  dispatch_opt(k, [&](auto kind) {
    launch_updates<T, decltype(kind)::value>(groups, h, h_at, clip_mode, clip, norms, count,
                                             stream);
  });

  max_norm_step(tensors, count, stream);
}

#define FUSEDNN_INSTANTIATE(T)                                                              \
  template void optimizer_step<T>(Opt, const OptStep<double>&, const OptTensor<T>*, int64_t, \
                                  Clip, double, double*, cudaStream_t, const OptStep<double>*);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cuda
}  // namespace fusednn
