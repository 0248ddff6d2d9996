// fusednn._C.StepPlan: a Sequential model's training step as one call
// (engine/step_plan.h). The plan holds references to the model's weights, the
// optimizer's slots and its own buffers; fusednn.models.engine builds it
// from the planned Steps and rebuilds it when a weight, slot or trainable
// flag changes.
//
// In fusednn._C_cuda the same plan runs on the plan's own stream, ordered
// after and before the caller's stream by events, and each batch shape's step
// is captured once as a CUDA graph and replayed: the batch is copied into the
// plan's input buffers, and the optimizer's step record and the dropout
// counters into device memory (from a ring of pinned host slots), before each
// replay; the loss and the accuracy stay on the device in a Tally that
// tally() reads. The first step of a shape runs uncaptured (cuBLASLt and the
// scratch pool set themselves up), and where capture fails (a device without
// memory pools) the plan keeps running uncaptured.
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/registry.h"
#include "bindings/tensor.h"
#include "engine/step_plan.h"

namespace py = pybind11;
using namespace fusednn::bind;
using namespace pybind11::literals;
using fusednn::engine::Block;
using fusednn::engine::BlockKind;
using fusednn::engine::LossKind;
using fusednn::engine::Tally;

namespace {

#if FUSEDNN_BIND_CUDA
// A failed runtime call reaches Python as RuntimeError, naming the call.
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("StepPlan: ") + what + ": " + cudaGetErrorName(e) + ": " +
                             cudaGetErrorString(e));
}
#endif

class Plan {
 public:
  // blocks: one dict per Step (see fusednn.models.engine); tensors: per
  // trained tensor (block index, "w" | "b" | "gamma" | "beta", its 3 slots,
  // l1, l2, max_norm, max-norm (outer, mid, inner) view).
  Plan(const py::list& blocks, bool f64, LossKind loss, bool accuracy, double threshold, int stop,
       fusednn::Opt rule, const py::list& tensors)
      : dt_(f64 ? DType::F64 : DType::F32), rule_(rule) {
    check(blocks.size() > 0, "blocks", "a plan needs at least one block");
    in_range("loss kind", loss, LossKind::Count);
    in_range("optimizer kind", rule, fusednn::Opt::Count);
    check(stop >= 0 && stop <= int(blocks.size()), "stop", "out of range");
    loss_ = {loss, accuracy, threshold};
    stop_ = stop;
    int64_t features = -1;
    for (const py::handle h : blocks) {
      blocks_.push_back(parse(h.cast<py::dict>(), features));
      features = blocks_.back().out;
    }
    for (const py::handle h : tensors) add_tensor(h.cast<py::tuple>());
    dout_ = empty(dt_, {0});
  }

