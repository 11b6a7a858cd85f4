"""What a process of a torchrun job knows from its environment alone (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``): whether it is the one that speaks, and what an error it meets means for the job. Without
torch: the CLI's error handlers use it, and must work when an import of torch is what failed (Ctrl-C during
start-up)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from avade.errors import AvadeError

TIMEOUT_ENV = "AVADE_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 120.0


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a single process (from the environment: no process group needed)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def alike_on_this_node() -> Iterator[None]:
    """Marks an avade error raised in the block as one that every process of a torchrun job on this node
    raises alike: the block depends on the recipe, the files and the environment, nothing of its rank
    (loading the recipe and the data, building the model, reading the checkpoint). The node's first process
    (``LOCAL_RANK`` 0) alone prints it (:func:`said_by_another_process`): one line, not one per process."""
    try:
        yield
    except AvadeError as exc:
        exc.alike_on_node = True  # type: ignore[attr-defined]
        raise


def said_by_another_process(exc: BaseException) -> bool:
    """Whether, under torchrun, this process leaves ``exc`` for another to print: rank 0 prints an error that
    every process raised alike (``every_process``: a decision taken from all-reduced values), the node's first
    process one that every process on the node raised alike (:func:`alike_on_this_node`)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if getattr(exc, "every_process", False) and not is_main_process():
        return True
    return bool(getattr(exc, "alike_on_node", False)) and int(os.environ.get("LOCAL_RANK", "0")) != 0


# what the collective of a process whose peer left (failed, or was killed) raises: gloo's "Connection closed by
# peer" / "Connection reset by peer" / "Broken pipe" (a plain RuntimeError), NCCL's "remote process exited" and
# the like (torch's DistError family)
_PEER_LOST_MARKS = ("closed by peer", "reset by peer", "broken pipe", "remote process exited",
                    "this is typically caused by a remote worker crashing")
PEER_LOST = ("another process of this torchrun job stopped (its own error line, or torchrun's report of its exit "
             "code, says why); this one stops with it")


def job_failure(exc: BaseException) -> str | None:
    """The one-line error for ``exc`` when, under torchrun, it is a collective that failed because of the other
    processes, not of this one: a process that is gone (a consequence of its own error, which it reports) or
    one that kept this one waiting past the collective timeout. None for anything else."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not isinstance(exc, RuntimeError):  # (torch.distributed.DistError is a RuntimeError)
        return None
    text = str(exc).lower()
    if any(mark in text for mark in _PEER_LOST_MARKS):
        return PEER_LOST
    if "timed out" in text or "timeout" in text:
        shown = os.environ.get(TIMEOUT_ENV, "").strip() or f"{DEFAULT_TIMEOUT_MIN:g}"
        return (f"waited {TIMEOUT_ENV} = {shown} minutes for the other processes of this torchrun job in a "
                f"collective: one is stuck, or slower than that (rank 0 computes the sample metrics alone: raise "
                f"{TIMEOUT_ENV} if they take longer)")
    return None
