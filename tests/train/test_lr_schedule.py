"""train.lr_schedule / lr_warmup_steps / lr_final_ratio: every step's lr is the recipe's lr times a
factor of the step alone, for both optimizers; a resume continues it exactly and says when the recipe
changed it."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.errors import ConfigError
from avade.train import checkpoint as ckpt
from avade.train.schedule import lr_factor
from avade.train.trainer import Trainer

COSINE = ("train.steps=6", "train.lr_schedule='cosine'", "train.lr_warmup_steps=2", "train.lr_final_ratio=0.1")


def _train(overrides: tuple[str, ...]):
    return tiny_recipe(*overrides).train


def test_warm_up_ramps_linearly_then_the_decay_runs_from_one_to_the_final_ratio() -> None:
    cfg = _train(("train.steps=102", "train.lr_schedule='cosine'", "train.lr_warmup_steps=2",
                  "train.lr_final_ratio=0.1"))
    assert [lr_factor(cfg, s) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(cfg, 52) == pytest.approx(0.55)  # half way: the cosine's midpoint
    assert lr_factor(cfg, 102) == pytest.approx(0.1) and lr_factor(cfg, 500) == pytest.approx(0.1)
    factors = [lr_factor(cfg, s) for s in range(1, 103)]
    assert all(a >= b for a, b in itertools.pairwise(factors))
    linear = _train(("train.steps=102", "train.lr_schedule='linear'", "train.lr_warmup_steps=2"))
    assert lr_factor(linear, 27) == pytest.approx(0.75) and lr_factor(linear, 102) == 0.0
    constant = _train(("train.lr_warmup_steps=4",))
    assert [lr_factor(constant, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(_train(()), 0) == 1.0  # the paper's constant lr


def test_both_optimizers_train_each_step_with_the_scheduled_rate(tmp_path, monkeypatch) -> None:
    recipe = tiny_recipe(*COSINE, "train.lr=0.004", "train.d_lr=0.001")
    trainer = Trainer(recipe, tmp_path, progress=False)
    seen: list[tuple[float, float]] = []
    step_g = trainer.opt_g.step

    def spy(*args, **kwargs):
        seen.append((trainer.opt_g.param_groups[0]["lr"], trainer.opt_d.param_groups[0]["lr"]))
        return step_g(*args, **kwargs)

    monkeypatch.setattr(trainer.opt_g, "step", spy)
    trainer.fit()
    factors = [lr_factor(recipe.train, s) for s in range(6)]
    assert seen == [(0.004 * f, 0.001 * f) for f in factors]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in logged if "lr" in r] == [0.004 * f for f in factors]
    assert not math.isclose(factors[1], factors[5])


def test_a_constant_rate_is_not_logged(tmp_path) -> None:
    Trainer(tiny_recipe("train.steps=1"), tmp_path, progress=False).fit()
    assert not any("lr" in json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())


def test_a_resumed_run_continues_the_schedule_bit_identically(tmp_path) -> None:
    recipe = tiny_recipe(*COSINE, "train.keep_checkpoints=5")
    Trainer(recipe, tmp_path / "a", progress=False).fit()
    # the same run, stopped after step 4: its checkpoint of step 4, without what came after
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000006")
    (tmp_path / "b" / "summary.json").unlink()
    resumed = Trainer(recipe, tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 4 and resumed.opt_g.param_groups[0]["lr"] == recipe.train.lr * lr_factor(recipe.train, 4)
    resumed.fit()
    a = ckpt.read_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000006")
    b = ckpt.read_checkpoint(tmp_path / "b" / "checkpoints" / "step_00000006")
    for part in ("model", "optimizer"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def test_a_resume_that_changes_the_schedule_says_so(tmp_path, capsys) -> None:
    Trainer(tiny_recipe(*COSINE[:-1], "train.steps=4"), tmp_path, progress=False).fit()
    capsys.readouterr()
    same = Trainer(tiny_recipe(*COSINE[:-1], "train.steps=4", "train.checkpoint_every=1"), tmp_path,
                   resume=True, progress=False)
    assert same.step == 4 and "from the recipe" not in capsys.readouterr().err
    # more steps stretch the decay: step 3's lr is no longer the one the checkpoint trained with
    longer = Trainer(tiny_recipe(*COSINE[:-1], "train.steps=8"), tmp_path, resume=True, progress=False)
    err = " ".join(capsys.readouterr().err.split())
    assert "generator optimizer: lr" in err and "at step 4 from the recipe (checkpoint had" in err
    cfg = tiny_recipe(*COSINE[:-1], "train.steps=8").train
    assert longer.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.lr * lr_factor(cfg, 4))


@pytest.mark.parametrize(("overrides", "match"), [
    (("train.lr_final_ratio=0.1",), "lr_final_ratio.*constant"),
    (("train.lr_schedule='cosine'", "train.lr_final_ratio=1.5"), r"lr_final_ratio: expected a number in \[0.0, 1.0\]"),
    (("train.lr_schedule='step'",), "lr_schedule"),
    (("train.lr_warmup_steps=-1",), "lr_warmup_steps"),
])
def test_bad_schedules_are_refused_by_name(overrides, match) -> None:
    with pytest.raises(ConfigError, match=match):
        tiny_recipe(*overrides)
