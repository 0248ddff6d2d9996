"""fusednn.sklearn: FusedClassifier / FusedRegressor as scikit-learn estimators,
and fusednn._frames (pandas in)."""

import enum
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import (load_digits, make_blobs, make_classification,  # noqa: E402
                              make_regression)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.class_weight import compute_sample_weight  # noqa: E402

import fusednn as fd  # noqa: E402
from fusednn._frames import frame_values  # noqa: E402
from fusednn.sklearn import FusedClassifier, FusedRegressor, expected_failed_checks  # noqa: E402

SKLEARN_16 = tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 6)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X, y


def _blobs(n=300, seed=0):
    X, y = make_blobs(n_samples=n, centers=3, n_features=4, random_state=seed)
    return StandardScaler().fit_transform(X), y


# ------------------------------------------------------------ check_estimator

@pytest.mark.parametrize("est", [FusedClassifier(), FusedRegressor()],
                         ids=["classifier", "regressor"])
def test_check_estimator(est):
    from sklearn.utils.estimator_checks import check_estimator

    failed = expected_failed_checks(est)
    assert 1 <= len(failed) <= 5 and all(len(reason) > 40 for reason in failed.values())
    if not SKLEARN_16:  # the _xfail_checks tag carries them
        check_estimator(est)
        return
    results = check_estimator(est, expected_failed_checks=failed, on_skip=None)
    status = {r["check_name"]: r["status"] for r in results}
    assert {k for k, v in status.items() if v == "failed"} == set()
    # what is marked as failing does fail: the list is not stale
    assert {k for k, v in status.items() if v == "xfail"} == set(failed)
    assert sum(v == "passed" for v in status.values()) >= 50


# ---------------------------------------------------------------- workflows

