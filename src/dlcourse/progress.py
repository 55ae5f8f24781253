"""What a long stage prints while it runs, on stderr, never into an output.

On a terminal, a tqdm bar with its rate and the time left; in a log (CI, `dvc repro > log`), a line
at each tenth of the work, or at each epoch for a loop of epochs, with the time left. A stage
ends with one line saying what it produced: `train-cnn@mnist: 99.48 % test accuracy, 2 epochs, 18 s`
(`counted` writes `1 epoch`, `2 epochs`).

    with progress.bar("train-cnn@mnist", total=steps, unit="batch", lines="epoch") as bar:
        for ...:
            bar.update()
        bar.epoch_done(epoch, epochs, loss=0.12)  # the epoch's numbers: on the bar, and the log's line
    progress.summary("train-cnn@mnist", f"99.48 % test accuracy, {progress.counted(epochs, 'epoch')}")

A bar never reads the device (no host sync), so the loops it follows run as fast as without it.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Literal

from tqdm import tqdm


def _on_terminal() -> bool:
    return sys.stderr.isatty()


def _size() -> tuple[int, int]:
    """The terminal's columns and rows; 0 where a pseudo-terminal does not say (tqdm would then draw nothing)."""
    try:
        return tuple(os.get_terminal_size(sys.stderr.fileno()))
    except (OSError, ValueError):
        return 0, 0


def _numbers(values: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


class Bar:
    """Counts the work done; draws a bar on a terminal, writes lines to a log."""

    def __init__(self, label: str, total: int, unit: str, lines: Literal["tenth", "epoch"], enabled: bool):
        self.label, self.total, self.unit, self.lines, self.enabled = label, max(1, int(total)), unit, lines, enabled
        self.done = 0
        self.started = time.perf_counter()
        self._next_tenth = 1
        sized = all(_size())
        self._bar = (tqdm(total=self.total, desc=label, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=sized,
                          ncols=None if sized else 100, nrows=None if sized else 24)
                     if enabled and _on_terminal() else None)

    def update(self, n: int = 1, **values) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if values:
                self._bar.set_postfix_str(_numbers(values), refresh=False)
        elif self.enabled and self.lines == "tenth" and self.done * 10 >= self._next_tenth * self.total:
            self._next_tenth = self.done * 10 // self.total + 1
            self._line(values)

    def epoch_done(self, epoch: int, epochs: int, **values) -> None:
        """The end of an epoch: its numbers on the bar, or the log's line for it."""
        if self._bar is not None:
            self._bar.set_postfix_str(_numbers({"epoch": f"{epoch}/{epochs}", **values}))
        elif self.enabled:
            self._line({"epoch": f"{epoch}/{epochs}", **values})

    def _line(self, values: dict) -> None:
        elapsed = time.perf_counter() - self.started
        left = elapsed * (self.total - self.done) / self.done if self.done else 0.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        numbers = f", {_numbers(values)}" if values else ""
        print(f"{self.label}: {100 * self.done / self.total:3.0f} % ({self.done}/{self.total}, "
              f"{rate:.3g} {self.unit}/s), {tqdm.format_interval(elapsed)} elapsed, "
              f"{tqdm.format_interval(left)} left{numbers}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def bar(label: str, total: int, unit: str = "step", lines: Literal["tenth", "epoch"] = "tenth",
        enabled: bool = True) -> Iterator[Bar]:
    """A progress bar for `total` units of work; `enabled=False` (a process other than the main
    one of a distributed run) prints nothing."""
    progress = Bar(label, total, unit, lines, enabled)
    try:
        yield progress
    finally:
        progress.close()


def process_seconds() -> float:
    """Seconds since this process started (its imports included), as a user waits for a stage."""
    import psutil

    return time.time() - psutil.Process().create_time()


def counted(count: float, noun: str, spec: str = "") -> str:
    """`1 epoch`, `2 epochs`, `0.5 epochs`: the count as `spec` formats it, the noun singular only
    where the count reads 1 (a summary line is read, not parsed)."""
    shown = format(count, spec)
    return f"{shown} {noun}" if shown == "1" else f"{shown} {noun}s"


def summary(label: str, produced: str) -> None:
    """The stage's last line: what it produced and how long it took."""
    print(f"{label}: {produced}, {process_seconds():.0f} s", file=sys.stderr, flush=True)
