"""scikit-learn estimators: ``FusedClassifier`` and ``FusedRegressor``.

Dense networks trained by ``fd.Sequential.fit``, behind the estimator API of
``MLPClassifier`` / ``MLPRegressor``, so they go into ``Pipeline``,
``GridSearchCV``, ``cross_val_score`` and ``clone``, take pandas DataFrames,
and pass ``sklearn.utils.estimator_checks.check_estimator`` (with the
expected failures that ``expected_failed_checks()`` lists and explains)::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from fusednn.sklearn import FusedClassifier

    clf = make_pipeline(StandardScaler(), FusedClassifier(random_state=0))
    clf.fit(X_train, y_train).score(X_test, y_test)

This module imports scikit-learn; ``import fusednn`` does not import it.

Persistence: a fitted estimator pickles (scikit-learn's way of saving a
model, e.g. ``joblib.dump``) by carrying its network as the bytes of the
safetensors file ``Sequential.save`` writes, read back by
``fd.models.load``, which never unpickles. Unpickle only files you trust, as
always with pickle.
"""

from __future__ import annotations

import numbers
import os
import tempfile
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_array, check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, check_X_y

from . import callbacks as _callbacks
from . import initializers as _initializers
from . import layers as _layers
from . import optimizers as _optimizers
from . import regularizers as _regularizers
from . import activations as _activations
from ._frames import frame_values
from .models import Sequential, load as _load_model

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # older: the same work as methods of BaseEstimator
    _sk_validate_data = None

__all__ = ["FusedClassifier", "FusedRegressor", "expected_failed_checks"]

_PRESETS = (None, "default", "selu")
# scikit-learn's activation names for MLPClassifier, accepted beside fusednn's
_MLP_ACTIVATIONS = {"logistic": "sigmoid", "identity": "linear"}
# the epochs of an MLP when neither max_iter nor epochs is given (its default max_iter)
_DEFAULT_MAX_ITER = 200
# batch_size="auto": min(200, n_samples), as MLPClassifier
_AUTO_BATCH = 200
# BatchNormalization's momentum here. Keras' 0.99 needs a few hundred steps
# before the moving statistics forget their start (0.99**300 = 5%), which an
# estimator on a small data set never takes (one step per epoch below 200
# samples); 0.9 (PyTorch's default, momentum 0.1 in its convention) forgets
# it in about 30 steps.
_BN_MOMENTUM = 0.9
_PREDICT_BATCH = 4096

_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "mini-batch training with shuffling: a sample repeated k times lands in other "
        "batches than one weighted k, the batches' means differ, and so do the fitted "
        "weights (a zero weight is exact: such samples are removed before training)"),
}


def expected_failed_checks(estimator=None) -> dict:
    """``{check name: reason}`` of the ``check_estimator`` checks these
    estimators are known to fail, for ``check_estimator(...,
    expected_failed_checks=expected_failed_checks())`` (scikit-learn >=
    1.6; older versions read them from the ``_xfail_checks`` tag)."""
    return dict(_FAILED_CHECKS)


# ------------------------------------------------------------------ checks

