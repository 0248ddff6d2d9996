// The compiled step's device-side bookkeeping (engine/tally.h). Plain C++ so
// that the binding, compiled by the host compiler, can include it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/tally.h"

namespace fusednn {
namespace cuda {

// tally += the batch whose mean loss is *loss (device double, written by the
// loss kernel before this on `stream`) over m rows of out (m x c), with the
// accuracy's hits when `accuracy` (engine::row_hits; labels: class indices of
// L = int32_t or int64_t, or null with label rows in target). One block, a
// fixed order: the same sums on every run.
template <typename T, typename L>
void step_tally(engine::LossKind kind, bool accuracy, double threshold, const T* out,
                const L* labels, const T* target, const double* loss, int64_t m, int64_t c,
                engine::Tally* tally, cudaStream_t stream);

}  // namespace cuda
}  // namespace fusednn