  // The step on x (m x features) against target; counters: each dropout's
  // step counter; h, clip_mode, clip: the optimizer's step record; weight:
  // None or one loss factor per row (the model's dtype); stream: the
  // caller's (0 on the CPU). run_floating releases the GIL for the step, so
  // a thread loading the next batch runs. Returns (loss, correct) on the
  // CPU; on the GPU None (the batch is in the tally, tally()).
  py::object run(py::handle x_obj, py::handle target_obj, const std::vector<uint64_t>& counters,
                 const fusednn::OptStep<double>& h, fusednn::Clip clip_mode, double clip,
                 py::handle weight_obj, uintptr_t stream) {
    in_range("clip_mode", clip_mode, fusednn::Clip::Count);
    const Stream caller = as_stream(stream);
    check(!busy_, "StepPlan.run", "already running in another thread");
    check(counters.size() == size_t(n_counters_), "counters", "one per dropout");
    const Tensor x = view(x_obj, "x"), t = view(target_obj, "target");
    expect(x, dt_, {-1, blocks_[0].in});
    const int64_t m = x.dim(0), c = blocks_.back().out;
    check(m >= 1, "x", "needs at least one row");
    const bool indices = loss_.kind == LossKind::SparseSoftmax;
    if (indices)
      expect(t, t.dtype == DType::I32 ? DType::I32 : DType::I64, {m});
    else
      expect_size(t, dt_, count("target", m, c));
    check(t.ndim >= 1 && t.dim(0) == m, "target", "needs one row per row of x");
    const Tensor w = view_or_none(weight_obj, "weight");
    const bool weighted = !w.none();
    if (weighted) expect(w, dt_, {m});
    if (m > rows_) reserve(m);
#if FUSEDNN_BIND_CUDA
    init_device();
#endif
    const Busy busy(busy_);
#if FUSEDNN_BIND_CUDA
    run_floating(dt_, [&](auto tag) {
      using T = decltype(tag);
      replay<T>(x, t, w, counters, h, clip_mode, clip, m, caller);
    });
    return py::none();
#else
    (void)caller;
    fusednn::engine::StepResult r;
    run_floating(dt_, [&](auto tag) {
      using T = decltype(tag);
      std::vector<fusednn::OptTensor<T>> ts = opt_tensors<T>();
      fusednn::engine::StepPlan<T> plan{blocks_, loss_, stop_};
      const auto go = [&](auto* labels) {
        using L = std::remove_const_t<std::remove_pointer_t<decltype(labels)>>;
        return plan.template run<L>(x.data<T>(), labels, indices ? nullptr : t.data<T>(),
                                    weighted ? w.data<T>() : nullptr, dout_.data<T>(),
                                    &loss_value_, &tally_, m, counters.data(), rule_, h, ts.data(),
                                    int64_t(ts.size()), clip_mode, clip, nullptr, Stream{});
      };
      if (indices && t.dtype == DType::I32)
        r = go(t.data<const int32_t>());
      else
        r = go(indices ? t.data<const int64_t>() : static_cast<const int64_t*>(nullptr));
    });
    return py::make_tuple(r.loss, r.correct);
#endif
  }

  // (loss_sum, correct, samples, batches, last loss) of the steps since the
  // last call (engine/tally.h), then zeroes them. On the GPU this waits for
  // the steps queued so far: the one host synchronisation of a fit epoch.
  py::tuple tally() {
    check(!busy_, "StepPlan.tally", "the plan is running in another thread");
    Tally got;
#if FUSEDNN_BIND_CUDA
    if (ready_) {
      py::gil_scoped_release nogil;
      cuda_check(cudaMemcpyAsync(&got, state_.ptr, sizeof(Tally), cudaMemcpyDeviceToHost, stream_),
                 "reading the tally");
      cuda_check(cudaMemsetAsync(state_.ptr, 0, sizeof(Tally), stream_), "zeroing the tally");
      cuda_check(cudaStreamSynchronize(stream_), "waiting for the steps");
    }
#else
    got = tally_;
    tally_ = Tally{};
#endif
    return py::make_tuple(got.loss_sum, got.correct, got.samples, got.batches, got.last);
  }

