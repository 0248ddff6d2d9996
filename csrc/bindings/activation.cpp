// y = f(z) and dz = dy * f'(s), element-wise (fusednn/activation.h).
#include "bindings/registry.h"
#include "bindings/tensor.h"

namespace py = pybind11;
using fusednn::Act;
using namespace fusednn::bind;
using namespace pybind11::literals;

namespace {

py::object forward(py::handle z_obj, Act kind, double alpha, uintptr_t stream) {
  const Tensor z = view(z_obj, "z");
  const Act a = to_act(kind);
  const Stream st = as_stream(stream);
  const Tensor y = empty_like(z);
  FUSEDNN_DISPATCH(float_dtype(z), fusednn::dev::activation_forward<T>(a, T(alpha), z.data<T>(),
                                                                       y.data<T>(), z.size, st));
  return y.keep;
}

py::object backward(py::handle dy_obj, py::handle saved_obj, Act kind, double alpha,
                    uintptr_t stream) {
  const Tensor dy = view(dy_obj, "dy"), saved = view_or_none(saved_obj, "saved");
  const DType dt = float_dtype(dy);
  const Act a = to_act(kind);
  if (a != Act::Linear) {
    require_given(saved, "for a non-linear activation");
    expect_size(saved, dt, dy.size);
  }
  const Stream st = as_stream(stream);
  const Tensor dz = empty_like(dy);
  // linear reads no saved value: dy stands in for it.
  const Tensor& s = a == Act::Linear ? dy : saved;
  FUSEDNN_DISPATCH(dt, fusednn::dev::activation_backward<T>(a, T(alpha), dy.data<T>(), s.data<T>(),
                                                            dz.data<T>(), dy.size, st));
  return dz.keep;
}

const Registrar reg([](py::module_& m) {
  m.def("activation_forward", &forward, "z"_a, "kind"_a, "alpha"_a, "stream"_a = 0,
        "y = f(z), element-wise, any shape.");
  m.def("activation_backward", &backward, "dy"_a, "saved"_a, "kind"_a, "alpha"_a, "stream"_a = 0,
        "dz = dy * f'(saved), saved z (gelu, swish, mish), y (others) or None (linear).");
});

}  // namespace
