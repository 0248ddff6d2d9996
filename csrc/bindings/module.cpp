// fusednn._C: the CPU kernels. The Python layer (fusednn.ops) validates user
// input and names the public argument in its errors; the guards here keep the
// private module itself from reading or writing out of bounds if it is called
// directly with inconsistent arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <dlfcn.h>

#include <array>
#include <cstdint>
#include <limits>
#include <string>

#include "cpu/blas.h"
#include "cpu/dispatch.h"
#include "cpu/kernels.h"
#include "cpu/threads.h"
#include "bindings/cpu_checks.h"
#include "bindings/registry.h"

namespace py = pybind11;
using fusednn::Act;
using namespace fusednn::bind;

namespace {


template <typename T>
py::array act_forward_t(const py::array& z, Act a, double alpha) {
  py::array y = new_output(z.dtype(), shape_of(z));
  const int64_t n = z.size();
  const T* zp = const_data<T>(z);
  T* yp = mutable_data<T>(y);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().activation_forward(a, (T)alpha, zp, yp, n);
  }
  return y;
}

template <typename T>
py::array act_backward_t(const py::array& dy, const py::object& s, Act a, double alpha) {
  py::array dz = new_output(dy.dtype(), shape_of(dy));
  const int64_t n = dy.size();
  const T* dyp = const_data<T>(dy);
  const T* sp = a == Act::Linear ? dyp : const_data<T>(s.cast<py::array>());
  T* dzp = mutable_data<T>(dz);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().activation_backward(a, (T)alpha, dyp, sp, dzp, n);
  }
  return dz;
}

template <typename T>
py::tuple dense_forward_t(const py::array& x, const py::array& w, const py::object& b, Act a,
                          double alpha, int64_t block_rows) {
  const int64_t m = x.shape(0), k = x.shape(1), n = w.shape(1);
  const T* bp = nullptr;
  if (!b.is_none()) {
    py::array ba = b.cast<py::array>();
    require(ba, "b", x.dtype(), {n});
    bp = const_data<T>(ba);
  }
  py::array y = new_output(x.dtype(), {(py::ssize_t)m, (py::ssize_t)n});
  T* zp;
  py::object zobj = optional_out<T>(fusednn::saves_input(a), x.dtype(),
                                    {(py::ssize_t)m, (py::ssize_t)n}, &zp);
  const T* xp = const_data<T>(x);
  const T* wp = const_data<T>(w);
  T* yp = mutable_data<T>(y);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().dense_forward(xp, wp, bp, yp, zp, m, k, n, a, (T)alpha, block_rows);
  }
  return py::make_tuple(y, zobj);
}

template <typename T>
py::tuple dense_backward_t(const py::array& dy, const py::object& s, const py::array& x,
                           const py::array& w, bool has_bias, bool need_dx, Act a, double alpha) {
  const int64_t m = x.shape(0), k = x.shape(1), n = w.shape(1);
  const T* sp = saved_data<T>(s, "saved", a, x.dtype(), m, n);
  const py::dtype dt = x.dtype();
  py::array dw = new_output(dt, {(py::ssize_t)k, (py::ssize_t)n});
  T *dbp, *dxp, *dzp;
  py::object dbo = optional_out<T>(has_bias, dt, {(py::ssize_t)n}, &dbp);
  py::object dxo = optional_out<T>(need_dx, dt, {(py::ssize_t)m, (py::ssize_t)k}, &dxp);
  py::object dzo = optional_out<T>(a != Act::Linear, dt, {(py::ssize_t)m, (py::ssize_t)n}, &dzp);
  const T* dyp = const_data<T>(dy);
  const T* xp = const_data<T>(x);
  const T* wp = const_data<T>(w);
  T* dwp = mutable_data<T>(dw);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().dense_backward(dyp, sp, xp, wp, dzp, dxp, dwp, dbp, m, k, n, a, (T)alpha);
  }
  return py::make_tuple(dxo, dw, dbo);
}

py::array new_matrix(const py::dtype& dt, int64_t rows, int64_t cols) {
  return new_output(dt, {(py::ssize_t)rows, (py::ssize_t)cols});
}

