"""``data.num_workers = "auto"`` (the default): loader workers where they help, none where they cannot.

Its old default 0 decoded file-backed datasets in the training process, between steps: on a fast GPU the
step waited on the decoding. "auto" resolves where the loader is made, from the data and the device.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch
from tiny_recipes import tiny_dict, tiny_recipe
from typer.testing import CliRunner

import avade.data.base
import avade.train.data
from avade.cli.app import app
from avade.data.base import TensorImageDataset
from avade.errors import ConfigError
from avade.train.data import BatchStream, eval_batches, resolve_num_workers, subset_batches

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # (a device object only: no GPU is needed)


def _cpus(
    monkeypatch: pytest.MonkeyPatch, affinity: int | None, machine: int = 16, local_world: int | None = None
) -> None:
    """This process may run on ``affinity`` CPUs (None: no affinity, as on macOS) of the machine's ``machine``,
    in a torchrun job of ``local_world`` processes on this node (None: not under torchrun)."""
    monkeypatch.setattr(avade.data.base.os, "cpu_count", lambda: machine)
    if affinity is None:
        monkeypatch.delattr(avade.data.base.os, "sched_getaffinity", raising=False)
    else:
        monkeypatch.setattr(avade.data.base.os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    if local_world is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))


def test_the_default_is_auto_and_set_takes_auto_or_a_count() -> None:
    assert tiny_recipe().data.options.num_workers == "auto"
    assert tiny_recipe("data.num_workers=auto").data.options.num_workers == "auto"
    assert tiny_recipe('data.num_workers="auto"').data.options.num_workers == "auto"
    assert tiny_recipe("data.num_workers=4").data.options.num_workers == 4
    assert tiny_recipe("data.num_workers=0").data.options.num_workers == 0


@pytest.mark.parametrize("value", ["fast", "-1", "2.5", "true", '"4"', "[2]", '"Auto"'])
def test_anything_but_a_count_or_auto_is_refused_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        tiny_recipe(f"data.num_workers={value}")
    assert info.value.path == "data.num_workers"
    assert "'auto'" in info.value.detail and "\n" not in str(info.value)
    assert "int" in info.value.detail


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("device", [CPU, CUDA, None])
def test_an_explicit_count_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch, in_memory: bool, device) -> None:
    _cpus(monkeypatch, 16)
    for count in (0, 3, 12):
        assert resolve_num_workers(count, in_memory, device) == count


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_auto_starts_no_workers_for_data_held_in_memory(monkeypatch: pytest.MonkeyPatch, device) -> None:
    _cpus(monkeypatch, 16)
    assert resolve_num_workers("auto", True, device) == 0


def test_auto_starts_no_workers_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # (the step runs on the cores the workers would take; decoding is not what limits it there)
    _cpus(monkeypatch, 16)
    assert resolve_num_workers("auto", False, CPU) == 0
    assert resolve_num_workers("auto", False, None) == 0  # (no device: the CPU, as BatchStream takes it)
    assert resolve_num_workers("auto", False, "cpu") == 0
    assert resolve_num_workers("auto", False, torch.device("mps")) == 0  # (macOS: workers start by spawn)


@pytest.mark.parametrize(
    ("affinity", "machine", "local_world", "expected"),
    [
        (16, 16, None, 8),  # one per CPU less this process's own, at most 8
        (6, 16, None, 5),  # the affinity (a container's, taskset's), not the machine's count
        (2, 16, None, 1),
        (1, 16, None, 1),  # at least one
        (None, 4, None, 3),  # no affinity (macOS, Windows): the machine's count
        (16, 16, 4, 3),  # 4 torchrun processes share the node's 16
        (16, 16, 1, 8),
        (4, 16, 4, 3),  # already pinned by the launcher to 4 CPUs each: not shared again
        (16, 16, 32, 1),  # more processes than CPUs: still one
    ],
)
def test_auto_on_an_accelerator_takes_the_cpus_of_this_process(
    monkeypatch: pytest.MonkeyPatch, affinity, machine, local_world, expected
) -> None:
    _cpus(monkeypatch, affinity, machine, local_world)
    assert resolve_num_workers("auto", False, CUDA) == expected
    assert resolve_num_workers("auto", True, CUDA) == 0


class _Files(torch.utils.data.Dataset):
    """Images read item by item (no as_tensors): the DataLoader path of file-backed datasets."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((1, 2, 2), i, dtype=torch.uint8), 0


