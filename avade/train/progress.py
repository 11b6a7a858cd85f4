"""Training progress: a rich progress bar on a terminal; plain, whole log lines elsewhere (a cluster job's
log file, a pipe), where a live bar is cut to the console's width and redrawn into noise."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_SHOWN = ("loss", "bpd", "l_c", "l_q", "d_loss", "gp", "images_per_s")


class TrainProgress:
    """Context manager showing the step, loss terms, BPD, images/s and the time left; a no-op when disabled
    (tests, non-main ranks). Off a terminal it prints one line per ``interval_s`` seconds (and the first
    and last step) instead of a bar; ``label`` (the run's name) starts each line. The time left is estimated
    from the steps after this process's first (which compiles, autotunes, starts CUDA: no measure of the rest):
    the first step's line says how long it took instead (the bar's estimate, rich's, starts after it too)."""

    def __init__(self, console: Console, total: int, start: int = 0, enabled: bool = True, label: str = "",
                 interval_s: float = 30.0) -> None:
        self.enabled = enabled
        self.console, self.label, self.interval_s = console, label, interval_s
        self.lines = enabled and not (console.is_terminal or console.is_jupyter)
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), console=console, transient=False,
        ) if enabled and not self.lines else None
        self.total, self.start = total, start
        self.task: Any = None
        self._t0 = self._last = 0.0
        self._first_done: float | None = None  # when this process's first step ended

    def __enter__(self) -> TrainProgress:
        self._t0 = self._last = time.monotonic()
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, logs: dict[str, float]) -> None:
        """Show ``step`` and the latest ``logs`` (a line at most every ``interval_s`` seconds off a terminal)."""
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=_info(logs))
        elif self.lines:
            now = time.monotonic()
            if step == self.start + 1:
                self._first_done = now
            if step in (self.start + 1, self.total) or now - self._last >= self.interval_s:
                self._last = now
                self.console.print(escape(self._line(step, _info(logs), now)), soft_wrap=True, highlight=False)

    def _line(self, step: int, info: str, now: float) -> str:
        done = step - self.start - 1  # the steps since the first, which compiles and warms up
        if step >= self.total:
            eta = ""
        elif done <= 0 or self._first_done is None:
            eta = f" first step {_duration(now - self._t0)}"
        else:
            eta = f" eta {_duration((now - self._first_done) / done * (self.total - step))}"
        name = f"{self.label} " if self.label else ""
        return f"{name}step {step}/{self.total} ({100 * step / max(self.total, 1):.0f}%) {info}{eta}"

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


def _info(logs: dict[str, float]) -> str:
    return " ".join(f"{k}={logs[k]:.3g}" for k in _SHOWN if k in logs)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
