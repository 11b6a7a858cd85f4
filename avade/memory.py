"""Running out of memory (a GPU's or the host's) as one error line: what ran out, while doing what, and what to
lower. Torch raises ``torch.OutOfMemoryError`` for a GPU, Python ``MemoryError`` (numpy, pickle, lists) and the
CPU allocator a plain RuntimeError naming itself; :func:`out_of_memory` tells these from every other error."""

from __future__ import annotations

import contextlib
import re
import traceback
from collections.abc import Callable, Iterator

from avade.errors import AvadeError

# what torch's CPU allocator says when an allocation fails (Linux, macOS: "can't allocate memory"; Windows:
# "not enough memory"), e.g. "[enforce fail at alloc_cpu.cpp:127] ... DefaultCPUAllocator: can't allocate memory:
# you tried to allocate 4611686018427387904 bytes. Error code 12 (Cannot allocate memory)"
_HOST_ALLOCATOR = re.compile(r"DefaultCPUAllocator: (can't allocate memory|not enough memory)")
# failed allocations torch raises as a plain RuntimeError on an accelerator: Apple's MPS allocator ("MPS backend out
# of memory (MPS allocated: ...). Tried to allocate 33.92 GiB on private pool"), and a CUDA call outside the caching
# allocator (cuBLAS/cuDNN workspaces, a context: "CUDA error: out of memory", cudaErrorMemoryAllocation)
_MPS_ALLOCATOR = re.compile(r"MPS backend out of memory")
_CUDA_ALLOCATION = re.compile(r"CUDA error: out of memory")

#: what to lower when nothing more precise is known (a command's own phase says better)
GENERAL_FIX = ('lower the batch size (data.batch_size; data.eval_batch_size for bpd; eval.<metric>.batch_size; '
               'avade sample --batch-size), set train.precision = "bf16", or use a smaller model (model.*)')


class OutOfMemory(AvadeError):
    """Memory ran out while avade was ``phase`` (e.g. "at training step 12"); ``fix`` says what to lower."""

    def __init__(self, what: str, phase: str, said: str, fix: str) -> None:
        self.what, self.phase, self.said, self.fix = what, phase, said, fix
        super().__init__(self._format())

    def _format(self) -> str:
        phase = f" {self.phase}" if self.phase else ""
        said = f" ({self.said})" if self.said else ""
        return f"out of memory{phase}: the {self.what} ran out{said}; {self.fix}"

    def with_fix(self, more: str) -> OutOfMemory:
        """The same error with ``more`` after what to lower (a training run: what ``--resume`` goes on from)."""
        return OutOfMemory(self.what, self.phase, self.said, f"{self.fix}; {more}")


def out_of_memory(exc: BaseException) -> str | None:
    """What ran out when ``exc`` is a failed allocation ("GPU's memory", "host's memory"), else None (any other
    error, RuntimeErrors of torch included)."""
    import torch

    gpu = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, gpu):
        return "MPS device's memory" if "MPS" in str(exc) else "GPU's memory"
    if isinstance(exc, MemoryError):
        return "host's memory"
    if isinstance(exc, RuntimeError):
        text = str(exc)
        if _HOST_ALLOCATOR.search(text):
            return "host's memory"
        if _MPS_ALLOCATOR.search(text):
            return "MPS device's memory"
        if _CUDA_ALLOCATION.search(text):
            return "GPU's memory"
    return None


def _said(exc: BaseException) -> str:
    """The size of the allocation that failed, as torch says it ("tried to allocate 20.00 GiB"), if it does."""
    text = str(exc)
    found = re.search(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]i?B)", text)
    if found:
        return f"tried to allocate {found.group(1)}"
    found = re.search(r"tried to allocate (\d+) bytes", text)
    if found:
        return f"tried to allocate {int(found.group(1)) / 2**30:.2f} GiB"
    return ""


def as_out_of_memory(exc: BaseException, phase: str, fix: str) -> OutOfMemory | None:
    """``exc`` as an :class:`OutOfMemory` error when it is a failed allocation, else None. A GPU's cached blocks are
    released first, so that what follows (a summary, the next sweep variant) finds them free."""
    what = out_of_memory(exc)
    if what is None:
        return None
    if what.startswith("GPU"):
        import torch

        # the failed pass's activations, held by the finished frames of the error's traceback, freed first (else
        # the cache keeps their blocks: the traceback's lines stay for --debug)
        traceback.clear_frames(exc.__traceback__)
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
    return OutOfMemory(what, phase, _said(exc), fix)


@contextlib.contextmanager
def naming_memory(phase: str, fix: str | Callable[[], str]) -> Iterator[None]:
    """Memory running out in the block is an :class:`OutOfMemory` error saying ``phase`` and ``fix`` (a callable:
    computed only then); an inner block's error, more precise, is left as it is."""
    try:
        yield
    except Exception as exc:
        error = as_out_of_memory(exc, phase, fix() if callable(fix) else fix)
        if error is None:
            raise
        try:
            raise error from exc
        finally:  # (else error -> its traceback -> this frame -> error: a cycle keeping the failed block's tensors,
            del error  # a GPU's activations too, until the garbage collector runs, past the next sweep variant's start)


def _read_int(path: str) -> int | None:
    """The integer a one-number file (/proc, /sys) holds; None when absent, unreadable or "max"."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cgroup_free() -> int | None:
    """What this process's cgroup (a container's, a job scheduler's) still lets it allocate: its limit less its
    usage (cgroup v2: memory.max, memory.current; v1: memory.limit_in_bytes, usage_in_bytes); None without one."""
    own = ""
    with contextlib.suppress(OSError), open("/proc/self/cgroup", encoding="utf-8") as f:
        own = next((line.strip()[3:] for line in f if line.startswith("0::")), "")
    for folder in dict.fromkeys((f"/sys/fs/cgroup{own}".rstrip("/"), "/sys/fs/cgroup")):
        limit, used = _read_int(f"{folder}/memory.max"), _read_int(f"{folder}/memory.current")
        if limit is not None and used is not None:
            return max(limit - used, 0)
    limit = _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    used = _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    if limit is not None and used is not None and limit < 2**60:  # (v1 says "no limit" as a huge number)
        return max(limit - used, 0)
    return None


def host_memory_free() -> int | None:
    """Bytes of the host's memory this process can still use: the kernel's MemAvailable (/proc/meminfo), or its
    cgroup's limit less its usage where that is lower. None where neither can be read (not Linux)."""
    available = None
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    cgroup = _cgroup_free()
    known = [b for b in (available, cgroup) if b is not None]
    return min(known) if known else None


def memory_free(device: str) -> tuple[int | None, str]:
    """Bytes free on ``device`` ("cpu", "cuda", "cuda:N") and how to name it ("this machine", "GPU cuda:0");
    None bytes where they cannot be read (the check that asks is then skipped)."""
    if not device.startswith("cuda"):
        return host_memory_free(), "this machine"
    import os

    import torch

    try:
        if ":" in device:
            index = int(device.split(":")[1])
        else:  # this process's GPU, as training takes it (the one it sees under a launcher that gives each its own)
            from avade.train.distributed import cuda_index

            local, visible = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            index = cuda_index(local, visible) if visible else local  # (none seen: mem_get_info says why)
    except Exception:  # (a LOCAL_RANK past the GPUs seen: training itself says so)
        return None, f"GPU {device}"
    try:
        return int(torch.cuda.mem_get_info(index)[0]), f"GPU cuda:{index}"
    except Exception:  # (no driver, a busy or lost device: nothing to compare with)
        return None, f"GPU cuda:{index}"
