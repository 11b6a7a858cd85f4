"""Data parallelism under torchrun: one process per device, gradients averaged after each backward.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK. We average gradients with one flattened all-reduce per
optimizer step rather than wrapping in DistributedDataParallel: Algorithm 1 calls the model several
times per step (likelihood pass, sampling pass, discriminator on reals, fakes and interpolates) and
the gradient penalty needs double backward, both of which DDP's reducer does not support. The maths
is the same as DDP's (mean of per-rank gradients); NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from typing import Any

import attrs
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from avade.errors import ConfigError, minutes_setting
from avade.train.ranks import DEFAULT_TIMEOUT_MIN, TIMEOUT_ENV, alike_on_this_node


@attrs.frozen
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    gpu: int = 0  # the CUDA device index this process uses (see :func:`cuda_index`)

    @property
    def enabled(self) -> bool:
        """More than one process: gradients and statistics are averaged across them."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes files and prints."""
        return self.rank == 0


def collective_timeout() -> datetime.timedelta:
    """How long a process waits in a collective for the others: ``$AVADE_DIST_TIMEOUT_MIN`` minutes,
    default 120. Rank 0 alone computes the sample metrics (FID, KID, IS, PRD, GAN-test) and writes
    checkpoints and grids while the other ranks wait in their next collective; NCCL's own default (10
    minutes) would have its watchdog abort the whole job during a long evaluation."""
    return datetime.timedelta(minutes=minutes_setting(TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN, "the collective timeout"))


def cuda_index(local_rank: int, visible: int) -> int:
    """The GPU of the process with ``local_rank`` on a node where it sees ``visible`` GPUs: its local rank
    (torchrun, every process seeing every GPU), or the one GPU it sees (a launcher that gives each process
    its own, e.g. SLURM's ``--gpus-per-task=1``, where LOCAL_RANK still counts 0..N-1)."""
    if visible == 1:
        return 0
    if 0 <= local_rank < visible:
        return local_rank
    shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    raise ConfigError(f"LOCAL_RANK={local_rank}, but this process sees {visible} GPU(s)"
                      f"{f' (CUDA_VISIBLE_DEVICES={shown})' if shown is not None else ''}; start at most one process "
                      "per visible GPU (torchrun --nproc_per_node), or give each process one GPU")


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun job if there is one (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    with alike_on_this_node():  # the environment's: every process on the node meets the same error
        _refuse_a_partial_launch(world)
        timeout = collective_timeout()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    gpu = 0
    if device_type == "cuda":  # before the process group, so that its communicator binds to this GPU
        gpu = cuda_index(local, torch.cuda.device_count())
        torch.cuda.set_device(gpu)
    if not dist.is_initialized():
        _join_the_job(device_type, gpu, timeout)
    if device_type == "cuda":
        _refuse_shared_gpus(gpu, world)
    return DistInfo(rank, world, local, gpu)


def _join_the_job(device_type: str, gpu: int, timeout: datetime.timedelta) -> None:
    """``dist.init_process_group`` in a helper thread, the main thread waiting for it in Python: joining
    waits in C++ for every process of the job, where a stop signal's handler (which only runs between
    Python bytecodes) could not run. A partner that never comes (rank 0 refused for a run directory
    another job trains, a process that failed before joining) then kept this one deaf to torchrun's
    SIGTERM until torchrun killed it 30 s later -- or, without torchrun's kill, until the collective
    timeout. Here the signal stops it at once, as it does anywhere else before the first step."""
    import threading

    failure: list[BaseException] = []

    def join() -> None:
        try:
            if device_type == "cuda":  # (the current GPU is the thread's own)
                torch.cuda.set_device(gpu)
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=timeout)
        except BaseException as exc:  # (re-raised in the main thread)
            failure.append(exc)

    worker = threading.Thread(target=join, name="avade-join-job", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    if failure:
        raise failure[0]


def _refuse_a_partial_launch(world: int) -> None:
    """A clear error when ``WORLD_SIZE`` asks for a job whose other variables torchrun would have set are
    missing (a launcher or a shell that exports WORLD_SIZE alone), instead of a KeyError or torch's ValueError."""
    needed = ["RANK"] if dist.is_initialized() else ["RANK", "MASTER_ADDR", "MASTER_PORT"]
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} asks for a job of {world} processes, but {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set; start the processes with torchrun "
                          "(it sets RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT), or unset WORLD_SIZE to train "
                          "in one process")


