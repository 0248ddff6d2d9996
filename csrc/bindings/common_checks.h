// Checks shared by the CPU and CUDA binding files.
#pragma once
#include <pybind11/pybind11.h>

#include <string>

namespace fusednn {
namespace bind {

// A dropout rate in [0, 1): NaN and 1.0 would make the drop threshold and the
// 1 / (1 - rate) scale meaningless.
inline void check_rate(const char* fn, double rate) {
  if (!(rate >= 0.0 && rate < 1.0))
    throw pybind11::value_error(std::string(fn) + ": rate must be in [0, 1), got " +
                                std::to_string(rate));
}

}  // namespace bind
}  // namespace fusednn