  // Inference on x (m x features) into rows [row0, row0 + m) of out, a
  // (rows x outputs) array or (samples x rows x outputs) for MC dropout's
  // passes in one call: batch norms on their moving statistics, each dropout
  // on where active[i], its counter counters[i] + s * stride in pass s.
  // Nothing of the model changes.
  void predict(py::handle x_obj, py::handle out_obj, const std::vector<uint64_t>& counters,
               const std::vector<uint8_t>& active, int64_t row0, uint64_t stride,
               uintptr_t stream) {
    const Stream st = as_stream(stream);
    check(!busy_, "StepPlan.predict", "already running in another thread");
    check(counters.size() == size_t(n_counters_) && active.size() == size_t(n_counters_),
          "counters, active", "one per dropout");
    const Tensor x = view(x_obj, "x"), out = view(out_obj, "out");
    expect(x, dt_, {-1, blocks_[0].in});
    const int64_t m = x.dim(0), c = blocks_.back().out;
    check(out.ndim == 2 || out.ndim == 3, "out",
          "must be (rows, outputs) or (samples, rows, outputs)");
    const int64_t samples = out.ndim == 3 ? out.dim(0) : 1, rows = out.dim(out.ndim - 2);
    if (out.ndim == 3)
      expect(out, dt_, {samples, rows, c});
    else
      expect(out, dt_, {rows, c});
    expect_writable(out);
    check(row0 >= 0 && row0 <= rows && m <= rows - row0, "row0", "x's rows do not fit in out");
    if (m == 0) return;
    if (m > rows_) reserve(m);
#if FUSEDNN_BIND_CUDA
    // after the training steps queued on the plan's stream (the same buffers)
    if (ready_) {
      cuda_check(cudaEventRecord(ev_out_, stream_), "ordering after the steps");
      cuda_check(cudaStreamWaitEvent(st, ev_out_, 0), "ordering after the steps");
    }
#endif
    const Busy busy(busy_);
    std::vector<uint64_t> now(counters);
    run_floating(dt_, [&](auto tag) {
      using T = decltype(tag);
      fusednn::engine::StepPlan<T> plan{blocks_, loss_, stop_};
      for (int64_t s = 0; s < samples; ++s) {
        for (size_t i = 0; i < now.size(); ++i) now[i] = counters[i] + uint64_t(s) * stride;
        const T* y = plan.infer(x.data<T>(), m, now.data(), active.data(), st);
        T* dst = out.data<T>() + (s * rows + row0) * c;
#if FUSEDNN_BIND_CUDA
        // on the caller's stream, as the kernels before it
        cuda_check(cudaMemcpyAsync(dst, y, size_t(m * c) * sizeof(T), cudaMemcpyDeviceToDevice, st),
                   "copying the output");
#else
        std::copy(y, y + m * c, dst);
#endif
      }
    });
  }

  // The gradient buffers, refilled by each run: (block, "w" | "b" | "gamma"
  // | "beta", array) for every weight of every block (trained or not).
  py::list grads() const {
    py::list out;
    for (const GradRef& g : grads_) out.append(py::make_tuple(g.block, g.name, g.array));
    return out;
  }

  int64_t rows() const { return rows_; }

  // Graphs captured so far (0 on the CPU, and where capture failed).
  int64_t graphs() const {
#if FUSEDNN_BIND_CUDA
    return int64_t(graphs_.size());
#else
    return 0;
#endif
  }

#if FUSEDNN_BIND_CUDA
  ~Plan() {
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    drop_graphs();
    release_device();
  }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
#endif

 private:
  template <typename T>
  std::vector<fusednn::OptTensor<T>> opt_tensors() const {
    std::vector<fusednn::OptTensor<T>> ts(tensors_.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      const TensorRef& a = tensors_[i];
      fusednn::OptTensor<T>& o = ts[i];
      o.p = static_cast<T*>(a.p);
      o.g = static_cast<const T*>(a.g);
      o.n = a.n, o.l1 = a.l1, o.l2 = a.l2, o.max_norm = a.max_norm;
      o.outer = a.view[0], o.mid = a.view[1], o.inner = a.view[2];
      for (int j = 0; j < 3; ++j) o.s[j] = static_cast<T*>(a.s[j]);
    }
    return ts;
  }

#if FUSEDNN_BIND_CUDA
  // What a graph bakes in besides the plan's own pointers: the batch's rows,
  // the labels' kind (0: int32 indices, 1: int64, 2: rows of T), a weight or
  // none, and the clipping (the kernels' arguments).
  using GraphKey = std::tuple<int64_t, int, bool, int, double>;

  // A pinned host slot holding one step's record and counters for the copy
  // to the device; `done` marks the copy out of it complete, so the slot is
  // rewritten only after that.
  struct Slot {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
    bool used = false;
  };
  static constexpr int kSlots = 8;

  // Layout of state_ (device): the Tally, the step record, the counters,
  // the clipping norms.
  static constexpr size_t kRecordAt = 64;
  static_assert(sizeof(Tally) <= 48, "the tally, then the loss at 48, then the record at 64");
  static size_t round8(size_t b) { return (b + 7) / 8 * 8; }
  size_t counters_at() const { return kRecordAt + round8(sizeof(fusednn::OptStep<double>)); }
  size_t norms_at() const { return counters_at() + size_t(n_counters_) * sizeof(uint64_t); }
  size_t upload_bytes() const { return norms_at() - kRecordAt; }

