// The CPU kernels under the signatures of cuda/device.cuh, so that code built
// for either device (the bindings, compiled once per module) makes one call.
// Arguments only the GPU reads (stream, relu mask, workspace, norms) are
// ignored here; block_rows is the CPU's rows per task (0: chosen).
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "cpu/blas.h"
#include "cpu/dispatch.h"
#include "cpu/threads.h"
#include "fusednn/batchnorm.h"
#include "fusednn/loss.h"
#include "fusednn/optimizer.h"

namespace fusednn {
namespace dev {

struct Stream {};

// Bytes of the relu bit mask of an m x n dense output, doubles of batch-norm
// scratch: the CPU needs neither.
inline int64_t relu_mask_bytes(int64_t, int64_t) { return 0; }
inline int64_t batchnorm_workspace(int64_t, int64_t) { return 0; }

template <typename T>
void activation_forward(Act a, T alpha, const T* z, T* y, int64_t n, Stream) {
  cpu::kernels<T>().activation_forward(a, alpha, z, y, n);
}

template <typename T>
void activation_backward(Act a, T alpha, const T* dy, const T* s, T* dz, int64_t n, Stream) {
  cpu::kernels<T>().activation_backward(a, alpha, dy, s, dz, n);
}

template <typename T>
bool dense_forward(const T* x, const T* w, const T* b, T* y, T* z, void*, int64_t m, int64_t k,
                   int64_t n, Act a, T alpha, Stream, int64_t block_rows = 0) {
  cpu::kernels<T>().dense_forward(x, w, b, y, z, m, k, n, a, alpha, block_rows);
  return false;
}

template <typename T>
void dense_backward(const T* dy, const T* s, const T* x, const T* w, T* dz_buf, T* dx, T* dw,
                    T* db, int64_t m, int64_t k, int64_t n, Act a, T alpha, Stream) {
  cpu::kernels<T>().dense_backward(dy, s, x, w, dz_buf, dx, dw, db, m, k, n, a, alpha);
}

template <typename T>
void dense_backward_weight(const T* dz, const T* x, T* dw, T* db, int64_t m, int64_t k,
                           int64_t n, Stream) {
  cpu::kernels<T>().dense_backward_weight(dz, x, dw, db, m, k, n);
}

template <typename T>
void dense_backward_input(const T* dz, const T* w, const T* s_prev, const void*, T* dz_prev,
                          T* db_prev, int64_t m, int64_t k, int64_t n, Act a_prev, T alpha_prev,
                          Stream) {
  cpu::kernels<T>().dense_backward_input(dz, w, s_prev, dz_prev, db_prev, m, k, n, a_prev,
                                         alpha_prev);
}

template <typename T>
void gemm(const T* a, const T* b, T* c, int64_t m, int64_t k, int64_t n, Stream) {
  cpu::parallel_gemm<T>(false, false, m, n, k, T(1), a, k, b, n, T(0), c, n);
}

template <typename T>
void batchnorm_forward(const T* x, const T* gamma, const T* beta, T* moving_mean, T* moving_var,
                       bool training, double momentum, double epsilon, BnConvention conv, T* y,
                       T* cols, double* mean, double* var, uint32_t* mask, double*, int64_t m,
                       int64_t n, Act a, T alpha, const BnDropout& d, Stream) {
  if (training)
    cpu::kernels<T>().batchnorm_forward_train(x, gamma, beta, moving_mean, moving_var, momentum,
                                              epsilon, conv, y, cols, mean, var, mask, m, n, a,
                                              alpha, d);
  else
    cpu::kernels<T>().batchnorm_forward_infer(x, gamma, beta, moving_mean, moving_var, epsilon, y,
                                              cols, mask, m, n, a, alpha, d);
}

template <typename T>
void batchnorm_backward(const T* dy, const T* x, const T* y, const T* cols, const uint32_t* mask,
                        T* dx, T* dgamma, T* dbeta, double*, int64_t m, int64_t n, Act a,
                        T alpha, const BnDropout& d, bool batch_stats, Stream) {
  cpu::kernels<T>().batchnorm_backward(dy, x, y, cols, mask, dx, dgamma, dbeta, m, n, a, alpha, d,
                                       batch_stats);
}

template <typename T>
void dropout_forward(const T* x, T* y, uint32_t* mask, int64_t n, uint64_t seed, uint64_t step,
                     double rate, bool alpha, Stream, const uint64_t* step_at = nullptr) {
  cpu::kernels<T>().dropout_forward(x, y, mask, n, seed, step_at ? *step_at : step, rate, alpha);
}

template <typename T>
void dropout_backward(const T* dy, const uint32_t* mask, T* dx, int64_t n, uint64_t seed,
                      uint64_t step, double rate, bool alpha, Stream) {
  cpu::kernels<T>().dropout_backward(dy, mask, dx, n, seed, step, rate, alpha);
}

inline void dropout_mask(uint32_t* mask, int64_t nwords, uint64_t seed, uint64_t step,
                         double rate, Stream) {
  cpu::kernel_table().dropout_mask(mask, nwords, seed, step, rate);
}

inline void philox4x32_10(const uint32_t* ctr, uint32_t* out, int64_t count, uint32_t k0,
                          uint32_t k1, Stream) {
  const uint32_t key[2] = {k0, k1};
  cpu::kernel_table().philox4x32_10(ctr, key, out, count);
}

template <typename T, typename L>
void softmax_cross_entropy(const T* z, const L* labels, const T* y, const T* w, T* dz,
                           double* loss, int64_t n, int64_t c, double eps, double inv_d, Stream) {
  *loss = cpu::kernels<T>().softmax_cross_entropy(z, labels, y, w, dz, n, c, eps, inv_d);
}

template <typename T>
void point_loss(PointLoss kind, const T* p, const T* t, const T* w, T* dp, double* loss,
                int64_t n, int64_t k, double inv_d, Stream) {
  *loss = cpu::kernels<T>().point_loss(kind, p, t, w, dp, n, k, inv_d);
}

template <typename T>
void optimizer_step(Opt kind, const OptStep<double>& h, OptTensor<T>* tensors, int64_t count,
                    Clip clip_mode, double clip, double*, Stream,
                    const OptStep<double>* h_at = nullptr) {
  cpu::kernels<T>().optimizer_step(kind, h_at ? *h_at : h, tensors, count, clip_mode, clip);
}

// The optimizer step of a training step, begun while its backward still runs
// (engine/step_plan.h): ready() names the gradients a block has just
// written; finish() completes the step and returns true, or returns false
// when nothing was begun, and the step then runs optimizer_step itself. On
// the CPU each named tensor's elements join a background job of the thread
// pool (cpu/threads.h) at once, so a worker the backward leaves idle (its
// small products run on the caller) updates the deeper blocks while the
// caller goes on down the network; finish() adds the tensors not named and
// runs what no worker took. Every element goes through optimizer_chunk,
// optimizer_step's own update: the same bits whichever thread runs it and in
// whatever order. Nothing is begun for a step that needs something across
// tensors (clipnorm, global_clipnorm, max-norm), a small one, a pool without
// a second thread, or one whose caller was preempted lately
// (cpu::background_pays: on shared cores the caller would wait for a
// preempted worker's piece). If the step is abandoned (an exception before
// finish), the tensors already named may have been updated; the others are
// not.
//
// The W1 step (bench/train.py's deep net), fit in one process with the two
// forms switched between rounds: 0.91-0.95x the time at batch 32 and
// 0.91-0.97x at 128 on idle cores; beside one busy process 0.98-0.99x and
// 0.95x (always on there: 1.07-1.15x). At batch 1024 and on the wide net the
// worker has the products' pieces to run and the long steps are seldom
// free of preemption, so it stays off there.
template <typename T>
class UpdateBeside {
 public:
  UpdateBeside(Opt kind, const OptStep<double>& h, OptTensor<T>* tensors, int64_t count,
               Clip clip_mode, const OptStep<double>* h_at = nullptr)
      : kind_(kind), h_(h_at ? *h_at : h), ts_(tensors), count_(count), clip_mode_(clip_mode) {
    const bool pays = cpu::num_threads() >= 2 && cpu::background_pays();
    if (!pays || count <= 0 || (clip_mode != Clip::Off && clip_mode != Clip::Value)) return;
    int64_t total = 0, pieces = 0;
    for (int64_t t = 0; t < count; ++t) {
      if (tensors[t].max_norm > 0) return;
      total += tensors[t].n;
      pieces += (tensors[t].n + kPiece - 1) / kPiece;
    }
    // optimizer_step's own rule: a smaller step stays on one thread
    if (total < kMinElements) return;
    // The lists live on with the calling thread, so a step allocates only
    // when it needs more than the thread's steps before it.
    static thread_local std::vector<Piece> piece_list;
    static thread_local std::vector<char> added_list;
    piece_list.resize(size_t(pieces));
    added_list.assign(size_t(count), 0);
    pieces_ = piece_list.data();
    added_ = added_list.data();
    capacity_ = pieces;
    open_ = cpu::background_begin(pieces, &run_piece, this);
  }
  UpdateBeside(const UpdateBeside&) = delete;
  UpdateBeside& operator=(const UpdateBeside&) = delete;
  ~UpdateBeside() {
    if (open_) cpu::background_cancel();
  }

