"""The optimizer base class: checks, lazy state, one fused step per apply.

Every optimizer updates the caller's arrays in place. A step of all
parameters is one call into the kernels (one OpenMP parallel region on the
CPU, one multi-tensor launch on the GPU), which applies, per element and in
Keras' order: the penalties of the chosen tensors (``g += l1 sign(p) +
2 l2 p``), clipping (``clipvalue``, per-tensor ``clipnorm`` or
``global_clipnorm``), decoupled weight decay (``p -= lr * wd * p``), the
optimizer's rule, and then max-norm constraints.

Step-dependent scalars (learning-rate schedule, bias corrections) are
computed here on the host, in double, so changing the learning rate between
steps costs no recompilation and no allocation, and the GPU step never waits
for the host: the global norm for ``global_clipnorm`` stays in device memory.

NaN: a NaN gradient propagates into its parameter (as in Keras and PyTorch);
the step is not skipped. Use ``fd.callbacks.TerminateOnNaN`` to stop.
"""

from __future__ import annotations

import contextlib
import numbers
import re

import numpy as np

from .. import _C, _backend
from .._C import Clip
from .._arrays import device_name, device_of, on_device, to_host
from .._foreign import accept_all
from .._validate import _FLOAT_CHARS, c_array, check_float, check_unit  # noqa: F401


_F32_INF = 2.0**128 * (1 - 2.0**-25)  # the smallest double that rounds to float32 inf


def _array_key(a):
    """What makes two arguments the same array: for a view, its memory and
    layout (one torch tensor passed twice becomes two NumPy views of it, see
    fusednn._foreign); else the object (an array that owns its memory, as a
    layer's weights do, shares it with no other: the cheap key on the step's
    path)."""
    if a.size and getattr(a, "base", None) is not None:
        iface = getattr(a, "__array_interface__", None) or \
            getattr(a, "__cuda_array_interface__", None)
        if iface is not None:
            strides = iface.get("strides")
            return (iface["data"][0], tuple(iface["shape"]),
                    None if strides is None else tuple(strides), iface.get("typestr"))
    return id(a)
_TENSOR_INDEX = re.compile(r"\b(params|grads|slots)\[(\d+)\]")