def test_the_training_stream_resolves_auto_from_its_data_and_device(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpus(monkeypatch, 4)
    held = TensorImageDataset(torch.zeros(12, 1, 2, 2, dtype=torch.uint8), torch.zeros(12, dtype=torch.int64))
    assert BatchStream(held, 4, seed=0, num_workers="auto", device=CUDA).num_workers == 0
    assert BatchStream(_Files(), 4, seed=0, num_workers="auto", device=CUDA).num_workers == 3
    assert BatchStream(_Files(), 4, seed=0, num_workers="auto", device=CPU).num_workers == 0
    assert BatchStream(_Files(), 4, seed=0, num_workers="auto").num_workers == 0
    assert BatchStream(_Files(), 4, seed=0, num_workers=2, device=CPU).num_workers == 2


def test_evaluation_resolves_auto_with_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpus(monkeypatch, 3)
    made: list[int] = []
    loader = avade.train.data.DataLoader
    monkeypatch.setattr(
        avade.train.data,
        "DataLoader",
        lambda *a, **k: made.append(k["num_workers"]) or loader(*a, **{**k, "num_workers": 0, "timeout": 0}),
    )
    alone = list(eval_batches(_Files(), 5, num_workers=0))
    for device, expected in ((CPU, 0), (CUDA, 2)):
        made.clear()
        got = list(eval_batches(_Files(), 5, num_workers="auto", device=device))
        assert made == [expected] and len(got) == len(alone)
        assert all(torch.equal(x, x0) for (x, _), (x0, _) in zip(got, alone, strict=True))
        made.clear()
        list(subset_batches(_Files(), 6, 3, num_workers="auto", device=device))
        assert made == [expected]


def _image_folder(root: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "imgs" / f"{i:02d}.png")


def test_a_run_of_file_backed_data_with_the_default_on_the_cpu_and_its_resume_with_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _image_folder(tmp_path / "data")
    made: list[int] = []
    loader = avade.train.data.DataLoader
    monkeypatch.setattr(
        avade.train.data, "DataLoader", lambda *a, **k: made.append(k["num_workers"]) or loader(*a, **k)
    )
    raw = tiny_dict("train.steps=2", "train.checkpoint_every=2")
    raw["data"] = {
        "name": "image-folder",
        "root": str(tmp_path / "data"),
        "folder": "imgs",
        "resolution": 8,
        "test_fraction": 0.25,
        "batch_size": 4,
        "eval_batch_size": 4,
    }
    (tmp_path / "r.toml").write_text(tomli_w.dumps(raw))
    runner, run = CliRunner(), tmp_path / "run"
    result = runner.invoke(app, ["recipe", "run", str(tmp_path / "r.toml"), "--out", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert made and set(made) == {0}  # files decoded in the training process: on the CPU workers would not help
    assert tomllib.loads((run / "recipe.toml").read_text())["data"]["num_workers"] == "auto"
    assert json.loads((run / "summary.json").read_text())["bpd"] > 0
    # "auto" <-> a count is no other run: it resumes, and a count is used as it is
    made.clear()
    result = runner.invoke(
        app,
        [
            "recipe",
            "run",
            str(tmp_path / "r.toml"),
            "--out",
            str(run),
            "--device",
            "cpu",
            "--resume",
            "--set",
            "train.steps=3",
            "--set",
            "data.num_workers=1",
        ],
    )
    assert result.exit_code == 0 and "resumed from" in result.output, result.output
    assert 1 in made
    assert tomllib.loads((run / "recipe.toml").read_text())["data"]["num_workers"] == 1
    result = runner.invoke(
        app, ["eval", str(run), "--metrics", "bpd", "--device", "cpu", "--set", "data.num_workers=auto"]
    )
    assert result.exit_code == 0 and "bpd" in result.output, result.output
