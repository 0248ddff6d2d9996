// Batch normalisation + activation + dropout (fusednn/batchnorm.h), alone or
// after a dense layer (dense_batchnorm_*: the block in one call, the GIL
// released once), in fusednn._C and fusednn._C_cuda.
#include <cmath>

#include "bindings/registry.h"
#include "bindings/tensor.h"
#include "fusednn/batchnorm.h"
#include "fusednn/dropout.h"

#if FUSEDNN_BIND_CUDA
#include "cuda/batchnorm.cuh"
#include "cuda/cublaslt.cuh"
#include "cuda/kernels.cuh"
#else
#include "cpu/dispatch.h"
#endif

namespace py = pybind11;
using fusednn::Act;
using fusednn::BnConvention;
using namespace fusednn::bind;

namespace {

// Dense stage of a Dense -> BN block on the device of this module: z = x @ w + b.
template <typename T>
void dense_linear(const T* x, const T* w, const T* b, T* z, int64_t m, int64_t k, int64_t n,
                  Stream st) {
#if FUSEDNN_BIND_CUDA
  fusednn::cuda::dense_forward<T>(x, w, b, z, nullptr, nullptr, 0, m, k, n, Act::Linear, T(0),
                                  fusednn::cuda::lt::tf32(), st);
#else
  (void)st;
  fusednn::cpu::kernels<T>().dense_forward(x, w, b, z, nullptr, m, k, n, Act::Linear, T(0), 0);
#endif
}

// A per-feature vector of n elements, or None.
Tensor feature(py::handle o, const char* name, DType dt, int64_t n, bool written) {
  Tensor t = view_or_none(o, name);
  if (!t.none()) {
    expect(t, dt, {n});
    if (written) expect_writable(t);
  }
  return t;
}

// Scratch the CUDA kernels need for the column sums; none on the CPU.
Tensor workspace(int64_t m, int64_t n) {
#if FUSEDNN_BIND_CUDA
  return empty(DType::F64, {fusednn::cuda::batchnorm_workspace(m, n)});
#else
  (void)m, (void)n;
  return Tensor{};
#endif
}

// Batch norm of x or, with w given, of z = x @ w + b.
py::tuple forward(py::handle x_obj, py::handle w_obj, py::handle b_obj, py::handle gamma_obj,
                  py::handle beta_obj, py::handle mm_obj, py::handle mv_obj, bool training,
                  double momentum, double epsilon, BnConvention convention, Act kind,
                  double alpha, double rate, bool alpha_dropout, uint64_t seed, uint64_t step,
                  uintptr_t stream) {
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
  const Tensor g = feature(gamma_obj, "gamma", dt, n, false);
  const Tensor be = feature(beta_obj, "beta", dt, n, false);
  const Tensor mm = feature(mm_obj, "moving_mean", dt, n, true);
  const Tensor mv = feature(mv_obj, "moving_var", dt, n, true);
  if (mm.none() != mv.none())
    throw py::value_error("moving_mean and moving_var must both be given or both be None");
  if (!training && mm.none()) throw py::value_error("inference needs moving_mean and moving_var");
  if (m < 1 || n < 1 || k < 1) throw py::value_error("x: needs at least one row and one column");
  if (!(epsilon > 0.0) || !std::isfinite(epsilon))
    throw py::value_error("epsilon must be a finite number > 0");
  in_range("convention", convention, BnConvention::Count);
  const Act a = to_act(kind);
  check_rate("batchnorm", rate);
  const fusednn::BnDropout d{rate, alpha_dropout, seed, step};
  const Stream st = as_stream(stream);
  Tensor z = empty_if(dense, dt, {m, n});
  Tensor y = empty(dt, {m, n});
  Tensor cols = empty(dt, {fusednn::kBnCols, n});
  Tensor mask = empty_if(rate > 0.0, DType::U32, {fusednn::mask_words(count("x", m, n))});
  Tensor mean = empty_if(training, DType::F64, {n});
  Tensor var = empty_if(training, DType::F64, {n});
  Tensor ws = workspace(m, n);
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    T *gp = g.data_or_null<T>(), *bp = be.data_or_null<T>(), *mmp = mm.data_or_null<T>(),
      *mvp = mv.data_or_null<T>();
    uint32_t* maskp = mask.data_or_null<uint32_t>();
    py::gil_scoped_release nogil;
    const T* in = x.data<T>();
    if (dense) {
      dense_linear<T>(in, w.data<T>(), b.data_or_null<T>(), z.data<T>(), m, k, n, st);
      in = z.data<T>();
    }
#if FUSEDNN_BIND_CUDA
    fusednn::cuda::batchnorm_forward<T>(in, gp, bp, mmp, mvp, training, momentum, epsilon,
                                        convention, y.data<T>(), cols.data<T>(),
                                        mean.data_or_null<double>(), var.data_or_null<double>(),
                                        maskp, ws.data<double>(), m, n, a, T(alpha), d, st);
#else
    if (training)
      fusednn::cpu::kernels<T>().batchnorm_forward_train(
          in, gp, bp, mmp, mvp, momentum, epsilon, convention, y.data<T>(), cols.data<T>(),
          mean.data<double>(), var.data<double>(), maskp, m, n, a, T(alpha), d);
    else
      fusednn::cpu::kernels<T>().batchnorm_forward_infer(in, gp, bp, mmp, mvp, epsilon,
                                                         y.data<T>(), cols.data<T>(), maskp, m,
                                                         n, a, T(alpha), d);
#endif
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
  if (m < 1 || n < 1) throw py::value_error("x: needs at least one row and one column");
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
  Tensor dz = empty(dt, {m, n});  // dL/d(BN input): the result, or scratch before the dense part
  Tensor dgamma = empty_if(need_dgamma, dt, {n});
  Tensor dbeta = empty_if(need_dbeta, dt, {n});
  Tensor dx = empty_if(dense && need_dx, dt, {m, k});
  Tensor dw = empty_if(dense, dt, {k, n});
  Tensor dbias = empty_if(dense && has_bias, dt, {n});
  Tensor ws = workspace(m, n);
  floating(dt, [&](auto* tag) {
    using T = FUSEDNN_T(tag);
    const uint32_t* maskp = mask.data_or_null<uint32_t>();
    py::gil_scoped_release nogil;
#if FUSEDNN_BIND_CUDA
    const bool tf32 = fusednn::cuda::lt::tf32();
    fusednn::cuda::batchnorm_backward<T>(dy.data<T>(), x.data<T>(), y.data<T>(), cols.data<T>(),
                                         maskp, dz.data<T>(), dgamma.data_or_null<T>(),
                                         dbeta.data_or_null<T>(), ws.data<double>(), m, n, a,
                                         T(alpha), d, batch_stats, st);
    if (dense)
      fusednn::cuda::dense_backward<T>(dz.data<T>(), nullptr, x_in.data<T>(), w.data<T>(),
                                       nullptr, dx.data_or_null<T>(), dw.data<T>(),
                                       dbias.data_or_null<T>(), m, k, n, Act::Linear, T(0), tf32,
                                       st);
#else
    const auto& kern = fusednn::cpu::kernels<T>();
    kern.batchnorm_backward(dy.data<T>(), x.data<T>(), y.data<T>(), cols.data<T>(), maskp,
                            dz.data<T>(), dgamma.data_or_null<T>(), dbeta.data_or_null<T>(), m,
                            n, a, T(alpha), d, batch_stats);
    if (dense)
      kern.dense_backward(dz.data<T>(), nullptr, x_in.data<T>(), w.data<T>(), nullptr,
                          dx.data_or_null<T>(), dw.data<T>(), dbias.data_or_null<T>(), m, k, n,
                          Act::Linear, T(0));
#endif
  });
  return py::make_tuple(dense ? result(dx) : dz.keep, result(dgamma), result(dbeta), result(dw),
                        result(dbias));
}

const Registrar reg([](py::module_& m) {
  m.def("batchnorm_forward", &forward, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("gamma"),
        py::arg("beta"), py::arg("moving_mean"), py::arg("moving_var"), py::arg("training"),
        py::arg("momentum"), py::arg("epsilon"), py::arg("convention"), py::arg("kind"),
        py::arg("alpha"), py::arg("rate"), py::arg("alpha_dropout"), py::arg("seed"),
        py::arg("step"), py::arg("stream") = 0,
        "(y, cols, mean, var, mask, z): y = drop(act(gamma z_hat + beta)) of z = x @ w + b "
        "(m x n; z = x when w is None, and None is returned for it); cols the (5, n) "
        "coefficients backward needs; mean/var the float64 batch statistics (training, else "
        "None); mask the bit-packed dropout mask (rate > 0, else None). Training updates "
        "moving_* in place.");
  m.def("batchnorm_backward", &backward, py::arg("dy"), py::arg("x_in"), py::arg("w"),
        py::arg("z"), py::arg("y"), py::arg("cols"), py::arg("mask"), py::arg("has_bias"),
        py::arg("need_dx"), py::arg("need_dgamma"), py::arg("need_dbeta"), py::arg("kind"),
        py::arg("alpha"), py::arg("rate"), py::arg("alpha_dropout"), py::arg("batch_stats"),
        py::arg("stream") = 0,
        "(dx, dgamma, dbeta, dw, db) from dy and what batchnorm_forward returned; with w None "
        "dx is dL/dz and dw, db are None, else dx is dL/dx_in (None unless need_dx).");
});

}  // namespace
