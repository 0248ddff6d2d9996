#include "cblas.h"
#include "cpu/blas.h"

namespace fusednn {
namespace cpu {

int blas_num_threads() { return scipy_openblas_get_num_threads(); }

std::string blas_config() { return std::string(scipy_openblas_get_config()); }

}  // namespace cpu
}  // namespace fusednn