template <typename T>
py::tuple backward_weight_t(const py::array& dz, const py::array& x, bool need_db) {
  const int64_t m = x.shape(0), k = x.shape(1), n = dz.shape(1);
  py::array dw = new_matrix(x.dtype(), k, n);
  T* dbp;
  py::object dbo = optional_out<T>(need_db, x.dtype(), {(py::ssize_t)n}, &dbp);
  const T* dzp = const_data<T>(dz);
  const T* xp = const_data<T>(x);
  T* dwp = mutable_data<T>(dw);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().dense_backward_weight(dzp, xp, dwp, dbp, m, k, n);
  }
  return py::make_tuple(dw, dbo);
}

template <typename T>
py::tuple backward_input_t(const py::array& dz, const py::array& w, const py::object& s_prev,
                           Act a_prev, double alpha_prev, bool need_db_prev) {
  const int64_t m = dz.shape(0), n = dz.shape(1), k = w.shape(0);
  const T* sp = saved_data<T>(s_prev, "saved_prev", a_prev, dz.dtype(), m, k);
  py::array dzp_out = new_matrix(dz.dtype(), m, k);
  T* dbp;
  py::object dbo = optional_out<T>(need_db_prev, dz.dtype(), {(py::ssize_t)k}, &dbp);
  const T* dzp = const_data<T>(dz);
  const T* wp = const_data<T>(w);
  T* outp = mutable_data<T>(dzp_out);
  {
    py::gil_scoped_release nogil;
    fusednn::cpu::kernels<T>().dense_backward_input(dzp, wp, sp, outp, dbp, m, k, n, a_prev, (T)alpha_prev);
  }
  return py::make_tuple(dzp_out, dbo);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusednn CPU kernels (OpenBLAS GEMM tiles + fused epilogues on one thread pool)";
  // An invalid FUSEDNN_NUM_THREADS is the ImportError of `import fusednn`.
  if (*fusednn::cpu::threads_env_error() != '\0')
    throw std::runtime_error(fusednn::cpu::threads_env_error());
  fusednn::cpu::blas_single_thread();
  // The kernels of this CPU's level (cpu/dispatch.h); an error here, such as
  // an unknown FUSEDNN_CPU_DISPATCH, is the ImportError of `import fusednn`.
  fusednn::cpu::load_kernels(reinterpret_cast<const void*>(&fusednn::cpu::dispatch_info));

  m.def(
      "activation_forward",
      [](const py::array& z, Act kind, double alpha) -> py::array {
        checked_float_dtype(z, "z");
        if (!(z.flags() & py::array::c_style)) throw py::value_error("z: must be C-contiguous");
        const Act a = to_act(kind);
        return is_f64(z) ? act_forward_t<double>(z, a, alpha) : act_forward_t<float>(z, a, alpha);
      },
      py::arg("z"), py::arg("kind"), py::arg("alpha"));

  m.def(
      "activation_backward",
      [](const py::array& dy, const py::object& s, Act kind, double alpha) -> py::array {
        checked_float_dtype(dy, "dy");
        if (!(dy.flags() & py::array::c_style)) throw py::value_error("dy: must be C-contiguous");
        const Act a = to_act(kind);
        if (a != Act::Linear) {
          if (s.is_none()) throw py::value_error("saved: required for a non-linear activation");
          require_flat_same(s.cast<py::array>(), "saved", dy);
        }
        return is_f64(dy) ? act_backward_t<double>(dy, s, a, alpha)
                          : act_backward_t<float>(dy, s, a, alpha);
      },
      py::arg("dy"), py::arg("saved"), py::arg("kind"), py::arg("alpha"));

  m.def(
      "dense_forward",
      [](const py::array& x, const py::array& w, const py::object& b, Act kind, double alpha,
         int64_t block_rows) -> py::tuple {
        const py::dtype dt = checked_float_dtype(x, "x");
        require(x, "x", dt, {-1, -1});
        require(w, "w", dt, {x.shape(1), -1});
        const Act a = to_act(kind);
        return is_f64(x) ? dense_forward_t<double>(x, w, b, a, alpha, block_rows)
                         : dense_forward_t<float>(x, w, b, a, alpha, block_rows);
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("kind"), py::arg("alpha"),
      py::arg("block_rows") = 0);

  m.def(
      "dense_backward",
      [](const py::array& dy, const py::object& saved, const py::array& x, const py::array& w,
         bool has_bias, bool need_dx, Act kind, double alpha) -> py::tuple {
        const py::dtype dt = checked_float_dtype(x, "x");
        require(x, "x", dt, {-1, -1});
        require(w, "w", dt, {x.shape(1), -1});
        require(dy, "dy", dt, {x.shape(0), w.shape(1)});
        const Act a = to_act(kind);
        return is_f64(x) ? dense_backward_t<double>(dy, saved, x, w, has_bias, need_dx, a, alpha)
                         : dense_backward_t<float>(dy, saved, x, w, has_bias, need_dx, a, alpha);
      },
      py::arg("dy"), py::arg("saved"), py::arg("x"), py::arg("w"), py::arg("has_bias"),
      py::arg("need_dx"), py::arg("kind"), py::arg("alpha"));

  m.def(
      "dense_backward_weight",
      [](const py::array& dz, const py::array& x, bool need_db) -> py::tuple {
        const py::dtype dt = checked_float_dtype(x, "x");
        require(x, "x", dt, {-1, -1});
        require(dz, "dz", dt, {x.shape(0), -1});
        return is_f64(x) ? backward_weight_t<double>(dz, x, need_db)
                         : backward_weight_t<float>(dz, x, need_db);
      },
      py::arg("dz"), py::arg("x"), py::arg("need_db"),
      "(dw, db): dw = x^T dz, db = column sums of dz (None unless need_db).");

  m.def(
      "dense_backward_input",
      [](const py::array& dz, const py::array& w, const py::object& saved_prev, Act kind_prev,
         double alpha_prev, bool need_db_prev) -> py::tuple {
        const py::dtype dt = checked_float_dtype(dz, "dz");
        require(dz, "dz", dt, {-1, -1});
        require(w, "w", dt, {-1, dz.shape(1)});
        const Act a = to_act(kind_prev);
        return is_f64(dz) ? backward_input_t<double>(dz, w, saved_prev, a, alpha_prev, need_db_prev)
                          : backward_input_t<float>(dz, w, saved_prev, a, alpha_prev, need_db_prev);
      },
      py::arg("dz"), py::arg("w"), py::arg("saved_prev"), py::arg("kind_prev"),
      py::arg("alpha_prev"), py::arg("need_db_prev"),
      "(dz_prev, db_prev): dz_prev = (dz w^T) * f_prev'(saved_prev), db_prev its column sums.");

  m.def(
      "gemm",
      [](const py::array& a, const py::array& b) -> py::array {
        // Bare GEMM, the roofline that bench/ compares the fused layer with.
        const py::dtype dt = checked_float_dtype(a, "a");
        require(a, "a", dt, {-1, -1});
        require(b, "b", dt, {a.shape(1), -1});
        const int64_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
        py::array c = new_output(dt, {(py::ssize_t)m, (py::ssize_t)n});
        const bool f64 = dt.is(py::dtype::of<double>());
        const void* ap = a.data();
        const void* bp = b.data();
        void* cp = c.mutable_data();
        {
          py::gil_scoped_release nogil;
          if (f64)
            fusednn::cpu::parallel_gemm<double>(false, false, m, n, k, 1.0, (const double*)ap, k,
                                       (const double*)bp, n, 0.0, (double*)cp, n);
          else
            fusednn::cpu::parallel_gemm<float>(false, false, m, n, k, 1.0f, (const float*)ap, k,
                                      (const float*)bp, n, 0.0f, (float*)cp, n);
        }
        return c;
      },
      py::arg("a"), py::arg("b"));

  m.def(
      "optimizer_step",
      [](fusednn::Opt kind, const fusednn::OptStep<double>& h, const py::list& params,
         const py::list& grads, const py::list& slots, const std::vector<double>& l1,
         const std::vector<double>& l2, const std::vector<double>& max_norm,
         const std::vector<std::array<int64_t, 3>>& views, fusednn::Clip clip_mode,
         double clip) {
        // The Python layer has checked the user's arrays; these guards keep a
        // direct call from writing out of bounds.
        if (int(kind) < 0 || int(kind) >= int(fusednn::Opt::Count))
          throw py::value_error("optimizer_step: kind out of range: " +
                                std::to_string(int(kind)));
        if (clip_mode < fusednn::Clip::Off || clip_mode > fusednn::Clip::Global)
          throw py::value_error("optimizer_step: clip_mode out of range");
        const size_t count = params.size();
        if (grads.size() != count || slots.size() != count || l1.size() != count ||
            l2.size() != count || max_norm.size() != count || views.size() != count)
          throw py::value_error("optimizer_step: per-tensor lists differ in length");
        if (count == 0) return;
        if (!py::isinstance<py::array>(params[0]))
          throw py::type_error("optimizer_step: params and grads must be numpy arrays");
        const py::dtype dt = checked_float_dtype(params[0].cast<py::array>(), "params[0]");
        // One pass: check each tensor and record its pointers. The arrays stay
        // alive in the caller's lists for the whole call.
        auto run = [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          std::vector<fusednn::OptTensor<T>> ts(count);
          for (size_t i = 0; i < count; ++i) {
            // A non-array would be converted into a temporary copy, and the
            // update would be lost: refuse it.
            if (!py::isinstance<py::array>(params[i]) || !py::isinstance<py::array>(grads[i]))
              throw py::type_error("optimizer_step: params and grads must be numpy arrays");
            const std::string idx = "[" + std::to_string(i) + "]";
            py::array p = params[i].cast<py::array>();
            py::array g = grads[i].cast<py::array>();
            require_flat(p, ("params" + idx).c_str(), dt, -1, true);
            const int64_t n = int64_t(p.size());
            require_flat(g, ("grads" + idx).c_str(), dt, n, false);
            py::sequence st = slots[i].cast<py::sequence>();
            if (st.size() != 3)
              throw py::value_error("optimizer_step: slots" + idx + " must have 3 entries");
            auto& t = ts[i];
            for (size_t j = 0; j < 3; ++j) {
              if (st[j].is_none()) continue;
              if (!py::isinstance<py::array>(st[j]))
                throw py::type_error("optimizer_step: slots must be numpy arrays or None");
              py::array a = st[j].cast<py::array>();
              require_flat(a, ("slots" + idx).c_str(), dt, n, true);
              t.s[j] = mutable_data<T>(a);
            }
            const auto& v = views[i];
            if (max_norm[i] > 0 && (v[0] < 1 || v[1] < 1 || v[2] < 1 || v[0] * v[1] * v[2] != n))
              throw py::value_error("optimizer_step: max-norm view does not match params" + idx);
            t.p = mutable_data<T>(p);
            t.g = const_data<T>(g);
            t.n = n;
            t.l1 = l1[i];
            t.l2 = l2[i];
            t.max_norm = max_norm[i] > 0 ? max_norm[i] : 0;
            t.outer = v[0];
            t.mid = v[1];
            t.inner = v[2];
          }
          py::gil_scoped_release nogil;
          fusednn::cpu::kernels<T>().optimizer_step(kind, h, ts.data(), int64_t(count),
                                          clip_mode, clip);
        };
        if (dt.is(py::dtype::of<double>()))
          run(static_cast<double*>(nullptr));
        else
          run(static_cast<float*>(nullptr));
      },
      py::arg("kind"), py::arg("step"), py::arg("params"), py::arg("grads"), py::arg("slots"),
      py::arg("l1"), py::arg("l2"), py::arg("max_norm"), py::arg("views"), py::arg("clip_mode"),
      py::arg("clip"),
      "One optimizer step over all tensors, in place (fusednn/optimizer.h).");

  m.def(
      "copy_into",
      [](py::array dst, const py::array& src) {
        // For bench/: the machine's copy bandwidth on fusednn's threads.
        if (!(dst.flags() & py::array::c_style) || !(src.flags() & py::array::c_style) ||
            !dst.writeable() || dst.nbytes() != src.nbytes())
          throw py::value_error("copy_into: dst and src must be C-contiguous, dst writable, "
                                "and of equal byte size");
        void* d = dst.mutable_data();
        const void* s = src.data();
        const int64_t bytes = int64_t(src.nbytes());
        py::gil_scoped_release nogil;
        fusednn::cpu::parallel_copy(d, s, bytes);
      },
      py::arg("dst"), py::arg("src"));

  m.def("cpu_dispatch", []() {
    const fusednn::cpu::DispatchInfo& i = fusednn::cpu::dispatch_info();
    py::dict d;
    d["level"] = i.level;
    d["chosen_by"] = i.chosen_by;
    d["compiled"] = i.compiled;
    d["supported"] = i.supported;
    return d;
  }, "The CPU kernels' instruction-set level in use, how it was chosen (cpuid or "
     "FUSEDNN_CPU_DISPATCH), the levels built and those this CPU runs.");
  // The pool's limit; fusednn.set_num_threads checks its argument first.
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    fusednn_set_num_threads(n);
  }, py::arg("n"));
  m.def("num_threads", &fusednn::cpu::num_threads);
  m.def("use_peer_blas", [](const std::string& path) -> py::object {
    // Only a library already loaded (NumPy's): RTLD_NOLOAD never loads one.
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (lib == nullptr) return py::none();
    // (sgemm, dgemm, 64-bit integers): scipy-openblas64 (NumPy's wheels),
    // an OpenBLAS built with a 64_ suffix, then a plain 32-bit CBLAS.
    static const struct { const char *s, *d; int int64; } names[] = {
        {"scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", 1},
        {"cblas_sgemm64_", "cblas_dgemm64_", 1},
        {"scipy_cblas_sgemm", "scipy_cblas_dgemm", 0},
        {"cblas_sgemm", "cblas_dgemm", 0}};
    for (const auto& n : names) {
      void* sg = dlsym(lib, n.s);
      void* dg = dlsym(lib, n.d);
      if (sg != nullptr && dg != nullptr) {
        fusednn::cpu::set_peer_blas(sg, dg, n.int64);
        return py::str(n.s);
      }
    }
    return py::none();
  }, py::arg("path"), "Sends large GEMMs to the cblas_sgemm/dgemm of the already loaded library "
     "at `path` (NumPy's BLAS); the symbol used, or None when none was found.");
  m.def("clear_peer_blas", []() { fusednn::cpu::set_peer_blas(nullptr, nullptr, 0); });
  m.def("pool_stats", []() {
    const fusednn::cpu::PoolStats s = fusednn::cpu::pool_stats();
    py::dict d;
    d["calls"] = s.calls;
    d["worker_chunks"] = s.worker_chunks;
    d["workers"] = s.workers;
    d["chosen_by"] = std::string(fusednn::cpu::threads_chosen_by());
    return d;
  }, "The thread pool's counters: calls that used it, chunks run by workers, workers started, "
     "and what chose the thread limit.");
  m.def("host_cache_info", []() {
    const fusednn::cpu::HostCacheInfo i = fusednn::cpu::host_cache_info();
    py::dict d;
    d["idle_bytes"] = i.idle_bytes;
    d["used_bytes"] = i.used_bytes;
    d["limit_bytes"] = i.limit_bytes;
    d["hits"] = i.hits;
    d["misses"] = i.misses;
    d["min_block_bytes"] = fusednn::cpu::kHostCacheMin;
    return d;
  });
  m.def("host_cache_empty", &fusednn::cpu::host_cache_empty);
  m.def("host_cache_set_limit", [](int64_t bytes) {
    if (bytes < 0)
      throw py::value_error("host_cache_set_limit: bytes must be >= 0, got " +
                            std::to_string(bytes));
    fusednn::cpu::host_cache_set_limit(size_t(bytes));
  }, py::arg("bytes"));
  m.def("blas_num_threads", &fusednn::cpu::blas_num_threads);
  m.def("blas_config", &fusednn::cpu::blas_config);
  run_registrars(m);
}