def test_pipeline_digits_cross_val(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), FusedClassifier(random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    # the defaults score 0.9505-0.957 over random_state 0-9 on these
    # unshuffled folds; MLPClassifier in the same pipeline 0.942-0.951
    assert scores.mean() >= 0.95, scores
    # MLPClassifier's network (0.938-0.951 over random_state 0-9)
    mlp_net = make_pipeline(StandardScaler(), FusedClassifier(
        hidden_layer_sizes=(100,), dropout=0.0, batch_size="auto", random_state=0))
    scores = cross_val_score(mlp_net, X, y, cv=3)
    assert scores.mean() >= 0.935, scores


@pytest.mark.parametrize("losses", [
    [1.0, 0.994, 0.988, 0.982, 0.976, 0.970, 0.964],   # gains below tol, every epoch
    [1.0, 0.98, 0.979, 0.97, 0.969, 0.968, 0.967, 0.966, 0.965],
    [1.0, 1.2, 0.99, 0.985, 1.5, 0.97, 0.97, 0.97, 0.97, 0.97],
    [1.0, float("nan"), 0.9, 0.9, 0.9, 0.9, 0.9]])
def test_the_stop_is_mlpclassifiers(losses):
    """The stop on the training loss decides as scikit-learn's own
    MLPClassifier._update_no_improvement_count does on the same losses (the
    best moves with every gain, so gains below tol in a row stop training;
    fd.callbacks.EarlyStopping, as Keras', would count them up and go on)."""
    from sklearn.neural_network import MLPClassifier

    from fusednn.sklearn import _NoImprovementStop

    mlp = MLPClassifier(tol=0.01, n_iter_no_change=2)
    if not hasattr(mlp, "_update_no_improvement_count"):
        pytest.skip("this scikit-learn has no _update_no_improvement_count to compare with")
    mlp.best_loss_, mlp._no_improvement_count, mlp.loss_curve_ = np.inf, 0, []
    # (early_stopping, X, y[, sample_weight]): the data are unused without early_stopping
    import inspect

    unused = [None] * (len(inspect.signature(mlp._update_no_improvement_count).parameters) - 1)
    stop = _NoImprovementStop("loss", "min", 0.01, 2)
    stop.set_model(type("M", (), {"stop_training": False})())
    stop.on_train_begin()
    for loss in losses:
        mlp.loss_curve_.append(loss)
        mlp._update_no_improvement_count(False, *unused)
        stop.on_epoch_end(len(mlp.loss_curve_) - 1, {"loss": loss})
        assert stop.model.stop_training == (mlp._no_improvement_count > mlp.n_iter_no_change)
        if stop.model.stop_training:
            break
    assert stop.model.stop_training, "every sequence here stops"


def test_early_stopping_puts_back_the_best_validation_epoch():
    """With early_stopping the weights of the epoch with the highest held-out
    score (the first of equals, as MLPClassifier's _best_coefs) are put back,
    whether training stopped or ran out of epochs."""
    from fusednn.sklearn import _NoImprovementStop

    class Model:
        stop_training = False
        weights = None

        def get_weights(self):
            return [np.array(self.epoch)]

        def set_weights(self, w):
            self.weights = w

    for scores, stops in (([0.5, 0.7, 0.6, 0.7, 0.65, 0.69], True), ([0.5, 0.6, 0.9], False)):
        stop = _NoImprovementStop("val_score", "max", 1e-4, 2, restore=True)
        stop.set_model(Model())
        stop.on_train_begin()
        for epoch, score in enumerate(scores):
            stop.model.epoch = epoch
            stop.on_epoch_end(epoch, {"val_score": score})
            if stop.model.stop_training:
                break
        stop.on_train_end()
        assert stop.model.stop_training == stops
        assert int(stop.model.weights[0]) == int(np.argmax(scores))


def test_early_stopping_fit(digits):
    X, y = digits
    est = FusedClassifier(early_stopping=True, n_iter_no_change=3, max_iter=60,
                          random_state=0).fit(X / 16.0, y)
    assert est.n_iter_ == len(est.validation_scores_) <= 60
    assert est.best_validation_score_ == max(est.validation_scores_) > 0.9


def test_grid_search_two_jobs_equals_one(digits):
    X, y = digits[0][:600], digits[1][:600]
    grid = {"hidden_layer_sizes": [(16,), (48,)], "alpha": [1e-4, 1.0]}

    def search(n_jobs):
        est = make_pipeline(StandardScaler(), FusedClassifier(random_state=0, max_iter=25))
        gs = GridSearchCV(est, {f"fusedclassifier__{k}": v for k, v in grid.items()}, cv=3,
                          n_jobs=n_jobs)
        return gs.fit(X, y)

    one, two = search(1), search(2)
    assert one.best_params_ == two.best_params_
    np.testing.assert_array_equal(one.cv_results_["mean_test_score"],
                                  two.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(one.predict_proba(X), two.predict_proba(X))
    # the grid is not flat: the scores tell the candidates apart
    assert np.ptp(one.cv_results_["mean_test_score"]) > 0.01


def test_fit_is_deterministic_and_seed_matters():
    X, y = _blobs()
    kw = dict(hidden_layer_sizes=(32, 16), dropout=0.2, max_iter=20)
    a = FusedClassifier(random_state=3, **kw).fit(X, y).predict_proba(X)
    b = FusedClassifier(random_state=3, **kw).fit(X, y).predict_proba(X)
    c = FusedClassifier(random_state=4, **kw).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_clone():
    X, y = _blobs()
    est = FusedClassifier(hidden_layer_sizes=(8,), alpha=1e-3, random_state=1, max_iter=30)
    est.fit(X, y)
    twin = clone(est)
    assert not hasattr(twin, "model_") and twin.get_params() == est.get_params()
    np.testing.assert_array_equal(twin.fit(X, y).predict_proba(X), est.predict_proba(X))


def test_optimizer_instance_is_not_changed():
    X, y = _blobs()
    opt = fd.optimizers.Nadam(learning_rate=3e-3)
    est = FusedClassifier(optimizer=opt, random_state=0, epochs=3).fit(X, y)
    assert opt.iterations == 0 and est.model_.optimizer is not opt
    assert isinstance(est.model_.optimizer, fd.optimizers.Nadam)
    assert est.model_.optimizer.learning_rate == pytest.approx(3e-3)
    est = FusedClassifier(optimizer=opt, learning_rate=1e-2, random_state=0, epochs=1).fit(X, y)
    assert est.model_.optimizer.learning_rate == pytest.approx(1e-2)
    assert opt.learning_rate == pytest.approx(3e-3)


# ------------------------------------------------------------------- labels

def test_string_labels_come_back_as_given():
    X, y = _blobs()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = FusedClassifier(random_state=0, max_iter=50).fit(X, names)
    np.testing.assert_array_equal(est.classes_, ["setosa", "versicolor", "virginica"])
    pred = est.predict(X)
    assert pred.dtype == names.dtype
    assert np.mean(pred == names) > 0.95
    # object arrays stay object arrays
    obj = names.astype(object)
    pred = FusedClassifier(random_state=0, max_iter=50).fit(X, obj).predict(X)
    assert pred.dtype == object and set(pred) <= set(obj)


def test_binary_labels_and_proba():
    X, y = _blobs()
    keep = y < 2
    X, y = X[keep], np.where(y[keep] == 0, -1, 7)
    est = FusedClassifier(random_state=0, max_iter=50).fit(X, y)
    assert est.model_.layers[-1].units == 1  # one sigmoid unit for two classes
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    assert est.score(X, y) > 0.95 and set(est.predict(X)) <= {-1, 7}


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"
    BLUE = "b"


def test_hashable_labels_without_order():
    X, y = _blobs()
    labels = np.array([Color.RED, Color.GREEN, Color.BLUE], dtype=object)[y]
    est = FusedClassifier(random_state=0, max_iter=50).fit(X, labels)
    assert list(est.classes_) == list(dict.fromkeys(labels))  # first appearance first
    assert set(est.classes_) == set(Color)
    assert np.mean(est.predict(X) == labels) > 0.95


def test_one_class_and_multilabel_raise():
    X, y = _blobs()
    with pytest.raises(ValueError, match="one class"):
        FusedClassifier().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="1d array|multilabel"):
        FusedClassifier().fit(X, np.eye(3, dtype=int)[y])


# ------------------------------------------------------------------- pandas

def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = _blobs()
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    est = FusedClassifier(random_state=0, max_iter=30).fit(df, pd.Series(y, name="target"))
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b", "c", "d"])
    assert est.feature_names_in_.dtype == object and est.n_features_in_ == 4
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        np.testing.assert_array_equal(est.predict(df), est.predict(X))
    assert est.score(df, pd.Series(y)) == np.mean(est.predict(df) == y)
    renamed = df.rename(columns={"c": "city"})
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(renamed)
    # arrays in fit: no names, and a DataFrame at predict warns the other way
    est = FusedRegressor(random_state=0, epochs=2).fit(X, y.astype(float))
    assert not hasattr(est, "feature_names_in_")
    with pytest.warns(UserWarning, match="fitted without feature names"):
        est.predict(df)


def test_dataframe_string_column_raises_naming_it():
    pd = pytest.importorskip("pandas")
    X, y = _blobs(60)
    df = pd.DataFrame({"x0": X[:, 0], "city": ["Paris", "Oslo"] * 30, "x1": X[:, 1]})
    with pytest.raises(TypeError, match="X column 'city' has dtype .*OneHotEncoder"):
        FusedClassifier().fit(df, y)
    df["city"] = df["city"].astype("category")
    with pytest.raises(TypeError, match="column 'city' has dtype category"):
        FusedRegressor().fit(df, X[:, 2])


def test_frame_values():
    pd = pytest.importorskip("pandas")
    a = np.arange(6.0).reshape(3, 2)
    for obj in (a, [[1, 2]], None):  # anything but pandas passes through unchanged
        values, names = frame_values("f", "X", obj)
        assert values is obj and names is None
    values, names = frame_values("f", "X", pd.DataFrame(a, columns=["p", "q"]))
    np.testing.assert_array_equal(values, a)
    assert names.dtype == object and list(names) == ["p", "q"]
    # non-str names: no feature names (scikit-learn's rule)
    assert frame_values("f", "X", pd.DataFrame(a))[1] is None
    assert frame_values("f", "X", pd.DataFrame(a, columns=["p", 1]))[1] is None
    # nullable columns: NA becomes NaN in float64
    df = pd.DataFrame({"i": pd.array([1, None, 3], dtype="Int64"), "b": [True, False, True]})
    values, _ = frame_values("f", "X", df)
    assert values.dtype == np.float64 and np.isnan(values[1, 0]) and values[2, 0] == 3
    values, _ = frame_values("f", "X", df.dropna(), dtype=np.float32)
    assert values.dtype == np.float32 and values.shape == (2, 2)
    # a Series: 1-D, labels of any dtype pass, numbers checked when asked for
    values, names = frame_values("f", "y", pd.Series(["u", "v"]))
    assert values.shape == (2,) and list(values) == ["u", "v"] and names is None
    with pytest.raises(TypeError, match="'label'.* has dtype"):
        frame_values("f", "y", pd.Series(["u", "v"], name="label"), dtype=np.float32)
    for bad in (pd.to_datetime(["2020-01-01"] * 3), [1 + 1j] * 3, ["a", "b", "c"]):
        with pytest.raises(TypeError, match=r"^g: X column 'c' has dtype"):
            frame_values("g", "X", pd.DataFrame({"n": [1, 2, 3], "c": bad}))


def test_import_fusednn_imports_neither_sklearn_nor_pandas():
    code = ("import sys, fusednn; import fusednn._frames; "
            "print('sklearn' in sys.modules, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------ weights

def test_zero_sample_weight_equals_dropping_the_samples():
    X, y = _blobs()
    w = np.ones(len(X))
    w[::4] = 0.0
    kw = dict(hidden_layer_sizes=(16,), random_state=0, max_iter=20, dropout=0.1)
    for shuffle in (False, True):
        weighted = FusedClassifier(shuffle=shuffle, **kw).fit(X, y, sample_weight=w)
        dropped = FusedClassifier(shuffle=shuffle, **kw).fit(X[w > 0], y[w > 0])
        np.testing.assert_array_equal(weighted.predict_proba(X), dropped.predict_proba(X))
        assert weighted.loss_curve_ == dropped.loss_curve_
    # and weights do something: other non-zero weights give another model
    w2 = np.where(y == 0, 5.0, 1.0)
    other = FusedClassifier(**kw).fit(X, y, sample_weight=w2)
    assert np.abs(other.predict_proba(X) - dropped.predict_proba(X)).max() > 1e-3


def test_sample_weight_scale_does_not_matter():
    X, y = _blobs()
    w = np.random.RandomState(0).uniform(0.5, 2.0, len(X))
    kw = dict(hidden_layer_sizes=(16,), random_state=0, max_iter=20)
    a = FusedRegressor(**kw).fit(X, y.astype(float), sample_weight=w).predict(X)
    b = FusedRegressor(**kw).fit(X, y.astype(float), sample_weight=4 * w).predict(X)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_class_weight_balanced():
    X, y = make_classification(n_samples=600, n_features=6, n_informative=3, weights=[0.9],
                               flip_y=0.05, class_sep=0.5, random_state=0)
    kw = dict(hidden_layer_sizes=(16,), random_state=0, max_iter=60)
    plain = FusedClassifier(**kw).fit(X, y)
    balanced = FusedClassifier(class_weight="balanced", **kw).fit(X, y)
    recall = [np.mean(m.predict(X)[y == 1] == 1) for m in (plain, balanced)]
    assert recall[1] > recall[0] + 0.1, recall
    # "balanced" is the per-sample weight n / (n_classes * count) of scikit-learn
    same = FusedClassifier(**kw).fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_array_equal(same.predict_proba(X), balanced.predict_proba(X))
    # a dict by label; score takes sample_weight
    labels = np.array(["no", "yes"])[y]
    est = FusedClassifier(class_weight={"yes": 9.0}, **kw).fit(X, labels)
    assert np.mean(est.predict(X)[y == 1] == "yes") > recall[0]
    w = (y == 1).astype(float)
    assert est.score(X, labels, sample_weight=w) == np.mean(est.predict(X)[y == 1] == "yes")
    with pytest.raises(ValueError, match="class_weight names labels that are not classes"):
        FusedClassifier(class_weight={"maybe": 2.0}).fit(X, labels)


def test_bad_sample_weight_raises():
    X, y = _blobs(30)
    with pytest.raises(ValueError, match="sample_weight"):
        FusedClassifier().fit(X, y, sample_weight=-np.ones(len(X)))
    with pytest.raises(ValueError, match="sample_weight"):
        FusedClassifier().fit(X, y, sample_weight=np.ones(len(X) + 1))


# --------------------------------------------------------------- regression

def test_multi_output_regression():
    X, Y = make_regression(n_samples=400, n_features=8, n_targets=3, noise=1.0,
                           random_state=0)
    X, Y = StandardScaler().fit_transform(X), Y / Y.std(axis=0)
    est = FusedRegressor(hidden_layer_sizes=(64,), random_state=0, max_iter=300).fit(X, Y)
    assert est.n_outputs_ == 3 and est.predict(X).shape == (400, 3)
    assert est.predict(X).dtype == np.float64
    assert est.score(X, Y) > 0.95
    # a column vector stays a column vector; 1-d stays 1-d, with the same values
    col = FusedRegressor(random_state=0, epochs=5).fit(X, Y[:, :1]).predict(X)
    flat = FusedRegressor(random_state=0, epochs=5).fit(X, Y[:, 0]).predict(X)
    assert col.shape == (400, 1) and flat.shape == (400,)
    np.testing.assert_array_equal(col[:, 0], flat)


# ---------------------------------------------------------------- training

def test_epochs_and_max_iter():
    X, y = _blobs()
    est = FusedClassifier(epochs=7, random_state=0).fit(X, y)
    assert est.n_iter_ == 7 and len(est.loss_curve_) == 7
    assert est.loss_curve_[-1] < est.loss_curve_[0]
    # max_iter: the tol stop of MLPClassifier ends training earlier
    est = FusedClassifier(max_iter=500, tol=0.05, n_iter_no_change=2, random_state=0).fit(X, y)
    assert 3 <= est.n_iter_ < 500 and est.best_loss_ == min(est.loss_curve_)
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        warnings.simplefilter("always", ConvergenceWarning)
        FusedClassifier(max_iter=3, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="max_iter.*epochs.*not both"):
        FusedClassifier(max_iter=5, epochs=5).fit(X, y)


def test_early_stopping_keeps_the_best_epoch():
    X, y = make_classification(n_samples=1000, n_features=10, random_state=0)
    est = FusedClassifier(early_stopping=True, n_iter_no_change=5, max_iter=200,
                          hidden_layer_sizes=(64,), random_state=0).fit(X, y)
    assert len(est.validation_scores_) == est.n_iter_ < 200
    assert est.best_validation_score_ == max(est.validation_scores_) > 0.9
    assert est.score(X, y) > 0.9
    assert est.best_loss_ is None
    reg = FusedRegressor(early_stopping=True, random_state=0, max_iter=50).fit(X, y * 1.0)
    assert len(reg.validation_scores_) == reg.n_iter_


def test_partial_fit():
    X, y = _blobs(600)
    labels = np.array(["a", "b", "c"])[y]
    est = FusedClassifier(hidden_layer_sizes=(16,), random_state=0)
    with pytest.raises(ValueError, match="classes="):
        est.partial_fit(X[:100], labels[:100])
    est.partial_fit(X[:100], labels[:100], classes=["c", "a", "b"])
    np.testing.assert_array_equal(est.classes_, ["a", "b", "c"])
    first = est.score(X, labels)
    for _ in range(15):
        for start in range(0, 600, 100):
            est.partial_fit(X[start:start + 100], labels[start:start + 100])
    assert est.n_iter_ == 91 and len(est.loss_curve_) == 91
    assert est.score(X, labels) > max(first, 0.95)
    with pytest.raises(ValueError, match="label 'd'"):
        est.partial_fit(X[:3], np.array(["a", "b", "d"]))
    with pytest.raises(ValueError, match="early_stopping"):
        FusedClassifier(early_stopping=True).partial_fit(X, labels, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="balanced"):
        FusedClassifier(class_weight="balanced").partial_fit(X, labels, classes=["a", "b", "c"])
    reg = FusedRegressor(random_state=0)
    for _ in range(3):
        reg.partial_fit(X, X[:, 0] - X[:, 1])
    assert reg.n_iter_ == 3 and reg.predict(X).shape == (600,)


def test_presets_build_the_tables_networks():
    X, y = _blobs()
    est = FusedClassifier(preset="default", hidden_layer_sizes=(16, 16), epochs=2,
                          random_state=0).fit(X, y)
    kinds = [type(la).__name__ for la in est.model_.layers]
    assert kinds == ["Dense", "BatchNormalization", "Activation"] * 2 + ["Dense"]
    assert est.model_.layers[2].activation.name == "elu"
    assert not est.model_.layers[0].use_bias
    est = FusedClassifier(preset="selu", dropout=0.1, hidden_layer_sizes=(16,), epochs=2,
                          random_state=0).fit(X, y)
    kinds = [type(la).__name__ for la in est.model_.layers]
    assert kinds == ["Dense", "AlphaDropout", "Dense"]
    assert est.model_.layers[0].activation.name == "selu"
    assert type(est.model_.layers[0].kernel_initializer).__name__ == "LecunNormal"
    # no preset: relu, and the classifier's default dropout 0.1 (512 units)
    est = FusedClassifier(epochs=1, random_state=0).fit(X, y)
    assert [type(la).__name__ for la in est.model_.layers] == ["Dense", "Dropout", "Dense"]
    assert est.model_.layers[0].activation.name == "relu"
    assert est.model_.layers[0].units == 512 and est.model_.layers[1].rate == 0.1
    est = FusedClassifier(epochs=1, dropout=0.0, random_state=0).fit(X, y)
    assert [type(la).__name__ for la in est.model_.layers] == ["Dense", "Dense"]
    # the regressor keeps MLPRegressor's network
    reg = FusedRegressor(epochs=1, random_state=0).fit(X, y.astype(float))
    assert [type(la).__name__ for la in reg.model_.layers] == ["Dense", "Dense"]
    assert reg.model_.layers[0].units == 100


@pytest.mark.parametrize("params, match", [
    ({"hidden_layer_sizes": (10, 0)}, "hidden_layer_sizes"),
    ({"preset": "deep"}, "preset"),
    ({"activation": "softmax"}, "softmax"),
    ({"activation": "nope"}, "nope"),
    ({"dropout": 1.0}, "dropout"),
    ({"optimizer": "adamx"}, "adamx"),
    ({"batch_size": 0}, "batch_size"),
    ({"epochs": 0}, "epochs"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"alpha": -1.0}, "alpha"),
    ({"class_weight": "auto"}, "class_weight"),
])
def test_bad_params_raise_naming_them(params, match):
    X, y = _blobs(30)
    est = FusedClassifier(**params)  # __init__ stores, fit checks
    with pytest.raises((ValueError, TypeError), match=match):
        est.fit(X, y)


# ---------------------------------------------------------------- pickling

def test_pickle_round_trip():
    X, y = _blobs()
    est = FusedClassifier(preset="default", hidden_layer_sizes=(16,), dropout=0.1,
                          random_state=0, max_iter=10).fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    assert back.get_params() == est.get_params() and back.n_iter_ == est.n_iter_
    # the optimizer state and random states travel too: training goes on alike
    est.partial_fit(X, y)
    back.partial_fit(X, y)
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    # an unfitted estimator pickles as its parameters
    assert pickle.loads(pickle.dumps(FusedRegressor(alpha=0.5))).alpha == 0.5
