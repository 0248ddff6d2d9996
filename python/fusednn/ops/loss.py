"""Fused losses: the loss and its gradient in one kernel call.

Each function returns ``(loss, grad)``:

- ``loss``: the reduced loss, a 0-d float64 array on the device of the
  inputs (a NumPy 0-d array for NumPy inputs, a CuPy 0-d array for CuPy
  inputs). On the GPU the loss is accumulated in device memory and nothing
  waits for it: the call returns as soon as the kernel is queued, and
  ``float(loss)`` reads it (synchronising then, not before).
- ``grad``: the gradient of ``loss`` with respect to the logits (or the
  predictions), of their dtype and shape, ready for ``dense_backward``.

Forward and backward are one pass over the data (one kernel call per
backend), since a loss is the end of the graph and its gradient needs
nothing but what the forward pass has in hand.

Reductions (``reduction=``), with per-sample losses ``l_i`` and sample
weights ``w_i`` (1 without ``sample_weight``):

- ``"sum_over_batch_size"`` (Keras' default; alias ``"mean"``):
  ``loss = sum_i w_i l_i / N``. Like Keras, the divisor is the batch size
  N, not the sum of the weights. PyTorch differs: its ``weight`` argument
  is per class, not per sample, and its ``reduction="mean"`` with class
  weights divides by the sum of the weights of the samples' classes.
- ``"sum"``: ``loss = sum_i w_i l_i``.

Weights must be finite and >= 0. They are cast to the logits' dtype.

Input checks and synchronisation on the GPU: the loss itself never
synchronises, but two checks need values, not just shapes: class labels
in range (``softmax_cross_entropy``, skipped with ``check_labels=False``)
and valid sample weights. They are computed on the device and read back in
one small transfer; with ``check_labels=False`` and no ``sample_weight``, a
call never synchronises. Soft-label values are not checked.

The GPU sums per-block partial losses with atomic additions, so the loss
can differ in the last bits from run to run; the gradient is deterministic.
"""

from __future__ import annotations

import numbers

import numpy as np

from .. import _backend
from .._C import PointLoss
from .._foreign import arrays
from .._validate import c_array, float_array

__all__ = ["mean_squared_error", "sigmoid_binary_cross_entropy", "softmax_cross_entropy"]


# reduction name -> whether the sum is divided by the batch size
_REDUCTIONS = {"sum_over_batch_size": True, "mean": True, "sum": False}


def _is_mean(caller, reduction):
    if isinstance(reduction, str) and reduction in _REDUCTIONS:
        return _REDUCTIONS[reduction]
    raise ValueError(f"{caller}: reduction must be 'sum_over_batch_size' (alias 'mean') or "
                     f"'sum', got {reduction!r}")


def _required(caller, **arrays):
    # backend_for skips None, which is right only for sample_weight.
    for name, a in arrays.items():
        if a is None:
            raise TypeError(f"{caller}: {name} must be a numpy.ndarray or cupy.ndarray, got None")


def _real_kind(caller, name, a, kinds, what):
    if a.dtype.kind not in kinds:
        raise TypeError(f"{caller}: {name} has dtype {a.dtype.name}, expected {what}")


def _sample_weight(caller, w, n, dtype, xp):
    """(w cast to dtype and C-contiguous, mask of invalid weights), or (None, None)."""
    if w is None:
        return None, None
    _real_kind(caller, "sample_weight", w, "iuf", "a real (float or integer) dtype")
    if tuple(w.shape) != (n,):
        raise ValueError(f"{caller}: sample_weight has shape {tuple(w.shape)}, expected ({n},): "
                         f"one weight per sample")
    with np.errstate(over="ignore"):  # an overflow becomes inf, reported below
        wc = c_array(w, xp, dtype)
    # ~(w >= 0) also catches NaN; checked after the cast, so that a weight
    # that overflows the logits' dtype is caught too.
    return wc, ~(wc >= 0) | xp.isinf(wc)


def _weight_error(caller, w, wc, bad, xp):
    i = int(xp.argmax(bad))
    v, vc = float(w[i]), float(wc[i])
    cast = f" (as {wc.dtype.name}: {vc!r})" if v != vc and not np.isnan(v) else ""
    return ValueError(f"{caller}: sample_weight[{i}] = {v!r}{cast} is negative or not finite; "
                      f"sample weights must be finite and >= 0")


def _target(caller, name, a, like, like_name, xp):
    """A label/target array of like's shape, cast to like's dtype, C-contiguous."""
    _real_kind(caller, name, a, "biuf", "a real or bool dtype")
    if tuple(a.shape) != tuple(like.shape):
        raise ValueError(f"{caller}: {name} has shape {tuple(a.shape)}, expected "
                         f"{tuple(like.shape)} (the shape of {like_name})")
    return c_array(a, xp, like.dtype)