  // The tensors whose gradient is one of `grads` (nulls ignored) may be
  // updated now.
  void ready(std::initializer_list<const void*> grads) {
    if (!open_) return;
    const int64_t before = size_;
    for (int64_t t = 0; t < count_; ++t) {
      if (added_[t]) continue;
      for (const void* g : grads)
        if (g != nullptr && g == static_cast<const void*>(ts_[t].g)) {
          add(t);
          break;
        }
    }
    if (size_ > before) cpu::background_release(size_);
  }

  bool finish() {
    if (!open_) return false;
    for (int64_t t = 0; t < count_; ++t)
      if (!added_[t]) add(t);
    cpu::background_finish();
    open_ = false;
    return true;
  }

 private:
  // Elements per piece: a worker in the middle of one answers the caller's
  // next pool call within a few microseconds.
  static constexpr int64_t kPiece = 4096;
  static constexpr int64_t kMinElements = 1 << 16;
  struct Piece {
    int64_t tensor, begin, end;
  };

  // Pieces are written before the release that lets a worker read them.
  void add(int64_t t) {
    added_[t] = 1;
    for (int64_t b = 0; b < ts_[t].n && size_ < capacity_; b += kPiece)
      pieces_[size_++] = {t, b, std::min(ts_[t].n, b + kPiece)};
  }

  static void run_piece(void* ctx, int64_t i) {
    const auto* u = static_cast<const UpdateBeside*>(ctx);
    const Piece& p = u->pieces_[i];
    cpu::kernels<T>().optimizer_chunk(u->kind_, u->h_, u->ts_[p.tensor], p.begin, p.end,
                                      u->clip_mode_);
  }

  Opt kind_;
  OptStep<double> h_;
  OptTensor<T>* ts_;
  int64_t count_;
  Clip clip_mode_;
  Piece* pieces_ = nullptr;
  char* added_ = nullptr;
  int64_t capacity_ = 0, size_ = 0;
  bool open_ = false;
};

}  // namespace dev
}  // namespace fusednn
