"""Stopping training at a step boundary with a checkpoint, so ``--resume`` loses nothing.

- SIGTERM (a cluster's preemption or time limit, ``scancel``, ``kill``) asks for that stop.
- So does a first Ctrl-C (SIGINT). A second Ctrl-C quits at once (``KeyboardInterrupt``), because a step
  or an evaluation can take minutes.

Without this the process died mid-step and the steps since the last checkpoint were lost.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# A second SIGINT this soon after the first is the same request: torchrun forwards the terminal's Ctrl-C
# to its workers, which got it from the terminal too. A person pressing again takes longer.
REPEAT_WINDOW_S = 1.0


class StopRequest:
    """Set by the signal handlers; read by the training loop between steps."""

    def __init__(self, announce: bool = True, repeat_window_s: float = REPEAT_WINDOW_S) -> None:
        self.signal: str | None = None
        self.announce = announce
        self.repeat_window_s = repeat_window_s
        self._first_sigint: float | None = None

    def _handle_sigterm(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = self.signal or signal.Signals(signum).name

    def _handle_sigint(self, signum: int, _frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._first_sigint is None:
            self._first_sigint = now
            self.signal = self.signal or signal.Signals(signum).name
            if self.announce:  # straight to stderr: a handler must not wait on a console's lock
                sys.stderr.write("\nCtrl-C: stopping after this step with a checkpoint "
                                 "(press Ctrl-C again to quit now, without one)\n")
                sys.stderr.flush()
        elif now - self._first_sigint > self.repeat_window_s:
            raise KeyboardInterrupt


@contextmanager
def stop_on_signals(announce: bool = True, repeat_window_s: float = REPEAT_WINDOW_S) -> Iterator[StopRequest]:
    """Within the block SIGTERM and a first SIGINT only set ``request.signal`` (a second SIGINT raises
    ``KeyboardInterrupt``); the previous handlers come back after it. A SIGINT that was ignored (a
    background job, ``nohup``) stays ignored. Signal handlers can only be installed from the main
    thread; elsewhere the block changes nothing."""
    request = StopRequest(announce, repeat_window_s)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[signal.Signals, Any] = {signal.SIGTERM: signal.signal(signal.SIGTERM, request._handle_sigterm)}
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, request._handle_sigint)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