def _out_of_range_mask(labels, c):
    """Boolean mask of labels outside [0, c), None when the dtype cannot hold one."""
    info = np.iinfo(labels.dtype)
    bad = labels < 0 if info.min < 0 else None
    if info.max >= c:  # else every value is < c; c is then also safe to compare
        hi = labels >= c
        bad = hi if bad is None else bad | hi
    return bad


@arrays("logits", "labels", "sample_weight")
def softmax_cross_entropy(logits, labels, *, sample_weight=None, label_smoothing=0.0,
                          reduction="sum_over_batch_size", check_labels=True):
    """Softmax cross-entropy of ``logits`` against ``labels``, with its gradient.

    Returns ``(loss, dlogits)`` (see the module docstring: ``loss`` is a 0-d
    float64 array on the inputs' device).

    logits: (N, C) float32 or float64, unnormalised log-probabilities.
    labels: either class indices of shape (N,), any integer dtype, values in
    [0, C) (Keras ``SparseCategoricalCrossentropy(from_logits=True)``, PyTorch
    ``CrossEntropyLoss`` with class targets); or one-hot / soft labels of
    shape (N, C) (Keras ``CategoricalCrossentropy(from_logits=True)``,
    PyTorch with probability targets), cast to the logits' dtype (bool and
    integer one-hot arrays are accepted). A floating array of shape (N,) is
    refused: class indices need an integer dtype.

    With y the label rows (one-hot for class indices), smoothed as
    ``y' = y (1 - eps) + eps / C`` for ``label_smoothing=eps`` (as Keras'
    categorical loss and PyTorch do; Keras' sparse loss has no smoothing):

        l_i = -sum_c y'_ic log softmax(z_i)_c
            = sum_c(y'_ic) logsumexp(z_i) - sum_c y'_ic z_ic
        dloss/dz_i = w_i / D (softmax(z_i) sum_c(y'_ic) - y'_i)

    which is ``logsumexp(z_i) - sum_c y'_ic z_ic`` for labels that sum to 1.
    D is N for ``"sum_over_batch_size"`` and 1 for ``"sum"``. The maximum of
    each row is subtracted before exponentiating and the sums are kept in
    double, so float32 logits of magnitude 1e4 give finite, accurate results.

    check_labels: with True (the default), class indices outside [0, C) raise
    ValueError naming the first bad one; on CuPy this costs one small
    device-to-host read. With False the check is skipped (no
    synchronisation), and a row whose label is out of range gets a NaN loss
    and a NaN gradient row instead: the kernels never index with it.

    A NaN logit gives a NaN loss and a NaN gradient in its row; the other
    rows' gradients are unaffected. So does an infinite logit (inf - inf).
    """
    caller = "softmax_cross_entropy"
    _required(caller, logits=logits, labels=labels)
    mean = _is_mean(caller, reduction)
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(label_smoothing,
                                                                        numbers.Real):
        raise TypeError(f"{caller}: label_smoothing must be a real number, got "
                        f"{type(label_smoothing).__name__}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{caller}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    backend = _backend.backend_for(caller, logits=logits, labels=labels,
                                   sample_weight=sample_weight)
    xp = backend.xp
    logits = float_array(caller, "logits", logits, xp, ndim=2)
    n, c = logits.shape
    if c == 0:
        raise ValueError(f"{caller}: logits has shape {(n, c)}: 0 classes")

    index_labels = y = bad_labels = None
    if labels.ndim == 1:
        if labels.dtype.kind not in "iu":
            raise TypeError(f"{caller}: labels of shape {tuple(labels.shape)} are class indices "
                            f"and need an integer dtype, got {labels.dtype.name}; pass one-hot "
                            f"or soft labels of shape ({n}, {c}) for class probabilities")
        if labels.shape[0] != n:
            raise ValueError(f"{caller}: labels has shape {tuple(labels.shape)}, expected ({n},) "
                             f"(one class index per row of logits)")
        if check_labels and n:
            bad_labels = _out_of_range_mask(labels, c)
        # Other widths are cast, so the kernels take only these two (native,
        # aligned: a byte-swapped or misaligned int32 is copied as well).
        index_labels = c_array(labels, xp, labels.dtype.newbyteorder("=")
                               if labels.dtype.name in ("int32", "int64") else np.int64)
    elif labels.ndim == 2:
        y = _target(caller, "labels", labels, logits, "logits", xp)
    else:
        raise ValueError(f"{caller}: labels has {labels.ndim} dims, expected 1 (class indices "
                         f"of shape ({n},)) or 2 (one-hot or soft labels of shape ({n}, {c}))")

    w, bad_w = _sample_weight(caller, sample_weight, n, logits.dtype, xp)
    checks = [m for m in (bad_labels, bad_w) if m is not None]
    failed = backend.loss_input_flags([m.any() for m in checks])
    if bad_labels is not None and failed.pop(0):
        i = int(xp.argmax(bad_labels))
        raise ValueError(f"{caller}: labels[{i}] = {int(labels[i])} is out of range for {c} "
                         f"classes (row {i} of logits); class indices must be in [0, {c})")
    if bad_w is not None and failed.pop(0):
        raise _weight_error(caller, sample_weight, w, bad_w, xp)
    return backend.softmax_cross_entropy(logits, index_labels, y, w, eps, mean)


