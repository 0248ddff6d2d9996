"""fusednn.schedules: each schedule against its closed form (written here in
NumPy, independently of the module) at every step of a range that crosses
its boundaries; OneCycle against torch.optim.lr_scheduler.OneCycleLR where
torch is installed; configs, lookup by name, input checks, and use as an
optimizer's learning_rate."""

import json
import math

import numpy as np
import pytest

import fusednn as fd

S = fd.schedules
STEPS = np.arange(0, 400)
RTOL = 1e-13


def values(schedule, steps=STEPS):
    return np.array([schedule(int(k)) for k in steps])


def assert_close(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=0.0)


# --------------------------------------------------------------- closed forms


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("lr0,steps,rate", [(0.1, 30, 0.5), (1e-2, 7.5, 0.1), (1e-5, 50, 1e3),
                                            (0.3, 1, 0.0)])
def test_exponential_decay(lr0, steps, rate, staircase):
    """lr0 * rate^(t/s), the exponent floored with staircase; rate > 1 grows."""
    s = S.ExponentialDecay(lr0, steps, rate, staircase=staircase)
    p = STEPS / steps
    if staircase:
        p = np.floor(p)
    assert_close(values(s), lr0 * np.power(rate, p))


def test_exponential_decay_growth_overflows_to_inf():
    """decay_rate > 1 (a range test) beyond what a double holds: inf, as Keras
    gives, which the optimizer then refuses."""
    s = S.ExponentialDecay(1e-5, 1, 10.0)
    assert s(400) == math.inf
    opt = fd.optimizers.SGD(learning_rate=s)
    opt.iterations = 400
    with pytest.raises(ValueError, match="finite"):
        opt.current_learning_rate()


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("lr0,steps,rate,power", [(0.1, 30, 0.5, 1.0), (0.01, 20, 1.0, 1.0),
                                                  (0.05, 10, 1.0, 0.5), (0.2, 3.5, 2.0, 2.0),
                                                  (0.1, 5, 0.0, 1.0)])
def test_inverse_time_decay(lr0, steps, rate, power, staircase):
    s = S.InverseTimeDecay(lr0, steps, rate, staircase=staircase, power=power)
    p = STEPS / steps
    if staircase:
        p = np.floor(p)
    assert_close(values(s), lr0 / np.power(1.0 + rate * p, power))


def test_inverse_time_decay_is_power_scheduling():
    """The chapter's eta0 / (1 + t/s)^c with decay_rate=1, decay_steps=s, power=c."""
    eta0, s_, c = 0.01, 25, 1.5
    s = S.InverseTimeDecay(eta0, decay_steps=s_, decay_rate=1.0, power=c)
    assert_close(values(s), eta0 / (1 + STEPS / s_) ** c)
    assert s(s_) == pytest.approx(eta0 / 2**c, rel=1e-15)


def piecewise_reference(t, boundaries, vals):
    """Keras' sum of indicators: v0 [t <= b0] + v_-1 [t > b_-1] + sum v_i [b_i-1 < t <= b_i]."""
    out = np.zeros(t.shape)
    out += (t <= boundaries[0]) * vals[0]
    out += (t > boundaries[-1]) * vals[-1]
    for low, high, v in zip(boundaries[:-1], boundaries[1:], vals[1:-1]):
        out += ((t > low) & (t <= high)) * v
    return out


@pytest.mark.parametrize("boundaries,vals", [
    ([100], [0.1, 0.01]),
    ([0, 1, 2], [1.0, 0.5, 0.25, 0.125]),
    ([50, 120, 300], [0.1, 0.05, 0.01, 0.001]),
    ([10.5, 99.5], [0.3, 0.2, 0.1]),
    ((np.int64(20), np.int64(200)), np.array([0.5, 0.4, 0.0])),
])
def test_piecewise_constant_decay(boundaries, vals):
    s = S.PiecewiseConstantDecay(boundaries, vals)
    assert_close(values(s), piecewise_reference(STEPS, list(boundaries), list(vals)), rtol=0)


def test_piecewise_constant_boundary_step_takes_the_value_before():
    s = S.PiecewiseConstantDecay([100, 200], [1.0, 0.5, 0.1])
    assert [s(0), s(99), s(100), s(101), s(200), s(201), s(10**9)] == \
        [1.0, 1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


def test_piecewise_constant_without_boundaries_is_constant():
    s = S.PiecewiseConstantDecay([], [0.25])
    assert {s(k) for k in (0, 1, 10**6)} == {0.25}


def cosine_reference(t, lr0, decay_steps, alpha, target, warmup):
    t = t.astype(np.float64)

    def decay(x, start):
        return start * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * x / decay_steps)) + alpha)

    if target is None:
        return decay(np.minimum(t, decay_steps), lr0)
    t = np.minimum(t, decay_steps + warmup)
    warm = lr0 + (target - lr0) * t / max(warmup, 1e-300)
    return np.where(t < warmup, warm, decay(t - warmup, target))


