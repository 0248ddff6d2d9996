// activation_forward / activation_backward: y = f(z) and dz = dy * f'(s)
// element-wise (fusednn/activation.h), in fusednn._C and fusednn._C_cuda.
#include "bindings/registry.h"
#include "bindings/tensor.h"

#if FUSEDNN_BIND_CUDA
#include "cuda/kernels.cuh"
#else
#include "cpu/dispatch.h"
#endif

namespace py = pybind11;
using fusednn::Act;
using namespace fusednn::bind;

namespace {

py::object forward(py::handle z_obj, Act kind, double alpha, uintptr_t stream) {
  const Tensor z = view(z_obj, "z");
  const Act a = to_act(kind);
  const Stream st = as_stream(stream);
  Tensor y = empty_like(z);
  floating(float_dtype(z), [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::activation_forward<T>(a, T(alpha), z.data<T>(), y.data<T>(), z.size, st);
#else
    (void)st;
    fusednn::cpu::kernels<T>().activation_forward(a, T(alpha), z.data<T>(), y.data<T>(), z.size);
#endif
  });
  return y.keep;
}

py::object backward(py::handle dy_obj, py::handle saved_obj, Act kind, double alpha,
                    uintptr_t stream) {
  const Tensor dy = view(dy_obj, "dy");
  const DType dt = float_dtype(dy);
  const Act a = to_act(kind);
  Tensor saved = view_or_none(saved_obj, "saved");
  if (a != Act::Linear) {
    require_given(saved, "for a non-linear activation");
    expect_size(saved, dt, dy.size);
  }
  const Stream st = as_stream(stream);
  Tensor dz = empty_like(dy);
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    // linear reads no saved value: dy stands in for it.
    const T* s = a == Act::Linear ? dy.data<T>() : saved.data<T>();
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::activation_backward<T>(a, T(alpha), dy.data<T>(), s, dz.data<T>(), dy.size, st);
#else
    (void)st;
    fusednn::cpu::kernels<T>().activation_backward(a, T(alpha), dy.data<T>(), s, dz.data<T>(),
                                                   dy.size);
#endif
  });
  return dz.keep;
}

const Registrar reg([](py::module_& m) {
  m.def("activation_forward", &forward, py::arg("z"), py::arg("kind"), py::arg("alpha"),
        py::arg("stream") = 0, "y = f(z), element-wise, any shape.");
  m.def("activation_backward", &backward, py::arg("dy"), py::arg("saved"), py::arg("kind"),
        py::arg("alpha"), py::arg("stream") = 0,
        "dz = dy * f'(saved), saved being z for gelu/gelu_tanh/swish/mish, y otherwise "
        "(None for linear).");
});

}  // namespace