def shared_gpus(placements: list[tuple[str, str]]) -> list[list[int]]:
    """The groups of ranks that sit on the same GPU, from each rank's ``(host, GPU UUID)``."""
    ranks: dict[tuple[str, str], list[int]] = {}
    for rank, where in enumerate(placements):
        ranks.setdefault(tuple(where), []).append(rank)  # type: ignore[arg-type]
    return [group for group in ranks.values() if len(group) > 1]


def _refuse_shared_gpus(gpu: int, world: int) -> None:
    """Two processes on one GPU (torchrun --nproc_per_node 2 where one GPU is visible): one clear error on
    every process, instead of NCCL's."""
    import socket

    uuid = getattr(torch.cuda.get_device_properties(gpu), "uuid", None)
    if uuid is None:  # (older torch: nothing to compare)
        return
    placements: list[Any] = [None] * world
    # over gloo, not NCCL: NCCL's first collective would itself fail on two ranks sharing a GPU, with its own
    # message, before this one could be given
    group = dist.new_group(backend="gloo")
    try:
        dist.all_gather_object(placements, (socket.gethostname(), str(uuid)), group=group)
    finally:
        dist.destroy_process_group(group)
    groups = shared_gpus(placements)
    if groups:
        error = ConfigError(f"processes {', '.join(map(str, groups[0]))} share one GPU; start at most one process per "
                            f"GPU (torchrun --nproc_per_node = the GPUs each node has, {torch.cuda.device_count()} "
                            "here)")
        error.every_process = True  # type: ignore[attr-defined]  # (from the gathered placements: rank 0 says it)
        raise error


def shutdown_distributed(wait: bool = True) -> None:
    """Leave the job cleanly: wait for every process, then tear the process group down (a process
    that exits while a peer still holds the connection can abort the peer). ``wait=False`` (leaving on
    an error) skips the barrier: the error may have struck this process alone (rank 0's evaluation,
    say) while its peers wait in another collective, which a barrier would not match -- the job would
    hang until the collective timeout instead of failing now (torchrun stops the peers)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def average_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Replace each gradient by its mean over the processes (one all-reduce)."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= info.world
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Make every process start from rank 0's weights and buffers."""
    if not info.enabled:
        return
    for p in module.parameters():
        dist.broadcast(p.data, src=0)
        # Writes through .data do not bump the version counter; caches keyed on it (the 1x1 conv's
        # no-grad weight cache) must see the new values.
        torch.autograd.graph.increment_version(p)
    broadcast_buffers(module, info)


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers on every process (batch-norm running statistics drift apart per rank in
    training; evaluation must use one set, the one the checkpoint keeps)."""
    if not info.enabled:
        return
    for t in module.buffers():
        dist.broadcast(t.data, src=0)
        torch.autograd.graph.increment_version(t)


def average_tensors(tensors: list[torch.Tensor], info: DistInfo) -> list[torch.Tensor]:
    """The mean of each tensor over processes, as new tensors (one all-reduce for all of them)."""
    if not info.enabled or not tensors:
        return tensors
    flat = _flatten_dense_tensors([t.detach() for t in tensors]).clone()
    dist.all_reduce(flat)
    flat /= info.world
    return list(_unflatten_dense_tensors(flat, tensors))


def all_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Elementwise sums of ``values`` over processes (float64, one all-reduce)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_bytes(blob: bytes, info: DistInfo, device: torch.device) -> list[bytes]:
    """Every process's ``blob``, in rank order (two collectives: the lengths, then the padded bytes)."""
    if not info.enabled:
        return [blob]
    length = torch.tensor([len(blob)], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(info.world)]
    dist.all_gather(lengths, length)
    size = max(1, *(int(n) for n in lengths))  # (one byte at least: every blob may be empty)
    padded = torch.zeros(size, dtype=torch.uint8, device=device)
    if blob:  # (torch.frombuffer refuses an empty buffer)
        padded[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device)
    gathered = [torch.empty_like(padded) for _ in range(info.world)]
    dist.all_gather(gathered, padded)
    return [bytes(t[: int(n)].cpu().numpy()) for t, n in zip(gathered, lengths, strict=True)]