@pytest.mark.parametrize("lr0,decay_steps,alpha,target,warmup", [
    (0.1, 300, 0.0, None, 0),
    (0.1, 123, 0.1, None, 50),        # warmup_steps ignored without a target
    (0.0, 200, 0.0, 0.1, 100),
    (0.01, 150, 0.05, 0.1, 37),
    (0.05, 250, 0.0, 0.2, 0),         # a target without warmup steps: decay from it
    (0.2, 99.5, 1.0, None, 0),        # alpha=1: constant
    (0.3, 200, 0.0, 0.1, 60),         # "warmup" downwards
])
def test_cosine_decay(lr0, decay_steps, alpha, target, warmup):
    s = S.CosineDecay(lr0, decay_steps, alpha=alpha, warmup_target=target, warmup_steps=warmup)
    assert_close(values(s), cosine_reference(STEPS, lr0, decay_steps, alpha, target, warmup))


def test_cosine_decay_landmarks():
    s = S.CosineDecay(0.0, 100, alpha=0.1, warmup_target=0.2, warmup_steps=40)
    assert s(0) == 0.0
    assert s(20) == pytest.approx(0.1, rel=1e-15)
    assert s(40) == pytest.approx(0.2, rel=1e-15)          # end of warmup, start of decay
    assert s(90) == pytest.approx(0.2 * (0.9 * 0.5 + 0.1), rel=1e-14)
    assert s(140) == pytest.approx(0.02, rel=1e-14)        # alpha * warmup_target
    assert s(10**7) == s(140)


# --------------------------------------------------------------- 1cycle

ONECYCLE_CASES = [
    dict(total_steps=100),
    dict(total_steps=100, anneal_strategy="linear"),
    dict(total_steps=100, three_phase=True),
    dict(total_steps=100, three_phase=True, anneal_strategy="linear"),
    dict(total_steps=37, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
    dict(total_steps=37, pct_start=0.45, three_phase=True, anneal_strategy="linear",
         base_momentum=0.8, max_momentum=0.99),
    dict(total_steps=250, pct_start=0.1, three_phase=True, div_factor=5.0),
    dict(total_steps=10, pct_start=0.25, anneal_strategy="linear"),
    dict(total_steps=1),
    dict(total_steps=1, three_phase=True),
    dict(total_steps=2, pct_start=0.6, three_phase=True),
]


def _case_id(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items())


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("cfg", ONECYCLE_CASES, ids=_case_id)
def test_one_cycle_matches_torch(torch, cfg):
    max_lr = 0.8
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    tcfg = dict(cfg)
    for ours, theirs in (("base_momentum", "base_momentum"), ("max_momentum", "max_momentum")):
        if ours in tcfg:
            tcfg[theirs] = tcfg.pop(ours)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, **tcfg)
    lrs, moms = [], []
    for _ in range(cfg["total_steps"]):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()

    s = S.OneCycle(max_lr, **cfg)
    steps = range(cfg["total_steps"])
    assert_close([s(k) for k in steps], lrs, rtol=1e-15)
    assert_close([s.momentum(k) for k in steps], moms, rtol=1e-15)
    if cfg["total_steps"] * cfg.get("pct_start", 0.3) > 2:
        assert s(0) == pytest.approx(max_lr / s.div_factor, rel=1e-14)


@pytest.mark.parametrize("cfg", ONECYCLE_CASES[:4], ids=_case_id)
def test_one_cycle_holds_the_final_value(cfg):
    """Where PyTorch extrapolates (step T) and then raises, the last value is kept."""
    s = S.OneCycle(0.5, **cfg)
    T = cfg["total_steps"]
    assert s(T - 1) == pytest.approx(0.5 / 25.0 / 1e4, rel=1e-12)
    assert s.momentum(T - 1) == pytest.approx(0.95, rel=1e-15)
    for k in (T, T + 1, 10**9):
        assert s(k) == s(T - 1) and s.momentum(k) == s.momentum(T - 1)