  // The stream, events, slots and device state, made at the first step (the
  // plan is built without touching the GPU). Needs the GIL (state_ comes
  // from the registered allocator).
  void init_device() {
    if (ready_) return;
    release_device();  // what a failed earlier attempt made
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating its stream");
    cuda_check(cudaEventCreateWithFlags(&ev_in_, cudaEventDisableTiming), "creating an event");
    cuda_check(cudaEventCreateWithFlags(&ev_out_, cudaEventDisableTiming), "creating an event");
    for (Slot& sl : slots_) {
      cuda_check(cudaHostAlloc(&sl.host, upload_bytes(), cudaHostAllocDefault),
                 "allocating pinned memory");
      cuda_check(cudaEventCreateWithFlags(&sl.done, cudaEventDisableTiming), "creating an event");
    }
    state_ = empty(DType::U8, {int64_t(norms_at() + tensors_.size() * sizeof(double))});
    cuda_check(cudaMemsetAsync(state_.ptr, 0, size_t(state_.size), stream_), "zeroing its state");
    ready_ = true;
  }

  // The stream, events and pinned slots (never throws: a failed call leaves
  // what it held).
  void release_device() {
    ready_ = false;
    for (Slot& sl : slots_) {
      if (sl.done != nullptr) cudaEventDestroy(sl.done);
      if (sl.host != nullptr) cudaFreeHost(sl.host);
      sl = Slot{};
    }
    if (ev_in_ != nullptr) cudaEventDestroy(ev_in_);
    if (ev_out_ != nullptr) cudaEventDestroy(ev_out_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    ev_in_ = ev_out_ = nullptr;
    stream_ = nullptr;
    next_slot_ = 0;
  }

  void drop_graphs() {
    for (auto& g : graphs_) cudaGraphExecDestroy(g.second);
    graphs_.clear();
    seen_.clear();
  }

  // One step on the device (GIL released): the batch and the step's record
  // in, then the shape's graph replayed (captured at the second step of that
  // shape), all ordered after the caller's stream and before its next work.
  template <typename T>
  void replay(const Tensor& x, const Tensor& t, const Tensor& w,
              const std::vector<uint64_t>& counters, const fusednn::OptStep<double>& h,
              fusednn::Clip clip_mode, double clip, int64_t m, Stream caller) {
    const int labels = loss_.kind != LossKind::SparseSoftmax ? 2 : t.dtype == DType::I32 ? 0 : 1;
    const bool weighted = !w.none();
    cuda_check(cudaEventRecord(ev_in_, caller), "ordering after the caller");
    cuda_check(cudaStreamWaitEvent(stream_, ev_in_, 0), "ordering after the caller");
    // the batch into the plan's buffers: the graph reads those addresses
    cuda_check(cudaMemcpyAsync(x_in_.ptr, x.ptr, size_t(x.size) * sizeof(T),
                               cudaMemcpyDeviceToDevice, stream_), "copying x");
    cuda_check(cudaMemcpyAsync(t_in_.ptr, t.ptr, size_t(t.size) * size_t(itemsize(t.dtype)),
                               cudaMemcpyDeviceToDevice, stream_), "copying the target");
    if (weighted)
      cuda_check(cudaMemcpyAsync(w_in_.ptr, w.ptr, size_t(m) * sizeof(T),
                                 cudaMemcpyDeviceToDevice, stream_), "copying the weights");
    // the step record and counters through the next pinned slot
    Slot& sl = slots_[next_slot_];
    next_slot_ = (next_slot_ + 1) % kSlots;
    if (sl.used) cuda_check(cudaEventSynchronize(sl.done), "waiting for a pinned slot");
    char* up = static_cast<char*>(sl.host);
    std::memcpy(up, &h, sizeof(h));
    if (!counters.empty())
      std::memcpy(up + (counters_at() - kRecordAt), counters.data(),
                  counters.size() * sizeof(uint64_t));
    char* dev_state = static_cast<char*>(state_.ptr);
    cuda_check(cudaMemcpyAsync(dev_state + kRecordAt, up, upload_bytes(), cudaMemcpyHostToDevice,
                               stream_), "copying the step record");
    cuda_check(cudaEventRecord(sl.done, stream_), "marking a pinned slot");
    sl.used = true;

    const GraphKey key{m, labels, weighted, int(clip_mode), clip};
    auto it = graphs_.find(key);
    if (it != graphs_.end()) {
      cuda_check(cudaGraphLaunch(it->second, stream_), "replaying the step's graph");
    } else if (capture_ && seen_.count(key)) {
      cudaGraphExec_t exec = capture<T>(labels, weighted, clip_mode, clip, m, counters, h);
      if (exec != nullptr) {
        graphs_[key] = exec;
        cuda_check(cudaGraphLaunch(exec, stream_), "replaying the step's graph");
      } else {
        enqueue<T>(labels, weighted, clip_mode, clip, m, counters, h);
      }
    } else {
      seen_.insert(key);
      enqueue<T>(labels, weighted, clip_mode, clip, m, counters, h);
    }
    cuda_check(cudaEventRecord(ev_out_, stream_), "ordering before the caller");
    cuda_check(cudaStreamWaitEvent(caller, ev_out_, 0), "ordering before the caller");
  }

  // The step's kernels on stream_, reading the plan's input buffers and the
  // device record and counters.
  template <typename T>
  void enqueue(int labels, bool weighted, fusednn::Clip clip_mode, double clip, int64_t m,
               const std::vector<uint64_t>& counters, const fusednn::OptStep<double>& h) {
    std::vector<fusednn::OptTensor<T>> ts = opt_tensors<T>();
    fusednn::engine::StepPlan<T> plan{blocks_, loss_, stop_};
    char* dev_state = static_cast<char*>(state_.ptr);
    const auto* counters_dev = reinterpret_cast<const uint64_t*>(dev_state + counters_at());
    const auto* h_dev = reinterpret_cast<const fusednn::OptStep<double>*>(dev_state + kRecordAt);
    auto* norms = reinterpret_cast<double*>(dev_state + norms_at());
    auto* tally = reinterpret_cast<Tally*>(dev_state);
    const T* target = labels == 2 ? t_in_.data<T>() : nullptr;
    const auto go = [&](auto* lab) {
      using L = std::remove_const_t<std::remove_pointer_t<decltype(lab)>>;
      plan.template run<L>(x_in_.data<T>(), lab, target, weighted ? w_in_.data<T>() : nullptr,
                           dout_.data<T>(), loss_buf_dev(), tally, m, counters.data(), rule_, h,
                           ts.data(), int64_t(ts.size()), clip_mode, clip, norms, stream_,
                           counters_dev, h_dev);
    };
    if (labels == 0)
      go(t_in_.data<const int32_t>());
    else
      go(labels == 1 ? t_in_.data<const int64_t>() : static_cast<const int64_t*>(nullptr));
  }

  // The step captured as a graph and instantiated; null (and no more
  // captures by this plan) where capture fails.
  template <typename T>
  cudaGraphExec_t capture(int labels, bool weighted, fusednn::Clip clip_mode, double clip,
                          int64_t m, const std::vector<uint64_t>& counters,
                          const fusednn::OptStep<double>& h) {
    cuda_check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
               "capturing the step");
    cudaGraph_t graph = nullptr;
    bool ok = true;
    try {
      enqueue<T>(labels, weighted, clip_mode, clip, m, counters, h);
    } catch (const std::exception&) {
      ok = false;
    }
    // ends the capture whatever happened inside it
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    if (ok && end == cudaSuccess && graph != nullptr &&
        cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess)
      exec = nullptr;
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (exec == nullptr) {
      cudaGetLastError();  // the failed capture must not surface in a later check
      capture_ = false;
    }
    return exec;
  }
#endif

