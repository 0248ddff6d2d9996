// One optimizer step over all tensors in one call (fusednn/optimizer.h), in
// place.
#include "fusednn/optimizer.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "bindings/registry.h"
#include "bindings/tensor.h"

namespace py = pybind11;
using fusednn::Clip;
using fusednn::Opt;
using namespace fusednn::bind;
using namespace pybind11::literals;

namespace {

using View = std::array<int64_t, 3>;

// The step writes each parameter while it reads the gradients: a parameter
// whose memory another parameter or gradient also covers (the same array
// twice, a view of another tensor) would be read after it was written, in an
// order that depends on the chunking and the threads. Refused, before any
// write; a parameter passed as its own gradient is fine (each element is
// read before it is written). a: 5 tensors per parameter (p, g, 3 slots).
void refuse_overlaps(const std::vector<Tensor>& a, size_t count) {
  struct Span {
    uintptr_t lo, hi;
    size_t index;
    bool param;
  };
  std::vector<Span> spans;
  for (size_t i = 0; i < count; ++i) {
    const Tensor &p = a[5 * i], &g = a[5 * i + 1];
    const auto span = [&](const Tensor& t, bool param) {
      const uintptr_t lo = reinterpret_cast<uintptr_t>(t.ptr);
      if (t.size > 0) spans.push_back({lo, lo + uintptr_t(t.size * itemsize(t.dtype)), i, param});
    };
    span(p, true);
    if (g.ptr != p.ptr || g.size != p.size) span(g, false);
  }
  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.lo < y.lo; });
  // Sweep: each span against the furthest-reaching earlier span of all, and of
  // the parameters; any overlap with a parameter is found when the later of
  // the two starts.
  const Span* reach = nullptr;
  const Span* reach_param = nullptr;
  for (const Span& s : spans) {
    const Span* hit = s.param ? reach : reach_param;
    if (hit != nullptr && s.lo < hit->hi) {
      const auto name = [](const Span& x) {
        return std::string(x.param ? "params[" : "grads[") + std::to_string(x.index) + "]";
      };
      const Span& p = s.param ? s : *hit;
      const Span& o = s.param ? *hit : s;
      throw py::value_error(name(p) + ": shares memory with " + name(o) +
                            "; a parameter is updated in place and must not overlap another "
                            "argument of the step");
    }
    if (reach == nullptr || s.hi > reach->hi) reach = &s;
    if (s.param && (reach_param == nullptr || s.hi > reach_param->hi)) reach_param = &s;
  }
}

void step(Opt kind, const fusednn::OptStep<double>& h, const py::list& params,
          const py::list& grads, const py::list& slots, const std::vector<double>& l1,
          const std::vector<double>& l2, const std::vector<double>& max_norm,
          const std::vector<View>& views, Clip clip_mode, double clip, uintptr_t stream) {
  in_range("optimizer kind", kind, Opt::Count);
  in_range("clip_mode", clip_mode, Clip::Count);
  const size_t count = params.size();
  check(grads.size() == count && slots.size() == count && l1.size() == count &&
            l2.size() == count && max_norm.size() == count && views.size() == count,
        "optimizer_step", "per-tensor lists differ in length");
  if (count == 0) return;
  const Stream st = as_stream(stream);
  // Every array viewed and checked once (p, g, 3 slots per tensor); they stay
  // alive in the caller's lists for the whole call.
  std::vector<Tensor> a;
  a.reserve(count * 5);
  for (size_t i = 0; i < count; ++i) {
    // The names live while a check can raise.
    const std::string idx = "[" + std::to_string(i) + "]", pn = "params" + idx, gn = "grads" + idx,
                      sn = "slots" + idx;
    a.push_back(view(params[i], pn.c_str()));
    const Tensor& p = a.back();
    expect_size(p, float_dtype(a[0]), p.size);
    expect_writable(p);
    a.push_back(view(grads[i], gn.c_str()));
    expect_size(a.back(), p.dtype, p.size);
    const py::sequence row = slots[i].cast<py::sequence>();
    check(row.size() == 3, sn.c_str(), "must have 3 entries");
    for (size_t j = 0; j < 3; ++j) {
      a.push_back(view_or_none(row[j], sn.c_str()));
      if (!a.back().none()) expect_size(a.back(), p.dtype, p.size);
      if (!a.back().none()) expect_writable(a.back());
    }
    const View& v = views[i];
    check(max_norm[i] >= 0, "max_norm", "must be >= 0");
    check(max_norm[i] == 0 || a[5 * i].size == 0 ||
              (v[0] >= 1 && v[1] >= 1 && v[2] >= 1 &&
               fusednn::bind::count("views", fusednn::bind::count("views", v[0], v[1]), v[2]) ==
                   a[5 * i].size),
          pn.c_str(), "max-norm view does not match");
  }
  refuse_overlaps(a, count);
  // The GPU keeps each tensor's clipping norm on the device.
  const bool norm_clip = clip_mode == Clip::Norm || clip_mode == Clip::Global;
  const Tensor norms = empty_if(kDevice && norm_clip, DType::F64, {int64_t(count)});
  run_floating(a[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<fusednn::OptTensor<T>> ts(count);
    for (size_t i = 0; i < count; ++i) {
      const Tensor* t = &a[5 * i];
      ts[i] = {t[0].data<T>(), t[1].data<T>(), {},          t[0].size,   l1[i],
               l2[i],          max_norm[i],    views[i][0], views[i][1], views[i][2]};
      for (int j = 0; j < 3; ++j) ts[i].s[j] = t[2 + j].data_or_null<T>();
    }
    fusednn::dev::optimizer_step<T>(kind, h, ts.data(), int64_t(count), clip_mode, clip,
                                    norms.data_or_null<double>(), st);
  });
}

const Registrar reg([](py::module_& m) {
  m.def("optimizer_step", &step, "kind"_a, "step"_a, "params"_a, "grads"_a, "slots"_a, "l1"_a,
        "l2"_a, "max_norm"_a, "views"_a, "clip_mode"_a, "clip"_a, "stream"_a = 0,
        "One step of rule `kind` over all tensors, in place (fusednn/optimizer.h).");
});

}  // namespace
