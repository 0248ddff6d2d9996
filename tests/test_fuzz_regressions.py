"""Inputs the property-based fuzzing (tests/fuzz) found mishandled,
kept as plain tests. Each comment names what was wrong before the fix."""

import math

import numpy as np
import pytest

import fusednn as fd
from fusednn.testing import reference as R


def _unaligned(a):
    """a's values as a view at byte offset 1 of a uint8 buffer."""
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    v = buf[1:].view(a.dtype).reshape(a.shape)
    v[...] = a
    assert a.size == 0 or not v.flags.aligned
    return v


# ------------------------------------------------------- wrong Python types

@pytest.mark.parametrize("call,name", [
    # AttributeError: 'NoneType' object has no attribute 'dtype'
    (lambda: fd.ops.activation_forward(None, "relu"), "x"),
    (lambda: fd.ops.dropout_forward(None, 0.5, seed=0, step=0), "x"),
    (lambda: fd.ops.dropout_forward(None, 0.5, seed=0, step=0, training=False), "x"),
    (lambda: fd.ops.softmax_cross_entropy(None, np.zeros(1, np.int64)), "logits"),
    (lambda: fd.ops.dropout_backward(None, fd.ops.dropout_forward(
        np.ones(3, np.float32), 0.5, seed=0, step=0)[1]), "dy"),
    (lambda: fd.ops.batchnorm_forward(np.ones((2, 2)), "gamma", None, None, None,
                                      training=True), "gamma"),
])
def test_none_and_strings_name_the_argument(call, name):
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        call()


# ------------------------------------------- misaligned and byte-swapped data

def test_misaligned_and_byteswapped_inputs_are_read():
    # The kernels refused them naming their own parameters ("z: is not
    # aligned to its element size", "z: dtype >f4 unsupported", "target:",
    # "labels: dtype >i4 unsupported") instead of the arguments, for inputs
    # that are only read and can be copied like non-contiguous ones.
    x = np.linspace(-2, 2, 10, dtype=np.float32).reshape(2, 5)
    for v in (_unaligned(x), x.astype(">f4")):
        y, _ = fd.ops.activation_forward(v, "elu")
        np.testing.assert_array_equal(y, fd.ops.activation_forward(x, "elu")[0])
        np.testing.assert_array_equal(fd.ops.mean_squared_error(x, v)[1],
                                      fd.ops.mean_squared_error(x, x)[1])
        y, _ = fd.ops.batchnorm_forward(x, v[0], v[1], None, None, training=True)
        np.testing.assert_array_equal(
            y, fd.ops.batchnorm_forward(x, x[0], x[1], None, None, training=True)[0])
    labels = np.array([1, 0], dtype=np.int32)
    for lab in (_unaligned(labels), labels.astype(">i4")):
        np.testing.assert_array_equal(fd.ops.softmax_cross_entropy(x, lab)[1],
                                      fd.ops.softmax_cross_entropy(x, labels)[1])
    w = np.array([1.0, 2.0], np.float32)
    np.testing.assert_array_equal(fd.ops.mean_squared_error(x, x, sample_weight=_unaligned(w))[1],
                                  fd.ops.mean_squared_error(x, x, sample_weight=w)[1])


def test_sequential_reads_misaligned_data():
    # fit / predict passed a misaligned x to the compiled forward, which
    # refused it ("x: is not aligned to its element size").
    model = fd.Sequential([fd.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 3), np.float64)
    model.fit(_unaligned(x), np.zeros((4, 2)), epochs=1, verbose=0)
    np.testing.assert_array_equal(model.predict(_unaligned(x)), model.predict(x))


def test_updated_in_place_misaligned_or_byteswapped_is_refused_by_name():
    # Moving statistics: a byte-swapped one was "dtype float32, expected
    # float32" (TypeError), a misaligned one refused by the kernels. Both are
    # updated in place and cannot be copied: ValueError naming them.
    x = np.ones((3, 2), np.float32)
    for mm in (_unaligned(np.zeros(2, np.float32)), np.zeros(2, ">f4")):
        with pytest.raises(ValueError, match=r"moving_mean is (misaligned|byte-swapped)"):
            fd.ops.batchnorm_forward(x, None, None, mm, np.ones(2, np.float32), training=True)
    # Parameters: likewise ("params[0]: dtype >f4 unsupported" from the kernels).
    for p in (_unaligned(np.zeros(3, np.float32)), np.zeros(3, ">f4")):
        with pytest.raises(ValueError, match=r"params\[0\] is (misaligned|byte-swapped)"):
            fd.optimizers.SGD().apply([np.ones(3, np.float32)], [p])


