"""Memory running out (a GPU's, or the host's) in any command: one error line saying what ran out, while doing what,
and what to lower; exit 2; a training run keeps its checkpoint, records the failure and says where --resume goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from tiny_recipes import tiny_dict
from typer.testing import CliRunner

from avade.cli.app import app
from avade.memory import out_of_memory

runner = CliRunner()
GPU_SAID = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.15 GiB of which "
            "1.20 GiB is free.\nOf the allocated memory ...")


def _invoke(*args: str) -> tuple[Any, str]:
    result = runner.invoke(app, list(args))
    return result, result.output


def _error(result: Any, out: str) -> str:
    """The one error line of a command that trained (after its progress lines), checked to be the last line."""
    lines = out.strip().splitlines()
    assert result.exit_code == 2 and [n for n in lines if n.startswith("error:")] == lines[-1:], out
    return lines[-1]


def _raise(kind: str) -> None:
    if kind == "gpu":
        raise torch.OutOfMemoryError(GPU_SAID)
    if kind == "host-allocator":  # a real failed allocation on the CPU: torch's RuntimeError
        torch.empty(2**62, dtype=torch.uint8)
    raise MemoryError()


SAID = {"gpu": "the GPU's memory ran out (tried to allocate 20.00 GiB)",
        "host-allocator": "the host's memory ran out (tried to allocate 4294967296.00 GiB)",
        "memory-error": "the host's memory ran out;"}


def _recipe(root: Path, *overrides: str) -> Path:
    path = root / "tiny.toml"
    path.write_text(tomli_w.dumps(tiny_dict("train.steps=4", "train.checkpoint_every=2", *overrides)))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oom-run")
    result, out = _invoke("recipe", "run", str(_recipe(root, "train.steps=2")), "--out", str(root / "run"),
                          "--device", "cpu")
    assert result.exit_code == 0, out
    return root / "run"


def test_only_failed_allocations_count_as_out_of_memory() -> None:
    """torch's GPU error (importable without a GPU), Python's MemoryError and the CPU allocator's RuntimeError;
    never any other RuntimeError."""
    with pytest.raises(RuntimeError) as real:
        torch.empty(2**62, dtype=torch.uint8)
    assert out_of_memory(real.value) == "host's memory"
    assert out_of_memory(torch.cuda.OutOfMemoryError(GPU_SAID)) == "GPU's memory"
    assert out_of_memory(MemoryError()) == "host's memory"
    assert out_of_memory(RuntimeError("shape '[2, 3]' is invalid for input of size 5")) is None
    assert out_of_memory(RuntimeError("memory format is not supported")) is None


def test_accelerator_allocations_torch_raises_as_plain_runtime_errors_count_too() -> None:
    """Apple's MPS allocator and a CUDA call outside the caching allocator (cuBLAS, cuDNN) raise a RuntimeError,
    not torch.OutOfMemoryError: they were internal errors ("please report it")."""
    from avade.memory import as_out_of_memory

    mps = RuntimeError("MPS backend out of memory (MPS allocated: 7.64 GiB, other allocations: 68.91 GiB, max "
                       "allowed: 88.13 GiB). Tried to allocate 33.92 GiB on private pool. Use "
                       "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations")
    assert out_of_memory(mps) == "MPS device's memory"
    error = as_out_of_memory(mps, "at training step 3", "lower data.batch_size")
    assert error is not None and "the MPS device's memory ran out (tried to allocate 33.92 GiB)" in str(error)
    cuda = RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some "
                        "other API call, so the stacktrace below might be incorrect.")
    assert out_of_memory(cuda) == "GPU's memory"
    assert out_of_memory(RuntimeError("CUDA error: an illegal memory access was encountered")) is None
    assert out_of_memory(RuntimeError("MPS backend does not support float64")) is None


@pytest.mark.parametrize("kind", ["gpu", "host-allocator", "memory-error"])
def test_training_step_out_of_memory_keeps_the_checkpoint_and_says_where_resume_goes_on(
        tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was "internal error: OutOfMemoryError ... please report it", exit 1, and summary.json silent about it."""
    from avade.train.trainer import Trainer

    real_step = Trainer.train_step

    def step(self: Trainer, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        if self.step == 2:  # the third step, after the checkpoint of step 2
            _raise(kind)
        return real_step(self, x, labels)

    monkeypatch.setattr(Trainer, "train_step", step)
    recipe, run = _recipe(tmp_path), tmp_path / "run"
    line = _error(*_invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu"))
    assert line.startswith(f"error: out of memory at training step 3: {SAID[kind]}"), line
    assert "lower data.batch_size (now 8)" in line and 'train.precision = "bf16"' in line, line
    assert line.endswith("checkpoint step 2 is kept: --resume goes on from step 2"), line
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000002"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and "out of memory at training step 3" in summary["error"]
    result, out = _invoke("runs", str(run), "--json")
    assert json.loads(out)[0]["status"] == "failed", out
    monkeypatch.setattr(Trainer, "train_step", real_step)
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu", "--resume")
    assert result.exit_code == 0, out
    assert "error" not in json.loads((run / "summary.json").read_text())


def test_out_of_memory_in_data_dependent_init_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avade.train.trainer import Trainer

    monkeypatch.setattr(Trainer, "_data_init", lambda self: _raise("gpu"))
    out = _error(*_invoke("recipe", "run", str(_recipe(tmp_path)), "--out", str(tmp_path / "run"), "--device", "cpu"))
    assert out.startswith("error: out of memory in the data-dependent initialisation") and "data.batch_size" in out
    assert not (tmp_path / "run").exists()  # (a run that could not start leaves nothing)


def test_out_of_memory_in_the_untrained_models_evaluation_is_recorded(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from avade.train.trainer import Trainer

    monkeypatch.setattr(Trainer, "test_bpd", lambda self, *a, **k: _raise("memory-error"))
    run = tmp_path / "run"
    out = _error(*_invoke("recipe", "run", str(_recipe(tmp_path)), "--out", str(run), "--device", "cpu"))
    assert out.startswith("error: out of memory while evaluating the untrained model's test bpd") and \
        "lower data.eval_batch_size (now 16)" in out and "--resume starts again from step 0" in out, out
    assert "error" in json.loads((run / "summary.json").read_text())


def test_eval_out_of_memory_names_the_metric_and_its_batch_size(run_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from avade.evaluate.context import RunContext

    before = (run_dir / "eval.json").read_bytes() if (run_dir / "eval.json").exists() else None
    monkeypatch.setattr(RunContext, "bpd", lambda self, *a, **k: _raise("gpu"))
    out = _error(*_invoke("eval", str(run_dir), "--metrics", "bpd", "--device", "cpu"))
    assert out.startswith(f"error: out of memory while evaluating metric 'bpd': {SAID['gpu']}"), out
    assert "avade eval --set data.eval_batch_size=8" in out, out
    assert ((run_dir / "eval.json").read_bytes() if (run_dir / "eval.json").exists() else None) == before


def test_any_other_command_out_of_memory_is_one_line_not_an_internal_error(run_dir: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import avade.cli.runs

    monkeypatch.setattr(avade.cli.runs, "run_record", lambda *a, **k: _raise("host-allocator"))
    result, out = _invoke("runs", str(run_dir))
    assert result.exit_code == 2 and len(out.strip().splitlines()) == 1, out
    assert out.startswith(f"error: out of memory: {SAID['host-allocator']}; lower the batch size"), out


def test_reference_statistics_out_of_memory_names_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import avade.metrics.reference as reference
    from avade.memory import OutOfMemory

    monkeypatch.setattr(reference, "_compute", lambda *a, **k: _raise("gpu"))
    monkeypatch.setattr(reference, "cache_path", lambda *a, **k: tmp_path / "none")
    monkeypatch.setattr(reference, "_requested", lambda ctx, split, n: n)
    with pytest.raises(OutOfMemory, match=r"^out of memory while computing the reference statistics of the real "
                                          r"train images: the GPU's memory ran out .*\(now 50: eval.<metric>"):
        reference.real_stats(None, None, "train", None, 50)  # type: ignore[arg-type]


def test_the_failed_blocks_tensors_are_freed_with_the_error_not_by_the_garbage_collector() -> None:
    """The error's traceback held the frame that raised it and that frame the error: a reference cycle that kept
    the failed step's tensors (on a GPU, its activations) until the garbage collector ran, after the next sweep
    variant had started allocating."""
    import gc
    import weakref

    from avade.memory import OutOfMemory, naming_memory

    held: list[weakref.ref[torch.Tensor]] = []

    def fails() -> None:
        activations = torch.zeros(4)
        held.append(weakref.ref(activations))
        with naming_memory("at training step 1", "lower data.batch_size"):
            raise MemoryError()

    enabled = gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(OutOfMemory):
            fails()
        assert held[0]() is None
    finally:
        if enabled:
            gc.enable()


def test_a_gpu_s_failed_pass_is_freed_before_its_cache_is_emptied(monkeypatch: pytest.MonkeyPatch) -> None:
    # the activations, held by the error's finished frames, were still alive when empty_cache ran: their blocks stayed
    # cached, not "found free" by what follows (the next sweep variant)
    import weakref

    from avade.memory import as_out_of_memory

    held: list[weakref.ref[torch.Tensor]] = []
    alive_at_empty: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive_at_empty.append(held[0]() is not None))

    def step() -> None:
        activations = torch.zeros(4)
        held.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    try:
        step()
    except torch.OutOfMemoryError as exc:
        error = as_out_of_memory(exc, "at training step 1", "lower data.batch_size")
        assert error is not None and str(error).startswith("out of memory at training step 1: the GPU's memory")
        assert alive_at_empty == [False]


def test_the_memory_check_takes_the_gpu_training_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    # LOCAL_RANK 3 under a launcher that gives each process its one GPU: the check asked for cuda:3, failed, and was
    # skipped without a word
    from avade.memory import memory_free

    asked: list[int] = []
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (asked.append(index), (7 << 30, 8 << 30))[1])
    assert memory_free("cuda") == (7 << 30, "GPU cuda:0") and asked == [0]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # a LOCAL_RANK past the GPUs seen: no figure
    assert memory_free("cuda")[0] is None
