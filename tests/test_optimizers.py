"""fusednn.optimizers against the float64 reference (fusednn.testing.reference),
run side by side on the same gradients, on every backend.

Data: every parameter element starts at +-U(0.5, 1.5) and its gradients are a
fixed per-element mean of the opposite sign (+-U(0.5, 1.5)) plus fresh N(0, 1)
noise every step, so parameters drift away from zero and the error of a
one-element tensor, scaled by its own size, stays meaningful.
"""

import math

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R

from conftest import assert_scaled_close, to_backend, to_numpy

SHAPES = [(1,), (17,), (4097,), (3, 5)]
STEPS = 100

# float32 storage: 100 steps each round p and every slot to float32
# (sqrt(100) * 2^-24 relative per element, ~5e-7 of the largest of 4097
# elements). The acceptance bound is 1e-6. The slots' recurrences are computed
# in double on both backends: in float32 (float32(0.999) = 0.999 + 1.3e-8,
# compounding to ~1.3e-6 in Adamax's u over 100 steps) they would not meet it.
# The CPU takes the parameter's increment in float32 from the rounded slots,
# which adds rounding of the increment only, not of p.
F32_RTOL = 1e-6
F64_RTOL = 1e-12

# (optimizer, constructor kwargs): every rule and option, learning rates large
# enough that the parameters move visibly.
BASE = [
    ("SGD", {"learning_rate": 0.05}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    ("Adagrad", {"learning_rate": 0.1}),
    ("RMSprop", {"learning_rate": 0.01}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.9}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.9}),
    ("Adam", {"learning_rate": 0.02}),
    ("Adam", {"learning_rate": 0.02, "amsgrad": True}),
    ("AdamW", {"learning_rate": 0.02}),
    ("AdamW", {"learning_rate": 0.02, "weight_decay": 0.1, "amsgrad": True}),
    ("Adamax", {"learning_rate": 0.02}),
    ("Nadam", {"learning_rate": 0.02}),
    ("Nadam", {"learning_rate": 0.02, "momentum_decay": 0.004}),
    ("Ftrl", {"learning_rate": 0.1}),
    ("Ftrl", {"learning_rate": 0.1, "l1_regularization_strength": 0.5}),
    ("Ftrl", {"learning_rate": 0.1, "l2_regularization_strength": 0.5}),
    ("Ftrl", {"learning_rate": 0.1, "l2_shrinkage_regularization_strength": 0.1}),
    ("Ftrl", {"learning_rate": 0.1, "beta": 0.5}),
    ("Ftrl", {"learning_rate": 0.1, "learning_rate_power": -0.7}),
]
COMMON_OPTIONS = [{"clipvalue": 0.5}, {"clipnorm": 1.0}, {"global_clipnorm": 5.0},
                  {"weight_decay": 0.1}]