def test_optimizer_reads_byteswapped_and_misaligned_gradients():
    # A byte-swapped gradient was a TypeError ("grads[0] has dtype float32 but
    # params[0] has float32"), a misaligned one refused by the kernels.
    g = np.array([1.0, -2.0, 0.5], np.float32)
    for gv in (g.astype(">f4"), _unaligned(g)):
        p, q = np.zeros(3, np.float32), np.zeros(3, np.float32)
        fd.optimizers.Adam().apply([gv], [p])
        fd.optimizers.Adam().apply([g], [q])
        np.testing.assert_array_equal(p, q)


# ------------------------------------------------------------- sizes

@pytest.mark.parametrize("n", [2**63, 2**64, 2**63 - 1, 2**63 - 31, np.uint64(2**64 - 1)])
def test_dropout_mask_refuses_counts_beyond_int64(n):
    # n >= 2**63 was pybind11's "incompatible function arguments" (not naming
    # n); n within 31 of 2**63 overflowed (n + 31) / 32 in int64 in the
    # kernels' word count (undefined behaviour, a negative size).
    with pytest.raises(ValueError, match=r"\bn must be in"):
        fd.ops.dropout_mask(n, 0.5, seed=0, step=0)


def test_dropout_mask_at_the_limit_fails_to_allocate_cleanly():
    with pytest.raises(MemoryError):
        fd.ops.dropout_mask(2**63 - 32, 0.5, seed=0, step=0)


# ------------------------------------------------------------- numerics

@pytest.mark.parametrize("z", [1e13, 3.4e38, -1e13, -3.4e38])
def test_gelu_tanh_derivative_saturates_in_float32(z):
    # z * du overflowed float32 (|z| > ~1e13) and met sigma (1 - sigma) = 0:
    # inf * 0 = NaN instead of the derivative's limit (1 or 0).
    x = np.array([z], np.float32)
    _, ctx = fd.ops.activation_forward(x, "gelu", approximate=True)
    dx = fd.ops.activation_backward(np.ones(1, np.float32), ctx)
    assert dx[0] == (1.0 if z > 0 else 0.0)


@pytest.mark.parametrize("beta,z", [(2.0, 3e38), (2.0, -3e38), (1e5, 1e35)])
def test_swish_derivative_saturates_in_float32(beta, z):
    # beta * z overflowed float32 where sigma (1 - sigma) is 0: inf * 0 = NaN.
    x = np.array([z], np.float32)
    _, ctx = fd.ops.activation_forward(x, "swish", beta=beta)
    dx = fd.ops.activation_backward(np.ones(1, np.float32), ctx)
    ref = R.activation_grad(np.array([z], np.float64), "swish", beta=beta)
    assert dx[0] == np.float32(ref[0])


def test_dense_swish_saturates_where_beta_z_overflows_float64():
    # Found by the release fuzz run: the fused dense backward at a finite z
    # whose beta * z overflows float64 takes swish's saturated derivative (1
    # for z > 0), so dy = 0 gives dw = 0, not inf * 0 = NaN.
    x, w = np.array([[4.0]]), np.array([[157458.0]])
    beta = 2.8542422977275146e+302
    y, ctx = fd.ops.dense_forward(x, w, None, "swish", beta=beta)
    assert y[0, 0] == 4.0 * 157458.0
    dx, dw, _ = fd.ops.dense_backward(np.zeros((1, 1)), ctx)
    assert dx[0, 0] == 0.0 and dw[0, 0] == 0.0
    dx, dw, _ = fd.ops.dense_backward(np.ones((1, 1)), ctx)
    assert dx[0, 0] == 157458.0 and dw[0, 0] == 4.0


