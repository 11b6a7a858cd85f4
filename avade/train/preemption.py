"""SIGTERM (a cluster's preemption or time limit, ``scancel``, ``kill``) ends training at the next step
boundary with a checkpoint, so ``--resume`` loses nothing; without this the process died mid-step and
the steps since the last checkpoint were lost."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class StopRequest:
    """Set by the SIGTERM handler; read by the training loop between steps."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name


@contextmanager
def stop_on_sigterm() -> Iterator[StopRequest]:
    """Within the block SIGTERM only sets ``request.signal``; the previous handler comes back after it.
    (Signal handlers can only be installed from the main thread; elsewhere the block changes nothing.)"""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: Any = signal.signal(signal.SIGTERM, request._handle)
    try:
        yield request
    finally:
        signal.signal(signal.SIGTERM, previous)