def test_one_cycle_chapter_policy():
    """The chapter's 1cycle: linear from eta0 up to eta1 over 45% of the
    steps, back to eta0 by 90%, then down to eta0/1000; momentum
    0.95 -> 0.85 -> 0.95, then held."""
    eta1, T = 0.5, 200
    s = S.OneCycle(eta1, T, pct_start=0.45, div_factor=10.0, final_div_factor=1000.0,
                   anneal_strategy="linear", three_phase=True)
    eta0 = eta1 / 10
    up, down = 0.45 * T - 1, 0.9 * T - 2     # the last steps of the rise and the fall
    t = np.arange(T, dtype=np.float64)
    lr = np.where(t <= up, eta0 + (eta1 - eta0) * t / up,
                  np.where(t <= down, eta1 + (eta0 - eta1) * (t - up) / (down - up),
                           eta0 + (eta0 / 1000 - eta0) * (t - down) / (T - 1 - down)))
    mom = np.where(t <= up, 0.95 - 0.1 * t / up,
                   np.where(t <= down, 0.85 + 0.1 * (t - up) / (down - up), 0.95))
    assert_close(values(s, range(T)), lr, rtol=1e-12)
    assert_close([s.momentum(k) for k in range(T)], mom, rtol=1e-12)
    assert s(int(up)) == pytest.approx(eta1) and s(int(down)) == pytest.approx(eta0)
    assert s(T - 1) == pytest.approx(eta0 / 1000)


def test_one_cycle_zero_length_phase_takes_its_end_value():
    """pct_start * total_steps == 1: the rise is step 0 alone (PyTorch
    divides by zero here); it gives max, then the fall from step 0 to T-1."""
    s = S.OneCycle(1.0, 10, pct_start=0.1)
    assert s(0) == 1.0 and s.momentum(0) == 0.85
    final = 1.0 / 25.0 / 1e4
    expected = [final + (1.0 - final) / 2.0 * (math.cos(math.pi * k / 9) + 1) for k in range(10)]
    assert_close(values(s, range(10)), expected, rtol=1e-15)


def test_one_cycle_without_momentum_cycling():
    s = S.OneCycle(0.1, 50, cycle_momentum=False)
    assert s.momentum(0) is None and s.momentum(49) is None
    assert s(0) == pytest.approx(0.004)


# --------------------------------------------------------------- with an optimizer


ALL = [
    S.ExponentialDecay(0.1, 3, 0.5, staircase=True),
    S.ExponentialDecay(0.1, 4, 0.5),
    S.InverseTimeDecay(0.2, 2, 1.0, power=2.0),
    S.PiecewiseConstantDecay([2, 5], [0.3, 0.2, 0.1]),
    S.CosineDecay(0.0, 6, alpha=0.1, warmup_target=0.2, warmup_steps=3),
    S.OneCycle(0.4, 10, three_phase=True, anneal_strategy="linear"),
]


@pytest.mark.parametrize("sched", ALL, ids=lambda s: type(s).__name__)
def test_sgd_uses_the_schedule_at_each_step(sched):
    """Step k (0-based) of SGD without momentum moves p by exactly -sched(k) * g."""
    opt = fd.optimizers.SGD(learning_rate=sched)
    p = np.linspace(-1.0, 1.0, 7)
    g = np.linspace(0.5, 2.0, 7)
    for k in range(12):
        assert opt.iterations == k
        assert opt.current_learning_rate() == sched(k)
        before = p.copy()
        opt.apply([g], [p])
        np.testing.assert_allclose(before - p, sched(k) * g, rtol=1e-12, atol=1e-15)


def test_sgd_with_one_cycle_momentum():
    """A loop that sets SGD's momentum from OneCycle.momentum before each
    step follows Keras' rule m = mu_k m - lr_k g; p += m."""
    sched = S.OneCycle(0.3, 15, pct_start=0.4)
    opt = fd.optimizers.SGD(learning_rate=sched, momentum=sched.max_momentum)
    rng = np.random.default_rng(0)
    p = rng.standard_normal(9)
    ref_p, ref_m = p.copy(), np.zeros_like(p)
    for k in range(15):
        g = rng.standard_normal(9)
        opt.momentum = sched.momentum(opt.iterations)
        opt.apply([g], [p])
        ref_m = sched.momentum(k) * ref_m - sched(k) * g
        ref_p = ref_p + ref_m
    assert_close(p, ref_p, rtol=1e-12)


# --------------------------------------------------------------- step argument


@pytest.mark.parametrize("sched", ALL, ids=lambda s: type(s).__name__)
def test_step_types(sched):
    for step in (np.int32(3), np.int64(3), np.uint8(3), np.uint64(3)):
        assert sched(step) == sched(3) and isinstance(sched(step), float)
    for bad in (3.0, np.float64(3), True, np.bool_(True), "3", None, np.array([3])):
        with pytest.raises(TypeError, match=f"{type(sched).__name__}: step"):
            sched(bad)
    with pytest.raises(ValueError, match=f"{type(sched).__name__}: step .*-1"):
        sched(-1)


