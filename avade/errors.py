"""One error family: every failure a user can cause is an :class:`AvadeError` with a one-line message.

The CLI prints ``error: <message>`` and exits non-zero for these; anything else is a bug and shows a
traceback only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import math
import operator
import os
from collections.abc import Iterable, Iterator, Mapping


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
    """Training was asked to stop (SIGTERM, SIGUSR1 or a first Ctrl-C) and stopped at a step boundary with a
    checkpoint of that step (none when that step was not finite, nor before the first step); a sweep stops with
    it rather than going on to its next variant. ``signal_name`` is the signal
    that asked (``"SIGTERM"`` when another process of the job was signalled)."""

    def __init__(self, message: str, signal_name: str = "SIGTERM") -> None:
        super().__init__(message)
        self.signal_name = signal_name


_CLI_FLAGS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("avade_cli_flags",
                                                                                  default=None)
_NO_VALUE = object()


@contextlib.contextmanager
def cli_flags(mapping: Mapping[str, str]) -> Iterator[None]:
    """Inside, :func:`argument` names arguments by their command-line flags (``mapping``: Python argument name
    -> flag, e.g. ``{"device": "--device", "ema": "--ema/--no-ema"}``). The CLI enters it once around every
    command, so library code names what its caller passed without knowing who called it."""
    token = _CLI_FLAGS.set(dict(mapping))
    try:
        yield
    finally:
        _CLI_FLAGS.reset(token)


def argument(name: str, value: object = _NO_VALUE) -> str:
    """An argument as an error message names it: the Python argument (``device='cuda:9'``, or ``device``
    without a value) by default; inside :func:`cli_flags`, the flag the command line took it by
    (``--device cuda:9``; a ``--x/--no-x`` pair by its value: ``--no-ema``). A name the CLI has no flag for
    keeps its Python form."""
    flags = _CLI_FLAGS.get()
    flag = flags.get(name) if flags is not None else None
    if flag is None:
        return name if value is _NO_VALUE else f"{name}={value!r}"
    on, _, off = flag.partition("/")
    if off and isinstance(value, bool):
        return on if value else off
    return flag if value is _NO_VALUE or off else f"{flag} {value}"


def int_argument(value: object) -> int:
    """An integer argument (Python, numpy or 0-d torch integer) as an int; -1 for anything else (a bool, a
    float, a string), which a caller's ``>= 0`` check then refuses."""
    if isinstance(value, bool):
        return -1
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return -1


def real_argument(value: object) -> float:
    """A real argument (Python, numpy or one-element torch number) as a float; NaN for anything else (a bool, a
    string, a tensor of several elements), which a caller's range check then refuses."""
    if isinstance(value, bool | str | bytes):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def minutes_setting(name: str, default: float, what: str) -> float:
    """The positive, finite number of minutes in environment variable ``name`` (``default`` when unset or
    blank); a :class:`ConfigError` naming the variable and ``what`` it sets otherwise."""
    text = os.environ.get(name, "").strip()
    try:
        minutes = float(text) if text else default
    except ValueError:
        minutes = -1.0
    if not 0 < minutes < math.inf:
        raise ConfigError(f"{name}={text!r}: give {what} as a positive number of minutes")
    return minutes


def did_you_mean(word: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ``" (did you mean 'x'?)"`` suffix, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``, ``\\x1b``): messages quote what
    files hold (TOML quoted keys and strings, a shared run's state.json, a folder's name), which must neither add
    lines nor send escape sequences to the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, as messages name a component kind: "a flow", "an encoder"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def refuse_a_string(value: object, what: str, example: str) -> None:
    """A TypeError when a list of strings is given as one string (whose characters would be taken one by one),
    or as a dict (whose keys alone would be taken: ``{"train.steps": 3}``)."""
    if isinstance(value, str):
        raise TypeError(f"{what}: expected a list of strings, e.g. {example}, got the string {value!r}; put it in "
                        f"a list: [{value!r}]")
    if isinstance(value, dict):
        items = [f"{k}={_toml_value(v)}" if "=" not in str(k) else str(k) for k, v in value.items()]
        raise TypeError(f"{what}: expected a list of strings, e.g. {example}, got a dict; give its items as "
                        f"strings: {items!r:.200}")


def _toml_value(value: object) -> str:
    """``value`` as a ``--set key=value`` takes it (TOML: ``true``, ``nan``, ``{name = "glow"}``), for a hint; a
    Path or any other object as its string (JSON would raise on one, and write ``null``, ``NaN`` and ``{"k": v}``,
    which TOML reads as other values or not at all)."""
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf") if not math.isfinite(value) \
            else repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # (a JSON string is a TOML basic string)


class BusyError(AvadeError):
    """A run directory is being trained by another process; nothing was changed."""
