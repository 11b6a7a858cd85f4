"""Stopping training at a step boundary with a checkpoint, so ``--resume`` loses nothing.

- SIGTERM (a cluster's preemption or time limit, ``scancel``, ``kill``) asks for that stop, and so does
  SIGUSR1 (SLURM's early warning, ``sbatch --signal=USR1@120``, as submitit and Lightning use it).
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

from avade.errors import StoppedError

# A second SIGINT this soon after the first is the same request: torchrun forwards the terminal's Ctrl-C
# to its workers, which got it from the terminal too. A person pressing again takes longer.
REPEAT_WINDOW_S = 1.0
# What a stop signal says before training starts or goes on (nothing new to save yet): ``immediate`` below
UNSTARTED_STOP = ("stopped by {signal} before the first step: nothing was trained, so nothing was saved; run the "
                  "same command again (a sweep whose earlier variants are done: with --resume)")
UNRESUMED_STOP = ("stopped by {signal} before training went on from the checkpoint: nothing new to save; continue "
                  "with --resume")
# Signals that ask for a stop with a checkpoint (SIGINT too, handled on its own); SIGUSR1 is POSIX only.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """For DataLoader workers: ignore SIGINT and the stop signals. A terminal's Ctrl-C and a cluster's
    signals (SLURM signals every process of the job) reach the workers too, and the training process, which
    stops at the step boundary and saves, must not lose them meanwhile: a worker that dies while its loader
    is alive fails the main process wherever it is ("DataLoader worker is killed by signal"), mid-save
    included. The workers end with their loader (the trainer closes its batches on the way out) or with
    the training process (DataLoader's watchdog); a worker stuck in a dataset's ``__getitem__`` is then
    past DataLoader's SIGTERM and needs SIGKILL, as SLURM sends after its grace time."""
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)


class StopNow(BaseException):
    """Raised by an ``immediate`` handler wherever the signal lands: a BaseException, so that no loader's
    ``except Exception`` takes it for a failure (a corrupt dataset); the block turns it into a
    :class:`~avade.errors.StoppedError`."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class StopRequest:
    """Set by the signal handlers; read by the training loop between steps."""

    def __init__(self, announce: bool = True, repeat_window_s: float = REPEAT_WINDOW_S,
                 immediate: str | None = None) -> None:
        self.signal: str | None = None
        self.announce = announce
        self.repeat_window_s = repeat_window_s
        self.immediate = immediate
        self._first_sigint: float | None = None

    def _stop_now(self, signum: int) -> None:
        if self.immediate is not None:
            self.immediate = None  # once: a second signal must not interrupt the unwinding of the first
            raise StopNow(signal.Signals(signum).name)

    def _handle_sigterm(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_now(signum)
        self.signal = self.signal or signal.Signals(signum).name

    def _handle_sigint(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_now(signum)
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
def stop_on_signals(announce: bool = True, repeat_window_s: float = REPEAT_WINDOW_S,
                    immediate: str | None = None) -> Iterator[StopRequest]:
    """Within the block SIGTERM, SIGUSR1 and a first SIGINT only set ``request.signal`` (a second SIGINT raises
    ``KeyboardInterrupt``); the previous handlers come back after it. A SIGINT that was ignored (a
    background job, ``nohup``) stays ignored. Signal handlers can only be installed from the main
    thread; elsewhere the block changes nothing.

    ``immediate``: before there is anything to save (loading data, the untrained model's evaluation) each
    of these signals stops the block at once, wherever it is (:class:`StopNow`), and the block raises
    :class:`~avade.errors.StoppedError` with this message (``{signal}``: the signal's name), instead of
    waiting for a step boundary."""
    request = StopRequest(announce, repeat_window_s, immediate)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[signal.Signals, Any] = {}
    try:  # installed inside: a signal right after the first handler is in place is converted too
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, request._handle_sigterm)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, request._handle_sigint)
        yield request
    except StopNow as stop:
        assert immediate is not None
        raise StoppedError(immediate.format(signal=stop.signal_name), signal_name=stop.signal_name) from None
    finally:
        request.immediate = None  # from here on a signal only sets the flag: nothing escapes unconverted
        for signum, handler in previous.items():
            signal.signal(signum, handler)
