// A whole training step of a Sequential model in one call: forward through
// every block, the loss and its gradient, backward, and the optimizer update
// of all parameters (fusednn/optimizer.h), with the metric's count.
//
// A block is one Step of fusednn.models.plan:
//   Dense       y = f(x @ w + b)
//   BatchNorm   [z = x @ w + b ->] y = drop(f(gamma z_hat + beta))
//   Activation  y = f(x)
//   Dropout     y = drop(x)
// and each runs the very kernel calls (fusednn::dev, the same arguments, in
// the same order) that the layer-by-layer path makes through the op
// bindings, so both paths give the same numbers bit for bit. The plan only
// removes what lies between the kernels: Python, argument checks and
// allocation. Buffers are given by the caller (bindings/engine.cpp) with room
// for `rows` samples; a smaller batch uses the first rows of each.
//
// On the GPU the binding captures run() into a CUDA graph and replays it: the
// step then reads what changes between batches from device memory written
// before each replay (the optimizer's step record h_at, the dropout counters
// counters_at) and adds its loss and accuracy to a device Tally
// (engine/tally.h) instead of returning them.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

// fusednn::dev: the kernels of the device the including module is built for.
#if FUSEDNN_BIND_CUDA
#include "cuda/device.cuh"
#include "cuda/engine.cuh"
#else
#include "cpu/device.h"
#endif
#include "fusednn/batchnorm.h"
#include "fusednn/dropout.h"
#include "fusednn/loss.h"
#include "fusednn/optimizer.h"
#include "engine/tally.h"

namespace fusednn {
namespace engine {

enum class BlockKind : int { Dense = 0, BatchNorm = 1, Activation = 2, Dropout = 3, Count = 4 };

// One block's parameters and buffers (T* as void*: one struct for both dtypes).
struct Block {
  BlockKind kind = BlockKind::Dense;
  int64_t in = 0, out = 0;  // features in and out
  // Dense, or the dense part of a BatchNorm block (w null: batch norm alone)
  void *w = nullptr, *b = nullptr, *dw = nullptr, *db = nullptr;
  // BatchNorm
  void *gamma = nullptr, *beta = nullptr, *moving_mean = nullptr, *moving_var = nullptr;
  void *dgamma = nullptr, *dbeta = nullptr;
  bool batch_stats = true;  // normalise with the batch statistics (a trainable BN)
  double momentum = 0.99, epsilon = 1e-3;
  BnConvention convention = BnConvention::Keras;
  // activation (Dense, BatchNorm, Activation)
  Act act = Act::Linear;
  double alpha = 0;
  // dropout (BatchNorm, Dropout): the mask's key; the counter comes per call
  double rate = 0;
  bool alpha_dropout = false;
  uint64_t seed = 0;
  int counter = -1;  // index into the call's dropout counters (-1: none)
  // per-row buffers, `out` columns (dx: `in` columns)
  void* z = nullptr;   // Dense: f's input where f saves it; BatchNorm: x @ w + b
  void* y = nullptr;   // output (Dropout with rate 0: none, y is the input)
  void* dz = nullptr;  // Dense: dy f'(s); BatchNorm: dL/dz
  void* dx = nullptr;  // dL/d(input)
  uint32_t* mask = nullptr;
  // BatchNorm scratch
  void* cols = nullptr;
  double *mean = nullptr, *var = nullptr, *ws = nullptr;
};

struct Loss {
  LossKind kind = LossKind::SparseSoftmax;
  bool accuracy = false;
  double threshold = 0.5;  // binary accuracy: output > threshold against target > 0.5
};

// What a step returns: the batch's mean loss and the metric's count (samples
// classified right; elements for the binary loss).
struct StepResult {
  double loss = 0;
  int64_t correct = 0;
};

template <typename T>
struct StepPlan {
  std::vector<Block>& blocks;
  const Loss& loss;
  int stop;  // lowest block that runs backward (nothing below has a weight to train)

  static T* at(void* p) { return static_cast<T*>(p); }

