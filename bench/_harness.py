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


def write_json(name: str, payload: dict) -> str:
    """bench/results/<name>, or <FUSEDNN_BENCH_OUT>/<name> where that is set."""
    out = os.environ.get("FUSEDNN_BENCH_OUT") or os.path.join(os.path.dirname(__file__), "results")
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