class Optimizer:
    """Base of the fused optimizers (Keras 3 API).

    Arguments shared by every optimizer (as in Keras):

    - ``learning_rate``: a float >= 0 or a schedule, a callable of the step
      (0 for the first step) returning the rate.
    - ``weight_decay``: decoupled decay, ``p -= learning_rate * weight_decay
      * p`` before each update (Loshchilov & Hutter 2019).
    - ``clipvalue``: clip each gradient component to [-v, v].
    - ``clipnorm``: rescale each gradient whose L2 norm exceeds v to norm v.
    - ``global_clipnorm``: rescale all gradients by min(1, v / global norm).
      At most one of the three clipping options.
    """

    _rule = None  # its fusednn._C.Opt member (csrc/include/fusednn/optimizer.h)

    def __init__(self, learning_rate, *, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None):
        caller = type(self).__name__
        self.learning_rate = learning_rate
        self.weight_decay = None if weight_decay is None else \
            check_float(caller, "weight_decay", weight_decay, low=0.0)
        clips = {k: v for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                   ("global_clipnorm", global_clipnorm)) if v is not None}
        if len(clips) > 1:
            raise ValueError(f"{caller}: only one of clipnorm, clipvalue and global_clipnorm may "
                             f"be set, got {', '.join(f'{k}={v}' for k, v in clips.items())}")
        for k, v in clips.items():
            check_float(caller, k, v, low=0.0, low_open=True)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.clipvalue = None if clipvalue is None else float(clipvalue)
        self.global_clipnorm = None if global_clipnorm is None else float(global_clipnorm)
        self.name = name or caller.lower()
        self.iterations = 0
        self._slots = None       # per tensor: [slot or None] * 3, created at the first apply
        self._signature = None   # per tensor: (shape, dtype), fixed at the first apply
        self._pending = None     # state from set_state, used when the slots are built

    # --- learning rate -------------------------------------------------

    @property
    def learning_rate(self):
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        caller = type(self).__name__
        if callable(value):
            self._learning_rate = value
        else:
            self._learning_rate = check_float(caller, "learning_rate", value, low=0.0)

    def current_learning_rate(self) -> float:
        """The rate the next step uses (a schedule evaluated at `iterations`)."""
        lr = self._learning_rate
        if callable(lr):
            return check_float(type(self).__name__, "learning_rate(step)",
                               float(lr(self.iterations)), low=0.0)
        return lr

    # --- per-optimizer hooks -------------------------------------------

    def _slot_init(self) -> list:
        """Initial value of each of the 3 kernel slots, None where unused."""
        raise NotImplementedError

    def _step_fields(self, lr: float, t: int) -> dict:
        """The fusednn._C.OptStep fields of step t (1-based) that the rule
        reads, beyond lr, decay and clipvalue (set here), by name."""
        raise NotImplementedError

    def _advance(self, t: int) -> None:
        """Host state that moves with the step (Nadam's momentum product)."""

    def _extra_state(self) -> dict:
        return {}

    def _set_extra_state(self, extra: dict) -> None:
        pass

    def _config(self) -> dict:
        raise NotImplementedError

    # --- the step ------------------------------------------------------

    def apply_gradients(self, grads_and_vars):
        """Keras' form: an iterable of (gradient, parameter) pairs."""
        pairs = list(grads_and_vars)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"apply_gradients: grads_and_vars[{i}] must be a (gradient, "
                                f"parameter) pair, got {type(pair).__name__}")
        return self.apply([g for g, _ in pairs], [p for _, p in pairs])

    def apply(self, grads, params, *, trainable=None, penalties=None, constraints=None):
        """One step: update each of ``params`` in place from ``grads``.

        grads, params: equally long lists of NumPy arrays (CPU) or CuPy
        arrays (GPU), float32 or float64, any shapes, grads[i] shaped like
        params[i]; or arrays of other frameworks with ``__dlpack__`` (torch,
        JAX), read without a copy. A torch parameter is updated in place
        through a view of its memory, so it must be C-contiguous and not
        require grad (pass ``p.detach()``); a JAX parameter (immutable) is a
        TypeError. The slots stay NumPy (CuPy for GPU parameters).
        trainable: optional list of bools, False to leave a parameter and its
        slots untouched (frozen). penalties: optional list
        of None or a regularizer with ``l1``/``l2`` (``fd.regularizers``) or
        an (l1, l2) pair, added to the gradient as ``l1 sign(p) + 2 l2 p``.
        constraints: optional list of None or ``fd.constraints.MaxNorm``,
        applied after the update.
        """
        caller = f"{type(self).__name__}.apply"
        params, grads = self._check_lists(caller, grads, params)
        count = len(params)
        backend = self._dispatch(caller, grads, params)
        # Slots, scratch and kernels go to the parameters' GPU, not to whichever
        # device is current (backend_for has checked that they share one).
        with (on_device(params[0]) if count else contextlib.nullcontext()):
            flags, pens, cons = self._prepare(caller, params, trainable, penalties, constraints,
                                              backend, grads)
            self._step(backend, params, grads, flags, pens, cons, caller)

    def _prepare(self, caller, params, trainable, penalties, constraints, backend=None,
                 grads=None):
        """(flags, pens, cons): the checked per-tensor arguments of `apply`
        for `params` (and `grads`, where given), whose slots are built here
        (or checked against them); also what fusednn.models.engine hands its
        compiled step."""
        count = len(params)
        if backend is None:
            backend = self._dispatch(caller, [], params)
        flags = self._per_tensor(caller, "trainable", trainable, count, self._check_trainable)
        pens = self._per_tensor(caller, "penalties", penalties, count, self._check_penalty)
        cons = self._per_tensor(caller, "constraints", constraints, count, self._check_constraint)
        dtype = params[0].dtype if count else None
        # One array twice (trainable or not): which of its updates, or its
        # freezing, should win is undefined.
        seen = {}
        for i, p in enumerate(params):
            key = _array_key(p)
            if key in seen:
                raise ValueError(f"{caller}: params[{i}] is params[{seen[key]}]; each "
                                 f"parameter must be passed once")
            seen[key] = i
        for i in range(count):
            p = params[i]
            if p.dtype.char not in _FLOAT_CHARS:
                raise TypeError(f"{caller}: params[{i}] has dtype {p.dtype.name}, expected "
                                f"float32 or float64")
            if p.dtype != dtype:
                raise TypeError(f"{caller}: params[{i}] has dtype {p.dtype.name} but params[0] "
                                f"has {dtype.name}; one step takes one dtype")
            if not p.dtype.isnative or not getattr(p.flags, "aligned", True):
                # The kernels write the parameter's memory as the machine's floats.
                what = "byte-swapped" if not p.dtype.isnative else "misaligned"
                raise ValueError(f"{caller}: params[{i}] is {what}; it is updated in place, so "
                                 f"it must be an aligned array in native byte order")
            g = grads[i] if grads is not None else p
            # (a byte-swapped gradient of the same type is read through a copy)
            if g.dtype != p.dtype and g.dtype.newbyteorder("=") != p.dtype:
                raise TypeError(f"{caller}: grads[{i}] has dtype {g.dtype.name} but params[{i}] "
                                f"has {p.dtype.name}")
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"{caller}: grads[{i}] has shape {tuple(g.shape)} but "
                                 f"params[{i}] has shape {tuple(p.shape)}")
            if isinstance(p, np.ndarray) and not p.flags.writeable:
                raise ValueError(f"{caller}: params[{i}] is read-only; it is updated in place")
        self._build(caller, backend, params)
        return flags, pens, cons

    def _record(self, t):
        """(OptStep, clip mode, clip bound) of step t (1-based): the scalars the
        kernels read, computed on the host in double."""
        lr = self.current_learning_rate()
        if self._signature and self._signature[0][1] == np.float32:
            # The kernels take these in the parameters' type, where a value
            # beyond float32's range is inf (and inf * 0 = NaN for a zero gradient).
            for name, v in (("learning_rate", lr), ("epsilon", getattr(self, "epsilon", 0.0))):
                if v >= _F32_INF:
                    raise ValueError(f"{type(self).__name__}: {name}={v!r} is beyond the range "
                                     f"of float32, the dtype of the parameters")
            eps = getattr(self, "epsilon", None)
            if eps is not None and eps > 0 and np.float32(eps) == 0:
                # epsilon must be > 0 (a zero gradient would step by 0 / 0 = NaN)
                raise ValueError(f"{type(self).__name__}: epsilon={eps!r} is 0 in float32, the "
                                 f"dtype of the parameters; it must be > 0 there (at least "
                                 f"about 1e-45)")
        step = _C.OptStep()
        for name, value in self._step_fields(lr, t).items():
            setattr(step, name, value)
        step.lr = lr
        step.decay = lr * self.weight_decay if self.weight_decay else 0.0
        clip_mode, clip = Clip.Off, 0.0
        if self.clipvalue is not None:
            clip_mode, step.clipvalue = Clip.Value, self.clipvalue
        elif self.clipnorm is not None:
            clip_mode, clip = Clip.Norm, self.clipnorm
        elif self.global_clipnorm is not None:
            clip_mode, clip = Clip.Global, self.global_clipnorm
        return step, clip_mode, clip

    def _step(self, backend, params, grads, flags, pens, cons, caller="Optimizer.apply"):
        """The checked step of `apply`, on the parameters' device."""
        count = len(params)
        idx = [i for i in range(count) if flags[i] and params[i].size > 0]
        t = self.iterations + 1
        step, clip_mode, clip = self._record(t)
        if idx:
            xp = backend.xp
            work = [params[i] if params[i].flags.c_contiguous else xp.ascontiguousarray(params[i])
                    for i in idx]
            gr = [c_array(grads[i], xp, params[i].dtype) for i in idx]
            for j, i in enumerate(idx):
                if work[j] is not params[i]:
                    self._check_copied(caller, params, grads, i)
            views = [self._view(params[i].shape, cons[i]) for i in idx]
            per_tensor = ([pens[i][0] for i in idx], [pens[i][1] for i in idx],
                          [cons[i].max_value if cons[i] is not None else 0.0 for i in idx],
                          views)
            try:
                backend.optimizer_step(self._rule, step, work, gr, [self._slots[i] for i in idx],
                                       per_tensor, (clip_mode, clip))
            except (ValueError, TypeError) as e:
                # The kernels number the tensors they were given (the trainable,
                # non-empty ones): name the caller's.
                msg = _TENSOR_INDEX.sub(lambda m: f"{m[1]}[{idx[int(m[2])]}]", str(e))
                raise type(e)(f"{caller}: {msg}") from None
            for j, i in enumerate(idx):
                if work[j] is not params[i]:
                    params[i][...] = work[j]
        self._advance(t)
        self.iterations = t

    # --- checks --------------------------------------------------------

    @staticmethod
    def _check_copied(caller, params, grads, i):
        """params[i], stepped through a C-ordered copy and written back, shares
        no memory with another parameter or gradient: the kernels' overlap
        check (bindings/optimizer.cpp) sees the copy, not the caller's array,
        and a write-back would then undo or reorder another tensor's update."""
        p = params[i]
        if not isinstance(p, np.ndarray):
            return  # CuPy: its arrays come from fusednn's own allocations or the user's
        for name, others in (("params", params), ("grads", grads)):
            for j, q in enumerate(others):
                if j == i and (name == "params" or q is p):
                    continue  # itself, or its own gradient (which it may be)
                if isinstance(q, np.ndarray) and np.may_share_memory(p, q):
                    raise ValueError(f"{caller}: params[{i}] shares memory with {name}[{j}]; "
                                     f"a parameter is updated in place and must not overlap "
                                     f"another argument of the step")

    @staticmethod
    def _check_lists(caller, grads, params):
        for name, v in (("grads", grads), ("params", params)):
            if not isinstance(v, (list, tuple)):
                raise TypeError(f"{caller}: {name} must be a list of arrays, got "
                                f"{type(v).__name__}")
        if len(grads) != len(params):
            raise ValueError(f"{caller}: got {len(grads)} grads for {len(params)} params")
        # Torch (CPU) parameters become NumPy views of their memory, so the
        # step lands in the caller's tensors; see fusednn._foreign.
        return (accept_all(caller, "params", params, writable=True),
                accept_all(caller, "grads", grads))

    @staticmethod
    def _dispatch(caller, grads, params):
        arrays = {f"params[{i}]": p for i, p in enumerate(params)}
        arrays.update({f"grads[{i}]": g for i, g in enumerate(grads)})
        for name, a in arrays.items():
            if a is None:
                raise TypeError(f"{caller}: {name} is None")
        return _backend.backend_for(caller, **arrays)

    @staticmethod
    def _per_tensor(caller, name, values, count, check):
        if values is None:
            return [check(caller, name, i, None) for i in range(count)]
        values = list(values)
        if len(values) != count:
            raise ValueError(f"{caller}: {name} has {len(values)} entries for {count} params")
        return [check(caller, name, i, v) for i, v in enumerate(values)]

    @staticmethod
    def _check_trainable(caller, name, i, v):
        if v is None:
            return True
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{caller}: {name}[{i}] must be a bool, got {v!r}")
        return bool(v)

    @staticmethod
    def _check_penalty(caller, name, i, v):
        if v is None:
            return (0.0, 0.0)
        if isinstance(v, (tuple, list)) and len(v) == 2:
            l1, l2 = v
        elif hasattr(v, "l1") and hasattr(v, "l2"):
            l1, l2 = v.l1, v.l2
        else:
            raise TypeError(f"{caller}: {name}[{i}] must be None, an (l1, l2) pair or a "
                            f"regularizer with l1 and l2, got {v!r}")
        return (check_float(caller, f"{name}[{i}].l1", l1, low=0.0),
                check_float(caller, f"{name}[{i}].l2", l2, low=0.0))

    @staticmethod
    def _check_constraint(caller, name, i, v):
        if v is None:
            return None
        if not (hasattr(v, "max_value") and hasattr(v, "axis")):
            raise TypeError(f"{caller}: {name}[{i}] must be None or a MaxNorm constraint, "
                            f"got {v!r}")
        return v

    @staticmethod
    def _view(shape, constraint):
        """(outer, mid, inner) of a max-norm constraint over one axis."""
        if constraint is None:
            return (1, 1, 1)
        shape = tuple(shape) or (1,)
        axis = constraint.axis
        if not -len(shape) <= axis < len(shape):
            raise ValueError(f"MaxNorm: axis {axis} is out of range for a parameter of shape "
                             f"{shape}")
        axis %= len(shape)
        return (int(np.prod(shape[:axis], dtype=np.int64)), int(shape[axis]),
                int(np.prod(shape[axis + 1:], dtype=np.int64)))

    def _build(self, caller, backend, params):
        sig = [(tuple(p.shape), p.dtype, device_of(p)) for p in params]
        if self._slots is not None:
            if len(sig) != len(self._signature):
                raise ValueError(f"{caller}: got {len(sig)} params but this optimizer was built "
                                 f"for {len(self._signature)}; use one optimizer per parameter "
                                 f"list")
            for i, (now, then) in enumerate(zip(sig, self._signature)):
                if now != then:
                    raise ValueError(f"{caller}: params[{i}] is {now[0]} {now[1].name} on "
                                     f"{device_name(now[2])} but this optimizer was built for "
                                     f"{then[0]} {then[1].name} on {device_name(then[2])}")
            return
        init = self._slot_init()
        pending = self._pending
        if pending is not None and len(pending["slots"]) != len(params):
            raise ValueError(f"{caller}: the restored state has {len(pending['slots'])} tensors "
                             f"but {len(params)} params were given")
        slots = []
        for i, p in enumerate(params):
            row = []
            for j, v in enumerate(init):
                if v is None:
                    row.append(None)
                    continue
                if pending is not None:
                    s = pending["slots"][i][j]
                    if s is None or tuple(s.shape) != tuple(p.shape):
                        raise ValueError(f"{caller}: restored slot {j} of params[{i}] does not "
                                         f"match its shape {tuple(p.shape)}")
                    row.append(backend.xp.array(to_host(s), dtype=p.dtype))
                else:
                    row.append(backend.xp.full(p.shape, v, dtype=p.dtype))
            slots.append(row)
        self._slots, self._signature, self._pending = slots, sig, None

    # --- state and config ----------------------------------------------

    def get_state(self) -> dict:
        """Everything a restore needs: the step count and copies of all slots
        (as NumPy arrays), plus host state such as Nadam's momentum product."""
        slots = None
        if self._slots is not None:
            slots = [[None if s is None else to_host(s).copy() for s in row] for row in self._slots]
        elif self._pending is not None:
            slots = self._pending["slots"]
        return {"iterations": self.iterations, "slots": slots, **self._extra_state()}

    def set_state(self, state: dict) -> None:
        """Restore a `get_state` result; slots are placed on the parameters'
        device at the next apply, which must pass the same shapes."""
        caller = f"{type(self).__name__}.set_state"
        if not isinstance(state, dict) or "iterations" not in state or "slots" not in state:
            raise TypeError(f"{caller}: state must be a dict from get_state, got {state!r}")
        it = state["iterations"]
        if isinstance(it, bool) or not isinstance(it, numbers.Integral) or it < 0:
            raise ValueError(f"{caller}: iterations must be an int >= 0, got {it!r}")
        slots = state["slots"]
        if slots is not None:
            needed = [v is not None for v in self._slot_init()]
            for p, row in enumerate(slots):
                have = [s is not None for s in row] if isinstance(row, (list, tuple)) else row
                if have != needed:
                    raise ValueError(f"{caller}: slots of weight {p} are {have!r}, "
                                     f"{type(self).__name__} keeps {needed}")
        self.iterations = int(it)
        self._set_extra_state(state)
        self._slots, self._signature = None, None
        self._pending = None if slots is None else {
            "slots": [[None if s is None else np.array(to_host(s)) for s in row]
                      for row in slots]}

    state_dict = get_state
    load_state_dict = set_state

    def get_config(self) -> dict:
        """Constructor arguments; a fd.schedules schedule as its config dict
        (JSON-ready, as Keras serialises it), another callable as itself."""
        from .. import schedules

        lr = self._learning_rate
        if isinstance(lr, schedules.LearningRateSchedule):
            lr = schedules.serialize(lr)
        cfg = {"name": self.name, "learning_rate": lr,
               "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
               "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}
        cfg.update(self._config())
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            from .. import schedules

            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


