"""A model whose training state cannot fit in the memory free for it (a typo'd width: model.flow.hidden = 30000)
is refused with one line before anything is allocated -- at `recipe check`, `recipe run`, `doctor --recipe` and
a Python Trainer -- instead of the kernel's OOM killer ending the process without a word; a recipe that fits, and
a machine whose free memory cannot be read, are never refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_recipes import SHIPPED, shipped_id
from typer.testing import CliRunner

import avade.memory
import avade.train.device
from avade.cli.app import app
from avade.errors import ConfigError
from avade.models.build import build_checked, build_model
from avade.recipe.load import load_recipe
from avade.recipe.sweep import expand_sweep
from avade.train.trainer import Trainer

runner = CliRunner()
QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
WIDE = "model.flow.hidden=3000"  # ~0.49 G parameters: ~7.8 GB of training state, built for real 2 GB of weights
GB = 10**9


@pytest.fixture
def one_gb_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: 1 * GB)


def _one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_recipe_check_refuses_a_state_larger_than_free_memory(one_gb_free: None) -> None:
    line = _one_error_line(runner.invoke(app, ["recipe", "check", str(QUICKSTART), "--set", WIDE]))
    assert "model.flow.hidden: " in line and "parameters need ~7." in line, line
    assert "GB for weights, gradients and optimizer state; this machine has 1 GB free" in line, line
    assert "lower model.flow.hidden (3000): model.flow is the largest component" in line, line


def test_widest_option_of_the_largest_component_is_named(one_gb_free: None) -> None:
    recipe = load_recipe(QUICKSTART, ["model.encoder.channels=[16,2000,4000]"])
    with pytest.raises(ConfigError) as caught:
        build_checked(recipe)
    assert caught.value.path == "model.encoder.channels"
    assert "lower model.encoder.channels ([16, 2000, 4000]): model.encoder is the largest" in str(caught.value)


def test_weight_average_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # hidden = 500: ~13.5 M parameters, 54 MB of weights: 216 MB of state, 270 MB with the weight average
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: GB // 4)
    with pytest.raises(ConfigError, match="for weights, gradients, optimizer state and weight average"):
        build_checked(load_recipe(QUICKSTART, ["model.flow.hidden=500", "train.ema_decay=0.999"]))
    build_checked(load_recipe(QUICKSTART, ["model.flow.hidden=500"]))


def test_the_weight_average_is_the_generator_s_alone() -> None:
    # (the critic is not averaged: its weights were counted a fifth time)
    from avade.models.build import training_state_bytes

    sizes = {"flow": (10, 40), "decoder": (5, 20), "discriminator": (25, 100)}
    assert training_state_bytes(load_recipe(QUICKSTART), sizes) == (640, "weights, gradients and optimizer state")
    assert training_state_bytes(load_recipe(QUICKSTART, ["train.ema_decay=0.999"]), sizes) == (
        640 + 60, "weights, gradients, optimizer state and weight average")


def test_a_state_that_fits_is_not_refused_for_the_critic_s_weight_average(monkeypatch: pytest.MonkeyPatch) -> None:
    # av-ade with train.ema_decay: the state is 4 copies of every weight and 1 of the generator's (the critic is
    # not averaged). The build's guard stopped at a fifth of the free memory, so with free memory between that state
    # and 5 copies of every weight it refused a model that fits, saying it needs less than is free.
    from avade.models.build import _meta_sizes, training_state_bytes

    recipe = load_recipe(QUICKSTART, ["train.ema_decay=0.999"])
    sizes = _meta_sizes(recipe, None, None)
    assert sizes is not None and sizes["discriminator"][1] > 0
    need = training_state_bytes(recipe, sizes)[0]
    five_copies = 5 * sum(b for _, b in sizes.values())
    free = (need + five_copies) // 2
    assert need < free < five_copies
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: free)
    build_checked(recipe, device="cpu")
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: need - 1)  # (one byte short: refused)
    with pytest.raises(ConfigError, match="for weights, gradients, optimizer state and weight average"):
        build_checked(recipe, device="cpu")


def test_the_checked_build_is_the_same_build() -> None:
    recipe = load_recipe(QUICKSTART)
    torch.manual_seed(0)
    plain = build_model(recipe).state_dict()
    torch.manual_seed(0)
    checked = build_checked(recipe).state_dict()
    assert plain.keys() == checked.keys() and all(torch.equal(plain[k], checked[k]) for k in plain)


def test_recipe_run_refuses_before_the_run_directory(one_gb_free: None, tmp_path: Path) -> None:
    out = tmp_path / "run"
    line = _one_error_line(runner.invoke(app, ["recipe", "run", str(QUICKSTART), "--out", str(out), "--set", WIDE]))
    assert "this machine has 1 GB free; lower model.flow.hidden (3000)" in line, line
    assert not out.exists()


def test_trainer_refuses_before_allocating(one_gb_free: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.flow\.hidden: .* this machine has 1 GB free"):
        Trainer(load_recipe(QUICKSTART, [WIDE]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_doctor_names_it(one_gb_free: None) -> None:
    result = runner.invoke(app, ["doctor", "--json", "--recipe", str(QUICKSTART), "--set", WIDE])
    problems = json.loads(result.output)["recipe"]["problems"]
    assert any("model.flow.hidden" in p and "1 GB free" in p for p in problems), problems


def test_gpu_run_is_checked_against_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = load_recipe(QUICKSTART, ["model.flow.hidden=500"])  # 54 MB of weights, 216 MB of state
    monkeypatch.setattr(avade.train.device, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (GB // 10, 80 * GB))
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: 100 * GB)
    with pytest.raises(ConfigError, match=r"state; GPU cuda:0 has 0\.1 GB free"):
        build_checked(recipe)
    # the host holds the weights once only (built there, then moved)
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: GB // 100)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: (79 * GB, 80 * GB))
    with pytest.raises(ConfigError, match=r"for weights; this machine has 0\.01 GB free"):
        build_checked(recipe)
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: GB)
    build_checked(recipe)


def test_unreadable_free_memory_skips_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: None)
    build_checked(load_recipe(QUICKSTART, ["model.flow.hidden=500"]))


def test_host_memory_free_reads_this_machine() -> None:
    free = avade.memory.host_memory_free()
    assert free is None or free > 0


@pytest.mark.parametrize("path", SHIPPED, ids=shipped_id)
def test_shipped_recipes_fit_an_8_gb_machine(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: 8 * GB)
    for variant in expand_sweep(load_recipe(path)):
        build_checked(variant.recipe, device="cpu")


def test_the_built_weights_are_not_counted_twice_against_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Free memory read after the build has the weights taken out already: compared with 4x the weights it would
    ask for 5x. A state that fits in what was free before the build is built."""
    recipe = load_recipe(QUICKSTART)
    torch.manual_seed(0)
    weights = sum(p.numel() * p.element_size() for p in build_model(recipe).parameters())
    reads = iter([4 * weights + 1024] + [3 * weights + 1024] * 10)  # before the build, then with its weights taken
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: next(reads))
    build_checked(recipe, device="cpu")