  // Marks the plan in use while the GIL is released (a second thread's
  // call is refused, not run on the same buffers); cleared on any exit.
  struct Busy {
    bool& flag;
    explicit Busy(bool& f) : flag(f) { flag = true; }
    ~Busy() { flag = false; }
  };

  struct GradRef {
    int block;
    const char* name;
    py::object array;
  };

  struct TensorRef {
    void *p = nullptr, *g = nullptr, *s[3] = {nullptr, nullptr, nullptr};
    int64_t n = 0;
    double l1 = 0, l2 = 0, max_norm = 0;
    std::array<int64_t, 3> view{1, 1, 1};
  };

  // A weight of `n` elements (`rows` x n for a kernel; rows 0: a vector).
  void* weight(const py::dict& d, const char* key, int64_t rows, int64_t n, bool written) {
    if (!d.contains(key) || d[key].is_none()) return nullptr;
    const Tensor t = view(d[key], key);
    if (rows > 0)
      expect(t, dt_, {rows, n});
    else
      expect(t, dt_, {n});
    if (written) expect_writable(t);
    keep_.push_back(py::object(d[key]));
    return t.ptr;
  }

  void* grad_buffer(void* weight, const char* name, int64_t rows, int64_t n) {
    if (!weight) return nullptr;
    owned_.push_back(rows > 0 ? empty(dt_, {rows, n}) : empty(dt_, {n}));
    grads_.push_back({int(blocks_.size()), name, owned_.back().keep});
    return owned_.back().ptr;
  }

