"""Files that readers never see half written: write a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: when the block ends normally it replaces ``path`` in
    one rename (a reader sees the old file or the new one, never a part), and on an error it is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX ``flock``; elsewhere none) around a read-modify-write of a file
    that several processes may update (two ``avade eval`` at once, a sweep's variants run as array jobs)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_file, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def held_alone(lock_file: Path, busy: str) -> Iterator[None]:
    """An exclusive lock on ``lock_file`` for as long as the block runs, taken without waiting: when another
    process holds it, ``RuntimeError(busy)`` at once (two processes training one run directory would
    interleave its checkpoints and logs). POSIX ``flock``; elsewhere no lock. Released when the process
    dies, however it ends."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
