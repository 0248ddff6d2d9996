// Batch normalisation + activation + dropout (fusednn/batchnorm.h), alone or
// after a dense layer: the Dense -> BN block in one call, the GIL released
// once.
#include "fusednn/batchnorm.h"

#include <cmath>
#include <initializer_list>
#include <string>

#include "bindings/registry.h"
#include "bindings/tensor.h"
#include "fusednn/dropout.h"

namespace py = pybind11;
using fusednn::Act;
using fusednn::BnConvention;
using namespace fusednn::bind;
using namespace pybind11::literals;
namespace dev = fusednn::dev;

namespace {

// a and b (given, not empty) cover some common bytes.
bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.none() || b.none() || a.size == 0 || b.size == 0) return false;
  const auto lo = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.ptr); };
  const auto hi = [&](const Tensor& t) { return lo(t) + uintptr_t(t.size * itemsize(t.dtype)); };
  return lo(a) < hi(b) && lo(b) < hi(a);
}

// A per-feature vector of n elements, or None.
Tensor feature(py::handle o, const char* name, DType dt, int64_t n, bool written) {
  Tensor t = view_or_none(o, name);
  if (!t.none()) expect(t, dt, {n});
  if (!t.none() && written) expect_writable(t);
  return t;
}

// Batch norm of x or, with w given, of z = x @ w + b.
py::tuple forward(py::handle x_obj, py::handle w_obj, py::handle b_obj, py::handle gamma_obj,
                  py::handle beta_obj, py::handle mm_obj, py::handle mv_obj, bool training,
                  double momentum, double epsilon, BnConvention convention, Act kind, double alpha,
                  double rate, bool alpha_dropout, uint64_t seed, uint64_t step, uintptr_t stream) {
  const bool dense = !w_obj.is_none();
  const Tensor x = view(x_obj, "x");
  expect(x, float_dtype(x), {-1, -1});
  const DType dt = x.dtype;
  const int64_t m = x.dim(0), k = x.dim(1);
  int64_t n = k;
  Tensor w, b;
  if (dense) {
    w = view(w_obj, "w");
    expect(w, dt, {k, -1});
    n = w.dim(1);
    b = feature(b_obj, "b", dt, n, false);
  }
  const Tensor g = feature(gamma_obj, "gamma", dt, n, false),
               be = feature(beta_obj, "beta", dt, n, false),
               mm = feature(mm_obj, "moving_mean", dt, n, true),
               mv = feature(mv_obj, "moving_var", dt, n, true);
  check(mm.none() == mv.none(), "moving_mean, moving_var", "both given or both None");
  // The moving statistics are written while the inputs are read: memory
  // shared with another argument would be read after it was written.
  for (const Tensor* out : std::initializer_list<const Tensor*>{&mm, &mv})
    for (const Tensor* in : std::initializer_list<const Tensor*>{&x, &w, &b, &g, &be, &mm, &mv})
      if (in != out && overlaps(*out, *in))
        throw py::value_error(std::string(out->name) + ": shares memory with " + in->name +
                              "; it is updated in place and must not overlap another argument");
  check(training || !mm.none(), "moving_mean, moving_var", "required for inference");
  check(m >= 1 && n >= 1 && k >= 1, "x", "needs at least one row and one column");
  check(epsilon > 0.0 && std::isfinite(epsilon), "epsilon", "must be a finite number > 0");
  in_range("convention", convention, BnConvention::Count);
  const Act a = to_act(kind);
  check_rate("batchnorm", rate);
  const fusednn::BnDropout d{rate, alpha_dropout, seed, step};
  const Stream st = as_stream(stream);
  const Tensor z = empty_if(dense, dt, {m, n}), y = empty(dt, {m, n}),
               cols = empty(dt, {fusednn::kBnCols, n}),
               mask = empty_if(rate > 0.0, DType::U32, {fusednn::mask_words(m * n)}),
               mean = empty_if(training, DType::F64, {n}),
               var = empty_if(training, DType::F64, {n});
  const int64_t ws_size = dev::batchnorm_workspace(m, n);  // the GPU's column-sum scratch
  const Tensor ws = empty_if(ws_size > 0, DType::F64, {ws_size});
  run_floating(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* in = x.data<T>();
    if (dense) {
      dev::dense_forward<T>(in, w.data<T>(), b.data_or_null<T>(), z.data<T>(), nullptr, nullptr, m,
                            k, n, Act::Linear, T(0), st);
      in = z.data<T>();
    }
    dev::batchnorm_forward<T>(in, g.data_or_null<T>(), be.data_or_null<T>(), mm.data_or_null<T>(),
                              mv.data_or_null<T>(), training, momentum, epsilon, convention,
                              y.data<T>(), cols.data<T>(), mean.data_or_null<double>(),
                              var.data_or_null<double>(), mask.data_or_null<uint32_t>(),
                              ws.data_or_null<double>(), m, n, a, T(alpha), d, st);
  });
  return py::make_tuple(y.keep, cols.keep, result(mean), result(var), result(mask), result(z));
}