  Block parse(const py::dict& d, int64_t features) {
    Block k;
    k.kind = in_range("block kind", BlockKind(d["kind"].cast<int>()), BlockKind::Count);
    k.in = d["in"].cast<int64_t>();
    k.out = d["out"].cast<int64_t>();
    check(k.in >= 1 && k.out >= 1, "block", "needs at least one feature in and out");
    check(features < 0 || k.in == features, "block",
          "input features differ from the output "
          "of the block below");
    check(k.kind == BlockKind::Dense || k.kind == BlockKind::BatchNorm || k.in == k.out, "block",
          "an activation or dropout keeps its width");
    if (d.contains("act")) k.act = to_act(d["act"].cast<fusednn::Act>());
    if (d.contains("alpha")) k.alpha = d["alpha"].cast<double>();
    if (d.contains("rate")) {
      k.rate = d["rate"].cast<double>();
      check_rate("block", k.rate);
      k.alpha_dropout = d["alpha_dropout"].cast<bool>();
      k.seed = d["seed"].cast<uint64_t>();
      if (k.rate > 0.0) k.counter = n_counters_++;
    }
    k.w = weight(d, "w", k.in, k.out, false);
    check(k.kind != BlockKind::Dense || k.w, "w", "a dense block needs its kernel");
    check(k.w || k.kind == BlockKind::BatchNorm || !d.contains("b") || d["b"].is_none(), "b",
          "given without w");
    k.b = weight(d, "b", 0, k.out, false);
    k.dw = grad_buffer(k.w, "w", k.in, k.out);
    k.db = grad_buffer(k.b, "b", 0, k.out);
    if (k.kind == BlockKind::BatchNorm) {
      k.gamma = weight(d, "gamma", 0, k.out, false);
      k.beta = weight(d, "beta", 0, k.out, false);
      k.moving_mean = weight(d, "moving_mean", 0, k.out, true);
      k.moving_var = weight(d, "moving_var", 0, k.out, true);
      k.dgamma = grad_buffer(k.gamma, "gamma", 0, k.out);
      k.dbeta = grad_buffer(k.beta, "beta", 0, k.out);
      k.batch_stats = d["batch_stats"].cast<bool>();
      k.momentum = d["momentum"].cast<double>();
      k.epsilon = d["epsilon"].cast<double>();
      k.convention = in_range("convention", d["convention"].cast<fusednn::BnConvention>(),
                              fusednn::BnConvention::Count);
      check(k.moving_mean && k.moving_var, "moving_mean, moving_var", "required");
      check(k.epsilon > 0.0 && std::isfinite(k.epsilon), "epsilon", "must be a finite number > 0");
    }
    return k;
  }

