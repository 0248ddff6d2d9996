// One optimizer step over all tensors in one call (fusednn/optimizer.h), in
// place, in fusednn._C and fusednn._C_cuda.
#include <array>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "bindings/tensor.h"
#include "fusednn/optimizer.h"

#if FUSEDNN_BIND_CUDA
#include "cuda/kernels.cuh"
#else
#include "cpu/dispatch.h"
#endif

#include <pybind11/stl.h>

namespace py = pybind11;
using fusednn::Clip;
using fusednn::Opt;
using namespace fusednn::bind;

namespace {

using View = std::array<int64_t, 3>;

void step(Opt kind, const fusednn::OptStep<double>& h, const py::list& params,
          const py::list& grads, const py::list& slots, const std::vector<double>& l1,
          const std::vector<double>& l2, const std::vector<double>& max_norm,
          const std::vector<View>& views, Clip clip_mode, double clip, uintptr_t stream) {
  in_range("optimizer kind", kind, Opt::Count);
  in_range("clip_mode", clip_mode, Clip::Count);
  const size_t count = params.size();
  if (grads.size() != count || slots.size() != count || l1.size() != count ||
      l2.size() != count || max_norm.size() != count || views.size() != count)
    throw py::value_error("optimizer_step: per-tensor lists differ in length");
  if (count == 0) return;
  const Stream st = as_stream(stream);
  // Views of every array, checked once; the arrays stay alive in the
  // caller's lists for the whole call.
  std::vector<Tensor> arrays;
  arrays.reserve(count * 5);
  DType dt = DType::Other;
  for (size_t i = 0; i < count; ++i) {
    const std::string idx = "[" + std::to_string(i) + "]";
    // Names outlive the views: errors are raised while these strings live.
    const std::string pn = "params" + idx, gn = "grads" + idx, sn = "slots" + idx;
    Tensor p = view(params[i], pn.c_str());
    if (i == 0) dt = float_dtype(p);
    expect_size(p, dt, p.size);
    expect_writable(p);
    Tensor g = view(grads[i], gn.c_str());
    expect_size(g, dt, p.size);
    const py::sequence row = slots[i].cast<py::sequence>();
    if (row.size() != 3) throw py::value_error("optimizer_step: " + sn + " must have 3 entries");
    arrays.push_back(p);
    arrays.push_back(g);
    for (size_t j = 0; j < 3; ++j) {
      Tensor s = view_or_none(row[j], sn.c_str());
      if (!s.none()) {
        expect_size(s, dt, p.size);
        expect_writable(s);
      }
      arrays.push_back(s);
    }
    const View& v = views[i];
    if (!(max_norm[i] >= 0))
      throw py::value_error("optimizer_step: max_norm" + idx + " must be >= 0");
    if (max_norm[i] > 0 && p.size > 0 &&
        (v[0] < 1 || v[1] < 1 || v[2] < 1 ||
         fusednn::bind::count("views", fusednn::bind::count("views", v[0], v[1]), v[2]) != p.size))
      throw py::value_error("optimizer_step: max-norm view does not match params" + idx);
  }
  // The GPU kernels keep each tensor's clipping norm on the device.
  Tensor norms = empty_if(kDevice && (clip_mode == Clip::Norm || clip_mode == Clip::Global),
                          DType::F64, {int64_t(count)});
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    std::vector<fusednn::OptTensor<T>> ts(count);
    for (size_t i = 0; i < count; ++i) {
      const Tensor* a = &arrays[5 * i];
      auto& t = ts[i];
      t.p = a[0].data<T>();
      t.g = a[1].data<T>();
      for (int j = 0; j < 3; ++j) t.s[j] = a[2 + j].data_or_null<T>();
      t.n = a[0].size;
      t.l1 = l1[i];
      t.l2 = l2[i];
      t.max_norm = max_norm[i];
      t.outer = views[i][0];
      t.mid = views[i][1];
      t.inner = views[i][2];
    }
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::optimizer_step<T>(kind, h, ts.data(), int64_t(count), clip_mode, clip,
                                     norms.data_or_null<double>(), st);
#else
    fusednn::cpu::kernels<T>().optimizer_step(kind, h, ts.data(), int64_t(count), clip_mode,
                                              clip);
#endif
  });
}

const Registrar reg([](py::module_& m) {
  m.def("optimizer_step", &step, py::arg("kind"), py::arg("step"), py::arg("params"),
        py::arg("grads"), py::arg("slots"), py::arg("l1"), py::arg("l2"), py::arg("max_norm"),
        py::arg("views"), py::arg("clip_mode"), py::arg("clip"), py::arg("stream") = 0,
        "One optimizer step over all tensors, in place: params[i] -= the rule's increment from "
        "grads[i], its slots (3 arrays or None each, named per rule in fusednn/optimizer.h), the "
        "step's scalars (OptStep), the L1/L2 penalties, max-norm (views: (outer, mid, inner) "
        "of the norm's axes) and the clipping mode.");
});

}  // namespace