def test_momentum_step_checked():
    s = S.OneCycle(0.1, 10)
    with pytest.raises(TypeError, match=r"OneCycle.momentum: step .*2\.5"):
        s.momentum(2.5)
    with pytest.raises(ValueError, match=r"OneCycle.momentum: step .*-3"):
        s.momentum(-3)


# --------------------------------------------------------------- configs and get


CONFIGURED = ALL + [
    S.ExponentialDecay(1e-3, 1000.0, 0.96, name="my_decay"),
    S.PiecewiseConstantDecay([10.5, 20], [1.0, 0.5, 0.25]),
    S.CosineDecay(0.1, 1000),
    S.OneCycle(1.0, 500, pct_start=0.25, div_factor=20.0, final_div_factor=500.0,
               cycle_momentum=False, base_momentum=0.8, max_momentum=0.9),
]


@pytest.mark.parametrize("sched", CONFIGURED, ids=lambda s: type(s).__name__)
def test_config_round_trip(sched):
    cfg = sched.get_config()
    again = type(sched).from_config(cfg)
    assert again.get_config() == cfg
    ser = S.serialize(sched)
    assert ser == {"class_name": type(sched).__name__, "config": cfg}
    for other in (S.deserialize(json.loads(json.dumps(ser))), S.get(ser)):
        assert type(other) is type(sched) and other.get_config() == cfg
        assert [other(k) for k in (0, 5, 17, 999)] == [sched(k) for k in (0, 5, 17, 999)]
    assert repr(sched).startswith(f"{type(sched).__name__}(")


def test_keras_configs_load():
    """Configs as Keras 3 writes them: module/registered_name keys, name=None,
    Keras' default names."""
    keras_cfg = {"module": "keras.optimizers.schedules", "class_name": "CosineDecay",
                 "config": {"initial_learning_rate": 0.0, "decay_steps": 100, "alpha": 0.0,
                            "name": None, "warmup_target": 0.1, "warmup_steps": 10},
                 "registered_name": None}
    s = S.deserialize(keras_cfg)
    assert s.name == "CosineDecay" and s(10) == pytest.approx(0.1)
    assert S.PiecewiseConstantDecay([1], [1.0, 0.5]).name == "PiecewiseConstant"
    s = S.get({"class_name": "ExponentialDecay",
               "config": {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5,
                          "staircase": False, "name": "ExponentialDecay"}})
    assert s(10) == pytest.approx(0.05)


def test_get():
    kw = dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5)
    for name in ("ExponentialDecay", "exponential_decay", "EXPONENTIALDECAY"):
        s = S.get(name, **kw)
        assert isinstance(s, S.ExponentialDecay) and s(10) == pytest.approx(0.05)
    assert isinstance(S.get("piecewise_constant", boundaries=[1], values=[1.0, 0.1]),
                      S.PiecewiseConstantDecay)
    assert isinstance(S.get("1cycle", max_learning_rate=0.1, total_steps=10), S.OneCycle)
    assert isinstance(S.get("one_cycle", max_learning_rate=0.1, total_steps=10), S.OneCycle)
    inst = S.CosineDecay(0.1, 10)
    assert S.get(inst) is inst
    assert S.get(None) is None
    with pytest.raises(ValueError, match="unknown schedule 'step_decay'"):
        S.get("step_decay")
    with pytest.raises(TypeError, match="get: expected"):
        S.get(0.1)
    with pytest.raises(TypeError, match="go with a schedule name"):
        S.get(inst, alpha=0.5)
    with pytest.raises(TypeError, match="deserialize: expected a dict"):
        S.deserialize({"config": {}})
    with pytest.raises(ValueError, match="unknown schedule 'Nope'"):
        S.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(TypeError, match="serialize: expected"):
        S.serialize(lambda step: 0.1)


def test_custom_subclass():
    class Halving(S.LearningRateSchedule):
        def __init__(self, lr):
            self.lr = lr

        def _value(self, step):
            return self.lr / 2**step

        def get_config(self):
            return {"lr": self.lr}

    s = S.deserialize({"class_name": "Halving", "config": {"lr": 0.8}},
                      custom_objects={"Halving": Halving})
    assert s(3) == 0.1
    with pytest.raises(TypeError, match="Halving: step"):
        s(0.5)
    opt = fd.optimizers.SGD(learning_rate=s)
    p = np.zeros(2)
    opt.apply([np.ones(2)], [p])
    opt.apply([np.ones(2)], [p])
    assert_close(p, [-1.2, -1.2])
    with pytest.raises(NotImplementedError, match="must override"):
        S.LearningRateSchedule()(0)


