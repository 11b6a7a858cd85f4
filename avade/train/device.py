"""Where and how a run computes: its device, CUDA's TF32 setting, native bf16, and the seeds of the global
random generators."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch

from avade.errors import ConfigError, argument


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but no CUDA GPU is available; use {argument('device', 'cpu')}",
                          path="train.device")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N", path="train.device") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{name}': avade runs on cpu and cuda; use auto, cpu, cuda or cuda:N",
                          path="train.device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device '{name}' requested but this machine has {torch.cuda.device_count()} CUDA "
                          "GPU(s)", path="train.device")
    return device


def configure_tf32(enabled: bool) -> None:
    """``train.tf32`` for CUDA fp32 convolutions and matmuls: TF32 tensor cores, or IEEE fp32. Set through
    the ``allow_tf32`` flags: with them every TF32 setting stays readable, old and new API alike (after
    the per-backend ``fp32_precision`` setters, reading ``cudnn.allow_tf32`` or the matmul precision
    raises, and torch.compile's autotuning reads them)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


@contextlib.contextmanager
def ieee_fp32(device: torch.device) -> Iterator[None]:
    """IEEE fp32 matrix products and convolutions on a CUDA ``device`` inside (TF32 off, the settings of before put
    back after): for computations whose answer must not depend on the device, such as nearest-neighbour distances
    compared with a ball's radius. Nothing changes elsewhere (the CPU computes fp32 as fp32)."""
    if device.type != "cuda":
        yield
        return
    put_back = _kernel_flags_kept()
    configure_tf32(False)
    try:
        yield
    finally:
        put_back()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (x86: AVX512-BF16 or AMX-BF16; Arm: its BF16 extension).

    Not oneDNN's ``_is_mkldnn_bf16_supported`` alone: on x86 that only asks for AVX-512 (BW, VL, DQ), so
    it is true on CPUs that emulate bf16 (e.g. Skylake-SP, Cascade Lake, Ice Lake servers)."""
    try:
        caps = torch._C._cpu._get_cpu_capability()
    except (AttributeError, RuntimeError):
        caps = {}
    if caps.get("architecture") in ("x86_64", "x86", "i386", "AMD64"):
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    try:  # elsewhere (Arm) oneDNN's check is the CPU's bf16 extension
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the GPU has bfloat16 tensor cores (compute capability 8.0 on: Ampere, Hopper, ...)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (numpy's takes the seed modulo 2**32)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def global_state_kept() -> Iterator[None]:
    """Put back, on leaving, what training sets for the whole process: python's, numpy's and torch's global
    random states (:func:`seed_everything`), CUDA's TF32 flags (:func:`configure_tf32`) and cuDNN's benchmark
    flag, so that a notebook's own code after ``run_recipe`` draws and computes as it did before (the run keeps
    its own states)."""
    py, npy = random.getstate(), np.random.get_state()
    put_back_flags = _kernel_flags_kept()
    cuda_running = torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda_running else []
    seed = torch.initial_seed()  # what CUDA's generators start from when CUDA starts (torch.manual_seed's)
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        put_back_flags()
        if not cuda_running and torch.cuda.is_initialized():
            # CUDA started in the run (a notebook's first GPU work): fork_rng kept no CUDA state, so its
            # generators are put back as they would have started, not left at train.seed's stream
            torch.cuda.manual_seed_all(seed)


def _kernel_flags_kept() -> Callable[[], None]:
    """What puts back the TF32 settings of now (and cuDNN's benchmark flag) after :func:`configure_tf32`. A flag
    the user set through the per-backend ``fp32_precision`` API (torch >= 2.9) cannot be read as ``allow_tf32``
    (torch raises on the mix): it is kept, and put back, through that API."""
    backends = torch.backends
    kept: list[tuple[object, str, object]] = []  # (object, attribute, value), set back in this order
    for legacy, precisions in ((backends.cuda.matmul, ("cuda.matmul",)),
                               (backends.cudnn, ("cudnn", "cudnn.conv", "cudnn.rnn"))):
        try:
            kept.append((legacy, "allow_tf32", legacy.allow_tf32))
        except RuntimeError:
            for path in precisions:
                owner = backends
                for part in path.split("."):
                    owner = getattr(owner, part)
                kept.append((owner, "fp32_precision", owner.fp32_precision))  # type: ignore[attr-defined]

    kept.append((backends.cudnn, "benchmark", backends.cudnn.benchmark))  # train.cudnn_benchmark sets it too

    def put_back() -> None:
        for owner, attribute, value in kept:
            setattr(owner, attribute, value)

    return put_back