def test_dense_relu_at_an_underflowed_z_takes_the_side_of_its_output():
    # Found by the release fuzz run: x w = 5e-46 > 0 rounds to 0 in float32
    # (below the subnormals), so relu(z) = 0 and relu'(0) = 0: the gradient
    # must agree with the output the kernel computed (y = 0 -> dw = 0).
    x, w = np.array([[-0.125]], np.float32), np.array([[-4e-45]], np.float32)
    y, ctx = fd.ops.dense_forward(x, w, np.zeros(1, np.float32), "relu")
    assert y[0, 0] == 0.0
    dx, dw, db = fd.ops.dense_backward(np.ones((1, 1), np.float32), ctx)
    assert dw[0, 0] == 0.0 and db[0] == 0.0 and dx[0, 0] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_constant_batch_has_no_variance(dtype):
    # Found by the release fuzz run (the check was the reference's, which is
    # off by (eps * mean)^2 there): the batch variance of a constant column
    # is 0 within that bound, so the moving variance and x_hat are too.
    x = np.full((5, 1), 3.5462142725, dtype)
    mm, mv = np.zeros(1, dtype), np.zeros(1, dtype)
    y, _ = fd.ops.batchnorm_forward(x, None, None, mm, mv, training=True, momentum=0.0)
    bound = (np.finfo(dtype).eps * 3.55) ** 2
    assert 0.0 <= mv[0] <= bound
    assert mm[0] == pytest.approx(3.5462142725, rel=float(np.finfo(dtype).eps) * 4)
    assert np.all(np.abs(y) <= np.finfo(dtype).eps * 4 * 3.55 / np.sqrt(1e-3))


def test_centered_rmsprop_rounds_as_the_formula_at_every_level():
    # Found by the release fuzz run: with a contracted FMA (the AVX2 and
    # AVX-512 levels) v - a^2 was the rounding error of a^2 instead of 0 for
    # rho = 0, and against epsilon = 1e-7 that moved the third step by 3e-3
    # relative; the baseline level gave the formula's value. Now every level
    # (CI runs this file at two) steps as the float64 formula, bit for bit.
    cfg = dict(rho=0.0, centered=True, learning_rate=0.1)
    p, g = np.zeros(()), np.ones(())
    opt = fd.optimizers.RMSprop(**cfg)
    ref = [np.zeros(())]
    state = R.optimizer_init("RMSprop", cfg, ref)
    for k in range(3):
        opt.apply([g], [p], penalties=[(0.0, 0.1)])
        ref, state = R.optimizer_step("RMSprop", cfg, [g], ref, state, k, penalties=[(0.0, 0.1)])
        assert float(p) == float(ref[0]), (k, float(p), float(ref[0]))


def test_float32_data_uses_the_parameter_rounded_to_float32():
    # Found by the ci fuzz run (the check used the float64 alpha): a
    # leaky_relu alpha of 5e-324 is 0 in float32, so -inf maps to 0 * -inf =
    # NaN there, as the reference with alpha rounded to float32 gives.
    x = np.array([-np.inf, -2.0, 3.0], np.float32)
    y, _ = fd.ops.activation_forward(x, "leaky_relu", alpha=5e-324)
    with np.errstate(invalid="ignore"):
        ref = R.activation(x, "leaky_relu", alpha=float(np.float32(5e-324)))
    np.testing.assert_array_equal(y, ref.astype(np.float32))


def test_infinite_inputs_keep_the_formulas_nan():
    # The saturation fixes above must not turn an infinite input's inf * 0
    # (the formula's NaN, which the reference gives too) into a number.
    x = np.array([np.inf, -np.inf], np.float32)
    for name, kw in (("gelu", {"approximate": True}), ("swish", {})):
        _, ctx = fd.ops.activation_forward(x, name, **kw)
        assert np.isnan(fd.ops.activation_backward(np.ones(2, np.float32), ctx)).all()


