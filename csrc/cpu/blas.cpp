#include <dlfcn.h>

#include "cblas.h"
#include "cpu/blas.h"

namespace fusednn {
namespace cpu {

int blas_num_threads() { return scipy_openblas_get_num_threads(); }

std::string blas_config() { return std::string(scipy_openblas_get_config()); }

const char* use_peer_blas(const char* path) {
  // Only a library already loaded (NumPy's): RTLD_NOLOAD never loads one.
  void* lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) return nullptr;
  // (sgemm, dgemm, 64-bit integers): scipy-openblas64 (NumPy's wheels), an
  // OpenBLAS built with a 64_ suffix, then a plain 32-bit CBLAS.
  static const struct {
    const char *s, *d;
    int int64;
  } names[] = {{"scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", 1},
               {"cblas_sgemm64_", "cblas_dgemm64_", 1},
               {"scipy_cblas_sgemm", "scipy_cblas_dgemm", 0},
               {"cblas_sgemm", "cblas_dgemm", 0}};
  for (const auto& n : names) {
    void* sg = dlsym(lib, n.s);
    void* dg = dlsym(lib, n.d);
    if (sg != nullptr && dg != nullptr) {
      set_peer_blas(sg, dg, n.int64);
      return n.s;
    }
  }
  return nullptr;
}

}  // namespace cpu
}  // namespace fusednn
