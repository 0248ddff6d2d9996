// The CUDA runtime's view of this machine.
#pragma once
#include <string>

namespace fusednn {
namespace cuda {

// True and "<device>, cc X.Y, N devices, driver CUDA A.B" when a GPU is
// usable, else false and the reason. Never throws, also without a driver.
bool runtime_status(std::string* message);

}  // namespace cuda
}  // namespace fusednn
