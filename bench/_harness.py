"""Shared benchmark plumbing: interleaved repetitions, medians, machine facts.

Every contender of one configuration is timed in turn, round after round;
times are medians per contender, ratios medians of the per-round ratios. Interleaving makes the ratios robust to
the slow drifts of a shared, noisy machine. Each turn starts with one
untimed call: contenders use different thread pools (OpenBLAS in NumPy, in
fusednn, OpenMP in PyTorch) whose workers keep spinning for a while after a
call (OpenBLAS: about 2^28 cycles), so each turn first waits `settle`
seconds for the previous contender's pool to go to sleep.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time

import numpy as np


def machine() -> dict:
    import fusednn as fd

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = fd.build_info()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": fd.num_threads(),
        "blas": info["blas_config"],
        "gpu": fd.cuda_status() if fd.has_cuda() else None,
    }


class Timings(dict):
    """{name: [seconds per call, one entry per round]} from `interleaved`."""

    def median(self, name: str) -> float:
        return float(np.median(self[name]))

    def ratio(self, slow: str, fast: str) -> float:
        """Median over rounds of time[slow] / time[fast] within each round.

        Pairing the turns of one round cancels the machine's slow drifts
        that a ratio of two medians would keep.
        """
        return float(np.median(np.asarray(self[slow]) / np.asarray(self[fast])))


def interleaved(fns: dict, rounds: int, sync=None, warmup: int = 1,
                min_turn: float = 0.05, settle: float = 0.3) -> Timings:
    """Per-round seconds per call of each fn, over `rounds` interleaved turns.

    A turn is a pause of `settle` seconds, one untimed call, then `inner`
    timed calls, `inner` chosen per fn so that a turn lasts at least
    `min_turn` seconds.
    """
    sync = sync or (lambda: None)
    inner = {}
    for k, f in fns.items():
        for _ in range(warmup):
            f()
        sync()
        t0 = time.perf_counter()
        f()
        sync()
        inner[k] = max(1, int(min_turn / max(time.perf_counter() - t0, 1e-7)))
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            time.sleep(settle)
            f()
            sync()
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                f()
            sync()
            times[k].append((time.perf_counter() - t0) / inner[k])
    return Timings(times)


def results_dir() -> str:
    """bench/results, or FUSEDNN_BENCH_OUT where that is set."""
    return os.environ.get("FUSEDNN_BENCH_OUT") or os.path.join(os.path.dirname(__file__),
                                                               "results")


def write_json(name: str, payload: dict) -> str:
    """bench/results/<name>, or <FUSEDNN_BENCH_OUT>/<name> where that is set."""
    out = results_dir()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)
    return path


def markdown(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(str(r.get(key, "")) for key, _ in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])



def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def chart(name: str, rows: list[dict], labels, ratios, fractions, info: dict | None = None,
          out: str | None = None,
          ratio_label: str = "peer's time / ours (> 1: fusednn is faster)") -> str | None:
    """A PNG bar chart of a script's rows next to its JSON: `name` with a
    .png extension, in `out` (default: where write_json writes).

    One group of horizontal bars per row, in the table's order, named by
    ``labels(row)`` (a function) or by the row's values of the keys
    `labels` (those it has). Left panel: `ratios`, [(key, title)] of "peer's
    time / ours" on a log scale with a line at 1 (right of it fusednn is
    faster). Right panel: `fractions`, [(key, title)] of roofline fractions,
    with a line at 1.0 (the roofline). A key that no row holds as a number
    is left out, and a panel left without keys. Prints and returns the
    path, or prints why not and returns None: matplotlib missing, or
    nothing to draw. `info`: the JSON's "machine" dict, for the title;
    `ratio_label`: the left panel's axis, for ratios of another kind.
    """
    try:
        from matplotlib import ticker
        from matplotlib.figure import Figure
    except ImportError:
        print("chart skipped: matplotlib is not installed (pip install matplotlib)")
        return None
    panels = []
    for keys, scale in ((ratios, "log"), (fractions, "linear")):
        keys = [(k, t) for k, t in keys if any(_is_number(r.get(k)) for r in rows)]
        if keys:
            panels.append((keys, scale))
    if not panels:
        print("chart skipped: no ratio or roofline fraction in the rows")
        return None
    names = [labels(r) if callable(labels) else " ".join(str(r[k]) for k in labels if k in r)
             for r in rows]
    bars_per_row = max(len(keys) for keys, _ in panels)
    fig = Figure(figsize=(1.0 + 0.065 * max(len(n) for n in names) + 4.6 * len(panels),
                          1.4 + 0.2 * len(rows) * bars_per_row), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    y = np.arange(len(rows))
    for ax, (keys, scale) in zip(axes, panels):
        height = 0.8 / len(keys)
        drawn = []
        for i, (key, key_title) in enumerate(keys):
            values = np.array([r[key] if _is_number(r.get(key)) else np.nan for r in rows])
            # a ratio's bar runs from 1 (parity) to the ratio: right is faster, left slower
            base = 1.0 if scale == "log" else 0.0
            bars = ax.barh(y - 0.4 + height * (i + 0.5), values - base, left=base,
                           height=height, label=key_title)
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in values],
                         fontsize=7, padding=2)
            drawn.append(values)
        values = np.concatenate(drawn)
        values = values[np.isfinite(values) & (values > 0)]
        ax.axvline(1.0, color="k", linewidth=0.8)
        if scale == "log":
            ax.set_xscale("log")
            ax.set_xlim(min(values.min(), 1.0) / 1.25, max(values.max(), 1.0) * 1.8)
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xlabel(ratio_label)
        else:
            ax.set_xlim(0.0, max(1.15, values.max() * 1.12))
            ax.set_xlabel("fraction of the roofline")
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2,
                  frameon=False)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()  # the first row on top, as in the table
    stem = os.path.splitext(os.path.basename(name))[0]
    title = stem
    if info:
        title += f": {info.get('date')}, {info.get('cpu')}, {info.get('threads')} threads" + (
            f", {info['gpu']}" if info.get("gpu") else "")
    fig.suptitle(title, fontsize=9)
    directory = out or results_dir()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, stem + ".png")
    fig.savefig(path, dpi=90)
    print(f"chart: {path}")
    return path
