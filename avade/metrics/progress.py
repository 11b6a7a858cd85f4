"""A rich progress bar for long image loops, shown only on an interactive terminal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

T = TypeVar("T", bound=Tensor)


def track_images(batches: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Yield ``batches`` unchanged, advancing a transient bar by each batch's length.

    Logs and CI (no terminal) get no bar at all, so their output stays clean.
    """
    console = Console(stderr=True)
    if not console.is_terminal:
        yield from batches
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for batch in batches:
            yield batch
            progress.advance(task, len(batch))