WITH_OPTIONS = [
    (name, {**cfg, **opt})
    for name, cfg in [("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
                      ("Adagrad", {"learning_rate": 0.1}),
                      ("RMSprop", {"learning_rate": 0.01}),
                      ("Adam", {"learning_rate": 0.02}),
                      ("Ftrl", {"learning_rate": 0.1})]
    for opt in COMMON_OPTIONS
]
CASES = BASE + WITH_OPTIONS

# One configuration per optimizer, with as many slots as it can have.
RICH = [
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    ("Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.5}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.9}),
    ("Adam", {"learning_rate": 0.02, "amsgrad": True}),
    ("AdamW", {"learning_rate": 0.02, "weight_decay": 0.05}),
    ("Adamax", {"learning_rate": 0.02, "beta_2": 0.99}),
    ("Nadam", {"learning_rate": 0.02, "momentum_decay": 0.004}),
    ("Ftrl", {"learning_rate": 0.1, "l1_regularization_strength": 0.1,
              "l2_regularization_strength": 0.2, "l2_shrinkage_regularization_strength": 0.05,
              "beta": 0.3, "learning_rate_power": -0.6}),
]


def _id(name, cfg):
    return name + "".join(f"-{k}={v}" for k, v in cfg.items() if k != "learning_rate")


CASE_IDS = [_id(*c) for c in CASES]
BASE_IDS = [_id(*c) for c in BASE]
RICH_IDS = [_id(*c) for c in RICH]


def _make(name, cfg):
    return getattr(fd.optimizers, name)(**cfg)


def _problem(shapes, steps, dtype, seed=0):
    """(params, [grads of step 0, grads of step 1, ...]) as NumPy arrays of dtype."""
    rng = np.random.default_rng(seed)
    sign = [rng.choice([-1.0, 1.0], s) for s in shapes]
    params = [(sg * rng.uniform(0.5, 1.5, s)).astype(dtype) for sg, s in zip(sign, shapes)]
    mean = [-sg * rng.uniform(0.5, 1.5, s) for sg, s in zip(sign, shapes)]
    grads = [[(m + rng.standard_normal(m.shape)).astype(dtype) for m in mean]
             for _ in range(steps)]
    return params, grads


def _ref_run(name, cfg, params, grad_steps, start=0, state=None, **kw):
    """The reference from `params` (and `state`, or a fresh one) over grad_steps."""
    ps = [p.astype(np.float64) for p in params]
    state = R.optimizer_init(name, cfg, ps) if state is None else state
    for k, gs in enumerate(grad_steps):
        ps, state = R.optimizer_step(name, cfg, gs, ps, state, start + k, **kw)
    return ps, state


def _our_run(opt, params, grad_steps, backend, **kw):
    """The optimizer from copies of `params` over grad_steps; returns the params."""
    ours = [to_backend(p.copy(), backend) for p in params]
    for gs in grad_steps:
        assert opt.apply([to_backend(g, backend) for g in gs], ours, **kw) is None
    return ours


def _assert_params(ours, ref, rtol, dtype=None):
    assert len(ours) == len(ref)
    for i, (p, r) in enumerate(zip(ours, ref)):
        if dtype is not None:
            assert p.dtype == dtype, f"param {i}: dtype {p.dtype} != {np.dtype(dtype)}"
        assert_scaled_close(p, r, rtol, f"param {i} {tuple(r.shape)}")


def _state_arrays(obj):
    """Every floating array with at least one dimension in a get_state() tree."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _state_arrays(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _state_arrays(v)
    elif hasattr(obj, "dtype") and hasattr(obj, "shape") and getattr(obj, "ndim", 0) > 0:
        a = to_numpy(obj)
        if np.issubdtype(a.dtype, np.floating):
            yield np.asarray(a, np.float64).ravel()


def _holds(arrays, ref, rtol):
    """Whether some array holds `ref` (raveled) as a contiguous run, to rtol scaled
    by max|ref|: per-tensor slots and slots packed into one flat buffer both pass."""
    r = ref.ravel()
    tol = rtol * max(float(np.max(np.abs(r))), 1e-300)
    for a in arrays:
        if a.size < r.size:
            continue
        starts = np.flatnonzero(np.abs(a[: a.size - r.size + 1] - r[0]) <= tol)
        for j in starts[:1000]:
            if np.max(np.abs(a[j:j + r.size] - r)) <= tol:
                return True
    return False


def _assert_state_matches(state, ref_state, rtol):
    """Every reference slot (momentum, velocity, accumulator, ...) of every
    parameter is somewhere in get_state(), whatever its layout."""
    assert isinstance(state, dict), f"get_state() returned {type(state).__name__}"
    arrays = list(_state_arrays(state))
    for i, slots in enumerate(ref_state):
        for slot, ref in slots.items():
            assert _holds(arrays, ref, rtol), \
                f"get_state() holds no array matching slot {slot!r} of param {i} {ref.shape}"


# ------------------------------------------------------- matches the reference

_REF_CACHE = {}


def _check_case(backend, name, cfg, dtype, rtol, key):
    params, grad_steps = _problem(SHAPES, STEPS, dtype)
    if key not in _REF_CACHE:  # the same on every backend: compute it once
        _REF_CACHE[key] = _ref_run(name, cfg, params, grad_steps)
    ref_p, ref_s = _REF_CACHE[key]
    opt = _make(name, cfg)
    assert opt.iterations == 0
    ours = _our_run(opt, params, grad_steps, backend)
    assert opt.iterations == STEPS
    _assert_params(ours, ref_p, rtol, dtype)
    _assert_state_matches(opt.get_state(), ref_s, rtol)


@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_matches_reference_float32(backend, case):
    name, cfg = CASES[case]
    _check_case(backend, name, cfg, np.float32, F32_RTOL, ("f32", case))


@pytest.mark.parametrize("case", range(len(BASE)), ids=BASE_IDS)
def test_matches_reference_float64(backend, case):
    name, cfg = BASE[case]
    _check_case(backend, name, cfg, np.float64, F64_RTOL, ("f64", case))


@pytest.mark.parametrize("name,cfg", [
    ("Adam", {"learning_rate": 0.02}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.9}),
    ("Adam", {"learning_rate": 0.02, "global_clipnorm": 5.0}),
], ids=["Adam", "RMSprop-centered-momentum", "Adam-global_clipnorm"])
def test_many_tensors(backend, name, cfg):
    """300 tensors of 1..50 elements at once (the multi-tensor path), 100 steps."""
    rng = np.random.default_rng(5)
    shapes = [(int(n),) for n in rng.integers(1, 51, 300)]
    params, grad_steps = _problem(shapes, STEPS, np.float32, seed=6)
    ref_p, _ = _ref_run(name, cfg, params, grad_steps)
    ours = _our_run(_make(name, cfg), params, grad_steps, backend)
    _assert_params(ours, ref_p, F32_RTOL, np.float32)


# ----------------------------------------------------------------- clipping


def test_clipping_example(backend):
    def step(**kw):
        p = to_backend(np.zeros(2, np.float32), backend)
        g = to_backend(np.array([0.9, 100.0], np.float32), backend)
        fd.optimizers.SGD(learning_rate=1.0, **kw).apply([g], [p])
        return to_numpy(p)

    np.testing.assert_array_equal(step(clipvalue=1), -np.array([0.9, 1.0], np.float32))
    np.testing.assert_allclose(step(clipnorm=1), -np.array([0.00899964, 0.9999595]), rtol=1e-6)
    np.testing.assert_allclose(step(global_clipnorm=1), -np.array([0.00899964, 0.9999595]),
                               rtol=1e-6)


def test_clipnorm_is_per_tensor_and_global_clipnorm_is_not(backend):
    g = [np.array([3.0], np.float32), np.array([4.0], np.float32), np.array([0.5], np.float32)]

    def step(**kw):
        ps = [to_backend(np.zeros(1, np.float32), backend) for _ in g]
        fd.optimizers.SGD(learning_rate=1.0, **kw).apply([to_backend(x, backend) for x in g],
                                                         ps)
        return np.concatenate([to_numpy(p) for p in ps])

    # per tensor: 3 and 4 are cut to 1, 0.5 is under the limit and kept
    np.testing.assert_allclose(step(clipnorm=1.0), [-1.0, -1.0, -0.5], rtol=1e-6)
    # global: all scaled by 2/||(3, 4, 0.5)||
    np.testing.assert_allclose(step(global_clipnorm=2.0),
                               -np.array([3.0, 4.0, 0.5]) * 2 / math.sqrt(25.25), rtol=1e-6)


# ------------------------------------------------ penalties, constraints, mask


@pytest.mark.parametrize("name,cfg", [
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
    ("Adam", {"learning_rate": 0.02}),
    ("Adam", {"learning_rate": 0.02, "global_clipnorm": 5.0}),
    ("Ftrl", {"learning_rate": 0.1, "l2_shrinkage_regularization_strength": 0.05}),
], ids=["SGD-momentum", "Adam", "Adam-global_clipnorm", "Ftrl-shrinkage"])
def test_penalties(backend, name, cfg):
    """Keras regularizers on some tensors only: g += l1*sign(p) + 2*l2*p, before
    clipping (the global norm is that of the penalised gradients)."""
    shapes = [(7, 5), (17,), (4097,), (3, 5)]
    params, grad_steps = _problem(shapes, 30, np.float32, seed=3)
    penalties = [fd.regularizers.L1(), None, fd.regularizers.L2(0.02),
                 fd.regularizers.L1L2(l1=0.01, l2=0.02)]
    ref_pen = [(0.01, 0.0), None, (0.0, 0.02), (0.01, 0.02)]  # L1() is l1=0.01
    ref_p, _ = _ref_run(name, cfg, params, grad_steps, penalties=ref_pen)
    ours = _our_run(_make(name, cfg), params, grad_steps, backend, penalties=penalties)
    _assert_params(ours, ref_p, F32_RTOL, np.float32)
    # the penalties made a difference
    plain, _ = _ref_run(name, cfg, params, grad_steps)
    assert not np.allclose(plain[0], ref_p[0], rtol=1e-4)


@pytest.mark.parametrize("name,cfg", [
    ("SGD", {"learning_rate": 0.05}),
    ("Adam", {"learning_rate": 0.05, "weight_decay": 0.01}),
], ids=["SGD", "AdamW-like"])
def test_max_norm_constraint(backend, name, cfg):
    """MaxNorm after the update: axis 0 and axis 1 of a (7, 5) kernel, a 1-D tensor."""
    shapes = [(7, 5), (7, 5), (17,), (9,)]
    params, grad_steps = _problem(shapes, 20, np.float32, seed=4)
    # some norms under the limits, some over
    params[0] *= np.linspace(0.5, 1.1, 5, dtype=np.float32)
    params[1] *= np.linspace(0.5, 1.4, 7, dtype=np.float32)[:, None]
    constraints = [fd.constraints.MaxNorm(), fd.constraints.MaxNorm(max_value=2.5, axis=1),
                   fd.constraints.MaxNorm(max_value=3.0, axis=0), None]
    ref_con = [(2.0, 0), (2.5, 1), (3.0, 0), None]  # MaxNorm() is max_value=2, axis=0
    ref_p, _ = _ref_run(name, cfg, params, grad_steps[:1], constraints=ref_con)
    for norms, limit in [(np.linalg.norm(ref_p[0], axis=0), 2.0),
                         (np.linalg.norm(ref_p[1], axis=1), 2.5)]:
        # the test bites: after a step some norms are at the limit, some under it
        assert (norms < limit * 0.999).any() and (norms > limit * 0.999).any(), norms
    ref_p, _ = _ref_run(name, cfg, params, grad_steps, constraints=ref_con)
    ours = _our_run(_make(name, cfg), params, grad_steps, backend, constraints=constraints)
    _assert_params(ours, ref_p, F32_RTOL, np.float32)
    assert np.linalg.norm(to_numpy(ours[0]), axis=0).max() <= 2.0 * (1 + 1e-6)
    assert np.linalg.norm(to_numpy(ours[1]), axis=1).max() <= 2.5 * (1 + 1e-6)
    assert np.linalg.norm(to_numpy(ours[2])) <= 3.0 * (1 + 1e-6)


@pytest.mark.parametrize("name,cfg", RICH + [("Adam", {"learning_rate": 0.02,
                                                        "global_clipnorm": 5.0})],
                         ids=RICH_IDS + ["Adam-global_clipnorm"])
def test_trainable_mask(backend, name, cfg):
    """A frozen parameter and its slots do not change (nor count in the global
    norm): 10 steps with param 1 frozen, then 10 with param 2 frozen instead,
    each phase against the reference; the global step counter runs throughout."""
    params, grad_steps = _problem(SHAPES, 20, np.float32, seed=8)
    opt = _make(name, cfg)
    ours = [to_backend(p.copy(), backend) for p in params]
    ref_p, ref_s = [p.astype(np.float64) for p in params], None
    for k, gs in enumerate(grad_steps):
        mask = [True, False, True, True] if k < 10 else [True, True, False, True]
        frozen = mask.index(False)
        before = to_numpy(ours[frozen]).copy()
        opt.apply([to_backend(g, backend) for g in gs], ours, trainable=mask)
        np.testing.assert_array_equal(to_numpy(ours[frozen]), before)
        ref_p, ref_s = _ref_run(name, cfg, ref_p, [gs], start=k, state=ref_s, trainable=mask)
        if k in (9, 19):
            _assert_params(ours, ref_p, F32_RTOL, np.float32)
    assert opt.iterations == 20


# ------------------------------------------------------------ learning rate


@pytest.mark.parametrize("name,cfg", [
    ("SGD", {"momentum": 0.9, "weight_decay": 0.1}),
    ("Adam", {}),
    ("Ftrl", {"beta": 0.5}),
], ids=["SGD-weight_decay", "Adam", "Ftrl-beta"])
def test_learning_rate_schedule(backend, name, cfg):
    """A callable schedule is evaluated at the iteration count before the step;
    the decay and Ftrl's beta/(2*lr) use the same rate."""
    cfg = {**cfg, "learning_rate": lambda step: 0.1 * 0.9**step}
    params, grad_steps = _problem(SHAPES, 20, np.float32, seed=9)
    ref_p, _ = _ref_run(name, cfg, params, grad_steps)
    ours = _our_run(_make(name, cfg), params, grad_steps, backend)
    _assert_params(ours, ref_p, F32_RTOL, np.float32)


@pytest.mark.parametrize("name,cfg", [
    ("Adam", {"learning_rate": 0.05}),
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.1}),
    ("Ftrl", {"learning_rate": 0.1, "beta": 0.5}),
], ids=["Adam", "SGD-weight_decay", "Ftrl-beta"])
def test_set_learning_rate_between_steps(backend, name, cfg):
    params, grad_steps = _problem(SHAPES, 25, np.float32, seed=10)
    opt = _make(name, cfg)
    ours = _our_run(opt, params, grad_steps[:10], backend)
    opt.learning_rate = 0.01
    assert opt.learning_rate == 0.01
    for gs in grad_steps[10:20]:
        opt.apply([to_backend(g, backend) for g in gs], ours)
    sched = lambda step: 0.2 / (1 + step)  # noqa: E731
    opt.learning_rate = sched
    for gs in grad_steps[20:]:
        opt.apply([to_backend(g, backend) for g in gs], ours)

    ref_p, ref_s = _ref_run(name, cfg, params, grad_steps[:10])
    ref_p, ref_s = _ref_run(name, {**cfg, "learning_rate": 0.01}, ref_p, grad_steps[10:20],
                            start=10, state=ref_s)
    ref_p, _ = _ref_run(name, {**cfg, "learning_rate": sched}, ref_p, grad_steps[20:],
                        start=20, state=ref_s)
    _assert_params(ours, ref_p, F32_RTOL, np.float32)