def _check_int(caller, name, value, low, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{caller}: {name} must be an int >= {low}"
                        f"{' or None' if allow_none else ''}, got {value!r}")
    if value < low:
        raise ValueError(f"{caller}: {name} must be an int >= {low}"
                         f"{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def _check_number(caller, name, value, low, high=None, low_open=False, high_open=False):
    interval = f"{'(' if low_open else '['}{low}, " + \
        (f"{high}{')' if high_open else ']'}" if high is not None else "inf)")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{caller}: {name} must be a number in {interval}, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < low or (low_open and v == low) or \
            (high is not None and (v > high or (high_open and v == high))):
        raise ValueError(f"{caller}: {name} must be in {interval}, got {value!r}")
    return v


def _check_bool(caller, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{caller}: {name} must be True or False, got {value!r}")
    return bool(value)


def _seed(base, *key) -> int:
    """A seed in [0, 2**63) for one use (`key`: a layer, the shuffling, the
    split) drawn from the estimator's base seed: independent streams per use,
    the same for the same random_state in every process."""
    state = np.random.SeedSequence([base, *key]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def _validate(est, X, y="no_validation", *, reset, skip_check_array=False, **check_params):
    """scikit-learn's ``validate_data`` (feature names, ``n_features_in_``,
    check_array / check_X_y) on any supported scikit-learn version."""
    if _sk_validate_data is not None:
        return _sk_validate_data(est, X, y, reset=reset, skip_check_array=skip_check_array,
                                 **check_params)
    if skip_check_array:
        est._check_feature_names(X, reset=reset)
        est._check_n_features(X, reset=reset)
        return X
    return est._validate_data(X, y, reset=reset, **check_params)


def _encode(y):
    """(classes, index of each label in classes): classes sorted where the
    labels can be ordered (scikit-learn's LabelEncoder), else in the order
    of first appearance (hashable objects without an order)."""
    try:
        return np.unique(y, return_inverse=True)
    except TypeError:
        index: dict = {}
        codes = np.fromiter((index.setdefault(v, len(index)) for v in y), dtype=np.intp,
                            count=len(y))
        classes = np.empty(len(index), dtype=object)
        classes[:] = list(index)
        return classes, codes


# The parameters and attributes both estimators document ({model}: the
# scikit-learn estimator whose meaning they keep; {score}: early stopping's).
_PARAMETERS = """\
    hidden_layer_sizes : int or sequence of int, default={hidden}
        Units of each hidden layer. ``()``: no hidden layer (a linear
        model).{defaults}
    activation : str or None, default=None
        Hidden activation, a name of fd.activations (relu, leaky_relu, elu,
        selu, gelu, swish, mish, tanh, sigmoid, ...; {model}'s "logistic"
        and "identity" too). None: the preset's (relu without a preset, as
        {model}; elu for "default"; selu for "selu").
    preset : {{None, "default", "selu"}}, default=None
        The chapter's default configurations (fd.presets). None is
        {model}'s network (glorot_uniform kernels, relu, no batch norm);
        "default" is fd.presets.default_dnn's (he_normal kernels, ELU, batch
        normalisation before each activation); "selu" is
        fd.presets.self_normalizing_dnn's (lecun_normal kernels, SELU, no
        batch norm, AlphaDropout when dropout > 0; standardise the inputs).
        ``optimizer`` stays as given (the table's would be "nadam" for
        "default", Nesterov SGD for "selu").
    batch_norm : bool or None, default=None
        BatchNormalization between each hidden Dense (then without bias) and
        its activation, with momentum 0.9 (Keras' 0.99 needs hundreds of
        steps to forget the moving statistics' start, more than small data
        sets give). None: the preset's (True for "default" only).
    dropout : float in [0, 1) or None, default={dropout}
        Dropout rate after each hidden block (AlphaDropout under "selu"),
        its masks seeded from random_state.
        None: {dropout_none}.
    optimizer : str or fd.optimizers.Optimizer, default="adam"
        A fusednn optimizer by name ("adam", "nadam", "sgd", "rmsprop",
        "adamw", ...) with its Keras defaults, or an instance, of which each
        fit trains a fresh copy (the instance is left unchanged). Adam with
        learning rate 1e-3 is {model}'s default solver.
    learning_rate : float, fd.schedules schedule or None, default=None
        The optimizer's learning rate (Keras' name; {model}'s
        ``learning_rate_init``). None: the optimizer's own (1e-3 for Adam).
    batch_size : int or "auto", default={batch}
        Mini-batch size; "auto" is min(200, n_samples), as {model}.
    max_iter : int or None, default=None
        {model}'s name: at most this many epochs. Training stops earlier
        when the training loss (with early_stopping: the validation
        {score}) has not improved on its best so far by more than ``tol``
        for ``n_iter_no_change + 1`` epochs in a row ({model}'s rule: the
        best follows every gain, however small), and a ConvergenceWarning
        says when the epochs ran out first. None (with epochs None): 200.
    epochs : int or None, default=None
        Keras' name: exactly this many epochs (no stop on the training
        loss; early_stopping still applies). Give max_iter or epochs, not
        both: fit raises ValueError.
    tol : float >= 0, default=1e-4
        The improvement that counts for the stops above.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the samples{stratified} and stop
        when their {score} has not improved by more than tol for
        n_iter_no_change + 1 epochs; the weights of the best epoch are kept
        ({model}'s rule). Not with partial_fit.
    validation_fraction : float in (0, 1), default=0.1
        The held-out fraction for early_stopping.
    n_iter_no_change : int >= 1, default=10
        Epochs without improvement that are tolerated ({model}'s).
    alpha : float >= 0, default=1e-4
        L2 penalty of the kernels, {model}'s meaning: alpha / (2 *
        batch_size) * sum(W**2) added to each batch's mean loss
        (``fd.regularizers.L2(alpha / (2 * batch_size))`` on every Dense).
    shuffle : bool, default=True
        Shuffle the samples each epoch (from random_state).
    random_state : int, RandomState or None, default=None
        Seeds the kernels, the dropout masks, the shuffling and the
        early-stopping split: an int gives the same fit every time, in
        every process (GridSearchCV with n_jobs=2 equals n_jobs=1).
    verbose : int or bool, default=0
        Sequential.fit's verbose: 0 silent, 1 a progress bar per epoch, 2
        (or True) one line per epoch.
"""

_WEIGHTS = """
    sample_weight (fit, partial_fit, score) multiplies each sample's loss in
    ``Sequential.fit``, whose batch loss is sum(w_i * loss_i) / batch_size.
    Samples of weight 0 are removed first, so a zero weight is exactly
    leaving the sample out (also from batch-norm statistics and the
    early-stopping split); the other weights are divided by their mean, so
    multiplying all weights by a constant changes nothing.
"""

_ATTRIBUTES = """\
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When X was a DataFrame with string column names (scikit-learn then
        checks the names of the X given to predict and score).
    n_iter_ : int
        Epochs trained (partial_fit adds one per call).
    loss_curve_ : list of float
        The training loss of each epoch, L2 penalty included; ``loss_`` is
        the last, ``best_loss_`` the lowest (None with early_stopping).
    validation_scores_, best_validation_score_ : list of float, float
        The held-out {score} of each epoch and the best (None without
        early_stopping).
    t_ : int
        Training samples seen.
"""


class _ValidationScore(_callbacks.Callback):
    """Puts the score of the held-out samples (accuracy or R², weighted by
    their sample_weight) into the epoch's logs as ``val_score``, for the
    EarlyStopping that follows it."""

    def __init__(self, score):
        super().__init__()
        self.score = score

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["val_score"] = self.score(self.model)


class _NoImprovementStop(_callbacks.Callback):
    """MLPClassifier's stop (scikit-learn's ``_update_no_improvement_count``)
    on ``logs[monitor]``: an epoch counts as no improvement when its value is
    not better than the best so far by more than ``tol``; the best follows
    every better value, by however little (fd.callbacks.EarlyStopping, as
    Keras', moves it only by more than min_delta, so many small gains in a
    row count there as one improvement and training runs on); after
    ``n_iter_no_change + 1`` such epochs in a row training stops. With
    ``restore``, the weights of the best epoch are put back when training
    ends, stopped or not (MLPClassifier's early_stopping)."""

    def __init__(self, monitor, mode, tol, n_iter_no_change, restore=False):
        super().__init__()
        self.monitor, self.tol, self.n_iter_no_change = monitor, tol, n_iter_no_change
        self.sign = 1.0 if mode == "min" else -1.0  # compared as sign * value, lower better
        self.restore = restore
        self.best, self.count, self.best_weights = np.inf, 0, None

    def on_train_begin(self, logs=None):
        self.best, self.count, self.best_weights = np.inf, 0, None

    def on_epoch_end(self, epoch, logs=None):
        value = self.sign * float(logs[self.monitor])
        self.count = self.count + 1 if value > self.best - self.tol else 0
        if value < self.best:
            self.best = value
            if self.restore:
                self.best_weights = self.model.get_weights()
        if self.count > self.n_iter_no_change:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


# ------------------------------------------------------------- estimators

class _FusedEstimator(BaseEstimator):
    """What FusedClassifier and FusedRegressor share: the parameters, the
    network, the fit loop, pickling. Subclasses define the loss, the output
    layer and the targets."""

    def __init__(self, hidden_layer_sizes=(100,), activation=None, *, preset=None,
                 batch_norm=None, dropout=0.0, optimizer="adam", learning_rate=None,
                 batch_size="auto", max_iter=None, epochs=None, tol=1e-4,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 alpha=1e-4, shuffle=True, random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.preset = preset
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.epochs = epochs
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.alpha = alpha
        self.shuffle = shuffle
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------ tags (sklearn)
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"_xfail_checks": expected_failed_checks(self)}

    # ------------------------------------------------------------ params
    def _name(self, method):
        return f"{type(self).__name__}.{method}"

    def _config(self, caller) -> dict:
        """The hyper-parameters checked and resolved against the preset;
        ValueError / TypeError naming the first bad one."""
        preset = self.preset
        if preset not in _PRESETS:
            raise ValueError(f"{caller}: preset must be None, 'default' or 'selu', got "
                             f"{preset!r}")
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, (bool, np.bool_)):
            sizes = (sizes,)
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise TypeError(f"{caller}: hidden_layer_sizes must be an int or a sequence of "
                            f"ints >= 1, got {self.hidden_layer_sizes!r}") from None
        for s in sizes:
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
                raise TypeError(f"{caller}: hidden_layer_sizes must be an int or a sequence "
                                f"of ints >= 1, got {self.hidden_layer_sizes!r}")
            if s < 1:
                raise ValueError(f"{caller}: hidden_layer_sizes must be an int or a sequence "
                                 f"of ints >= 1, got {self.hidden_layer_sizes!r}")
        sizes = tuple(int(s) for s in sizes)
        activation = self.activation
        if activation is None:
            activation = {None: "relu", "default": "elu", "selu": "selu"}[preset]
        if not isinstance(activation, str):
            raise TypeError(f"{caller}: activation must be a str (an activation of "
                            f"fd.activations) or None, got {activation!r}")
        activation = _MLP_ACTIVATIONS.get(activation.lower(), activation)
        if activation.lower() == "softmax":
            raise ValueError(f"{caller}: activation='softmax' is an output activation; the "
                             f"hidden layers need another one (relu, elu, selu, ...)")
        _activations.get(activation, caller)  # ValueError naming an unknown one
        batch_norm = self.batch_norm
        if batch_norm is None:
            batch_norm = preset == "default"
        batch_norm = _check_bool(caller, "batch_norm", batch_norm)
        dropout = self.dropout
        if dropout is None:  # the presets' tables add dropout only where needed
            dropout = self._plain_dropout if preset is None else 0.0
        dropout = _check_number(caller, "dropout", dropout, 0.0, 1.0, high_open=True)
        optimizer = self.optimizer
        if isinstance(optimizer, str):
            try:
                optimizer = _optimizers.get(optimizer)
            except ValueError as e:
                raise ValueError(f"{caller}: optimizer: {e}") from None
        elif isinstance(optimizer, _optimizers.Optimizer):
            # a copy: the parameter stays as given (scikit-learn's rule) and
            # each fit starts from a fresh optimizer state
            optimizer = type(optimizer).from_config(optimizer.get_config())
        else:
            raise TypeError(f"{caller}: optimizer must be a name ('adam', 'sgd', ...) or a "
                            f"fd.optimizers optimizer, got {optimizer!r}")
        if self.learning_rate is not None:
            lr = self.learning_rate
            if not callable(lr):
                lr = _check_number(caller, "learning_rate", lr, 0.0, low_open=True)
            optimizer.learning_rate = lr
        batch_size = self.batch_size
        if not (isinstance(batch_size, str) and batch_size == "auto"):
            batch_size = _check_int(caller, "batch_size ('auto' or an int)", batch_size, 1)
        max_iter = _check_int(caller, "max_iter", self.max_iter, 1, allow_none=True)
        epochs = _check_int(caller, "epochs", self.epochs, 1, allow_none=True)
        if max_iter is not None and epochs is not None:
            raise ValueError(f"{caller}: give max_iter (an upper bound, with the tol stop) or "
                             f"epochs (exactly that many epochs), not both; got "
                             f"max_iter={max_iter}, epochs={epochs}")
        return {
            "preset": preset, "sizes": sizes, "activation": activation,
            "batch_norm": batch_norm, "dropout": dropout, "optimizer": optimizer,
            "batch_size": batch_size, "max_iter": max_iter, "epochs": epochs,
            "tol": _check_number(caller, "tol", self.tol, 0.0),
            "early_stopping": _check_bool(caller, "early_stopping", self.early_stopping),
            "validation_fraction": _check_number(caller, "validation_fraction",
                                                 self.validation_fraction, 0.0, 1.0,
                                                 low_open=True, high_open=True),
            "n_iter_no_change": _check_int(caller, "n_iter_no_change",
                                           self.n_iter_no_change, 1),
            "alpha": _check_number(caller, "alpha", self.alpha, 0.0),
            "shuffle": _check_bool(caller, "shuffle", self.shuffle),
            "verbose": self._verbose(caller),
        }

    def _verbose(self, caller) -> int:
        v = self.verbose
        if isinstance(v, (bool, np.bool_)):
            return 2 if v else 0
        if not isinstance(v, numbers.Integral):
            raise TypeError(f"{caller}: verbose must be a bool or an int >= 0, got {v!r}")
        if v < 0:
            raise ValueError(f"{caller}: verbose must be a bool or an int >= 0, got {v!r}")
        return min(int(v), 2)

    # ------------------------------------------------------------ network
    def _build(self, cfg, n_features, n_outputs, base_seed, batch_size) -> Sequential:
        """The network for `cfg`, built for `n_features` inputs and compiled.

        Hidden block i: Dense(units) -> activation, or with batch_norm
        Dense(units, no bias) -> BatchNormalization -> activation (the
        arrangement fit runs as one fused op), then Dropout (AlphaDropout
        under preset="selu") when dropout > 0. Kernels start from
        glorot_uniform (preset None, as MLPClassifier), he_normal
        ("default") or lecun_normal ("selu"), each layer seeded from
        `base_seed`. alpha: the L2 penalty of every kernel, Keras'
        ``L2(alpha / (2 * batch_size))`` (MLPClassifier adds
        ``alpha / (2 * n_batch) * sum(W**2)`` to each batch's mean loss).
        """
        preset = cfg["preset"]
        hidden_init = {None: _initializers.GlorotUniform, "default": _initializers.HeNormal,
                       "selu": _initializers.LecunNormal}[preset]
        out_init = _initializers.LecunNormal if preset == "selu" else \
            _initializers.GlorotUniform
        reg = _regularizers.L2(cfg["alpha"] / (2.0 * batch_size)) if cfg["alpha"] else None
        drop_cls = _layers.AlphaDropout if preset == "selu" else _layers.Dropout
        model = Sequential(name=type(self).__name__.lower())
        for i, units in enumerate(cfg["sizes"]):
            init = hidden_init(seed=_seed(base_seed, 0, i))
            if cfg["batch_norm"]:
                model.add(_layers.Dense(units, use_bias=False, kernel_initializer=init,
                                        kernel_regularizer=reg))
                model.add(_layers.BatchNormalization(momentum=_BN_MOMENTUM))
                model.add(_layers.Activation(cfg["activation"]))
            else:
                model.add(_layers.Dense(units, activation=cfg["activation"],
                                        kernel_initializer=init, kernel_regularizer=reg))
            if cfg["dropout"]:
                model.add(drop_cls(cfg["dropout"], seed=_seed(base_seed, 1, i)))
        head, loss = self._head(n_outputs)
        model.add(_layers.Dense(n_outputs, activation=head,
                                kernel_initializer=out_init(seed=_seed(base_seed, 0,
                                                                       len(cfg["sizes"]))),
                                kernel_regularizer=reg))
        model.build(n_features)
        model.compile(optimizer=cfg["optimizer"], loss=loss)
        return model

    # ---------------------------------------------------------------- data
    def _check_X(self, X, caller, reset):
        """X as a float32 array, feature names and count set (reset) or
        checked by scikit-learn's validate_data."""
        values, _ = frame_values(caller, "X", X)
        if values is not X:  # a DataFrame: its names go through scikit-learn's checks
            _validate(self, X, reset=reset, skip_check_array=True)
            return check_array(values, dtype=np.float32, estimator=self, input_name="X")
        return _validate(self, X, reset=reset, dtype=np.float32)

    def _check_Xy(self, X, y, caller, reset):
        values, _ = frame_values(caller, "X", X)
        y, _ = frame_values(caller, "y", y)
        kwargs = {"dtype": np.float32, "multi_output": self._multi_output,
                  "y_numeric": self._multi_output}
        if values is not X:
            _validate(self, X, reset=reset, skip_check_array=True)
            return check_X_y(values, y, estimator=self, **kwargs)
        return _validate(self, X, y, reset=reset, **kwargs)

    def _weights(self, caller, sample_weight, X):
        if sample_weight is None:
            return None
        sample_weight, _ = frame_values(caller, "sample_weight", sample_weight)
        w = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"{caller}: sample_weight must be finite and >= 0, got "
                             f"{w[~np.isfinite(w) | (w < 0)][:5]!r} among its values")
        if not np.any(w > 0):
            raise ValueError(f"{caller}: sample_weight has no positive value; at least one "
                             f"sample must have weight > 0")
        return w

    # ------------------------------------------------------------ training
    def _fit(self, X, y, sample_weight, caller, partial, classes=None):
        cfg = self._config(caller)
        first = not (partial and hasattr(self, "model_"))
        if partial and cfg["early_stopping"]:
            raise ValueError(f"{caller}: partial_fit trains one epoch on the batch given and "
                             f"does not stop early; set early_stopping=False")
        X, y = self._check_Xy(X, y, caller, reset=first)
        targets, y_score = self._targets(caller, y, first, partial, classes)
        sw = self._weights(caller, sample_weight, X)
        weight = self._sample_weights(caller, sw, y_score, partial)
        if weight is not None:
            # A zero weight removes the sample: it then counts in no batch mean,
            # no batch-norm statistics and no validation score, exactly as if
            # it had not been given.
            keep = weight > 0
            if not keep.all():
                X, targets, y_score, weight = X[keep], targets[keep], y_score[keep], weight[keep]
                sw = sw[keep] if sw is not None else None
        if first:
            rng = check_random_state(self.random_state)
            self._base_seed = int(rng.randint(np.iinfo(np.int32).max))
        base = self._base_seed
        callbacks = []
        X_val = None
        if cfg["early_stopping"]:
            X, X_val, targets, _, y_score, y_val, weight, w_val = self._split(
                cfg, X, targets, y_score, weight, sw, base, caller)
            callbacks.append(_ValidationScore(
                lambda model: self._validation_score(model, X_val, y_val, w_val)))
            callbacks.append(_NoImprovementStop("val_score", "max", cfg["tol"],
                                                cfg["n_iter_no_change"], restore=True))
        n = X.shape[0]
        batch_size = min(_AUTO_BATCH, n) if cfg["batch_size"] == "auto" else cfg["batch_size"]
        if partial:
            epochs = 1
        elif cfg["epochs"] is not None:
            epochs = cfg["epochs"]
        else:
            epochs = cfg["max_iter"] or _DEFAULT_MAX_ITER
            if not cfg["early_stopping"]:
                # MLPClassifier's stop on the training loss
                callbacks.append(_NoImprovementStop("loss", "min", cfg["tol"],
                                                    cfg["n_iter_no_change"]))
        if weight is not None:
            if np.all(weight == weight[0]):
                weight = None  # equal weights weigh nothing: the unweighted path, bit for bit
            else:
                # scaled to mean 1: multiplying every weight by a constant
                # changes nothing, and the learning rate keeps its meaning
                weight = weight / weight.mean()
        if first:
            model = self._build(cfg, X.shape[1], self._n_outputs(), base, batch_size)
        else:
            model = self.model_
        fit_kwargs = {} if weight is None else {"sample_weight": weight.astype(np.float32)}
        history = model.fit(X, targets, batch_size=batch_size, epochs=epochs,
                            verbose=cfg["verbose"], callbacks=callbacks,
                            shuffle=cfg["shuffle"], seed=_seed(base, 2) if first else None,
                            **fit_kwargs)
        losses = [float(v) for v in history.history.get("loss", [])]
        self.model_ = model
        if first:
            self.n_iter_, self.t_, self.loss_curve_ = 0, 0, []
        self.n_iter_ += len(losses)
        self.t_ += n * len(losses)
        self.loss_curve_ = self.loss_curve_ + losses
        self.loss_ = self.loss_curve_[-1] if self.loss_curve_ else None
        if X_val is not None:
            self.validation_scores_ = [float(v) for v in history.history["val_score"]]
            self.best_validation_score_ = max(self.validation_scores_)
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ else None
        if not partial and cfg["epochs"] is None and not cfg["early_stopping"] and \
                len(losses) == epochs and not model.stop_training:
            warnings.warn(f"{caller}: max_iter={epochs} epochs reached and the training loss "
                          f"still improves by more than tol={cfg['tol']}; raise max_iter, or "
                          f"give epochs= for a fixed number of epochs", ConvergenceWarning,
                          stacklevel=3)
        return self

    def _split(self, cfg, X, targets, y_score, weight, sw, base, caller):
        """MLPClassifier's early-stopping split: validation_fraction of the
        samples held out (stratified for a classifier where every class has
        two samples), drawn from the estimator's seed."""
        stratify = self._stratify(targets)
        idx = np.arange(X.shape[0])
        try:
            tr, va = train_test_split(idx, test_size=cfg["validation_fraction"],
                                      random_state=_seed(base, 3) % (2**32),
                                      stratify=stratify)
        except ValueError as e:
            raise ValueError(f"{caller}: early_stopping: cannot hold out "
                             f"validation_fraction={cfg['validation_fraction']} of "
                             f"{X.shape[0]} samples: {e}") from None
        if va.size < 2 or tr.size < 1:
            raise ValueError(f"{caller}: early_stopping: validation_fraction="
                             f"{cfg['validation_fraction']} of {X.shape[0]} samples leaves "
                             f"{va.size} for validation and {tr.size} for training; give "
                             f"more samples or another validation_fraction")
        w_tr = None if weight is None else weight[tr]
        w_val = None if sw is None else sw[va]
        return (X[tr], X[va], targets[tr], targets[va], y_score[tr], y_score[va], w_tr, w_val)

    # ----------------------------------------------------------- pickling
    def __getstate__(self):
        state = super().__getstate__()
        model = state.get("model_")
        if isinstance(model, Sequential):
            # The network travels as its safetensors file (weights, optimizer
            # state, random states): a Sequential holds native plans and
            # module references, which do not pickle.
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "model.safetensors")
                model.save(path)
                with open(path, "rb") as f:
                    state = dict(state, model_=f.read())
        return state

    def __setstate__(self, state):
        model = state.get("model_")
        if isinstance(model, bytes):
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "model.safetensors")
                with open(path, "wb") as f:
                    f.write(model)
                state = dict(state, model_=_load_model(path))
        super().__setstate__(state)

    def _forward(self, X, caller):
        check_is_fitted(self, "model_")
        X = self._check_X(X, caller, reset=False)
        return self.model_.predict(X, batch_size=_PREDICT_BATCH)


