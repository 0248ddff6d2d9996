// Each binding file registers its op family's functions through a Registrar,
//   const fusednn::bind::Registrar reg([](py::module_& m) { m.def(...); });
// and module.cpp runs the registrars when its module is imported. Each module
// is its own shared library, so each has its own list; order does not matter.
#pragma once
#include <pybind11/pybind11.h>

#include <vector>

namespace fusednn {
namespace bind {

using RegisterFn = void (*)(pybind11::module_&);

inline std::vector<RegisterFn>& registrars() {
  static std::vector<RegisterFn> list;
  return list;
}

struct Registrar {
  explicit Registrar(RegisterFn f) { registrars().push_back(f); }
};

inline void run_registrars(pybind11::module_& m) {
  for (RegisterFn f : registrars()) f(m);
}

}  // namespace bind
}  // namespace fusednn