// Backward of forward(), through the dense layer too when w is given.
py::tuple backward(py::handle dy_obj, py::handle x_in_obj, py::handle w_obj, py::handle x_obj,
                   py::handle y_obj, py::handle cols_obj, py::handle mask_obj, bool has_bias,
                   bool need_dx, bool need_dgamma, bool need_dbeta, Act kind, double alpha,
                   double rate, bool alpha_dropout, bool batch_stats, uintptr_t stream) {
  const bool dense = !w_obj.is_none();
  const Tensor x = view(x_obj, "z");
  expect(x, float_dtype(x), {-1, -1});
  const DType dt = x.dtype;
  const int64_t m = x.dim(0), n = x.dim(1);
  const Tensor dy = view(dy_obj, "dy"), y = view(y_obj, "y"), cols = view(cols_obj, "cols");
  expect(dy, dt, {m, n});
  expect(y, dt, {m, n});
  expect(cols, dt, {fusednn::kBnCols, n});
  check(m >= 1 && n >= 1, "z", "needs at least one row and one column");
  const Act a = to_act(kind);
  check_rate("batchnorm", rate);
  const fusednn::BnDropout d{rate, alpha_dropout, 0, 0};
  const Tensor mask = view_or_none(mask_obj, "mask");
  if (rate > 0.0) {
    require_given(mask, "when dropout was applied");
    expect_size(mask, DType::U32, fusednn::mask_words(m * n));
  }
  Tensor x_in, w;
  int64_t k = 0;
  if (dense) {
    x_in = view(x_in_obj, "x_in");
    expect(x_in, dt, {m, -1});
    k = x_in.dim(1);
    w = view(w_obj, "w");
    expect(w, dt, {k, n});
  }
  const Stream st = as_stream(stream);
  // dz = dL/d(BN input): the result, or scratch before the dense part.
  const Tensor dz = empty(dt, {m, n}), dgamma = empty_if(need_dgamma, dt, {n}),
               dbeta = empty_if(need_dbeta, dt, {n}), dx = empty_if(dense && need_dx, dt, {m, k}),
               dw = empty_if(dense, dt, {k, n}), dbias = empty_if(dense && has_bias, dt, {n});
  const int64_t ws_size = dev::batchnorm_workspace(m, n);
  const Tensor ws = empty_if(ws_size > 0, DType::F64, {ws_size});
  run_floating(dt, [&](auto tag) {
    using T = decltype(tag);
    dev::batchnorm_backward<T>(dy.data<T>(), x.data<T>(), y.data<T>(), cols.data<T>(),
                               mask.data_or_null<uint32_t>(), dz.data<T>(),
                               dgamma.data_or_null<T>(), dbeta.data_or_null<T>(),
                               ws.data_or_null<double>(), m, n, a, T(alpha), d, batch_stats, st);
    if (dense)
      dev::dense_backward<T>(dz.data<T>(), nullptr, x_in.data<T>(), w.data<T>(), nullptr,
                             dx.data_or_null<T>(), dw.data<T>(), dbias.data_or_null<T>(), m, k, n,
                             Act::Linear, T(0), st);
  });
  return py::make_tuple(dense ? result(dx) : dz.keep, result(dgamma), result(dbeta), result(dw),
                        result(dbias));
}

const Registrar reg([](py::module_& m) {
  m.def("batchnorm_forward", &forward, "x"_a, "w"_a, "b"_a, "gamma"_a, "beta"_a, "moving_mean"_a,
        "moving_var"_a, "training"_a, "momentum"_a, "epsilon"_a, "convention"_a, "kind"_a,
        "alpha"_a, "rate"_a, "alpha_dropout"_a, "seed"_a, "step"_a, "stream"_a = 0,
        "(y, cols, mean, var, mask, z): y = drop(act(gamma z_hat + beta)), z = x @ w + b or x.");
  m.def("batchnorm_backward", &backward, "dy"_a, "x_in"_a, "w"_a, "z"_a, "y"_a, "cols"_a, "mask"_a,
        "has_bias"_a, "need_dx"_a, "need_dgamma"_a, "need_dbeta"_a, "kind"_a, "alpha"_a, "rate"_a,
        "alpha_dropout"_a, "batch_stats"_a, "stream"_a = 0,
        "(dx, dgamma, dbeta, dw, db) from dy and batchnorm_forward's results.");
});

}  // namespace