@pytest.mark.parametrize("op", ["activation", "dense", "batchnorm"])
def test_activation_parameter_beyond_float32_is_refused(op):
    # leaky_relu's alpha = 1e300 became inf in the float32 kernel: leaky_relu(0)
    # = inf * 0 = NaN where the reference gives 0.
    x = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"\balpha=1e\+300 is beyond the range of float32"):
        if op == "activation":
            fd.ops.activation_forward(x, "leaky_relu", alpha=1e300)
        elif op == "dense":
            fd.ops.dense_forward(x, np.ones((2, 2), np.float32), None, "leaky_relu", alpha=1e300)
        else:
            fd.ops.batchnorm_forward(x, None, None, None, None, training=True,
                                     activation="leaky_relu", alpha=1e300)
    y, _ = fd.ops.activation_forward(x.astype(np.float64), "leaky_relu", alpha=1e300)
    assert (y == 0).all()  # float64 holds it


def test_softmax_masked_class_with_label_rows():
    # A -inf logit is a masked class: with class indices the loss was finite,
    # with the same labels as one-hot rows NaN (0 * -inf in the label sum).
    z = np.array([[-np.inf, 0.0, 1.0]], np.float32)
    by_index = fd.ops.softmax_cross_entropy(z, np.array([2]))
    by_rows = fd.ops.softmax_cross_entropy(z, np.array([[0.0, 0.0, 1.0]], np.float32))
    assert math.isfinite(float(by_index[0]))
    assert float(by_rows[0]) == pytest.approx(float(by_index[0]), rel=1e-6)
    np.testing.assert_allclose(by_rows[1], by_index[1], rtol=1e-6)
    # an all-zero label row adds nothing (it was NaN)
    assert float(fd.ops.softmax_cross_entropy(z, np.zeros((1, 3), np.float32))[0]) == 0.0


def test_softmax_full_smoothing_of_a_masked_class_is_inf():
    # label_smoothing=1 puts mass 1/C on the -inf class: the loss is +inf; it
    # was NaN ((1 - eps) * -inf with eps = 1).
    z = np.array([[-np.inf, 0.0]], np.float32)
    loss, _ = fd.ops.softmax_cross_entropy(z, np.array([0]), label_smoothing=1.0)
    assert float(loss) == math.inf


@pytest.mark.parametrize("clip", [{"clipnorm": 1.0}, {"global_clipnorm": 1.0},
                                  {"clipvalue": 1.0}])
def test_clipping_ignores_a_nan_parameter_without_penalty(clip):
    # Without a penalty the norm took 0 * p for every element: a NaN (or inf)
    # parameter made the norm NaN, and then every element of the tensor (with
    # global_clipnorm, of every tensor). clipvalue turned an inf parameter NaN.
    p = [np.array([np.nan, 1.0, 2.0], np.float32), np.array([np.inf, 3.0], np.float32)]
    g = [np.array([0.5, 0.5, 0.5], np.float32), np.array([0.1, -0.1], np.float32)]
    ref_p, _ = R.optimizer_step("SGD", clip, g, p, R.optimizer_init("SGD", clip, p), 0)
    fd.optimizers.SGD(**clip).apply(g, p)
    for got, want in zip(p, ref_p):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_optimizer_scalars_beyond_float32_are_refused():
    # learning_rate 3.5e38 is inf in the float32 kernels: a zero gradient's
    # step was inf * 0 = NaN.
    p = [np.zeros(2, np.float32)]
    with pytest.raises(ValueError, match=r"learning_rate=3\.5e\+38 is beyond the range"):
        fd.optimizers.Adagrad(learning_rate=3.5e38).apply([np.zeros(2, np.float32)], p)
    assert (p[0] == 0).all()
    q = [np.zeros(2)]
    fd.optimizers.Adagrad(learning_rate=3.5e38).apply([np.zeros(2)], q)  # float64 holds it
    assert (q[0] == 0).all()


# ------------------------------------------------------------- aliasing

def test_optimizer_refuses_a_parameter_that_is_another_tensors_gradient():
    # grads[0] is params[1]: the step read params[1] after or before its
    # update depending on the chunking: a silent, order-dependent result.
    a, b = np.ones(4, np.float32), np.full(4, 2.0, np.float32)
    with pytest.raises(ValueError, match=r"params\[1\]: shares memory with grads\[0\]"):
        fd.optimizers.SGD().apply([b, np.ones(4, np.float32)], [a, b])
    assert (a == 1).all() and (b == 2).all()


