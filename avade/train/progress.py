"""Rich progress bar for training: step, loss terms, BPD, images/s, ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_SHOWN = ("loss", "bpd", "l_c", "l_q", "d_loss", "gp", "images_per_s")


class TrainProgress:
    """Context manager around rich's Progress; a no-op when disabled (tests, non-main ranks)."""

    def __init__(self, console: Console, total: int, start: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), console=console, transient=False,
        ) if enabled else None
        self.total, self.start = total, start
        self.task: Any = None

    def __enter__(self) -> TrainProgress:
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def update(self, step: int, logs: dict[str, float]) -> None:
        if self.progress is None:
            return
        info = " ".join(f"{k}={logs[k]:.3g}" for k in _SHOWN if k in logs)
        self.progress.update(self.task, completed=step, info=info)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
