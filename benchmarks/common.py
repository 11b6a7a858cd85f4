"""Shared machinery: settings, timing, peak memory, FLOP counting, the GEMM peak, profiles, tables.

Methods (also in benchmarks/README.md):

- **time**: ``warmup`` untimed calls, then ``repeats`` timed calls; the median is reported. Two
  implementations compared in one process are timed *interleaved* (A, B, A, B, ...) and the ratio is
  the median of the per-pair ratios; the flow benchmark times each side in fresh processes of its
  own instead (see benchmarks/flows.py). On CUDA the device is synchronized before the clock starts
  and before it stops.
- **peak memory**: one extra untimed call. CUDA: ``torch.cuda.max_memory_allocated`` minus the memory
  allocated before the call. CPU: the torch profiler's memory events (``profile_memory=True``): the
  maximum of the running sum of every CPU allocation (+) and free (-) during the call, i.e. the peak
  of tensor memory *above the level at the start of the call* (parameters, inputs and optimizer state
  that already exist are not counted). Python objects and allocator caching are not counted.
- **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` over one call: matmul/conv (and their
  backward) FLOPs only -- elementwise work is not counted, so FLOP/s is a lower bound of the work done.
- **GEMM peak**: a large square ``torch.mm`` (bf16 on CUDA; on CPU fp32, or bf16 with ``--precision bf16``)
  timed in the same run, and on CPU oneDNN 1x1 and 3x3 convolutions; the fastest one's best (not median)
  time is the peak, so "fraction of peak" is conservative (see :func:`gemm_peak`).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.table import Table

from avade.registry import dist_version

ROOT = Path(__file__).resolve().parent.parent

Fn = Callable[[], object]


@dataclass(frozen=True)
class Settings:
    """What every benchmark needs to know about the run."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    quick: bool = False
    precision: str = "fp32"  # "fp32" | "bf16" (bf16 autocast, on CUDA and CPU, as in the Trainer)
    profile: bool = False
    warmup: int = 2
    repeats: int = 5
    isolate: bool = True  # flows: time each side in fresh processes (see benchmarks/README.md, Methods)
    malloc: str = "tuned"  # "tuned" | "system": glibc malloc settings of those processes
    recipe_set: tuple[str, ...] = ()  # train, scaling: KEY=VALUE overrides of the benchmarked recipes (--set)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def bf16(self) -> bool:
        """Whether bf16 autocast is applied (``train.precision = "bf16"``: on CUDA and on CPU)."""
        return self.precision == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast when asked for, else a no-op."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def make_settings(device: str = "cpu", quick: bool = False, precision: str = "fp32", profile: bool = False,
                  warmup: int | None = None, repeats: int | None = None, isolate: bool = True,
                  malloc: str = "tuned", recipe_set: Sequence[str] = ()) -> Settings:
    """Settings with the quick/full defaults for warm-up and repeats."""
    return Settings(
        device=torch.device(device),
        quick=quick,
        precision=precision,
        profile=profile,
        warmup=warmup if warmup is not None else (1 if quick else 2),
        repeats=repeats if repeats is not None else (2 if quick else 5),
        isolate=isolate,
        malloc=malloc,
        recipe_set=tuple(recipe_set),
    )


# glibc reads these at start-up: blocks up to 32 MiB come from the heap, and freed memory is kept
# (no trimming, 64 MiB of slack), so a warmed-up process stops taking page faults on fresh activations.
TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30),
                    "MALLOC_TOP_PAD_": str(64 * 2**20)}


def sync(device: torch.device) -> None:
    """Wait for queued device work (a no-op on CPU), so that the clock measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- timing ------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall times of the timed calls of one function, in seconds."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": min(self.times), "max_s": max(self.times),
                "repeats": len(self.times), "times_s": self.times}


def _timed(fn: Fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def measure(fns: Mapping[str, Fn], settings: Settings, *, warmup: int | None = None,
            repeats: int | None = None) -> dict[str, Timing]:
    """Warm up every function, then time them interleaved, ``repeats`` rounds of one call each."""
    warmup = settings.warmup if warmup is None else warmup
    repeats = settings.repeats if repeats is None else repeats
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(settings.device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            times[name].append(_timed(fn, settings.device))
    return {name: Timing(t) for name, t in times.items()}


def paired_speedup(ours: Timing, theirs: Timing) -> float:
    """Median over rounds of ``theirs / ours`` time: > 1 means ours is faster (a throughput ratio)."""
    return statistics.median(b / a for a, b in zip(ours.times, theirs.times, strict=True) if a > 0)


def best_speedup(ours: Timing, theirs: Timing) -> float:
    """``theirs / ours`` of the best (minimum) times: the estimate least hurt by other processes
    stealing the CPU now and then (each side's fastest round is the one least disturbed)."""
    return min(theirs.times) / min(ours.times)


# -- memory, FLOPs, profiles ------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: kineto prints start/stop banners (and, without a GPU, a harmless
    'gpuGetDeviceCount failed' line) straight to it when a profiler starts or stops."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _profiled(fn: Fn, activities: list[Any], **kwargs: Any) -> Any:
    """Run ``fn`` once under the torch profiler with fd 2 silenced. ``fn`` has always run before
    (warm-up), so nothing new is hidden; exceptions still propagate and print afterwards."""
    from torch.profiler import profile

    with _quiet_stderr(), profile(activities=activities, **kwargs) as prof:
        fn()
    return prof


