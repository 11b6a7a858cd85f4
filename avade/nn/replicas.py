"""Statistics that a data-parallel job decides on as one: the mean of a tensor over the replicas.

A component that thresholds a batch statistic (the posteriors' free bits) calls :func:`replica_mean`, so
the decision is the job's, the same on every process and for any number of processes with the same
global batch. It reduces only inside :func:`replica_statistics`, which the trainer opens around the
training pass that every process runs together; anywhere else (evaluation on rank 0 alone, user code)
it is the identity and never waits on other processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.distributed as dist

_ACTIVE: ContextVar[bool] = ContextVar("avade_replica_statistics", default=False)


@contextlib.contextmanager
def replica_statistics(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`replica_mean` averages over the processes of the default group."""
    token = _ACTIVE.set(enabled)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


# A collective and a context variable: run eagerly inside compiled code. torch's own lazy form of
# torch.compiler.disable, which imports torch._dynamo (~1.3 s) at the first call instead of with this module: a
# process that neither compiles nor uses free bits (the only caller), e.g. `avade recipe check`, needs none of it.
_eager = getattr(torch, "_disable_dynamo", torch.compiler.disable)


@_eager
def replica_mean(t: torch.Tensor) -> torch.Tensor:
    """``t`` averaged over the data-parallel processes inside :func:`replica_statistics`; else ``t``.
    Not differentiable (a statistic for a decision): pass a detached tensor."""
    if not _ACTIVE.get() or not dist.is_available() or not dist.is_initialized():
        return t
    world = dist.get_world_size()
    if world == 1:
        return t
    total = t.detach().clone()
    dist.all_reduce(total)
    return total / world
