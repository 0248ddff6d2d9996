// Binding files add their functions to a module through a registrar, so each
// op family keeps its bindings in its own file:
//
//   static fusednn::bind::Registrar reg([](py::module_& m) { m.def(...); });
//
// module.cpp runs them when fusednn._C or fusednn._C_cuda is imported (each
// module compiles every binding file once); the order does not matter.
#pragma once
#include <pybind11/pybind11.h>

#include <vector>

namespace fusednn {
namespace bind {

using RegisterFn = void (*)(pybind11::module_&);

// One list per extension module: each module is its own shared library, so
// each gets its own copy of this function-local static.
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
