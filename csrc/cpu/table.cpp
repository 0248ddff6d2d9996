// The table of one level's kernels (cpu/dispatch.h), the one symbol its
// library exports.
#include "cpu/batchnorm.h"
#include "cpu/dispatch.h"
#include "cpu/dropout.h"
#include "cpu/kernels.h"
#include "cpu/loss.h"

#ifndef FUSEDNN_CPU_LEVEL
#error "FUSEDNN_CPU_LEVEL names the instruction-set level this library is built for"
#endif

namespace fusednn {
namespace cpu {
namespace {

template <typename T>
Kernels<T> kernels_of() {
  Kernels<T> k{};
  k.activation_forward = &activation_forward<T>;
  k.activation_backward = &activation_backward<T>;
  k.dense_forward = &dense_forward<T>;
  k.dense_backward = &dense_backward<T>;
  k.dense_backward_weight = &dense_backward_weight<T>;
  k.dense_backward_input = &dense_backward_input<T>;
  k.optimizer_step = &optimizer_step<T>;
  k.optimizer_chunk = &optimizer_chunk<T>;
  k.batchnorm_forward_train = &batchnorm_forward_train<T>;
  k.batchnorm_forward_infer = &batchnorm_forward_infer<T>;
  k.batchnorm_backward = &batchnorm_backward<T>;
  k.dropout_forward = &dropout_forward<T>;
  k.dropout_backward = &dropout_backward<T>;
  k.softmax_cross_entropy_i32 = &softmax_cross_entropy<T, int32_t>;
  k.softmax_cross_entropy_i64 = &softmax_cross_entropy<T, int64_t>;
  k.point_loss = &point_loss<T>;
  return k;
}

}  // namespace
}  // namespace cpu
}  // namespace fusednn

extern "C" __attribute__((visibility("default"))) const fusednn::cpu::KernelTable*
fusednn_cpu_kernels() {
  using namespace fusednn::cpu;
  static const KernelTable table{kKernelAbi,        FUSEDNN_CPU_LEVEL,  kernels_of<float>(),
                                 kernels_of<double>(), &dropout_mask,
                                 &philox4x32_10};
  return &table;
}
