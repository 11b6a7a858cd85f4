"""train.ema_decay: the generator's weight average, in training, checkpoints, resume, eval and sampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_recipes import tiny_recipe
from torch import nn

import avade
from avade.errors import CheckpointError, ConfigError
from avade.evaluate import evaluate_run
from avade.train import checkpoint as ckpt
from avade.train.ema import WeightAverage
from avade.train.trainer import Trainer


def test_the_average_follows_its_formula_and_copies_until_start() -> None:
    net = nn.Linear(2, 2)
    params = list(net.parameters())
    ema = WeightAverage(net, params, decay=0.75, start=1)
    history = []
    for step in (1, 2, 3):
        with torch.no_grad():
            for p in params:
                p.add_(float(step))
        history.append([p.detach().clone() for p in params])
        ema.update(step)
    # step 1 (<= start) copies; then shadow = 0.75 * shadow + 0.25 * weights
    expected = [0.75 * (0.75 * h1 + 0.25 * h2) + 0.25 * h3 for h1, h2, h3 in zip(*history, strict=True)]
    for got, want in zip(ema.shadow, expected, strict=True):
        torch.testing.assert_close(got, want)
    live = [p.detach().clone() for p in params]
    with ema.applied():
        assert all(torch.equal(p, s) for p, s in zip(params, ema.shadow, strict=True))
    assert all(torch.equal(p, v) for p, v in zip(params, live, strict=True))  # put back
    assert set(ema.state_dict()) == {"weight", "bias"}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def test_training_keeps_the_average_checkpoints_it_and_evaluates_with_it(tmp_path: Path) -> None:
    recipe = tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5")
    summary = Trainer(recipe, tmp_path / "run", progress=False).fit()
    assert summary["weights"] == "ema"
    last = tmp_path / "run" / "checkpoints" / "step_00000004"
    average, model = _weights(last / "ema.safetensors"), _weights(last / "model.safetensors")
    assert set(average) < set(model) and not any(k.startswith("discriminator.") for k in average)
    assert any(not torch.equal(average[k], model[k]) for k in average)  # an average, not a copy
    # avade.load_model / eval / sample take the average by default, the last iterate with ema=False
    averaged, _, _ = avade.load_model(tmp_path / "run", device="cpu")
    last_iterate, _, _ = avade.load_model(tmp_path / "run", device="cpu", ema=False)
    named = dict(averaged.named_parameters())
    assert all(torch.equal(named[k], average[k]) for k in average)
    assert all(torch.equal(t, model[k]) for k, t in last_iterate.state_dict().items())
    # the summary's bpd is the averaged weights' (what `avade eval` reports by default)
    assert evaluate_run(tmp_path / "run", ["bpd"], device="cpu")["bpd"] == pytest.approx(summary["bpd"], rel=1e-6)
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["weights"] == "ema"
    last_bpd = evaluate_run(tmp_path / "run", ["bpd"], device="cpu", ema=False)["bpd"]
    assert last_bpd != pytest.approx(summary["bpd"], rel=1e-6)
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["weights"] == "last"  # not merged


def test_a_resumed_run_continues_the_average_exactly(tmp_path: Path) -> None:
    overrides = ("train.checkpoint_every=2", "train.ema_decay=0.6", "train.ema_start=1")
    Trainer(tiny_recipe("train.steps=6", *overrides), tmp_path / "a", progress=False).fit()
    Trainer(tiny_recipe("train.steps=2", *overrides), tmp_path / "b", progress=False).fit()
    Trainer(tiny_recipe("train.steps=6", *overrides), tmp_path / "b", resume=True, progress=False).fit()
    a = _weights(tmp_path / "a" / "checkpoints" / "step_00000006" / "ema.safetensors")
    b = _weights(tmp_path / "b" / "checkpoints" / "step_00000006" / "ema.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_turning_the_average_on_at_a_resume_starts_it_from_the_checkpoint(tmp_path: Path) -> None:
    Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=2"), tmp_path, progress=False).fit()
    trainer = Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.9"), tmp_path,
                      resume=True, progress=False)
    assert trainer.ema is not None
    assert all(torch.equal(s, p) for s, p in zip(trainer.ema.shadow, trainer.g_params, strict=True))


def test_turning_the_average_off_at_a_resume_says_so(tmp_path: Path) -> None:
    from rich.console import Console

    Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path,
            progress=False).fit()
    console = Console(record=True, width=200)
    trainer = Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, resume=True,
                      console=console, progress=False)
    assert trainer.ema is None
    assert "has a weight average, but train.ema_decay is 0: it is dropped" in console.export_text()


def test_an_average_that_does_not_fit_is_a_one_line_checkpoint_error(tmp_path: Path) -> None:
    Trainer(tiny_recipe("train.steps=2", "train.ema_decay=0.5"), tmp_path, progress=False).fit()
    path = ckpt.list_checkpoints(tmp_path / "checkpoints")[-1] / "ema.safetensors"
    tensors = _weights(path)
    name = next(k for k, t in tensors.items() if t.shape != (3,))
    tensors[name] = torch.zeros(3)
    from safetensors.torch import save_file

    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=rf"ema.safetensors has {name} of shape \(3,\)"):
        avade.load_model(tmp_path, device="cpu")
    assert avade.load_model(tmp_path, device="cpu", ema=False)[0] is not None


def test_the_decay_must_be_in_the_unit_interval() -> None:
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ConfigError, match=r"train.ema_decay: expected a number in \[0, 1\)"):
            tiny_recipe(f"train.ema_decay={bad}")


def test_a_missing_average_file_is_an_incomplete_checkpoint(tmp_path: Path) -> None:
    # not silently the last iterate in evaluation, nor an average restarted on resume
    Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path,
            progress=False).fit()
    (ckpt.list_checkpoints(tmp_path / "checkpoints")[-1] / "ema.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete: ema.safetensors \(the weight average of "
                                              r"train.ema_decay\) is missing; evaluate or sample the last iterate "
                                              r"with ema=False, or delete step_00000002"):
        evaluate_run(tmp_path, ["bpd"], device="cpu")
    assert evaluate_run(tmp_path, ["bpd"], device="cpu", ema=False)["bpd"] > 0  # the last iterate is intact
    with pytest.raises(CheckpointError, match=r"ema\.safetensors"):
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path,
                resume=True, progress=False)


def test_a_resume_without_the_average_file_names_its_own_fix_and_goes_on_without_an_average(tmp_path: Path) -> None:
    # a resume has no --no-ema; with train.ema_decay = 0 the average would be dropped anyway, so it is not needed
    Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path,
            progress=False).fit()
    (ckpt.list_checkpoints(tmp_path / "checkpoints")[-1] / "ema.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"is missing; resume with --set train.ema_decay=0 to go on without an "
                                              r"average, or delete step_00000002"):
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path,
                resume=True, progress=False)
    trainer = Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, resume=True, progress=False)
    assert trainer.step == 2 and trainer.ema is None


def test_a_resume_refused_for_its_average_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    # a finished run trained on: its final records and recipe.toml stay when the average turns out corrupt
    Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path,
            progress=False).fit()
    path = ckpt.list_checkpoints(tmp_path / "checkpoints")[-1] / "ema.safetensors"
    tensors = _weights(path)
    name = next(iter(tensors))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    from safetensors.torch import save_file

    save_file(tensors, path)
    before = {f: (tmp_path / f).read_text() for f in ("metrics.jsonl", "recipe.toml")}
    with pytest.raises(CheckpointError, match=r"ema.safetensors holds NaN or inf"):
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path,
                resume=True, progress=False)
    assert {f: (tmp_path / f).read_text() for f in before} == before


def test_sample_grids_during_training_are_drawn_with_the_average(tmp_path: Path, monkeypatch) -> None:
    trainer = Trainer(tiny_recipe("train.ema_decay=0.5"), tmp_path / "run", progress=False)
    for step in range(1, 3):
        trainer.train_step(*next(trainer.stream.batches(step - 1)))
        trainer.step = step
        trainer.ema.update(step)
    drawn_with = []
    sample = trainer.model.sample
    monkeypatch.setattr(trainer.model, "sample", lambda *a, **k: (
        drawn_with.append([p.detach().clone() for p in trainer.ema.params]), sample(*a, **k))[1])
    trainer.write_grids("check")
    assert drawn_with and all(torch.equal(p, s) for p, s in zip(drawn_with[0], trainer.ema.shadow, strict=True))
    assert any(not torch.equal(p, s) for p, s in zip(trainer.ema.params, trainer.ema.shadow, strict=True))


def test_training_copies_the_weights_into_the_average_until_ema_start(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe("train.ema_decay=0.5", "train.ema_start=2", "train.steps=3",
                                  "train.checkpoint_every=100"), tmp_path / "run", progress=False)
    for step in range(1, 4):
        trainer.train_step(*next(trainer.stream.batches(step - 1)))
        trainer.step = step
        trainer.ema.update(step)
        copied = all(torch.equal(p, s) for p, s in zip(trainer.ema.params, trainer.ema.shadow, strict=True))
        assert copied == (step <= 2), step  # steps 1 and 2 copy; step 3 averages
