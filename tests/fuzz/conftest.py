"""Hypothesis profiles of the fuzz suite, and the count of the cases it runs.

``FUSEDNN_FUZZ_PROFILE`` picks the profile (default ``ci``):

- ``ci``: derandomized (each test's examples are seeded from the test
  itself, so every run tests the same cases until the test, Hypothesis or
  Python changes), about 12,000 examples over the suite (at least 10,000
  must run: checked at the end of a full run), a few minutes' budget at
  most. Hypothesis refuses a database with ``derandomize=True``, so this
  profile reads none: the failures worth keeping live as regular tests in
  tests/test_fuzz_regressions.py, which CI always runs.
- ``release``: random seeds, ``FUSEDNN_FUZZ_EXAMPLES`` examples in all
  (default 100,000), shared by the tests in proportion to their weights.
  It first replays the committed example database tests/fuzz/.hypothesis-db
  read-only (the inputs that once failed; Hypothesis would otherwise prune
  the ones that pass, emptying the committed copy), and records new
  failures in ``FUSEDNN_FUZZ_DB`` (default: the system's temporary folder),
  from where a maintainer copies them in with a regression test.
- ``dev``: random seeds, the ci budget, the committed database read-write:
  for reproducing and fixing a failure.

Hangs: every example runs under faulthandler's watchdog (see _support.fuzz);
Hypothesis' own deadline is off, since timings on a shared CI machine vary
too much to call a slow example a failure.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import (DirectoryBasedExampleDatabase, MultiplexedDatabase,
                                 ReadOnlyDatabase)

from . import _support

_HERE = os.path.dirname(os.path.abspath(__file__))
COMMITTED_DB = os.path.join(_HERE, ".hypothesis-db")

_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("ci", derandomize=True, **_common)
settings.register_profile(
    "release", derandomize=False,
    database=MultiplexedDatabase(
        ReadOnlyDatabase(DirectoryBasedExampleDatabase(COMMITTED_DB)),
        DirectoryBasedExampleDatabase(os.environ.get(
            "FUSEDNN_FUZZ_DB", os.path.join(tempfile.gettempdir(), "fusednn-fuzz-db")))),
    **_common)
settings.register_profile("dev", derandomize=False,
                          database=DirectoryBasedExampleDatabase(COMMITTED_DB), **_common)
if _support.PROFILE not in ("ci", "release", "dev"):
    raise pytest.UsageError(f"FUSEDNN_FUZZ_PROFILE must be ci, release or dev, got "
                            f"{_support.PROFILE!r}")
settings.load_profile(_support.PROFILE)


@pytest.fixture(scope="session", autouse=True)
def fuzz_case_count(request):
    """The count of generated cases, per test; a full ci run (every fuzz
    test selected, none failed) must have run at least CI_MINIMUM."""
    yield _support.COUNTS
    total = sum(_support.COUNTS.values())
    # a full run: every fuzz module imported and every registered test run
    modules = {f"{__package__}.{f[:-3]}" for f in os.listdir(_HERE)
               if f.startswith("test_") and f.endswith("_fuzz.py")}
    registered = {name.rpartition(".")[0] for name in _support.WEIGHTS}
    full = modules <= registered and set(_support.WEIGHTS) <= set(_support.COUNTS)
    if _support.PROFILE == "ci" and full and request.session.testsfailed == 0:
        assert total >= _support.CI_MINIMUM, \
            f"the ci profile ran {total} fuzz cases, fewer than {_support.CI_MINIMUM}"


def pytest_terminal_summary(terminalreporter):
    counts = _support.COUNTS
    if not counts:
        return
    total = sum(counts.values())
    terminalreporter.write_sep("-", f"fuzz: {total} generated cases (profile "
                                    f"{_support.PROFILE}, {len(counts)} tests)")
    if terminalreporter.config.getoption("verbose") > 0:
        for name, n in sorted(counts.items()):
            terminalreporter.write_line(f"{n:8d}  {name}")