# Why the classifier's network is wider than MLPClassifier's (100,) at
# "auto" = 200 samples per batch: in StandardScaler -> classifier on digits,
# cross_val_score(cv=3) over random_state 0-9 (2026-12-07), MLPClassifier's
# network scores 0.938-0.951 (mean 0.943) here and MLPClassifier itself
# 0.942-0.951 (mean 0.946), while one layer of 512 with dropout 0.1 and
# Keras' batch of 32 scores 0.9505-0.957 (mean 0.952) at about 3x the cost.
_CLASSIFIER_DEFAULTS = """ The classifier's defaults,
        one layer of 512 units, dropout 0.1 (without a preset) and Keras'
        batch of 32, generalise better than MLPClassifier's (100,), no
        dropout and min(200, n_samples), at about 3x the cost of a fit;
        MLPClassifier's network is hidden_layer_sizes=(100,), dropout=0.0,
        batch_size="auto"."""


class FusedClassifier(ClassifierMixin, _FusedEstimator):
    __doc__ = """A dense network classifier trained by fusednn (MLPClassifier's API).

    The network: ``hidden_layer_sizes`` hidden blocks (Dense -> [BN] ->
    activation -> [dropout]), then a softmax layer with one unit per class
    (a sigmoid unit for two classes), trained on the cross-entropy with a
    fusednn optimizer by ``fd.Sequential.fit``. Labels may be of any type
    (ints, strings, other hashable objects); ``predict`` returns them as
    given, from ``classes_``. Binary and multiclass targets; multilabel and
    multi-output targets raise ValueError.

    Parameters
    ----------
""" + _PARAMETERS.format(
    model="MLPClassifier", score="accuracy", stratified=" (stratified)", hidden="(512,)",
    dropout="None", batch="32", defaults=_CLASSIFIER_DEFAULTS,
    dropout_none="0.1 without a preset, 0.0 with one (the chapter's tables\n"
                 "        add dropout only where it is needed)") + """\
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, ``{label: weight}`` (missing labels weigh
        1) or "balanced" (n_samples / (n_classes * count of the class),
        scikit-learn's rule); multiplied into sample_weight. "balanced" is
        not accepted by partial_fit (its batches do not tell the class
        frequencies).
""" + _WEIGHTS + """
    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted (in the order of first appearance where they
        have no order).
""" + _ATTRIBUTES.format(score="accuracy") + """\
    model_ : fd.Sequential
        The fitted network (its predict gives class probabilities, a single
        sigmoid column for two classes).
    """

    _multi_output = False
    _plain_dropout = 0.1  # dropout=None without a preset

    def __init__(self, hidden_layer_sizes=(512,), activation=None, *, preset=None,
                 batch_norm=None, dropout=None, optimizer="adam", learning_rate=None,
                 batch_size=32, max_iter=None, epochs=None, tol=1e-4,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10,
                 alpha=1e-4, shuffle=True, random_state=None, verbose=0, class_weight=None):
        super().__init__(hidden_layer_sizes, activation, preset=preset, batch_norm=batch_norm,
                         dropout=dropout, optimizer=optimizer, learning_rate=learning_rate,
                         batch_size=batch_size, max_iter=max_iter, epochs=epochs, tol=tol,
                         early_stopping=early_stopping,
                         validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, alpha=alpha, shuffle=shuffle,
                         random_state=random_state, verbose=verbose)
        self.class_weight = class_weight

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags

    def fit(self, X, y, sample_weight=None):
        """Train a new network on X (n_samples, n_features) and the labels
        y (n_samples,); returns self."""
        return self._fit(X, y, sample_weight, self._name("fit"), partial=False)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over X, y (MLPClassifier's partial_fit): the first call
        (on an unfitted estimator) needs ``classes``, every label the model
        will see; later calls continue training the same network (also
        after fit)."""
        return self._fit(X, y, sample_weight, self._name("partial_fit"), partial=True,
                         classes=classes)

    def _targets(self, caller, y, first, partial, classes):
        """(targets for the loss, label indices for scores); sets classes_
        on the first fit."""
        if y.dtype == object and type_of_target(y) == "unknown":
            pass  # hashable objects without an order (enums, ...): encoded as they come
        else:
            check_classification_targets(y)
            kind = type_of_target(y)
            if kind not in ("binary", "multiclass"):
                raise ValueError(f"{caller}: y is {kind}; FusedClassifier takes one label per "
                                 f"sample (binary or multiclass)")
        if first:
            if partial:
                if classes is None:
                    raise ValueError(f"{caller}: the first partial_fit needs classes=, every "
                                     f"label y will ever hold")
                classes = np.asarray(classes)
                if classes.ndim != 1 or classes.size < 2:
                    raise ValueError(f"{caller}: classes must be a 1-d array of at least 2 "
                                     f"labels, got {classes!r}")
                self.classes_, _ = _encode(classes)
                if len(self.classes_) != len(classes):
                    raise ValueError(f"{caller}: classes holds repeated labels: {classes!r}")
            else:
                self.classes_, _ = _encode(y)
                if len(self.classes_) < 2:
                    raise ValueError(f"{caller}: y holds one class only ({self.classes_[0]!r}); "
                                     f"a classifier needs at least 2 classes")
        elif classes is not None and not np.array_equal(np.asarray(classes), self.classes_):
            raise ValueError(f"{caller}: classes={classes!r} differs from classes_ "
                             f"{self.classes_!r} of the earlier fit")
        codes = self._codes(caller, y)
        if len(self.classes_) == 2:
            return codes.astype(np.float32), codes
        return codes, codes

    def _codes(self, caller, y):
        """The index in classes_ of each label of y; ValueError for a label
        that is not in classes_."""
        classes = self.classes_
        if classes.dtype != object and y.dtype.kind == classes.dtype.kind:
            # sorted by np.unique: a binary search
            codes = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
            wrong = classes[codes] != y
            if wrong.any():
                raise ValueError(f"{caller}: y holds the label {y[np.argmax(wrong)].item()!r}, "
                                 f"which is not in classes_ {classes!r}")
            return codes.astype(np.int64)
        index = {c: i for i, c in enumerate(classes.tolist())}
        try:
            return np.fromiter((index[v] for v in y.tolist()), dtype=np.int64, count=len(y))
        except KeyError as e:
            raise ValueError(f"{caller}: y holds the label {e.args[0]!r}, which is not in "
                             f"classes_ {classes!r}") from None

    def _n_outputs(self):
        k = len(self.classes_)
        return 1 if k == 2 else k

    def _head(self, n_outputs):
        if n_outputs == 1:
            return "sigmoid", "binary_crossentropy"
        return "softmax", "sparse_categorical_crossentropy"

    def _sample_weights(self, caller, sw, codes, partial):
        cw = self.class_weight
        if cw is None:
            return sw
        k = len(self.classes_)
        if isinstance(cw, str) and cw == "balanced":
            if partial:
                raise ValueError(f"{caller}: class_weight='balanced' needs the class "
                                 f"frequencies of the whole data, which partial_fit does not "
                                 f"see; pass a dict computed by "
                                 f"sklearn.utils.class_weight.compute_class_weight")
            counts = np.bincount(codes, minlength=k)
            per_class = np.where(counts > 0, len(codes) / (k * np.maximum(counts, 1)), 0.0)
        elif isinstance(cw, dict):
            index = {c: i for i, c in enumerate(self.classes_.tolist())}
            unknown = [c for c in cw if c not in index]
            if unknown:
                raise ValueError(f"{caller}: class_weight names labels that are not classes: "
                                 f"{unknown!r}; classes_ is {self.classes_!r}")
            per_class = np.ones(k)
            for c, w in cw.items():
                per_class[index[c]] = _check_number(caller, f"class_weight[{c!r}]", w, 0.0)
        else:
            raise ValueError(f"{caller}: class_weight must be None, a dict {{label: weight}} "
                             f"or 'balanced', got {cw!r}")
        w = per_class[np.asarray(codes, dtype=np.int64)]
        if sw is not None:
            w = w * sw
        if not np.any(w > 0):
            raise ValueError(f"{caller}: every sample has weight 0 (sample_weight times "
                             f"class_weight={cw!r})")
        return w

    def _stratify(self, targets):
        codes = np.asarray(targets, dtype=np.int64)
        counts = np.bincount(codes)
        return codes if counts[counts > 0].min() >= 2 else None

    def _validation_score(self, model, X_val, y_val, w_val):
        pred = self._indices(model.predict(X_val, batch_size=_PREDICT_BATCH))
        return float(np.average(pred == y_val, weights=w_val))

    def _indices(self, out):
        if out.shape[1] == 1:
            return (out[:, 0] > 0.5).astype(np.int64)
        return np.argmax(out, axis=1)

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes) in the order of
        classes_, float64."""
        out = self._forward(X, self._name("predict_proba")).astype(np.float64)
        if out.shape[1] == 1:
            return np.hstack([1.0 - out, out])
        return out

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable label of each sample, from classes_ (the
        labels' type as given to fit)."""
        out = self._forward(X, self._name("predict"))
        return self.classes_[self._indices(out)]


class FusedRegressor(RegressorMixin, _FusedEstimator):
    __doc__ = """A dense network regressor trained by fusednn (MLPRegressor's API).

    The network: ``hidden_layer_sizes`` hidden blocks (Dense -> [BN] ->
    activation -> [dropout]), then a linear layer with one unit per target,
    trained on the mean squared error by ``fd.Sequential.fit``. y of shape
    (n_samples,) or (n_samples, n_targets) (multi-output); predict returns
    the same shape. Targets are not scaled: standardise them (e.g. with
    TransformedTargetRegressor) when their scale is far from 1.

    Parameters
    ----------
""" + _PARAMETERS.format(
    model="MLPRegressor", score="R²", stratified="", hidden="(100,)", dropout="0.0",
    batch='"auto"', dropout_none="0.0",
    defaults=" The defaults of hidden_layer_sizes, dropout and\n"
             "        batch_size are MLPRegressor's.") + _WEIGHTS + """
    Attributes
    ----------
    n_outputs_ : int
        Targets per sample.
""" + _ATTRIBUTES.format(score="R²") + """\
    model_ : fd.Sequential
        The fitted network.
    """

    _multi_output = True
    _plain_dropout = 0.0  # dropout=None without a preset

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return dict(super()._more_tags(), multioutput=True)

    def fit(self, X, y, sample_weight=None):
        """Train a new network on X (n_samples, n_features) and y
        (n_samples,) or (n_samples, n_targets); returns self."""
        return self._fit(X, y, sample_weight, self._name("fit"), partial=False)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y; later calls continue training the same
        network (also after fit)."""
        return self._fit(X, y, sample_weight, self._name("partial_fit"), partial=True)

    def _targets(self, caller, y, first, partial, classes):
        y = np.asarray(y, dtype=np.float32)
        k = 1 if y.ndim == 1 else y.shape[1]
        if first:
            self._y_ndim = y.ndim
            self.n_outputs_ = k
        elif k != self.n_outputs_:
            raise ValueError(f"{caller}: y has {k} target(s) per sample, the model was "
                             f"fitted on {self.n_outputs_}")
        y2 = y.reshape(len(y), k)
        return y2, y2

    def _n_outputs(self):
        return self.n_outputs_

    def _head(self, n_outputs):
        return None, "mse"

    def _sample_weights(self, caller, sw, targets, partial):
        return sw

    def _stratify(self, targets):
        return None

    def _validation_score(self, model, X_val, y_val, w_val):
        pred = model.predict(X_val, batch_size=_PREDICT_BATCH)
        return float(r2_score(y_val, pred, sample_weight=w_val))

    def predict(self, X):
        """Predicted targets, float64, of y's shape in fit ((n_samples,) or
        (n_samples, n_targets))."""
        out = self._forward(X, self._name("predict")).astype(np.float64)
        return out.reshape(-1) if self._y_ndim == 1 else out