  // Output of block k for input `x` (which is kept: backward reads it). In
  // inference (training false) a batch norm uses its moving statistics and
  // leaves them, and a dropout is on where active[its counter] is nonzero
  // (the layer's mc flag or predict's MC dropout); in training both are on.
  // counters_at: null, or the counters in device memory, read by the kernels.
  const T* forward(Block& k, const T* x, int64_t m, const uint64_t* counters, const uint8_t* active,
                   bool training, dev::Stream st, const uint64_t* counters_at = nullptr) {
    const bool drop = k.counter >= 0 && (training || active[k.counter]);
    const uint64_t* step_at = drop && counters_at ? counters_at + k.counter : nullptr;
    switch (k.kind) {
      case BlockKind::Dense:
        dev::dense_forward<T>(x, at(k.w), at(k.b), at(k.y), at(k.z), nullptr, m, k.in, k.out, k.act,
                              T(k.alpha), st);
        return at(k.y);
      case BlockKind::BatchNorm: {
        const T* in = x;
        if (k.w) {
          dev::dense_forward<T>(x, at(k.w), at(k.b), at(k.z), nullptr, nullptr, m, k.in, k.out,
                                Act::Linear, T(0), st);
          in = at(k.z);
        }
        const BnDropout d{drop ? k.rate : 0.0, k.alpha_dropout, k.seed,
                          drop ? counters[k.counter] : 0, step_at};
        const bool batch_stats = training && k.batch_stats;
        dev::batchnorm_forward<T>(in, at(k.gamma), at(k.beta), at(k.moving_mean), at(k.moving_var),
                                  batch_stats, k.momentum, k.epsilon, k.convention, at(k.y),
                                  at(k.cols), batch_stats ? k.mean : nullptr,
                                  batch_stats ? k.var : nullptr, drop ? k.mask : nullptr, k.ws, m,
                                  k.out, k.act, T(k.alpha), d, st);
        return at(k.y);
      }
      case BlockKind::Activation:
        dev::activation_forward<T>(k.act, T(k.alpha), x, at(k.y), m * k.out, st);
        return at(k.y);
      case BlockKind::Dropout:
        if (!drop) return x;
        dev::dropout_forward<T>(x, at(k.y), k.mask, m * k.out, k.seed, counters[k.counter], k.rate,
                                k.alpha_dropout, st, step_at);
        return at(k.y);
      case BlockKind::Count:  // refused when the plan is built
        break;
    }
    return x;
  }

  // dL/d(input) of block i from dy (null unless need_dx); weight gradients
  // into the block's buffers.
  const T* backward(Block& k, const T* x, const T* dy, int64_t m, bool need_dx,
                    const uint64_t* counters, dev::Stream st) {
    T* dx = need_dx ? at(k.dx) : nullptr;
    switch (k.kind) {
      case BlockKind::Dense: {
        const T* saved = k.act == Act::Linear ? nullptr : saves_input(k.act) ? at(k.z) : at(k.y);
        dev::dense_backward<T>(dy, saved, x, at(k.w), at(k.dz), dx, at(k.dw), at(k.db), m, k.in,
                               k.out, k.act, T(k.alpha), st);
        return dx;
      }
      case BlockKind::BatchNorm: {
        const BnDropout d{k.rate, k.alpha_dropout, 0, 0};
        dev::batchnorm_backward<T>(dy, k.w ? at(k.z) : x, at(k.y), at(k.cols), k.mask, at(k.dz),
                                   at(k.dgamma), at(k.dbeta), k.ws, m, k.out, k.act, T(k.alpha), d,
                                   k.batch_stats, st);
        if (!k.w) return at(k.dz);
        dev::dense_backward<T>(at(k.dz), nullptr, x, at(k.w), nullptr, dx, at(k.dw), at(k.db), m,
                               k.in, k.out, Act::Linear, T(0), st);
        return dx;
      }
      case BlockKind::Activation:
        if (dx) {
          const T* saved = saves_input(k.act) ? x : at(k.y);
          dev::activation_backward<T>(k.act, T(k.alpha), dy, saved, dx, m * k.out, st);
        }
        return dx;
      case BlockKind::Dropout:
        if (!dx || k.rate == 0.0) return dx ? dy : nullptr;
        dev::dropout_backward<T>(dy, k.mask, dx, m * k.out, k.seed, counters[k.counter], k.rate,
                                 k.alpha_dropout, st);
        return dx;
      case BlockKind::Count:
        break;
    }
    return dx;
  }

