"""One error family: every failure a user can cause is an :class:`AvadeError` with a one-line message.

The CLI prints ``error: <message>`` and exits non-zero for these; anything else is a bug and shows a
traceback only with ``--debug``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AvadeError(Exception):
    """Base class: a user-facing error whose ``str`` is a complete one-line explanation."""


class RegistryError(AvadeError):
    """Unknown component, duplicate registration, or a broken registration."""


class ConfigError(AvadeError):
    """A component config or recipe value is invalid. ``path`` is the dotted key path."""

    def __init__(self, message: str, path: str = "", source: str | None = None) -> None:
        self.path = path
        self.source = source
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = ": ".join(p for p in (self.source, self.path) if p)
        return f"{where}: {self.detail}" if where else self.detail

    def located(self, source: str | None = None, prefix: str = "") -> ConfigError:
        """The same error with a file name and/or a key-path prefix added."""
        if prefix and self.path.startswith("["):
            path = prefix + self.path
        else:
            path = ".".join(p for p in (prefix, self.path) if p)
        return ConfigError(self.detail, path=path, source=source or self.source)


class DataError(AvadeError):
    """A dataset is missing or unreadable."""


class CheckpointError(AvadeError):
    """A checkpoint is missing, corrupt, or belongs to another recipe."""


class TrainingError(AvadeError):
    """Training cannot continue (e.g. too many consecutive non-finite steps). ``every_process``: under
    torchrun, every process raised it at the same point (a decision taken from all-reduced values), so a
    sweep may go on to its next variant."""

    def __init__(self, *args: object, every_process: bool = False) -> None:
        super().__init__(*args)
        self.every_process = every_process


class StoppedError(AvadeError):
    """Training was asked to stop (SIGTERM, or a first Ctrl-C) and stopped at a step boundary, checkpoint
    saved; a sweep stops with it rather than going on to its next variant. ``signal_name`` is the signal
    that asked (``"SIGTERM"`` when another process of the job was signalled)."""

    def __init__(self, message: str, signal_name: str = "SIGTERM") -> None:
        super().__init__(message)
        self.signal_name = signal_name


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``" (did you mean 'x'?)"`` suffix, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def refuse_a_string(value: object, what: str, example: str) -> None:
    """A TypeError when a list of strings is given as one string (whose characters would be taken one by one)."""
    if isinstance(value, str):
        raise TypeError(f"{what}: expected a list of strings, e.g. {example}, got the string {value!r}; put it in "
                        f"a list: [{value!r}]")


class BusyError(AvadeError):
    """A run directory is being trained by another process; nothing was changed."""