  void add_tensor(const py::tuple& e) {
    check(e.size() == 7, "tensors", "entries are (block, name, slots, l1, l2, max_norm, view)");
    const int64_t b = e[0].cast<int64_t>();
    check(b >= stop_ && b < int64_t(blocks_.size()), "tensors", "block index out of range");
    const Block& k = blocks_[size_t(b)];
    const std::string name = e[1].cast<std::string>();
    TensorRef a;
    int64_t rows = 0;
    if (name == "w")
      a.p = k.w, a.g = k.dw, rows = k.in;
    else if (name == "b")
      a.p = k.b, a.g = k.db;
    else if (name == "gamma")
      a.p = k.gamma, a.g = k.dgamma;
    else if (name == "beta")
      a.p = k.beta, a.g = k.dbeta;
    check(a.p != nullptr, "tensors", "names a weight the block does not have");
    a.n = rows > 0 ? rows * k.out : k.out;
    const py::sequence slots = e[2].cast<py::sequence>();
    check(slots.size() == 3, "slots", "must have 3 entries");
    for (size_t j = 0; j < 3; ++j) {
      const Tensor s = view_or_none(slots[j], "slot");
      if (s.none()) continue;
      expect_size(s, dt_, a.n);
      expect_writable(s);
      keep_.push_back(py::reinterpret_borrow<py::object>(slots[j]));
      a.s[j] = s.ptr;
    }
    a.l1 = e[3].cast<double>();
    a.l2 = e[4].cast<double>();
    a.max_norm = e[5].cast<double>();
    a.view = e[6].cast<std::array<int64_t, 3>>();
    check(a.l1 >= 0 && a.l2 >= 0 && a.max_norm >= 0, "tensors", "penalties and max_norm >= 0");
    check(a.max_norm == 0 || (a.view[0] >= 1 && a.view[1] >= 1 && a.view[2] >= 1 &&
                              count("view", count("view", a.view[0], a.view[1]), a.view[2]) == a.n),
          "tensors", "max-norm view does not match");
    tensors_.push_back(std::move(a));
  }

  // Buffers for batches of up to m rows.
  void reserve(int64_t m) {
#if FUSEDNN_BIND_CUDA
    // the steps in flight use the buffers about to be released
    if (stream_ != nullptr) cuda_check(cudaStreamSynchronize(stream_), "waiting for the steps");
#endif
    rows_buffers_.clear();
    const auto rows = [&](int64_t n, bool want) -> void* {
      if (!want) return nullptr;
      rows_buffers_.push_back(empty(dt_, {m, n}));
      return rows_buffers_.back().ptr;
    };
    int64_t widest = 1;
    for (Block& k : blocks_) {
      widest = std::max(widest, k.out);
      const bool bn = k.kind == BlockKind::BatchNorm, dense = k.kind == BlockKind::Dense;
      const bool drop = k.kind == BlockKind::Dropout;
      k.z = rows(k.out, (dense && fusednn::saves_input(k.act)) || (bn && k.w));
      k.y = rows(k.out, !drop || k.rate > 0.0);
      k.dz = rows(k.out, bn || (dense && k.act != fusednn::Act::Linear));
      k.dx = rows(k.in, true);
      k.mask = nullptr;
      if (k.rate > 0.0) {
        rows_buffers_.push_back(empty(DType::U32, {fusednn::mask_words(count("rows", m, k.out))}));
        k.mask = rows_buffers_.back().data<uint32_t>();
      }
      if (bn) {
        rows_buffers_.push_back(empty(dt_, {fusednn::kBnCols, k.out}));
        k.cols = rows_buffers_.back().ptr;
        rows_buffers_.push_back(empty(DType::F64, {2, k.out}));
        k.mean = rows_buffers_.back().data<double>();
        k.var = k.mean + k.out;
        if (!k.batch_stats) k.mean = k.var = nullptr;
        const int64_t ws = fusednn::dev::batchnorm_workspace(m, k.out);  // the GPU's scratch
        k.ws = nullptr;
        if (ws > 0) {
          rows_buffers_.push_back(empty(DType::F64, {ws}));
          k.ws = rows_buffers_.back().data<double>();
        }
      }
    }
    dout_ = empty(dt_, {m, blocks_.back().out});
#if FUSEDNN_BIND_CUDA
    // The graphs point into the buffers just replaced.
    drop_graphs();
    const int64_t c = blocks_.back().out, item = itemsize(dt_);
    x_in_ = empty(dt_, {m, blocks_[0].in});
    t_in_ = empty(DType::U8, {std::max(count("rows", m, 8), count("rows", count("rows", m, c), item))});
    w_in_ = empty(dt_, {m});
#endif
    rows_ = m;
  }

