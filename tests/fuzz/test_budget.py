"""The fuzz suite's example budget adds up (see _support and conftest.py)."""

import importlib
import pathlib

from . import _support


def _import_all():
    """Every fuzz module, so that each @fuzz weight is registered even when
    this test runs alone."""
    here = pathlib.Path(__file__).parent
    for path in sorted(here.glob("test_*_fuzz.py")):
        importlib.import_module(f"{__package__}.{path.stem}")


def test_weights_add_up_to_the_total():
    _import_all()
    total = sum(_support.WEIGHTS.values())
    assert total == _support.TOTAL_WEIGHT, \
        f"the @fuzz weights sum to {total}; set TOTAL_WEIGHT in _support.py to it"


def test_ci_profile_plans_at_least_the_minimum():
    """The ci profile plans CI_TOTAL examples, at least CI_MINIMUM (10,000);
    the conftest's session fixture checks that a full run executed them."""
    _import_all()
    planned = sum(max(1, round(_support.CI_TOTAL * w / _support.TOTAL_WEIGHT))
                  for w in _support.WEIGHTS.values())
    assert planned >= _support.CI_MINIMUM, planned