def test_optimizer_refuses_a_parameter_twice():
    p = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"params\[1\] is params\[0\]"):
        fd.optimizers.Adam().apply([np.ones(4, np.float32)] * 2, [p, p])
    q = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"params\[\d\]"):  # overlapping views, one copied
        fd.optimizers.Adam().apply([np.ones(4, np.float32), np.ones(4, np.float32)],
                                   [q[0], q[:, 0]])


def test_optimizer_steps_a_parameter_passed_as_its_own_gradient():
    p = np.array([1.0, -2.0, 3.0], np.float32)
    ref, _ = R.optimizer_step("SGD", {}, [p.copy()], [p.copy()],
                              R.optimizer_init("SGD", {}, [p]), 0)
    fd.optimizers.SGD().apply([p], [p])
    np.testing.assert_allclose(p, ref[0], rtol=1e-6)


def test_optimizer_kernel_errors_name_the_callers_tensor():
    # The kernels number the tensors they get (frozen and empty ones left
    # out): an error about their tensor 0 named params[0] for the caller's
    # params[2].
    p = [np.ones(2, np.float32), np.zeros(0, np.float32), np.ones(2, np.float32)]
    g = [np.ones(2, np.float32), np.zeros(0, np.float32), p[0]]
    with pytest.raises(ValueError, match=r"params\[0\]: shares memory with grads\[2\]"):
        fd.optimizers.SGD().apply(g, p, trainable=[True, True, True])


# ------------------------------------------------------------- messages

