"""Redraw the benchmark charts from saved JSON results, without running a
benchmark.

    python bench/charts.py [--out bench/charts] [results/*.json ...]

Each JSON file (default: every bench/results/*.json) is drawn by
_harness.chart with the chart of the script that wrote it: the file name up
to its first "-" names an entry of some bench script's CHARTS (dense,
bn_dropout, optimizers, train, predict ...). Files no script claims are
listed and skipped.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _harness import chart  # noqa: E402


def specs() -> dict:
    """{JSON name prefix: chart arguments} from every bench script's CHARTS."""
    out = {}
    for path in sorted(glob.glob(os.path.join(HERE, "*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name.startswith("_") or name == "charts":
            continue
        # a private module name: bench/sklearn.py must not shadow scikit-learn
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # a script that cannot load here draws nothing, the others do
            print(f"{name}.py: not loaded ({type(e).__name__}: {e}); its charts are skipped")
            continue
        out.update(getattr(module, "CHARTS", {}))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", help="JSON results (default: bench/results/*.json)")
    p.add_argument("--out", default=os.path.join(HERE, "charts"),
                   help="folder for the PNGs (default: bench/charts)")
    args = p.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(HERE, "results", "*.json")))
    if not files:
        sys.exit("no JSON results to draw")
    known = specs()
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        spec = known.get(stem.split("-")[0])
        if spec is None:
            print(f"{path}: no bench script's CHARTS has {stem.split('-')[0]!r}; skipped")
            continue
        with open(path) as f:
            payload = json.load(f)
        chart(stem, payload.get("rows", []), info=payload.get("machine"), out=args.out, **spec)


if __name__ == "__main__":
    main()