  DType dt_;
  fusednn::Opt rule_;
  fusednn::engine::Loss loss_;
  int stop_ = 0;
  int n_counters_ = 0;
  std::vector<Block> blocks_;
  std::vector<TensorRef> tensors_;
  std::vector<py::object> keep_;      // the model's arrays the plan points into
  std::vector<Tensor> owned_;         // gradient buffers
  std::vector<GradRef> grads_;        // the same, by block and weight
  std::vector<Tensor> rows_buffers_;  // per-row buffers, `rows_` rows
  Tensor dout_;
  int64_t rows_ = 0;
  bool busy_ = false;
#if FUSEDNN_BIND_CUDA
  // device: the tally at 0, the batch's loss at kLossAt, then the record
  // (kRecordAt), the counters and the clipping norms
  static constexpr size_t kLossAt = 48;
  Tensor state_;
  Tensor x_in_, t_in_, w_in_;  // the batch, copied in for the graphs
  double* loss_buf_dev() const {
    return reinterpret_cast<double*>(static_cast<char*>(state_.ptr) + kLossAt);
  }
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ev_in_ = nullptr, ev_out_ = nullptr;
  std::array<Slot, kSlots> slots_{};
  int next_slot_ = 0;
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  std::set<GraphKey> seen_;  // shapes that ran once uncaptured
  bool capture_ = true;
  bool ready_ = false;  // init_device() done
#else
  double loss_value_ = 0;
  Tally tally_;
#endif
};

const Registrar reg([](py::module_& m) {
  // The enums once, in fusednn._C (which fusednn._C_cuda imports first); the
  // plan class in each module, local to it (a distinct C++ type in each).
  if (!kDevice) {
    py::enum_<BlockKind>(m, "BlockKind", "The blocks of a StepPlan (engine/step_plan.h).")
        .value("Dense", BlockKind::Dense)
        .value("BatchNorm", BlockKind::BatchNorm)
        .value("Activation", BlockKind::Activation)
        .value("Dropout", BlockKind::Dropout);
    py::enum_<LossKind>(m, "LossKind", "How a StepPlan's loss reads the output.")
        .value("SparseSoftmax", LossKind::SparseSoftmax)
        .value("Softmax", LossKind::Softmax)
        .value("SigmoidBce", LossKind::SigmoidBce)
        .value("Mse", LossKind::Mse);
  }
  py::class_<Plan>(m, "StepPlan", py::module_local(),
                   "A training step in one call (engine/step_plan.h).")
      .def(py::init<const py::list&, bool, LossKind, bool, double, int, fusednn::Opt,
                    const py::list&>(),
           "blocks"_a, "f64"_a, "loss"_a, "accuracy"_a, "threshold"_a, "stop"_a, "rule"_a,
           "tensors"_a)
      .def("run", &Plan::run, "x"_a, "target"_a, "counters"_a, "step"_a, "clip_mode"_a, "clip"_a,
           "weight"_a = py::none(), "stream"_a = 0,
           "Forward, loss, backward and the optimizer update, in place: (loss, correct) on the "
           "CPU, None on the GPU (the batch is added to tally()).")
      .def("tally", &Plan::tally,
           "(loss_sum, correct, samples, batches, last loss) of the steps since the last call, "
           "then zeroed; waits for the queued steps on the GPU.")
      .def("predict", &Plan::predict, "x"_a, "out"_a, "counters"_a, "active"_a, "row0"_a = 0,
           "stride"_a = 0, "stream"_a = 0,
           "Inference of x into out[..., row0:row0 + len(x), :]: moving statistics, dropout "
           "where active, one pass per leading index of a 3-D out.")
      .def("grads", &Plan::grads, "[(block, weight name, gradient)], refilled by each run.")
      .def_property_readonly("rows", &Plan::rows, "Rows the buffers hold now.")
      .def_property_readonly("graphs", &Plan::graphs,
                             "CUDA graphs captured (one per batch shape; 0 on the CPU).");
});

}  // namespace
