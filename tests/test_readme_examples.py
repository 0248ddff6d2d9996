"""The README's code examples run as written and do what they say."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _example(name):
    text = README.read_text()
    m = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```\s*<!-- end example -->",
                  text, re.S)
    assert m, f"README has no example {name!r}"
    return m.group(1)


def test_logistic_regression_trains_with_opt_apply():
    scope = {}
    exec(compile(_example("logistic-regression"), "README.md", "exec"), scope)
    assert scope["opt"].iterations == 200
    assert scope["accuracy"] > 0.95, scope["accuracy"]
    # the arrays the user made were updated in place
    assert np.abs(scope["w"]).max() > 0