def test_fit_names_x_for_zero_features_and_an_empty_training_split():
    model = fd.Sequential([fd.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    # was "Sequential.build: input_dim must be an int >= 1 ..., got 0"
    with pytest.raises(ValueError, match=r"Sequential\.fit: x has 0 features"):
        model.fit(np.zeros((3, 0)), np.zeros((3, 2)), verbose=0)
    # was "Sequential.fit: no training samples", naming nothing
    with pytest.raises(ValueError, match=r"x has 1 sample\(s\) once validation_split=0\.25"):
        model.fit(np.zeros((1, 3)), np.zeros((1, 2)), validation_split=0.25, verbose=0)


def test_load_refuses_a_nul_byte_in_the_path(tmp_path):
    # was FileNotFoundError "no such file"; no file system has such a name
    with pytest.raises(ValueError, match=r"path contains a NUL byte"):
        fd.models.load(str(tmp_path / "m.safetensors") + "\x00x")


# ------------------------------------------- found by the release fuzz runs

def test_optimizer_refuses_one_torch_tensor_passed_twice():
    # Each torch tensor becomes a NumPy view of its own, so the same tensor
    # twice passed the identity check: now the memory is compared.
    torch = pytest.importorskip("torch")
    t = torch.zeros(3)
    with pytest.raises(ValueError, match=r"params\[1\] is params\[0\]"):
        fd.optimizers.Adagrad().apply([torch.ones(3), torch.ones(3)], [t, t],
                                      trainable=[False, False])


def test_optimizer_refuses_a_copied_parameter_that_is_another_gradient():
    # params[1] (Fortran order, stepped through a copy) was also grads[0]:
    # the write-back changed grads[0] after the kernels had read it.
    p0 = np.zeros((2, 3), np.float32)
    p1 = np.asfortranarray(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"params\[1\] shares memory with grads\[0\]"):
        fd.optimizers.Ftrl(learning_rate=0.01).apply([p1, np.ones((2, 3), np.float32)], [p0, p1])
    np.testing.assert_array_equal(p1, 1.0)


def test_float32_parameters_refuse_an_epsilon_that_is_0_there():
    # epsilon=1e-300 is 0 in float32: a zero gradient stepped by 0 / 0 = NaN.
    p = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"epsilon=1e-300 is 0 in float32"):
        fd.optimizers.Adam(learning_rate=0.0, epsilon=1e-300).apply([np.zeros(3, np.float32)],
                                                                     [p])
    assert not np.isnan(p).any()
    q = np.zeros(3)
    fd.optimizers.Adam(learning_rate=0.0, epsilon=1e-300).apply([np.zeros(3)], [q])
    np.testing.assert_array_equal(q, 0.0)  # float64 holds it


@pytest.mark.parametrize("convention", [[], {}, ["keras"]])
def test_batchnorm_convention_of_an_unhashable_type_names_it(convention):
    # TypeError: unhashable type: 'list', from the lookup, naming nothing.
    x = np.zeros((2, 1), np.float32)
    with pytest.raises(ValueError, match=r"convention must be 'keras' or 'torch'"):
        fd.ops.batchnorm_forward(x, None, None, np.zeros(1, np.float32), np.ones(1, np.float32),
                                 training=False, convention=convention)


def test_a_zero_penalty_term_is_left_out():
    # As Keras' L1L2 leaves out a zero term: (l1, 0) on an infinite parameter
    # added 2 * 0 * inf = NaN to its gradient; (0, 0) already added nothing.
    for pen in [(0.0, 0.0), (0.01, 0.0), (0.0, 0.1)]:
        p = [np.array([-np.inf, 1.0], np.float32)]
        g = [np.array([np.inf, 0.5], np.float32)]
        cfg = {"learning_rate": 0.001}
        with np.errstate(invalid="ignore"):
            ref, _ = R.optimizer_step("SGD", cfg, g, p, R.optimizer_init("SGD", cfg, p), 0,
                                      penalties=[pen])
        fd.optimizers.SGD(**cfg).apply(g, p, penalties=[pen])
        np.testing.assert_allclose(p[0], ref[0].astype(np.float32), rtol=1e-6)
        assert (np.isnan(p[0]) == np.isnan(ref[0])).all(), pen


def test_leaky_relu_without_slope_is_nan_at_minus_inf_forward_and_backward():
    # alpha = 0: f(-inf) = 0 * -inf = NaN, and the backward, which reads that
    # output, carries the NaN on (the check took the reference's f' = 0).
    x = np.array([-np.inf, -1.0, 2.0], np.float32)
    y, ctx = fd.ops.activation_forward(x, "leaky_relu", alpha=0.0)
    dx = fd.ops.activation_backward(np.zeros(3, np.float32), ctx)
    assert np.isnan(y[0]) and np.isnan(dx[0])
    np.testing.assert_array_equal(y[1:], [0.0, 2.0])
    np.testing.assert_array_equal(dx[1:], [0.0, 0.0])


def test_l1_penalty_on_a_nan_parameter_is_nan_as_the_reference():
    # Found by the ci fuzz run: the kernels' sign(NaN) was 0, so an L1 penalty
    # on a NaN parameter added nothing and clipnorm's norm stayed finite;
    # np.sign (and Keras' ops.sign) give NaN, which the norm then carries.
    cfg = {"learning_rate": 0.0, "clipnorm": 0.001}
    p = [np.zeros(3, np.float32)]
    g = [np.array([np.inf, 0.0, 0.0], np.float32)]
    ref = [x.astype(np.float64) for x in p]
    state = R.optimizer_init("Adagrad", cfg, ref)
    opt = fd.optimizers.Adagrad(**cfg)
    for k in range(2):
        with np.errstate(invalid="ignore"):
            ref, state = R.optimizer_step("Adagrad", cfg, g, ref, state, k,
                                          penalties=[(0.01, 0.0)])
        opt.apply(g, p, penalties=[(0.01, 0.0)])
        np.testing.assert_array_equal(np.isnan(p[0]), np.isnan(ref[0]), err_msg=f"step {k}")
    assert np.isnan(p[0]).all()


def test_tanh_derivative_comes_from_the_rounded_output():
    # Found by the sixth release run (the check's error): tanh(10) is 1 in
    # float32, and f' = 1 - y^2 (from the output, as torch computes it) is 0
    # there, so an infinite dy gives NaN, not the float64 reference's inf;
    # finite dy gives 0, within float32's rounding of f'(10) = 8.2e-9.
    y, ctx = fd.ops.activation_forward(np.array([10.0, 0.5], np.float32), "tanh")
    assert y[0] == 1.0
    dx = fd.ops.activation_backward(np.array([np.inf, 1.0], np.float32), ctx)
    assert np.isnan(dx[0])
    assert dx[1] == pytest.approx(1 - np.tanh(0.5) ** 2, rel=1e-6)
