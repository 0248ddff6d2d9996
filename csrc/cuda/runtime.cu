// Whether the CUDA runtime finds a usable GPU, in words.
#include <cuda_runtime_api.h>

#include <string>

#include "cuda/runtime.cuh"

namespace fusednn {
namespace cuda {

namespace {

// The CUDA version a driver supports, as CUDART_VERSION counts (13000 for
// 13.0), printed as "13.0".
std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

}  // namespace

bool runtime_status(std::string* message) {
  // With no driver, cudart_static reports an error here instead of failing to
  // load, which is what makes this safe on a machine without a GPU. A driver
  // of an older CUDA major version than the runtime's is named as such
  // (cudaGetDeviceCount would only say "CUDA driver version is
  // insufficient"); within a major version, minor version compatibility lets
  // an older driver run the newer runtime.
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
    cudaGetLastError();
    *message = "no NVIDIA driver (libcuda.so not found)";
    return false;
  }
  if (driver / 1000 < CUDART_VERSION / 1000) {
    cudaGetLastError();
    *message = "driver too old: it supports CUDA " + cuda_version_string(driver) +
               ", fusednn was built with CUDA " + cuda_version_string(CUDART_VERSION) +
               " (update the NVIDIA driver)";
    return false;
  }
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n < 1) e = cudaErrorNoDevice;
  int dev = 0;
  cudaDeviceProp prop{};
  if (e == cudaSuccess) e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, dev);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it, so no later call reports it as its own
    *message = cudaGetErrorString(e);
    return false;
  }
  *message = std::string(prop.name) + ", cc " + std::to_string(prop.major) + "." +
             std::to_string(prop.minor) + ", " + std::to_string(n) +
             (n == 1 ? " device" : " devices") + ", driver CUDA " + cuda_version_string(driver);
  return true;
}

}  // namespace cuda
}  // namespace fusednn