# --------------------------------------------------------------- bad inputs

E, I, P, C, O = (S.ExponentialDecay, S.InverseTimeDecay, S.PiecewiseConstantDecay,
                 S.CosineDecay, S.OneCycle)
GOOD = {
    E: dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5),
    I: dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5),
    P: dict(boundaries=[10, 20], values=[0.1, 0.05, 0.01]),
    C: dict(initial_learning_rate=0.1, decay_steps=10),
    O: dict(max_learning_rate=0.1, total_steps=10),
}
# (class, argument, bad value, error, text of the value in the message)
BAD = [
    (E, "initial_learning_rate", -0.1, ValueError, "-0.1"),
    (E, "initial_learning_rate", "0.1", TypeError, "'0.1'"),
    (E, "initial_learning_rate", math.inf, ValueError, "inf"),
    (E, "decay_steps", 0, ValueError, "0"),
    (E, "decay_steps", -5, ValueError, "-5"),
    (E, "decay_steps", math.nan, ValueError, "nan"),
    (E, "decay_steps", None, TypeError, "None"),
    (E, "decay_rate", -0.5, ValueError, "-0.5"),
    (E, "staircase", "yes", TypeError, "'yes'"),
    (E, "name", 3, TypeError, "3"),
    (I, "initial_learning_rate", -1.0, ValueError, "-1.0"),
    (I, "decay_steps", 0.0, ValueError, "0.0"),
    (I, "decay_rate", -1, ValueError, "-1"),
    (I, "power", -0.5, ValueError, "-0.5"),
    (I, "power", True, TypeError, "True"),
    (I, "staircase", 1, TypeError, "1"),
    (P, "values", [0.1, 0.05], ValueError, "[0.1, 0.05]"),
    (P, "values", [0.1, -0.05, 0.01], ValueError, "-0.05"),
    (P, "values", [0.1, "a", 0.01], TypeError, "'a'"),
    (P, "values", 0.1, TypeError, "0.1"),
    (P, "boundaries", [20, 10], ValueError, "10"),
    (P, "boundaries", [10, 10], ValueError, "10"),
    (P, "boundaries", [10, math.nan], ValueError, "nan"),
    (P, "boundaries", [10, "20"], TypeError, "'20'"),
    (P, "boundaries", 10, TypeError, "10"),
    (P, "boundaries", "ab", TypeError, "'ab'"),
    (C, "initial_learning_rate", -0.1, ValueError, "-0.1"),
    (C, "decay_steps", 0, ValueError, "0"),
    (C, "alpha", -0.1, ValueError, "-0.1"),
    (C, "alpha", 1.5, ValueError, "1.5"),
    (C, "warmup_target", -0.2, ValueError, "-0.2"),
    (C, "warmup_target", "high", TypeError, "'high'"),
    (C, "warmup_steps", -1, ValueError, "-1"),
    (O, "max_learning_rate", -1.0, ValueError, "-1.0"),
    (O, "total_steps", 0, ValueError, "0"),
    (O, "total_steps", 10.0, TypeError, "10.0"),
    (O, "total_steps", True, TypeError, "True"),
    (O, "pct_start", 0.0, ValueError, "0.0"),
    (O, "pct_start", 1.0, ValueError, "1.0"),
    (O, "pct_start", 1.5, ValueError, "1.5"),
    (O, "div_factor", 0.0, ValueError, "0.0"),
    (O, "final_div_factor", -1.0, ValueError, "-1.0"),
    (O, "anneal_strategy", "exp", ValueError, "'exp'"),
    (O, "anneal_strategy", None, ValueError, "None"),
    (O, "three_phase", 1, TypeError, "1"),
    (O, "cycle_momentum", "no", TypeError, "'no'"),
    (O, "base_momentum", 1.5, ValueError, "1.5"),
    (O, "max_momentum", -0.1, ValueError, "-0.1"),
]


@pytest.mark.parametrize("cls,arg,value,error,shown", BAD,
                         ids=[f"{c.__name__}-{a}-{v!r}" for c, a, v, _, _ in BAD])
def test_bad_inputs(cls, arg, value, error, shown):
    with pytest.raises(error) as info:
        cls(**{**GOOD[cls], arg: value})
    msg = str(info.value)
    assert msg.startswith(f"{cls.__name__}: "), msg
    assert arg in msg and shown in msg, msg


def test_good_inputs_build():
    for cls, kw in GOOD.items():
        assert isinstance(cls(**kw)(0), float)