# ----------------------------------------------------- state, config, API


@pytest.mark.parametrize("name,cfg", RICH, ids=RICH_IDS)
def test_get_state_set_state_exact(backend, name, cfg):
    """30 steps, save, 30 more (A); a fresh optimizer restored from the save on
    copies of the params at the save point, 30 steps (B): A == B bit for bit."""
    params, grad_steps = _problem(SHAPES, 60, np.float32, seed=11)
    opt = _make(name, cfg)
    a = _our_run(opt, params, grad_steps[:30], backend)
    saved = opt.get_state()
    at_save = [to_numpy(p).copy() for p in a]
    for gs in grad_steps[30:]:
        opt.apply([to_backend(g, backend) for g in gs], a)
    assert opt.iterations == 60

    fresh = _make(name, cfg)
    fresh.set_state(saved)
    assert fresh.iterations == 30
    b = _our_run(fresh, at_save, grad_steps[30:], backend)
    assert fresh.iterations == 60
    for pa, pb in zip(a, b):
        assert np.array_equal(to_numpy(pa), to_numpy(pb))


@pytest.mark.parametrize("name,cfg", [
    ("SGD", {"learning_rate": 0.03, "momentum": 0.8, "nesterov": True, "clipnorm": 2.0}),
    ("Adagrad", {"learning_rate": 0.2, "initial_accumulator_value": 0.3, "epsilon": 1e-6}),
    ("RMSprop", {"learning_rate": 0.02, "rho": 0.8, "momentum": 0.5, "epsilon": 1e-6,
                 "centered": True, "clipvalue": 0.7}),
    ("Adam", {"learning_rate": 0.03, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6,
              "amsgrad": True, "global_clipnorm": 3.0}),
    ("AdamW", {"learning_rate": 0.03, "weight_decay": 0.02, "beta_1": 0.85}),
    ("Adamax", {"learning_rate": 0.03, "beta_1": 0.85, "beta_2": 0.99, "weight_decay": 0.01}),
    ("Nadam", {"learning_rate": 0.03, "momentum_decay": 0.004, "beta_2": 0.99}),
    ("Ftrl", {"learning_rate": 0.2, "learning_rate_power": -0.6,
              "initial_accumulator_value": 0.2, "l1_regularization_strength": 0.1,
              "l2_regularization_strength": 0.2, "l2_shrinkage_regularization_strength": 0.05,
              "beta": 0.1}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_config_round_trip(backend, name, cfg):
    opt = _make(name, cfg)
    config = opt.get_config()
    for k, v in cfg.items():
        assert config[k] == v, f"get_config()[{k!r}] = {config[k]!r}, expected {v!r}"
    clone = type(opt).from_config(config)
    assert type(clone) is type(opt)
    assert clone.get_config() == config
    params, grad_steps = _problem(SHAPES, 5, np.float32, seed=12)
    a = _our_run(opt, params, grad_steps, backend)
    b = _our_run(clone, params, grad_steps, backend)
    for pa, pb in zip(a, b):
        assert np.array_equal(to_numpy(pa), to_numpy(pb))
    ref_p, _ = _ref_run(name, cfg, params, grad_steps)
    _assert_params(a, ref_p, F32_RTOL, np.float32)


def test_defaults_are_keras():
    expected = {name: {**R.OPTIMIZER_COMMON_DEFAULTS, **d}
                for name, d in R.OPTIMIZER_DEFAULTS.items()}
    for name, defaults in expected.items():
        config = getattr(fd.optimizers, name)().get_config()
        for k, v in defaults.items():
            assert config[k] == v, f"{name}: default {k} = {config[k]!r}, expected {v!r}"


@pytest.mark.parametrize("name,cfg", [
    ("SGD", {"learning_rate": 0.05, "momentum": 0.9}),
    ("Adam", {"learning_rate": 0.02, "global_clipnorm": 5.0}),
    ("Ftrl", {"learning_rate": 0.1, "l1_regularization_strength": 0.1}),
], ids=["SGD-momentum", "Adam-global_clipnorm", "Ftrl-l1"])
def test_apply_gradients_equals_apply(backend, name, cfg):
    params, grad_steps = _problem(SHAPES, 5, np.float32, seed=13)
    a = _our_run(_make(name, cfg), params, grad_steps, backend)
    opt = _make(name, cfg)
    b = [to_backend(p.copy(), backend) for p in params]
    for gs in grad_steps:
        opt.apply_gradients(zip([to_backend(g, backend) for g in gs], b))
    assert opt.iterations == 5
    for pa, pb in zip(a, b):
        assert np.array_equal(to_numpy(pa), to_numpy(pb))


@pytest.mark.parametrize("name", list(R.OPTIMIZER_DEFAULTS))
def test_nan_gradient_propagates(backend, name):
    """A NaN in a gradient is not skipped: that step is applied, the NaN lands in
    the matching element of its parameter (and stays there through its slots),
    and everything else stays finite. Nothing raises."""
    params, grad_steps = _problem([(17,), (4097,), (3, 5)], 2, np.float32, seed=14)
    grad_steps[0][0][3] = np.nan
    opt = _make(name, {"learning_rate": 0.01})
    ours = _our_run(opt, params, grad_steps[:1], backend)
    assert opt.iterations == 1
    for step in range(2):
        if step:  # a clean step after: the NaN stays where it is
            opt.apply([to_backend(g, backend) for g in grad_steps[1]], ours)
        p0 = to_numpy(ours[0])
        assert np.isnan(p0[3])
        assert np.all(np.isfinite(np.delete(p0, 3)))
        assert all(np.all(np.isfinite(to_numpy(p))) for p in ours[1:])
    assert opt.iterations == 2


# ---------------------------------------------------------------- bad input

F32 = np.float32
_ARG = r"(?s)(grad|param).*{0}|{0}.*(grad|param)"  # names grads/params and the problem


def _bad_apply(backend, grads, params, match, opt=None):
    opt = opt or fd.optimizers.Adam()
    before = opt.iterations
    kept = [to_numpy(p).copy() if hasattr(p, "dtype") else None for p in params]
    with pytest.raises((ValueError, TypeError), match=match):
        opt.apply(grads, params)
    assert opt.iterations == before  # refused as a whole: no step taken
    for p, k in zip(params, kept):
        if k is not None:
            np.testing.assert_array_equal(to_numpy(p), k)


def test_bad_count(backend):
    p = [to_backend(np.ones(3, F32), backend)]
    g = [to_backend(np.ones(3, F32), backend)] * 2
    _bad_apply(backend, g, p, "grad|param")


def test_bad_shape(backend):
    p = [to_backend(np.ones(3, F32), backend), to_backend(np.ones((2, 2), F32), backend)]
    g = [to_backend(np.ones(3, F32), backend), to_backend(np.ones(4, F32), backend)]
    _bad_apply(backend, g, p, _ARG.format("shape"))


def test_bad_dtype_mismatch(backend):
    p = [to_backend(np.ones(3, np.float64), backend)]
    g = [to_backend(np.ones(3, F32), backend)]
    _bad_apply(backend, g, p, _ARG.format("dtype"))


def test_bad_integer_params(backend):
    p = [to_backend(np.ones(3, np.int32), backend)]
    g = [to_backend(np.ones(3, np.int32), backend)]
    _bad_apply(backend, g, p, _ARG.format("dtype"))


def test_bad_not_an_array(backend):
    p = [to_backend(np.ones(2, F32), backend)]
    with pytest.raises(TypeError, match="grad"):
        fd.optimizers.SGD().apply([[0.1, 0.2]], p)
    with pytest.raises(TypeError, match="param"):
        fd.optimizers.SGD().apply([to_backend(np.ones(2, F32), backend)], [[0.0, 0.0]])


def test_bad_numpy_grad_with_cupy_param():
    if not fd.has_cuda():
        pytest.skip(f"CUDA backend unavailable: {fd.cuda_status()}")
    import cupy

    p = [cupy.ones(3, F32)]
    _bad_apply("cuda", [np.ones(3, F32)], p, "grad|param")


@pytest.mark.parametrize("name,kw,arg", [
    *[(n, {"learning_rate": -0.1}, "learning_rate") for n in R.OPTIMIZER_DEFAULTS],
    *[(n, {"beta_1": 1.0}, "beta_1") for n in ("Adam", "AdamW", "Adamax", "Nadam")],
    *[(n, {"beta_2": -0.1}, "beta_2") for n in ("Adam", "AdamW", "Adamax", "Nadam")],
    ("RMSprop", {"rho": 1.5}, "rho"),
    ("SGD", {"momentum": -1}, "momentum"),
    ("RMSprop", {"momentum": -1}, "momentum"),
    ("SGD", {"clipvalue": 1.0, "clipnorm": 1.0}, "clip"),
    ("Adam", {"clipnorm": 1.0, "global_clipnorm": 1.0}, "clip"),
    ("Adam", {"clipvalue": 1.0, "global_clipnorm": 1.0}, "clip"),
    ("SGD", {"clipnorm": 0.0}, "clipnorm"),
    ("Adam", {"clipnorm": -1.0}, "clipnorm"),
], ids=lambda v: v if isinstance(v, str) else ("-".join(f"{k}={x}" for k, x in v.items())
                                              if isinstance(v, dict) else ""))
def test_bad_hyperparameters(name, kw, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        getattr(fd.optimizers, name)(**kw)


def test_bad_later_call_differs_from_first(backend):
    """The state is made for the first call's list of params: a later call with
    another count or other shapes is refused."""
    opt = fd.optimizers.Adam()
    p = [to_backend(np.ones(3, F32), backend), to_backend(np.ones((2, 2), F32), backend)]
    opt.apply([to_backend(np.ones(3, F32), backend),
               to_backend(np.ones((2, 2), F32), backend)], p)
    p3 = p + [to_backend(np.ones(4, F32), backend)]
    _bad_apply(backend, [to_backend(np.ones_like(to_numpy(x)), backend) for x in p3], p3,
               "params", opt)
    q = [to_backend(np.ones(3, F32), backend), to_backend(np.ones((4,), F32), backend)]
    _bad_apply(backend, [to_backend(np.ones_like(to_numpy(x)), backend) for x in q], q,
               r"params\[1\]", opt)


def test_config_with_a_schedule_is_json_ready():
    """A fd.schedules learning rate is written as its config and read back."""
    import json

    sched = fd.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    opt = fd.optimizers.Adam(learning_rate=sched)
    cfg = json.loads(json.dumps(opt.get_config()))
    back = fd.optimizers.Adam.from_config(cfg)
    assert isinstance(back.learning_rate, fd.schedules.ExponentialDecay)
    for step in (0, 7, 25):
        assert back.learning_rate(step) == sched(step)
