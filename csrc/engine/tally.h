// What a compiled step (engine/step_plan.h) counts for fit's logs: the sum of
// the batches' mean losses times their rows, the samples the accuracy counts
// as right, and the last batch's loss. On the CPU the plan adds to it on the
// host; on the GPU one small kernel adds to it in device memory after the
// loss (cuda/engine.cuh), so that no batch waits for the host to read its
// loss: fit reads the sums once per epoch or progress update.
//
// The per-row test is written once here for both: argmax as NumPy's (the
// first maximum, a NaN counting as the maximum) against the class index or
// the label row's argmax; for the binary loss, output > threshold against
// target > 0.5 per element (fusednn.models.loss.Loss.accuracy).
#pragma once
#include <cstdint>

#include "fusednn/common.h"

namespace fusednn {
namespace engine {

// How the loss reads the last block's output: fusednn.models.loss.Loss.
enum class LossKind : int { SparseSoftmax = 0, Softmax = 1, SigmoidBce = 2, Mse = 3, Count = 4 };

struct Tally {
  double loss_sum = 0;  // sum over batches of (mean loss) * rows
  double last = 0;      // the last batch's mean loss
  int64_t correct = 0;  // rows (elements for the binary loss) the accuracy counts
  int64_t samples = 0;  // rows
  int64_t batches = 0;
};

template <typename T>
FUSEDNN_HD int64_t row_argmax(const T* row, int64_t c) {
  int64_t best = 0;
  for (int64_t j = 0; j < c; ++j) {
    if (row[j] != row[j]) return j;
    if (row[j] > row[best]) best = j;
  }
  return best;
}

// The hits of row i of out (m x c): 0 or 1, or up to c for the binary loss.
// labels: class indices, or null with label rows in target.
template <typename T, typename L>
FUSEDNN_HD int64_t row_hits(LossKind kind, double threshold, const T* out, const L* labels,
                            const T* target, int64_t i, int64_t c) {
  const T* o = out + i * c;
  if (kind == LossKind::SigmoidBce) {
    const T* t = target + i * c;
    int64_t hits = 0;
    for (int64_t j = 0; j < c; ++j) hits += (double(o[j]) > threshold) == (double(t[j]) > 0.5);
    return hits;
  }
  const int64_t want = labels ? int64_t(labels[i]) : row_argmax(target + i * c, c);
  return row_argmax(o, c) == want ? 1 : 0;
}

FUSEDNN_HD void tally_add(Tally& t, double loss, int64_t rows, int64_t hits) {
  t.loss_sum += loss * double(rows);
  t.last = loss;
  t.correct += hits;
  t.samples += rows;
  t.batches += 1;
}

}  // namespace engine
}  // namespace fusednn
