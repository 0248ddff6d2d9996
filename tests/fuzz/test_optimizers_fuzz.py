"""Fuzzing every optimizer's constructor, apply and apply_gradients.

What "correct" means: after each step, every parameter equals
reference.optimizer_step (Keras' rule, in float64) from the same starting
values, within rtol of the size of the parameter and of its update; NaN
exactly where the reference is NaN (a NaN or inf gradient propagates into
its parameter, as in Keras and PyTorch). The gradients are never written.

Layouts: a parameter that is not C-contiguous (Fortran, strided, negative
strides) is updated through a copy written back; one that cannot be
written (read-only, a broadcast view), and one the kernels cannot address
in place (misaligned, byte-swapped), is refused with an error naming
``params[i]`` before anything is written. Gradients in any layout are read
correctly.

Aliasing: a parameter passed as its own gradient (``apply([p], [p])``) is
stepped with the gradient's value from before the step; a parameter that is
also another tensor's gradient, or appears twice among the parameters, or
overlaps another argument's memory, is refused naming it, before anything
is written.

Options: each constructor argument out of its documented range or of the
wrong type (bool where a number is expected, a string, NaN, inf, negative
rates, rates >= 1, a negative epsilon) is a ValueError or TypeError naming it.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import fusednn as fd
from fusednn.testing import reference as R

from ._support import (F32_INF, NOT_ARRAYS, any_scalars, as_float, assert_close, attempt,
                       expect_refused, float_arrays, float_dtypes, fuzz, relayout, to_np)

# class -> {option: rule}; rules: ("range", low, high, low_open, high_open) or "bool"
UNIT = ("range", 0.0, 1.0, False, True)
NONNEG = ("range", 0.0, math.inf, False, False)
SPECS = {
    "SGD": {"momentum": ("range", 0.0, 1.0, False, False), "nesterov": "bool"},
    "Adagrad": {"initial_accumulator_value": NONNEG, "epsilon": NONNEG},
    "RMSprop": {"rho": UNIT, "momentum": ("range", 0.0, 1.0, False, False), "epsilon": NONNEG,
                "centered": "bool"},
    "Adam": {"beta_1": UNIT, "beta_2": UNIT, "epsilon": NONNEG, "amsgrad": "bool"},
    "AdamW": {"beta_1": UNIT, "beta_2": UNIT, "epsilon": NONNEG, "amsgrad": "bool"},
    "Adamax": {"beta_1": UNIT, "beta_2": UNIT, "epsilon": NONNEG},
    "Nadam": {"beta_1": UNIT, "beta_2": UNIT, "epsilon": NONNEG, "momentum_decay": NONNEG},
    "Ftrl": {"learning_rate_power": ("range", -math.inf, 0.0, False, False),
             "initial_accumulator_value": NONNEG, "l1_regularization_strength": NONNEG,
             "l2_regularization_strength": NONNEG,
             "l2_shrinkage_regularization_strength": NONNEG, "beta": NONNEG},
}
COMMON = {"learning_rate": NONNEG, "weight_decay": NONNEG, "clipnorm": ("range", 0.0, math.inf,
                                                                       True, False),
          "clipvalue": ("range", 0.0, math.inf, True, False),
          "global_clipnorm": ("range", 0.0, math.inf, True, False)}


def _valid(rule, v):
    if rule == "bool":
        return isinstance(v, bool)
    f = as_float(v) if not isinstance(v, np.ndarray) else None
    if f is None or not math.isfinite(f):
        return False
    _, lo, hi, lo_open, hi_open = rule
    return (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi)


def _good_value(draw, rule):
    """A valid value of a rule, kept in a well-conditioned range."""
    if rule == "bool":
        return draw(st.booleans())
    _, lo, hi, lo_open, _ = rule
    if hi == 0.0:
        return draw(st.sampled_from([-0.5, -0.1, -1.0, 0.0]))
    if hi == 1.0:
        return draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]))
    return draw(st.sampled_from([1e-7, 1e-3, 0.1, 1.0] + ([] if lo_open else [0.0])))


@st.composite
def optimizers(draw):
    """(class name, kwargs, names of invalid kwargs)."""
    name = draw(st.sampled_from(sorted(SPECS)))
    rules = dict(SPECS[name])
    kwargs = {}
    for opt, rule in rules.items():
        if draw(st.booleans()):
            kwargs[opt] = _good_value(draw, rule)
    kwargs["learning_rate"] = draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0]))
    if name == "Ftrl" and kwargs["learning_rate"] == 0.0:
        kwargs["learning_rate"] = 0.01
    if draw(st.booleans()):
        kwargs["weight_decay"] = draw(st.sampled_from([0.0, 0.01, 0.5]))
    clip = draw(st.sampled_from([None, None, "clipnorm", "clipvalue", "global_clipnorm"]))
    if clip:
        kwargs[clip] = draw(st.sampled_from([1e-3, 0.5, 1.0, 10.0]))
    bad = []
    mode = draw(st.sampled_from(["ok"] * 5 + ["bad", "two-clips", "unknown"]))
    if mode == "bad":
        opt = draw(st.sampled_from(sorted({**rules, **COMMON})))
        kwargs[opt] = draw(any_scalars())
        rule = {**COMMON, **rules}[opt]
        if opt == "weight_decay" and kwargs[opt] is None:
            if name == "AdamW":
                bad.append(opt)
        elif opt in ("clipnorm", "clipvalue", "global_clipnorm") and kwargs[opt] is None:
            pass
        elif not _valid(rule, kwargs[opt]) and not (opt == "learning_rate"
                                                    and callable(kwargs[opt])):
            bad.append(opt)
        elif name == "Ftrl" and opt == "learning_rate" and as_float(kwargs[opt]) == 0.0:
            bad.append(opt)  # refused at the step: Ftrl divides by it
    elif mode == "two-clips":
        kwargs["clipnorm"], kwargs["clipvalue"] = 1.0, 1.0
        bad += ["clipnorm", "clipvalue"]
    elif mode == "unknown":
        kwargs["lerning_rate"] = 0.1
        bad.append("lerning_rate")
    clips = [k for k in ("clipnorm", "clipvalue", "global_clipnorm") if kwargs.get(k) is not None]
    if len(clips) > 1 and not bad:
        bad += clips
    return name, kwargs, bad


@st.composite
def tensors(draw, dtype, count, special):
    shapes = [draw(st.sampled_from([(), (0,), (1,), (3,), (2, 3), (1, 4), (3, 0), (2, 2, 2)]))
              for _ in range(count)]
    params = [draw(float_arrays(dtype, s, bound=2.0)) for s in shapes]
    grads = [draw(float_arrays(dtype, s, special, bound=2.0)) for s in shapes]
    if dtype == np.float32:
        # A gradient whose square leaves float32's range (|g| < ~1e-19 or
        # > ~1.8e19) makes the second-moment slots 0 or inf, and the increment
        # m / (sqrt(v) + epsilon) inf or 0: float32 arithmetic (the slots are
        # stored, and the increment computed, in the storage type, as in
        # PyTorch's float32 optimizers), not a fault. NaN and inf stay.
        with np.errstate(all="ignore"):
            grads = [np.where(np.abs(g) < 1e-15, np.float32(0),
                              np.where(np.isfinite(g) & (np.abs(g) > 1e15),
                                       np.sign(g) * np.float32(1e15), g)).astype(dtype)
                     for g in grads]
    else:
        # float64, likewise below ~1e-154 (g^2 underflows: with epsilon 0 the
        # increment is m / 0), and beyond ~1e154, where also the sum of squares
        # of clipnorm / global_clipnorm overflows (known limit: the norm is
        # inf, the clipped gradient 0 here and NaN in the reference, where it
        # is the bound)
        with np.errstate(all="ignore"):
            grads = [np.where(np.abs(g) < 1e-150, 0.0,
                              np.where(np.isfinite(g) & (np.abs(g) > 1e150), np.sign(g) * 1e150,
                                       g)) for g in grads]
    return params, grads


def _refused_for_dtype(kwargs, dtype):
    """The valid options a step on `dtype` parameters refuses: for float32, a
    learning rate or epsilon beyond float32's range (inf there), and an
    epsilon > 0 that is 0 in float32."""
    if dtype != np.float32:
        return []
    over = [k for k in ("learning_rate", "epsilon") if k in kwargs and not callable(kwargs[k])
            and float(kwargs[k]) >= F32_INF]
    if over:
        return over
    eps = kwargs.get("epsilon")
    if eps is not None and 0 < float(eps) and np.float32(eps) == 0:
        return ["epsilon"]
    return []


def _centered_rounding(name, kwargs, state, p_ref, before, dtype):
    """Per parameter, a bound on the step's error that comes from centered
    RMSprop's denominator alone: d = max(v - a^2, 0) + epsilon, where v and
    a^2 agree to the last bits (a gradient that barely varies), is rounding
    only, known to about 4 u v (u the dtype's unit roundoff, the kernel's and
    the reference's roundings of v, a^2 and their difference, with or without
    a contracted FMA); inc ~ 1/sqrt(d) then moves by about |inc| 2 u v / d.
    0 for every other optimizer."""
    cfg = R.optimizer_config(name, kwargs)
    if name != "RMSprop" or not cfg["centered"]:
        return [0.0] * len(p_ref)
    u = float(np.finfo(dtype).eps)
    out = []
    with np.errstate(all="ignore"):
        for s, p, b in zip(state, p_ref, before):
            v, a = s["velocity"], s["average_gradient"]
            d = np.maximum(v - a * a, 0.0) + float(cfg["epsilon"])
            bound = np.abs(p - b) * 4 * u * np.abs(v) / d
            bound = bound[np.isfinite(bound)]
            out.append(float(bound.max(initial=0.0)))
    return out


@given(st.data())
@fuzz(6)
def test_optimizer_apply(data):
    """Options, 1-3 steps over 1-4 tensors (0-d to 3-d, 0-sized), penalties,
    frozen tensors, max-norm constraints, every layout of params and grads,
    aliasing, NaN/inf gradients; checked against reference.optimizer_step."""
    name, kwargs, bad = data.draw(optimizers(), "optimizer")
    cls = getattr(fd.optimizers, name)
    opt, err = attempt(cls, **kwargs)
    step_errors = []
    if err is not None:
        assert bad, f"refused valid options {kwargs}: {err!r}"
        return expect_refused(err, *bad)
    if bad:
        assert bad == ["learning_rate"] and name == "Ftrl", f"accepted {bad} of {kwargs}"
        step_errors = bad
    dtype = data.draw(float_dtypes, "dtype")
    count = data.draw(st.integers(1, 4))
    special = data.draw(st.booleans())
    p0, g0 = data.draw(tensors(dtype, count, special), "tensors")
    if not step_errors:
        step_errors = _refused_for_dtype(kwargs, dtype)
    trainable = data.draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=count,
                                                        max_size=count)))
    penalties = data.draw(st.one_of(st.none(), st.lists(st.one_of(
        st.none(), st.tuples(st.sampled_from([0.0, 0.01]), st.sampled_from([0.0, 0.1]))),
        min_size=count, max_size=count)))
    constraints, ref_cons = None, None
    if data.draw(st.booleans()):
        constraints, ref_cons = [], []
        for p in p0:
            if p.ndim and data.draw(st.booleans()):
                mv, ax = data.draw(st.sampled_from([0.5, 2.0])), data.draw(
                    st.integers(-p.ndim, p.ndim - 1))
                constraints.append(fd.constraints.MaxNorm(mv, ax))
                ref_cons.append((mv, ax))
            else:
                constraints.append(None)
                ref_cons.append(None)
    # layouts and aliasing
    p_kinds = [data.draw(st.sampled_from(["c", "c", "c", "fortran", "strided", "negative",
                                          "readonly", "broadcast", "unaligned", "byteswapped",
                                          "torch"]), f"params[{i}] layout")
               for i in range(count)]
    g_kinds = [data.draw(st.sampled_from(["c", "c", "fortran", "strided", "negative", "readonly",
                                          "broadcast", "unaligned", "byteswapped", "torch"]),
                         f"grads[{i}] layout") for i in range(count)]
    alias = data.draw(st.sampled_from([None] * 6 + ["self", "cross", "dup-param"]), "alias")
    pair = data.draw(st.permutations(range(count)))[:2] if count > 1 else None
    if alias == "dup-param" and pair and p0[pair[0]].shape == p0[pair[1]].shape and \
            p0[pair[0]].size:
        p_kinds[pair[0]] = p_kinds[pair[1]]  # params[i] will be params[j], layout and all
    params = [relayout(p, k) for p, k in zip(p0, p_kinds)]
    grads = [relayout(g, k) for g, k in zip(g0, g_kinds)]
    refused = set()
    for i, k in enumerate(p_kinds):
        if k in ("readonly", "byteswapped") or (k == "unaligned" and p0[i].size) or (
                k == "broadcast" and p0[i].ndim and p0[i].shape[0]):
            refused.add(f"params[{i}]")
    may_refuse = set()  # refused naming one of these, or stepped correctly
    if alias == "self":
        i = data.draw(st.integers(0, count - 1))
        grads[i] = params[i]
    elif alias in ("cross", "dup-param") and count > 1:
        i, j = pair
        if p0[i].shape == p0[j].shape and p0[i].size:
            if alias == "cross":
                grads[i] = params[j]
                may_refuse.update({f"params[{j}]", f"grads[{i}]"})
            else:
                params[i] = params[j]
                refused.update({f"params[{i}]", f"params[{j}]"})
    starts = [np.array(to_np(p), dtype=np.float64) for p in params]
    gvals = [np.array(to_np(g), dtype=np.float64) for g in grads]
    gcopies = [np.array(to_np(g)) for g in grads]
    # the reference runs on the values actually passed (a broadcast view repeats a row)
    p_ref = [s.copy() for s in starts]
    state = R.optimizer_init(name, {k: v for k, v in kwargs.items()}, p_ref)
    steps = data.draw(st.integers(1, 3 if dtype == np.float64 else 2))
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    for step in range(steps):
        before = [np.array(to_np(p), dtype=np.float64) for p in params]
        _, err = attempt(opt.apply, grads, params, trainable=trainable, penalties=penalties,
                         constraints=constraints)
        if step_errors or refused or (may_refuse and err is not None):
            assert err is not None, f"accepted: {sorted(refused) or step_errors}"
            expect_refused(err, *(sorted(refused | may_refuse) or step_errors))
            for i, p in enumerate(params):  # nothing written
                np.testing.assert_array_equal(np.array(to_np(p), dtype=np.float64), before[i])
            return
        assert err is None, f"refused a valid step: {err!r}"
        with np.errstate(all="ignore"):
            p_ref, state = R.optimizer_step(name, kwargs, gvals, p_ref, state, step,
                                            trainable=trainable, penalties=penalties,
                                            constraints=ref_cons)
        cond = _centered_rounding(name, kwargs, state, p_ref, before, dtype)
        for i, p in enumerate(params):
            got = np.array(to_np(p))
            with np.errstate(all="ignore"):
                scale = np.abs(before[i]) + np.abs(p_ref[i] - before[i]) + 1e-30
                fin = np.isfinite(scale)
                s = float(np.max(scale[fin], initial=0.0))
            assert_close(got, p_ref[i], rtol, f"step {step} params[{i}]",
                         scale=s + cond[i] / rtol + 1e-30, dtype=dtype)
        if any(c > rtol * 1e-3 for c in cond):
            # the two trajectories parted within rounding at an ill-conditioned step:
            # later steps start from different points and cannot be compared tightly
            return
        if alias == "self":  # the gradient is the parameter: its value moves on
            gvals = [np.array(to_np(g), dtype=np.float64) for g in grads]
        else:
            for i, g in enumerate(grads):
                if alias == "cross" and any(g is p for p in params):
                    # a frozen parameter's gradient that is another (updated)
                    # parameter: never read, and it moves with that parameter
                    continue
                np.testing.assert_array_equal(np.array(to_np(g)), gcopies[i],
                                              err_msg=f"grads[{i}] was written")


@given(st.data())
@fuzz(3)
def test_optimizer_bad_arguments(data):
    """Lists of the wrong type or length, arrays of the wrong type, dtype or
    shape, per-tensor options of the wrong kind, a second call with other
    shapes, and apply_gradients' pairs: all refused naming the argument."""
    name = data.draw(st.sampled_from(sorted(SPECS)))
    opt = getattr(fd.optimizers, name)()
    dtype = data.draw(float_dtypes)
    p = [np.ones((2, 3), dtype), np.ones(4, dtype)]
    g = [np.ones((2, 3), dtype), np.ones(4, dtype)]
    case = data.draw(st.sampled_from(["params-type", "grads-type", "length", "elem-params",
                                      "elem-grads", "dtype", "shape", "trainable", "penalties",
                                      "constraints", "rebuild", "pairs", "mixed-dtype",
                                      "maxnorm-axis"]))
    kw = {}
    names = ()
    if case == "params-type":
        p = data.draw(st.sampled_from([None, p[0], "p", 3, {"a": 1}]))
        names = ("params",)
    elif case == "grads-type":
        g = data.draw(st.sampled_from([None, g[0], "g", 3]))
        names = ("grads",)
    elif case == "length":
        g = g[:1]
        names = ("grads", "params")
    elif case == "elem-params":
        p[1] = data.draw(st.sampled_from(NOT_ARRAYS))
        names = ("params[1]",)
    elif case == "elem-grads":
        g[1] = data.draw(st.sampled_from(NOT_ARRAYS))
        names = ("grads[1]",)
    elif case == "dtype":
        bad = data.draw(st.sampled_from([np.int32, np.float16, np.complex64, np.bool_, object,
                                         np.float64 if dtype == np.float32 else np.float32]))
        which = data.draw(st.sampled_from(["grads", "params"]))
        arr = (p if which == "params" else g)
        arr[1] = arr[1].astype(bad)
        names = (f"{which}[1]",)
    elif case == "shape":
        g[0] = np.ones((3, 2), dtype)
        names = ("grads[0]",)
    elif case in ("trainable", "penalties", "constraints"):
        kw[case] = data.draw(st.sampled_from([[1, 0], [True], ["yes", True], [None, "x"],
                                              [(0.1,), None], [(-1.0, 0.0), None]]))
        names = (case, f"{case}[0]", f"{case}[1]", f"{case}[0].l1", f"{case}[1].l1")
        if case == "trainable" and kw[case] in ([None, "x"],):
            names = ("trainable[1]",)
        if case == "penalties" and kw[case] == [None, "x"]:
            names = ("penalties[1]",)
        if case == "constraints" and kw[case] == [(-1.0, 0.0), None]:
            names = ("constraints[0]",)
        if kw[case] == [(0.1,), None]:
            names = (f"{case}[0]",)
    elif case == "rebuild":
        opt.apply(g, p)
        p, g = [np.ones((3, 3), dtype), np.ones(4, dtype)], [np.ones((3, 3), dtype),
                                                              np.ones(4, dtype)]
        names = ("params[0]",)
    elif case == "pairs":
        pairs = data.draw(st.sampled_from([[(g[0],)], [g[0]], [(g[0], p[0], p[0])], [None]]))
        _, err = attempt(opt.apply_gradients, pairs)
        return expect_refused(err, "grads_and_vars[0]")
    elif case == "mixed-dtype":
        other = np.float64 if dtype == np.float32 else np.float32
        p[1], g[1] = p[1].astype(other), g[1].astype(other)
        names = ("params[1]",)
    else:
        kw["constraints"] = [fd.constraints.MaxNorm(1.0, axis=data.draw(
            st.sampled_from([2, -3, 5]))), None]
        names = ("axis", "constraints[0]", "MaxNorm")
    before = [np.array(a, copy=True) if isinstance(a, np.ndarray) else None
              for a in (p if isinstance(p, list) else [])]
    _, err = attempt(opt.apply, g, p, **kw)
    assert err is not None, f"accepted case {case}"
    expect_refused(err, *names)
    for a, b in zip(p if isinstance(p, list) else [], before):
        if b is not None and isinstance(a, np.ndarray) and case != "rebuild":
            np.testing.assert_array_equal(a, b)


@given(st.data())
@fuzz(3)
def test_apply_gradients(data):
    """apply_gradients(pairs) is apply(grads, params) on the same values."""
    name, kwargs, bad = data.draw(optimizers())
    dtype = data.draw(float_dtypes)
    if bad or _refused_for_dtype(kwargs, dtype):
        return  # (refused: test_optimizer_apply)
    count = data.draw(st.integers(1, 3))
    p0, g0 = data.draw(tensors(dtype, count, data.draw(st.booleans())))
    a = [p.copy() for p in p0]
    b = [p.copy() for p in p0]
    o1, o2 = getattr(fd.optimizers, name)(**kwargs), getattr(fd.optimizers, name)(**kwargs)
    pairs = data.draw(st.sampled_from(["list", "tuple", "zip", "generator"]))
    it = list(zip(g0, a))
    arg = {"list": it, "tuple": tuple(it), "zip": zip(g0, a),
           "generator": ((x, y) for x, y in it)}[pairs]
    o1.apply_gradients(arg)
    o2.apply(g0, b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
