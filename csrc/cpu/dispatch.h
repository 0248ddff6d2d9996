// Runtime CPU dispatch. The CPU kernels (the per-element loops of the dense
// epilogues, activations, batch norm, dropout, losses and optimizer updates)
// are built once per instruction-set level, each level a shared library of
// its own (fusednn/_cpu_<level>.so, compiled with that level's -march and
// nothing else in it), and fusednn._C loads the best one this CPU runs at
// import. The bindings reach the kernels only through the table below.
//
// One library per level, not one object file per level linked into _C: the
// compiler emits inline functions and template instances (ours and the
// standard library's) once per translation unit, and the linker keeps one
// copy for the whole library; an AVX-512 copy kept for baseline code would be
// an illegal instruction on an older CPU. Inside a library of one level every
// copy is of that level, and its symbols stay private (-fvisibility=hidden,
// -Bsymbolic).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "fusednn/activation.h"
#include "fusednn/batchnorm.h"
#include "fusednn/loss.h"
#include "fusednn/optimizer.h"

namespace fusednn {
namespace cpu {

// Bumped whenever the table changes shape: _C refuses a library of another.
constexpr int kKernelAbi = 3;

// The entry points of one storage type T (float or double); the functions are
// those of cpu/kernels.h, cpu/batchnorm.h, cpu/dropout.h and cpu/loss.h.
template <typename T>
struct Kernels {
  void (*activation_forward)(Act, T, const T*, T*, int64_t);
  void (*activation_backward)(Act, T, const T*, const T*, T*, int64_t);
  void (*dense_forward)(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t, Act, T,
                        int64_t);
  void (*dense_backward)(const T*, const T*, const T*, const T*, T*, T*, T*, T*, int64_t, int64_t,
                         int64_t, Act, T);
  void (*dense_backward_weight)(const T*, const T*, T*, T*, int64_t, int64_t, int64_t);
  void (*dense_backward_input)(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t,
                               Act, T);
  void (*optimizer_step)(Opt, const OptStep<double>&, OptTensor<T>*, int64_t, Clip, double);
  void (*optimizer_chunk)(Opt, const OptStep<double>&, const OptTensor<T>&, int64_t, int64_t,
                          Clip);
  void (*batchnorm_forward_train)(const T*, const T*, const T*, T*, T*, double, double,
                                  BnConvention, T*, T*, double*, double*, uint32_t*, int64_t,
                                  int64_t, Act, T, const BnDropout&);
  void (*batchnorm_forward_infer)(const T*, const T*, const T*, const T*, const T*, double, T*,
                                  T*, uint32_t*, int64_t, int64_t, Act, T, const BnDropout&);
  void (*batchnorm_backward)(const T*, const T*, const T*, const T*, const uint32_t*, T*, T*, T*,
                             int64_t, int64_t, Act, T, const BnDropout&, bool);
  void (*dropout_forward)(const T*, T*, uint32_t*, int64_t, uint64_t, uint64_t, double, bool);
  void (*dropout_backward)(const T*, const uint32_t*, T*, int64_t, uint64_t, uint64_t, double,
                           bool);
  double (*softmax_cross_entropy_i32)(const T*, const int32_t*, const T*, const T*, T*, int64_t,
                                      int64_t, double, double);
  double (*softmax_cross_entropy_i64)(const T*, const int64_t*, const T*, const T*, T*, int64_t,
                                      int64_t, double, double);
  double (*point_loss)(PointLoss, const T*, const T*, const T*, T*, int64_t, int64_t, double);

  double softmax_cross_entropy(const T* z, const int32_t* labels, const T* y, const T* w, T* dz,
                               int64_t n, int64_t c, double eps, double inv_d) const {
    return softmax_cross_entropy_i32(z, labels, y, w, dz, n, c, eps, inv_d);
  }
  double softmax_cross_entropy(const T* z, const int64_t* labels, const T* y, const T* w, T* dz,
                               int64_t n, int64_t c, double eps, double inv_d) const {
    return softmax_cross_entropy_i64(z, labels, y, w, dz, n, c, eps, inv_d);
  }
};

struct KernelTable {
  int abi;            // kKernelAbi of the library
  const char* level;  // the level it was built for
  Kernels<float> f32;
  Kernels<double> f64;
  void (*dropout_mask)(uint32_t*, int64_t, uint64_t, uint64_t, double);
  void (*philox4x32_10)(const uint32_t*, const uint32_t*, uint32_t*, int64_t);
};

// The symbol every level's library exports.
#define FUSEDNN_CPU_KERNELS_SYMBOL "fusednn_cpu_kernels"

// ------------------------------------------------ fusednn._C's side (dispatch.cpp)

struct DispatchInfo {
  std::string level;                   // the level in use
  std::string chosen_by;               // "cpuid" or "FUSEDNN_CPU_DISPATCH"
  std::vector<std::string> compiled;   // the levels built, lowest first
  std::vector<std::string> supported;  // those of them this CPU runs
};

// Loads the level FUSEDNN_CPU_DISPATCH names, or the best one this CPU runs;
// `module_address` is any address inside fusednn._C (its directory holds the
// libraries). Throws std::runtime_error naming the variable, its value and
// the levels available for an unknown or unsupported level, and for a
// library that does not load.
void load_kernels(const void* module_address);
const DispatchInfo& dispatch_info();
const KernelTable& kernel_table();

template <typename T>
const Kernels<T>& kernels();
template <>
inline const Kernels<float>& kernels<float>() {
  return kernel_table().f32;
}
template <>
inline const Kernels<double>& kernels<double>() {
  return kernel_table().f64;
}

}  // namespace cpu
}  // namespace fusednn