MEMORY_METHOD_CUDA = "torch.cuda.max_memory_allocated during one call, minus memory allocated before it"
MEMORY_METHOD_CPU = ("torch.profiler profile_memory: peak of the running sum of CPU allocations/frees during "
                     "one call (tensor memory above the level at its start)")


def peak_memory(fn: Fn, device: torch.device) -> dict[str, Any]:
    """Peak additional tensor memory of one call of ``fn`` in MiB, with the method used."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return {"peak_mb": peak / 2**20, "method": MEMORY_METHOD_CUDA}
    from torch.profiler import ProfilerActivity

    prof = _profiled(fn, [ProfilerActivity.CPU], profile_memory=True)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return {"peak_mb": peak / 2**20, "method": MEMORY_METHOD_CPU}


class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker: every FLOP is attributed to "Global" only."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def count_flops(fn: Fn) -> int:
    """matmul/conv FLOPs (forward and backward) of one call of ``fn``, by ``FlopCounterMode``.

    Per-module attribution is switched off: its ModuleTracker hooks raise "Expected gradient function
    to be set" when a module gets a no-grad view of a parameter (e.g. ``param.expand`` under
    ``torch.no_grad``, which avade's sampling path does) -- a torch limitation, not a model bug.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    with counter:
        fn()
    return int(counter.get_total_flops())


def characterize(fn: Fn, device: torch.device) -> tuple[int, dict[str, Any]]:
    """(FLOPs, peak memory) of ``fn``: one FLOP-counted call (first-call work such as optimizer state
    allocation happens here; it does not change the FLOP count), then one memory-profiled call, which
    so sees a steady-state call. Both double as warm-up calls: pass
    ``warmup=settings.warmup - WARM_CALLS`` to :func:`measure` afterwards."""
    flops = count_flops(fn)
    return flops, peak_memory(fn, device)


WARM_CALLS = 2  # calls made by characterize()


def top_ops(fn: Fn, device: torch.device, limit: int = 15) -> list[dict[str, Any]]:
    """The ``limit`` most expensive ops of one call of ``fn`` by self time (device time on CUDA)."""
    from torch.profiler import ProfilerActivity

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def run() -> None:
        fn()
        sync(device)

    prof = _profiled(run, activities)
    averages = prof.key_averages()
    on_device = device.type == "cuda"

    def self_us(e: Any) -> float:
        return float(e.self_device_time_total if on_device else e.self_cpu_time_total)

    total = sum(self_us(e) for e in averages) or 1.0
    rows = sorted(averages, key=self_us, reverse=True)[:limit]
    return [{"op": e.key, "calls": int(e.count), "self_ms": self_us(e) / 1e3, "self_pct": 100 * self_us(e) / total,
             "total_cpu_ms": float(e.cpu_time_total) / 1e3} for e in rows]


# -- the GEMM peak -------------------------------------------------------------------------------


