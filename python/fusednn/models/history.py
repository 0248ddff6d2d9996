"""What fit reports: the History it returns and its per-epoch progress line."""

from __future__ import annotations

import shutil
import sys
import time

__all__ = ["History"]


class History:
    """What fit returns: ``history[name]`` is the list of per-epoch values
    (loss, metrics, and val_* with validation data); ``epoch`` the epochs."""

    def __init__(self):
        self.history: dict = {}
        self.epoch: list = []
        self.params: dict = {}
        self.model = None

    def _append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def plot(self, ax=None, metrics=None):
        """Learning curves (matplotlib, optional: pip install 'fusednn[plot]').

        One line per recorded metric (or the names in ``metrics``) against the
        epoch, validation curves dashed. Returns the matplotlib Axes.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("History.plot needs matplotlib: pip install 'fusednn[plot]'") from e
        if ax is None:
            _, ax = plt.subplots()
        names = metrics or list(self.history)
        for name in names:
            if name not in self.history:
                raise ValueError(f"History.plot: no metric {name!r}; recorded: "
                                 f"{sorted(self.history)}")
            ax.plot(self.epoch, self.history[name], "--" if name.startswith("val_") else "-",
                    label=name)
        ax.set_xlabel("epoch")
        ax.grid(True)
        ax.legend()
        return ax


class _Progress:
    """fit's report of an epoch, in Keras' style.

    verbose=1 on a terminal: a bar redrawn in place (at most every 0.1 s)
    with the epoch, the batches done, the elapsed time, the running loss and
    metrics and the samples/s, fitted to the terminal's width at each redraw:
    the rate goes first, then the bar narrows (10 columns at least) and goes,
    and only then is the end of the metrics cut. At the end of the epoch the
    bar is replaced by one line with every metric, val_* included (the line
    verbose=2 prints, and verbose=1 prints where stdout is not a terminal:
    one line per epoch, no carriage return).
    """

    _BAR = 30
    _MIN_BAR = 10

    def __init__(self, epoch, epochs, steps, verbose):
        self.verbose = verbose
        self.stream = sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.live = verbose == 1 and callable(isatty) and isatty()
        self.t0 = self.drawn_at = time.perf_counter()
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.step = 0
        self.drawn = 0  # length of the bar's line on the screen

    @staticmethod
    def _items(logs) -> list:
        return [f"{k}: {v:.4f}" for k, v in logs.items()]

    def due(self, step) -> bool:
        """Whether update(step, ...) would redraw now (fit reads a deferred
        step's loss only then)."""
        return self.live and ((self.steps is not None and step >= self.steps)
                              or time.perf_counter() - self.drawn_at >= 0.1)

    def update(self, step, rate, logs):
        self.step = step
        now = time.perf_counter()
        if not self.live or ((self.steps is None or step < self.steps)
                             and now - self.drawn_at < 0.1):
            return
        self.drawn_at = now
        width = shutil.get_terminal_size().columns - 1  # a full line would wrap
        self._draw(self.line(step, now - self.t0, logs, f"{rate:.0f} samples/s", width))

    def line(self, step, seconds, logs, rate, width) -> str:
        """The bar's line, at most `width` characters (no bar where the
        number of steps is unknown: a generator without steps_per_epoch)."""
        items = [f"{seconds:.1f}s", *self._items(logs)]
        if self.steps is None:
            return f"Epoch {self.epoch + 1}/{self.epochs} {step} - {' - '.join([*items, rate])}"[
                :width]
        head = f"Epoch {self.epoch + 1}/{self.epochs} {step:>{len(str(self.steps))}}/{self.steps}"
        for tail in (" - ".join([*items, rate]), " - ".join(items)):
            room = width - len(head) - len(tail) - 4  # the spaces and brackets around the bar
            if room >= self._MIN_BAR:
                n = min(room, self._BAR)
                done = n * step // max(self.steps, 1)
                bar = "=" * done + (">" if done < n else "") + "." * max(n - done - 1, 0)
                return f"{head} [{bar}] {tail}"
        return f"{head} - {tail}"[:width]

    def _draw(self, text):
        self.stream.write("\r" + text + " " * max(self.drawn - len(text), 0))
        self.stream.flush()
        self.drawn = len(text)

    def close(self, logs):
        if not self.verbose:
            return
        items = " - ".join([f"{self.step}" if self.steps is None else f"{self.step}/{self.steps}",
                            f"{time.perf_counter() - self.t0:.1f}s", *self._items(logs)])
        text = f"Epoch {self.epoch + 1}/{self.epochs} - {items}"
        if self.live:
            self._draw(text)
            self.stream.write("\n")
            self.stream.flush()
        else:
            print(text, file=self.stream, flush=True)
