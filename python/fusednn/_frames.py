"""pandas DataFrames and Series in, NumPy arrays out: the one place that
reads them.

pandas is never imported here: an object can only be a DataFrame or a Series
when the caller's program has imported pandas already, so the test is an
``isinstance`` against ``sys.modules["pandas"]``, and ``import fusednn``
stays free of pandas.

Rules (those of scikit-learn's ``check_array`` and ``_get_feature_names``):

- a DataFrame gives its values as one 2-D array and its column names, as an
  object array of ``str`` when every name is a ``str`` and None otherwise;
- each column must hold real numbers: NumPy's bool, integer and float dtypes
  and pandas' nullable ``Int*``/``UInt*``/``Float*``/``boolean``. Object,
  string, categorical, datetime, timedelta and complex columns raise
  TypeError naming the column (a network takes numbers; encoding categories
  is a modelling choice the caller makes, e.g. with OneHotEncoder);
- the array's dtype is `dtype` when given, else NumPy's common type of the
  columns, float64 where a nullable column holds missing values (NA becomes
  NaN, which the caller's checks then see);
- a Series gives a 1-D array (labels may be of any dtype; its values are
  checked as a column only when `dtype` asks for numbers);
- anything else is returned unchanged, with None.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["frame_values"]

_REAL_KINDS = "biuf"  # bool, signed, unsigned, float: also pandas' nullable dtypes' kinds


def _pandas():
    return sys.modules.get("pandas")


def frame_values(caller: str, name: str, obj, dtype=None):
    """``(values, feature_names)`` of `obj`: see the module docstring.

    caller and name go into error messages (``"FusedClassifier.fit"``,
    ``"X"``). dtype: None, or a NumPy dtype the values are converted to.
    """
    pd = _pandas()
    if pd is None:
        return obj, None
    if isinstance(obj, pd.DataFrame):
        dtypes = list(obj.dtypes)
        for column, dt in zip(obj.columns, dtypes):
            _check_column(caller, f"{name} column {column!r}", dt)
        target = _target_dtype(obj, dtypes, dtype)
        values = _to_numpy(obj, target)
        names = [c for c in obj.columns]
        feature_names = np.asarray(names, dtype=object) if names and all(
            isinstance(c, str) for c in names) else None
        return values, feature_names
    if isinstance(obj, pd.Series):
        if dtype is None and getattr(obj.dtype, "kind", "O") not in _REAL_KINDS:
            return obj.to_numpy(), None  # labels: strings, categories, objects
        label = f"{name} (a Series named {obj.name!r})" if obj.name is not None else name
        _check_column(caller, label, obj.dtype)
        return _to_numpy(obj, _target_dtype(obj.to_frame(), [obj.dtype], dtype)), None
    return obj, None


def _check_column(caller, what, dt):
    if getattr(dt, "kind", "O") not in _REAL_KINDS:
        raise TypeError(f"{caller}: {what} has dtype {dt}; encode it first (e.g. "
                        f"OneHotEncoder, OrdinalEncoder) or drop it: the model takes real "
                        f"numbers (bool, integer or float)")


def _target_dtype(frame, dtypes, dtype):
    """`dtype`, else the common NumPy type of the columns (float64 where a
    nullable integer or boolean column holds NA, which NumPy's int and bool
    types cannot)."""
    if dtype is not None:
        return np.dtype(dtype)
    if not dtypes:
        return np.dtype(np.float64)
    numpy_types = [dt if isinstance(dt, np.dtype) else np.dtype(dt.numpy_dtype) for dt in dtypes]
    target = np.result_type(*numpy_types)
    if target.kind in "biu" and any(not isinstance(dt, np.dtype) for dt in dtypes) and \
            bool(frame.isna().to_numpy().any()):
        target = np.dtype(np.float64)
    return target


def _to_numpy(obj, target):
    if target.kind == "f":
        return obj.to_numpy(dtype=target, na_value=np.nan)
    return obj.to_numpy(dtype=target)