  // The loss of `out` (m x c) against `target` (class indices of type L, or
  // rows of T), its gradient into dout, and the batch added to *tally (the
  // mean loss times m, the accuracy's hits: engine/tally.h). weight: one
  // factor per sample or nullptr; the loss is sum_i w_i l_i / m (Keras'
  // sum_over_batch_size), the hits are not weighted (Keras' `metrics`). On
  // the CPU it also returns the batch's loss and hits; on the GPU, where
  // loss_buf and tally are device memory, a kernel adds to the tally and the
  // result is empty.
  template <typename L>
  StepResult head(const T* out, const L* labels, const T* target, const T* weight, T* dout,
                  double* loss_buf, Tally* tally, int64_t m, int64_t c, dev::Stream st) {
    const double inv_m = 1.0 / double(m);
    switch (loss.kind) {
      case LossKind::SparseSoftmax:
      case LossKind::Softmax:
        dev::softmax_cross_entropy<T, L>(out, labels, target, weight, dout, loss_buf, m, c, 0.0,
                                         inv_m, st);
        break;
      case LossKind::SigmoidBce:
      case LossKind::Mse:
        dev::point_loss<T>(loss.kind == LossKind::Mse ? PointLoss::MSE : PointLoss::SigmoidBCE, out,
                           target, weight, dout, loss_buf, m, c, inv_m, st);
        break;
      case LossKind::Count:  // refused when the plan is built
        break;
    }
#if FUSEDNN_BIND_CUDA
    cuda::step_tally<T, L>(loss.kind, loss.accuracy, loss.threshold, out, labels, target, loss_buf,
                           m, c, tally, st);
    return {};
#else
    StepResult r{*loss_buf, 0};
    if (loss.accuracy)
      for (int64_t i = 0; i < m; ++i)
        r.correct += row_hits<T, L>(loss.kind, loss.threshold, out, labels, target, i, c);
    if (tally) tally_add(*tally, r.loss, m, r.correct);
    return r;
#endif
  }

  // The whole step. x: m rows of blocks[0].in; the last block's output is
  // the loss's input; weight: see head(). Returns the loss and the metric's
  // count.
  // counters_at, h_at: null, or device copies of counters and h that the
  // kernels read when they run (a captured graph's replays).
  template <typename L>
  StepResult run(const T* x, const L* labels, const T* target, const T* weight, T* dout,
                 double* loss_buf, Tally* tally, int64_t m, const uint64_t* counters, Opt rule,
                 const OptStep<double>& h, OptTensor<T>* tensors, int64_t count, Clip clip_mode,
                 double clip, double* norms, dev::Stream st,
                 const uint64_t* counters_at = nullptr, const OptStep<double>* h_at = nullptr) {
    const int n = int(blocks.size());
    std::vector<const T*> inputs(n);
    const T* h_out = x;
    for (int i = 0; i < n; ++i) {
      inputs[i] = h_out;
      h_out = forward(blocks[i], h_out, m, counters, nullptr, true, st, counters_at);
    }
    const StepResult r =
        head<L>(h_out, labels, target, weight, dout, loss_buf, tally, m, blocks[n - 1].out, st);
    // The update of a block's parameters may start once its backward is
    // done (nothing later reads them); on the CPU a worker the backward
    // leaves idle starts it then (dev::UpdateBeside).
    dev::UpdateBeside<T> update(rule, h, tensors, count, clip_mode, h_at);
    const T* g = dout;
    for (int i = n - 1; i >= stop; --i) {
      Block& k = blocks[i];
      g = backward(k, inputs[i], g, m, i > stop, counters, st);
      update.ready({k.dw, k.db, k.dgamma, k.dbeta});
    }
    if (!update.finish() && count > 0)
      dev::optimizer_step<T>(rule, h, tensors, count, clip_mode, clip, norms, st, h_at);
    return r;
  }

  // Inference: the output of the last block for x (m rows), nothing
  // updated; see forward() for `active`.
  const T* infer(const T* x, int64_t m, const uint64_t* counters, const uint8_t* active,
                 dev::Stream st) {
    const T* h_out = x;
    for (Block& k : blocks) h_out = forward(k, h_out, m, counters, active, false, st);
    return h_out;
  }
};

}  // namespace engine
}  // namespace fusednn
