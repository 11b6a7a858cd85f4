"""Files that readers never see half written: write a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to: when the block ends normally it replaces ``path`` in
    one rename (a reader sees the old file or the new one, never a part), and on an error it is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        # On disk before the rename, and the rename itself after: a power loss must not leave an empty
        # summary.json or eval.json where the old one was (file systems may reorder data and rename).
        sync_file(tmp)
        os.replace(tmp, path)
        sync_folder(path.parent)
    except OSError as exc:
        # A failed write of the temporary file (a full disk, a read-only folder) is one of ``path``: named so. A
        # write error carries no file name at all (the message would say "No space left on device", not where).
        # An error of no errno is the writer's own (Pillow's "cannot write mode RGB as XBM"): a file name set on it
        # would replace its message, str() then saying "[Errno None] None: 'x.xbm' -> None".
        if exc.errno is not None and (exc.filename is None or exc.filename == str(tmp)):
            exc.filename, exc.filename2 = str(path), None
        raise
    finally:
        # (on a read-only file system even a missing file's unlink fails, with EROFS: that must not stand in
        # for the error that ended the block, which names ``path``; a temporary file left is dropped later)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


# A file system that cannot sync (some FUSE mounts say EINVAL or ENOTSUP): the data were written, so go on.
_CANNOT_SYNC = {getattr(errno, name) for name in ("EINVAL", "ENOTSUP", "EOPNOTSUPP") if hasattr(errno, name)}


def sync_file(path: Path) -> None:
    """Flush ``path``'s data to disk (through a handle that may write: Windows syncs no read-only one); a real
    write error (a full disk found late, EIO) is raised, a file system that cannot sync is let be."""
    with path.open("r+b") as fh:
        try:
            os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno not in _CANNOT_SYNC:
                raise


def sync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk; best effort: Windows and some file systems
    cannot open or sync a folder, and the data itself is already synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def created_file_mode() -> int:
    """The mode ``open()`` gives a new file here: 0o666 less the process's umask (read from /proc on Linux, where
    setting it to read it would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def save_tensors(tensors: dict[str, Any], path: Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, the file then given the mode of any other file written here (the umask's):
    safetensors creates its files 0600, so a group sharing runs could read a run's JSON but not its weights."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, created_file_mode())


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError in the block without a file name (a write that finds the disk full says only "No space left on
    device") names ``path``, the file being written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def drop_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of :func:`replaced_atomically` beside ``path`` that other processes left
    (killed while writing: ``kill -9``, the OOM killer, a node lost). Only for a file that one process at a
    time writes (e.g. a run's own files, while its training lock is held): a temporary file of another
    process is then never one still being written."""
    prefix, own = f".{path.name}.", f".{path.name}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        for stale in path.parent.iterdir():
            name = stale.name
            if (name.startswith(prefix) and name.endswith(".tmp") and name != own
                    and name[len(prefix):-len(".tmp")].isdecimal()):
                with contextlib.suppress(OSError):
                    stale.unlink()


def locked(lock_file: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive advisory lock (POSIX ``flock``; elsewhere none) around a read-modify-write of a file
    that several processes may update (two ``avade eval`` at once, a sweep's variants run as array jobs)."""
    return _exclusive(lock_file, wait=True)


def locked_for(path: Path) -> contextlib.AbstractContextManager[None]:
    """:func:`locked` on ``path``'s own lock file (``.NAME.lock`` beside it): every writer of ``path`` takes
    the same one."""
    return locked(path.with_name(f".{path.name}.lock"))


def held_alone(lock_file: Path, busy: str) -> contextlib.AbstractContextManager[None]:
    """An exclusive lock on ``lock_file`` for as long as the block runs, taken without waiting: when another
    process holds it, ``RuntimeError(busy)`` at once (two processes training one run directory would
    interleave its checkpoints and logs). POSIX ``flock``; elsewhere no lock. Released when the process
    dies, however it ends."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    return _exclusive(lock_file, wait=False, busy=busy)


# The descriptors of the lock files this process holds. A flock belongs to the open file, which a forked
# child (a DataLoader worker) shares: it would keep a training process's lock after that process was killed
# (kill -9, the OOM killer) until the child noticed (seconds, or never for one stuck reading a file), and a
# --resume right then would be refused as "another process is training". So forked children let go of them.
_held: set[int] = set()


def _let_go_in_child() -> None:
    """In a forked child: point the inherited lock descriptors at /dev/null, so that only the parent holds
    its locks (never ``LOCK_UN``: that would release the parent's lock too)."""
    if not _held:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        for fd in _held:
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
    finally:
        os.close(null)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_let_go_in_child)


@contextlib.contextmanager
def _exclusive(lock_file: Path, wait: bool, busy: str = "") -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_file, "a") as fh:
        try:
            held = _flock(fcntl, fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), lock_file)
        except BlockingIOError:
            raise RuntimeError(busy) from None
        if held:
            _held.add(fh.fileno())
        try:
            yield
        finally:
            if held:
                _held.discard(fh.fileno())
                fcntl.flock(fh, fcntl.LOCK_UN)


# A file system without flock (NFS without lockd, Lustre mounted noflock): work unlocked, said once.
_NO_LOCKS = {getattr(errno, name) for name in ("ENOLCK", "ENOSYS", "EOPNOTSUPP", "ENOTSUP") if hasattr(errno, name)}
_warned: set[str] = set()


def _flock(fcntl: Any, fh: Any, operation: int, lock_file: Path) -> bool:
    """``flock`` ``fh``; False (and a warning, once per folder) where the file system has no locks."""
    try:
        fcntl.flock(fh, operation)
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            raise
        if str(lock_file.parent) not in _warned:
            _warned.add(str(lock_file.parent))
            warnings.warn(f"{lock_file.parent}: its file system takes no locks ({exc.strerror}), so processes that "
                          "write there at once are not kept apart", UserWarning, stacklevel=4)
        return False
    return True