def _point_loss(caller, kind, pred, target, pred_name, target_name, sample_weight, reduction):
    _required(caller, **{pred_name: pred, target_name: target})
    mean = _is_mean(caller, reduction)
    backend = _backend.backend_for(caller, **{pred_name: pred, target_name: target},
                              sample_weight=sample_weight)
    xp = backend.xp
    pred = float_array(caller, pred_name, pred, xp)
    if pred.ndim not in (1, 2):
        raise ValueError(f"{caller}: {pred_name} has {pred.ndim} dims, expected 1 (batch,) or "
                         f"2 (batch, outputs)")
    if pred.ndim == 2 and pred.shape[1] == 0:
        raise ValueError(f"{caller}: {pred_name} has shape {tuple(pred.shape)}: 0 outputs per "
                         f"sample")
    target = _target(caller, target_name, target, pred, pred_name, xp)
    w, bad_w = _sample_weight(caller, sample_weight, pred.shape[0], pred.dtype, xp)
    if bad_w is not None and backend.loss_input_flags([bad_w.any()])[0]:
        raise _weight_error(caller, sample_weight, w, bad_w, xp)
    return backend.point_loss(kind, pred, target, w, mean)


@arrays("logits", "labels", "sample_weight")
def sigmoid_binary_cross_entropy(logits, labels, *, sample_weight=None,
                                 reduction="sum_over_batch_size"):
    """Binary cross-entropy on logits, with its gradient.

    Returns ``(loss, dlogits)`` (see the module docstring). As Keras
    ``BinaryCrossentropy(from_logits=True)`` and PyTorch
    ``BCEWithLogitsLoss``.

    logits: (N,) or (N, K) float32/float64; (N,) is N samples of one output.
    labels: the same shape; floating (soft targets in [0, 1], not checked)
    or integer/bool; cast to the logits' dtype. Per element, stably:

        l = max(z, 0) - z y + log1p(exp(-|z|))
        dl/dz = sigmoid(z) - y

    The per-sample loss is the mean over the K outputs (Keras'
    ``binary_crossentropy`` averages over the last axis), then the batch
    reduction: ``dlogits_ik = w_i / (D K) (sigmoid(z_ik) - y_ik)``, D = N
    (``"sum_over_batch_size"``) or 1 (``"sum"``). Unweighted, the default
    equals PyTorch's ``reduction="mean"`` (the mean over all N K elements).

    A NaN logit gives a NaN loss and a NaN gradient at that element.
    """
    return _point_loss("sigmoid_binary_cross_entropy", PointLoss.SigmoidBCE, logits, labels,
                       "logits", "labels", sample_weight, reduction)


@arrays("y_pred", "y_true", "sample_weight")
def mean_squared_error(y_pred, y_true, *, sample_weight=None, reduction="sum_over_batch_size"):
    """Mean squared error, with its gradient with respect to ``y_pred``.

    Returns ``(loss, dy_pred)`` (see the module docstring). As Keras
    ``MeanSquaredError`` and PyTorch ``MSELoss``.

    y_pred: (N,) or (N, K) float32/float64; (N,) is N samples of one output.
    y_true: the same shape, any real or bool dtype, cast to y_pred's dtype.
    The per-sample loss is ``l_i = mean_k (p_ik - t_ik)^2``, then the batch
    reduction: ``dy_pred_ik = w_i 2 (p_ik - t_ik) / (D K)``, D = N
    (``"sum_over_batch_size"``) or 1 (``"sum"``). Unweighted, the default
    equals PyTorch's ``reduction="mean"``.

    A NaN prediction gives a NaN loss and a NaN gradient at that element.
    """
    return _point_loss("mean_squared_error", PointLoss.MSE, y_pred, y_true, "y_pred", "y_true",
                       sample_weight, reduction)