def _tf32(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """``fn(*args)`` with CUDA's fp32 matmuls on the TF32 tensor cores (the flag is read per call)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return fn(*args)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def gemm_peak(settings: Settings) -> dict[str, Any]:
    """FLOP/s of the fastest large GEMM-like kernel: the reference for "fraction of peak".

    CUDA: a ``torch.mm`` in bf16 (``--precision bf16``), or in fp32 both as IEEE fp32 and on the TF32 tensor
    cores (``train.tf32 = true`` runs that way; the faster, TF32, is the peak). CPU: a ``torch.mm`` (fp32,
    or bf16 with ``--precision bf16``), the same GEMM as a oneDNN 1x1 convolution
    (``[1, n, n, 1]`` input, ``n x n`` kernel: ``n^3`` multiply-adds) in NCHW and in channels-last,
    and a channels-last 3x3 convolution of 256 channels; the peak is the fastest. Why not torch.mm
    alone: it goes to the BLAS (MKL), which on some CPUs (e.g. AMD EPYC with AVX-512) runs a narrower
    code path than oneDNN, the library that runs every convolution, so torch.mm can be half the FLOP/s
    a convolution reaches and "fraction of peak" would exceed 1.
    """
    if settings.cuda:
        n, repeats = (4096 if settings.quick else 8192), 20
        dtype = torch.bfloat16 if settings.bf16 else torch.float32
    else:
        n, repeats = (1024 if settings.quick else 2048), (3 if settings.quick else 7)
        dtype = torch.bfloat16 if settings.bf16 else torch.float32
    gen = torch.Generator(device=settings.device).manual_seed(0)
    a = torch.randn(n, n, device=settings.device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=settings.device, dtype=dtype, generator=gen)
    fns: dict[str, Fn] = {"torch.mm": lambda: torch.mm(a, b)}
    flops = {"torch.mm": 2.0 * n**3}
    if settings.cuda and dtype == torch.float32:
        fns["torch.mm tf32"] = lambda: _tf32(torch.mm, a, b)
        flops["torch.mm tf32"] = 2.0 * n**3
    if not settings.cuda and torch.backends.mkldnn.is_available():
        conv = torch.nn.functional.conv2d
        cl = torch.channels_last
        x, w = a.view(1, n, n, 1), b.view(n, n, 1, 1)
        x_cl, w_cl = x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)
        fns["oneDNN conv1x1"] = lambda: conv(x, w)
        fns["oneDNN conv1x1 channels-last"] = lambda: conv(x_cl, w_cl)
        # A 3x3 convolution re-reads each input 9 times: the highest arithmetic intensity of any
        # kernel the models run, so the best FLOP/s a convolution can reach here.
        c, s = (64, 16) if settings.quick else (256, 32)
        x3 = torch.randn(16, c, s, s, generator=gen).to(dtype).contiguous(memory_format=cl)
        w3 = torch.randn(c, c, 3, 3, generator=gen).to(dtype).contiguous(memory_format=cl)
        fns["oneDNN conv3x3 channels-last"] = lambda: conv(x3, w3, padding=1)
        flops.update({"oneDNN conv1x1": 2.0 * n**3, "oneDNN conv1x1 channels-last": 2.0 * n**3,
                      "oneDNN conv3x3 channels-last": 2.0 * 16 * s * s * c * c * 9})
    timings = measure(fns, settings, warmup=2, repeats=repeats)
    kernels = {name: {"flops": flops[name], "peak_flop_s": flops[name] / min(t.times),
                      "median_flop_s": flops[name] / t.median, **t.to_dict()}
               for name, t in timings.items()}
    source = max(kernels, key=lambda k: kernels[k]["peak_flop_s"])
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "flops": kernels[source]["flops"],
            "peak_flop_s": kernels[source]["peak_flop_s"], "peak_source": source,
            "mm_peak_flop_s": kernels["torch.mm"]["peak_flop_s"], "kernels": kernels}


# -- environment -------------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip() or None
    except OSError:
        pass
    return platform.processor() or None


def environment(settings: Settings) -> dict[str, Any]:
    """Where and how the numbers were taken (everything a reader needs to compare two runs)."""
    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "avade": dist_version("avade"),
        "normflows": dist_version("normflows"),
        "torchmetrics": dist_version("torchmetrics"),
        "mkldnn": torch.backends.mkldnn.is_available(),
        # the instruction set torch's CPU kernels use (AVX2 / AVX512 / ...): hosts of one cloud VM type differ
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "device": str(settings.device),
        "precision": settings.precision,
        "bf16_autocast": settings.bf16,
        "quick": settings.quick,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    if settings.cuda:
        env["cuda"] = torch.version.cuda
        env["device_name"] = torch.cuda.get_device_name(settings.device)
    return env


# -- presentation --------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    """Compact human formatting for table cells (None -> '-')."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None) -> Table:
    """A rich table whose cells go through :func:`fmt`. ``title`` and ``caption`` are rich markup: escape
    data put into them with :func:`rich.markup.escape`."""
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(escape(fmt(v)) for v in row))  # cells are data, never rich markup ("[...]" stays)
    return t


def ops_table(title: str, ops: Sequence[Mapping[str, Any]]) -> Table:
    """Top ops of a profile as a table."""
    return table(title, ["op", "calls", "self ms", "self %", "total cpu ms"],
                 [[o["op"], o["calls"], o["self_ms"], o["self_pct"], o["total_cpu_ms"]] for o in ops])
