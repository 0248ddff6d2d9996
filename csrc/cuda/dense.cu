// Fused dense layer on the GPU: cuBLASLt GEMMs with the bias, relu and gelu
// (tanh) epilogues, and in the backward pass their gradients, fused where
// cuBLASLt offers them, and one pass of our own over the output for everything
// it does not.
//
// Row-major (m x n) is column-major (n x m) with ld n, so every product is
// computed transposed: Y^T = W^T X^T keeps all arrays as they are, and the
// bias runs along the rows of D, which is how cuBLASLt broadcasts it.
#include "cuda/columns.cuh"
#include "cuda/kernels.cuh"
#include "cuda/launch.cuh"
#include "cuda/cublaslt.cuh"
#include "cuda/scratch.cuh"

namespace fusednn {
namespace cuda {

namespace {

// pre = pre + b, kept when the activation saves its input; y = f(pre + b).
// pre and y are the same buffer when the activation saves its output.
template <typename T, Act A>
__global__ void bias_act_kernel(T* pre, T* y, const T* b, int64_t total, int64_t n, T alpha) {
  const int64_t stride = grid_stride();
  // The column advances by a fixed step per iteration: one 64-bit division per
  // thread instead of one per element.
  const int64_t col_step = stride % n;
  int64_t i = thread_index();
  int64_t col = i % n;
  for (; i < total; i += stride) {
    const T v = pre[i] + b[col];
    if (saves_input(A)) pre[i] = v;
    y[i] = act_forward<T>(A, v, alpha);
    col += col_step;
    if (col >= n) col -= n;
  }
}

// db = column sums of dz (m x n) over the grid (cuda/columns.cuh): each
// thread sums at least kSumRows rows, the blocks' partials are added per
// column in a fixed order (deterministic, no atomics). Serves every bias
// gradient that cuBLASLt's epilogues do not fuse; splitting the rows keeps a
// narrow layer (n = 10: one column block) from running on one block.
constexpr int64_t kSumRows = 16;

template <typename T>
__global__ void column_partials_kernel(const T* dz, int64_t m, int64_t n, double* part) {
  const int64_t col = this_column();
  double s = 0.0;
  if (col < n)
    for (int64_t r = first_row(); r < m; r += row_stride()) s += double(dz[r * n + col]);
  block_column_sums<1>({s}, part, n, col);
}

template <typename T>
__global__ void column_totals_kernel(const double* part, int64_t rb, T* db, int64_t n) {
  for (int64_t j = thread_index(); j < n; j += grid_stride()) {
    double s[1];
    column_totals<1>(part, rb, n, j, s);
    db[j] = T(s[0]);
  }
}

template <typename T>
void column_sum(const T* dz, T* db, int64_t m, int64_t n, cudaStream_t stream) {
  const ColumnTiling t = column_tiling(m, n, kSumRows);
  const Scratch part(size_t(t.row_blocks * n) * sizeof(double), stream);
  column_partials_kernel<T><<<dim3(unsigned(t.col_blocks), unsigned(t.row_blocks)),
                              dim3(kColTx, kColTy), 0, stream>>>(dz, m, n, part.as<double>());
  FUSEDNN_CUDA_CHECK(cudaGetLastError());
  linear_kernel(column_totals_kernel<T>, 0, stream, n, part.as<double>(), t.row_blocks, db, n);
}

// What the GEMM's epilogue left undone, in one pass over the output: bias (when
// b is given) and f, from pre into y.
template <typename T>
void finish_forward(Act a, T* pre, T* y, const T* b, int64_t m, int64_t n, T alpha,
                    cudaStream_t stream) {
  if (b == nullptr) {
    if (a != Act::Linear) activation_forward<T>(a, alpha, pre, y, m * n, stream);
    return;
  }
  with_act(a, [&](auto act) {
    linear_kernel(bias_act_kernel<T, decltype(act)::value>, 0, stream, m * n, pre, y, b, m * n, n,
                  alpha);
  });
}

template <typename T>
void zero(T* p, int64_t count, cudaStream_t stream) {
  if (p != nullptr && count > 0)
    FUSEDNN_CUDA_CHECK(cudaMemsetAsync(p, 0, size_t(count) * sizeof(T), stream));
}

}  // namespace

template <typename T>
bool dense_forward(const T* x, const T* w, const T* b, T* y, T* z, void* mask, int64_t mask_ld,
                   int64_t m, int64_t k, int64_t n, Act a, T alpha, bool tf32,
                   cudaStream_t stream) {
  if (m == 0 || n == 0) return false;
  T* pre = saves_input(a) ? z : y;
  if (k == 0) {  // x @ w is all zeros, and cuBLASLt takes no empty inner dimension
    zero(pre, m * n, stream);
    finish_forward(a, pre, y, b, m, n, alpha, stream);
    return false;
  }
  // D = Y^T (n x m, ld n) = A W^T (n x k, ld n) * B X^T (k x m, ld k).
  lt::Gemm g = lt::gemm_for<T>(tf32);
  g.rows = n, g.cols = m, g.inner = k;
  g.a = w, g.lda = n;
  g.b = x, g.ldb = k;
  g.d = y, g.ldd = n;

  // 1. Everything in the epilogue (the activation only where
  // lt::activation_epilogues() allows it).
  const bool bias_ok = b == nullptr || lt::aligned16(b);
  const Act fused_act = lt::activation_epilogues() ? a : Act::Count;
  if (bias_ok) {
    const bool has_b = b != nullptr;
    g.bias = b;
    // The bitmask, m * mask_ld / 8 bytes against m * n elements of y, lets the
    // next layer's backward GEMM apply relu' in its epilogue (DRELU) instead of
    // a pass over y.
    if (fused_act == Act::Relu && mask != nullptr && lt::aligned16(mask)) {
      g.epilogue = has_b ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_RELU_AUX;
      g.aux = mask, g.aux_ld = mask_ld;
      if (lt::try_matmul(g, stream)) return true;
      g.aux = nullptr, g.aux_ld = 0;
    }
    bool fused = true;
    switch (a == Act::Linear ? a : fused_act) {
      case Act::Linear:
        g.epilogue = has_b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
        break;
      case Act::Relu:
        g.epilogue = has_b ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
        break;
      case Act::GeluTanh:  // cuBLASLt's GELU is the tanh form; aux gets its input z
        g.epilogue = has_b ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
        g.aux = z, g.aux_ld = n;
        fused = n % 8 == 0 && lt::aligned16(z);  // aux ld must be a multiple of 8
        break;
      default:
        fused = false;
    }
    if (fused && lt::try_matmul(g, stream)) return false;
  }

  // 2. GEMM + bias into the pre-activation buffer, f in our own pass.
  g.d = pre, g.aux = nullptr, g.aux_ld = 0;
  if (b != nullptr && bias_ok && a != Act::Linear) {  // linear + BIAS was step 1
    g.epilogue = CUBLASLT_EPILOGUE_BIAS, g.bias = b;
    if (lt::try_matmul(g, stream)) {
      finish_forward<T>(a, pre, y, nullptr, m, n, alpha, stream);
      return false;
    }
  }

  // 3. Plain GEMM, bias and f in our own pass.
  g.epilogue = CUBLASLT_EPILOGUE_DEFAULT, g.bias = nullptr;
  lt::matmul(g, stream);
  finish_forward(a, pre, y, b, m, n, alpha, stream);
  return false;
}

template <typename T>
void dense_backward_weight(const T* dz, const T* x, T* dw, T* db, int64_t m, int64_t k,
                           int64_t n, bool tf32, cudaStream_t stream) {
  if (m == 0 || n == 0) {  // empty sums: zero gradients, and no GEMM with an empty dimension
    zero(dw, k * n, stream);
    zero(db, n, stream);
    return;
  }
  if (k == 0) {  // dw is empty
    if (db != nullptr) column_sum(dz, db, m, n, stream);
    return;
  }
  // D = dW^T (n x k, ld n) = A dZ^T (n x m, ld n) * op(B), B = X^T (k x m, ld k)
  // transposed. BGRADA sums A over the GEMM's inner dimension, the batch: db.
  lt::Gemm g = lt::gemm_for<T>(tf32);
  g.rows = n, g.cols = k, g.inner = m;
  g.a = dz, g.lda = n;
  g.b = x, g.ldb = k, g.trans_b = true;
  g.d = dw, g.ldd = n;
  bool db_done = false;
  if (db != nullptr && lt::aligned16(db)) {
    g.epilogue = CUBLASLT_EPILOGUE_BGRADA, g.bias = db;
    db_done = lt::try_matmul(g, stream);
  }
  if (!db_done) {
    g.epilogue = CUBLASLT_EPILOGUE_DEFAULT, g.bias = nullptr;
    lt::matmul(g, stream);
    if (db != nullptr) column_sum(dz, db, m, n, stream);
  }
}

template <typename T>
void dense_backward_input(const T* dz, const T* w, const T* s_prev, const void* mask_prev,
                          int64_t mask_ld_prev, T* dz_prev, T* db_prev, int64_t m, int64_t k,
                          int64_t n, Act a_prev, T alpha_prev, bool tf32, cudaStream_t stream) {
  if (m == 0 || k == 0 || n == 0) {  // dz w^T is empty or all zeros: no GEMM
    zero(dz_prev, m * k, stream);
    zero(db_prev, k, stream);
    return;
  }
  // D = dX^T (k x m, ld k) = op(A), A = W^T (n x k, ld n) transposed, * B dZ^T (n x m, ld n).
  // D is laid out as the previous layer's D = Y_prev^T was, so its aux outputs
  // (bitmask, GELU input) line up, and D*_BGRAD sums D's rows over the batch: db_prev.
  lt::Gemm g = lt::gemm_for<T>(tf32);
  g.rows = k, g.cols = m, g.inner = n;
  g.a = w, g.lda = n, g.trans_a = true;
  g.b = dz, g.ldb = n;
  g.d = dz_prev, g.ldd = k;

  // 1. f_prev' (and db_prev) in the epilogue, from what the previous layer's
  // forward epilogue saved.
  const bool bgrad = db_prev != nullptr && lt::aligned16(db_prev);
  const Act fused_act = lt::activation_epilogues() ? a_prev : Act::Count;
  bool fused = false;
  if (fused_act == Act::Relu && mask_prev != nullptr) {
    g.epilogue = bgrad ? CUBLASLT_EPILOGUE_DRELU_BGRAD : CUBLASLT_EPILOGUE_DRELU;
    g.aux = mask_prev, g.aux_ld = mask_ld_prev;
    fused = lt::aligned16(mask_prev);
  } else if (fused_act == Act::GeluTanh) {  // cuBLASLt's DGELU differentiates the tanh form
    g.epilogue = bgrad ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU;
    g.aux = s_prev, g.aux_ld = k;
    fused = k % 8 == 0 && lt::aligned16(s_prev);  // aux ld must be a multiple of 8
  }
  g.bias = bgrad ? db_prev : nullptr;
  bool db_done = false;
  if (fused && lt::try_matmul(g, stream)) {
    db_done = bgrad;
  } else {
    // 2. Plain GEMM, then f_prev' in one in-place pass of our own.
    g.epilogue = CUBLASLT_EPILOGUE_DEFAULT, g.bias = nullptr, g.aux = nullptr, g.aux_ld = 0;
    lt::matmul(g, stream);
    if (a_prev != Act::Linear)
      activation_backward<T>(a_prev, alpha_prev, dz_prev, s_prev, dz_prev, m * k, stream);
  }
  if (db_prev != nullptr && !db_done) column_sum(dz_prev, db_prev, m, k, stream);
}

// The layer's own f' first, then the two halves shared with layer chains: dx
// is dense_backward_input with a linear previous layer.
template <typename T>
void dense_backward(const T* dy, const T* s, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha, bool tf32,
                    cudaStream_t stream) {
  const T* dz = dy;
  if (a != Act::Linear) {
    activation_backward<T>(a, alpha, dy, s, dz_buf, m * n, stream);
    dz = dz_buf;
  }
  dense_backward_weight<T>(dz, x, dw, db, m, k, n, tf32, stream);
  if (dx != nullptr)
    dense_backward_input<T>(dz, w, nullptr, nullptr, 0, dx, nullptr, m, k, n, Act::Linear, T(0),
                            tf32, stream);
}

#define FUSEDNN_INSTANTIATE(T)                                                                   \
  template bool dense_forward<T>(const T*, const T*, const T*, T*, T*, void*, int64_t, int64_t,   \
                                 int64_t, int64_t, Act, T, bool, cudaStream_t);                  \
  template void dense_backward<T>(const T*, const T*, const T*, const T*, T*, T*, T*, T*,         \
                                  int64_t, int64_t, int64_t, Act, T, bool, cudaStream_t);         \
  template void dense_backward_weight<T>(const T*, const T*, T*, T*, int64_t, int64_t, int64_t,   \
                                         bool, cudaStream_t);                                     \
  template void dense_backward_input<T>(const T*, const T*, const T*, const void*, int64_t, T*,   \
                                        T*, int64_t, int64_t, int64_t, Act, T, bool, cudaStream_t);
FUSEDNN_INSTANTIATE(float)
FUSEDNN_INSTANTIATE(double)
#undef FUSEDNN_INSTANTIATE

}  // namespace cuda
}  // namespace fusednn
