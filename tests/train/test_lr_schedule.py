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
from checkpoint_files import write_state
from tiny_recipes import tiny_recipe

from avade.errors import ConfigError
from avade.train import checkpoint as ckpt
from avade.train.schedule import lr_factor
from avade.train.trainer import Trainer

COSINE = ("train.steps=6", "train.lr_schedule='cosine'", "train.lr_warmup_steps=2", "train.lr_final_ratio=0.1")


def _train(overrides: tuple[str, ...]):
    return tiny_recipe(*overrides).train


def test_warm_up_ramps_linearly_then_the_decay_runs_from_one_to_the_final_ratio() -> None:
    cfg = _train(("train.steps=101", "train.lr_schedule='cosine'", "train.lr_warmup_steps=2",
                  "train.lr_final_ratio=0.1"))
    assert [lr_factor(cfg, s) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(cfg, 2) < 1.0  # the peak is one step: the decay starts right after the warm-up
    assert lr_factor(cfg, 51) == pytest.approx(0.55)  # half way from the peak (step 1) to train.steps
    assert lr_factor(cfg, 101) == pytest.approx(0.1) and lr_factor(cfg, 500) == pytest.approx(0.1)
    factors = [lr_factor(cfg, s) for s in range(1, 102)]
    assert all(a > b for a, b in itertools.pairwise(factors))
    linear = _train(("train.steps=101", "train.lr_schedule='linear'", "train.lr_warmup_steps=2"))
    assert lr_factor(linear, 26) == pytest.approx(0.75) and lr_factor(linear, 101) == 0.0
    no_warmup = _train(("train.steps=100", "train.lr_schedule='linear'"))
    assert [lr_factor(no_warmup, s) for s in (0, 1, 50)] == [1.0, 0.99, 0.5]
    constant = _train(("train.steps=10", "train.lr_warmup_steps=4"))
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
    assert [r["d_lr"] for r in logged if "d_lr" in r] == [0.001 * f for f in factors]
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
    Trainer(tiny_recipe(*COSINE[:-1], "train.steps=8", "train.checkpoint_every=4"), tmp_path, progress=False).fit()
    shutil.rmtree(tmp_path / "checkpoints" / "step_00000008")  # as if stopped after step 4
    (tmp_path / "summary.json").unlink()
    capsys.readouterr()
    same = Trainer(tiny_recipe(*COSINE[:-1], "train.steps=8", "train.checkpoint_every=4"), tmp_path,
                   resume=True, progress=False)
    assert same.step == 4 and "learning rate" not in capsys.readouterr().err
    # more steps stretch the decay
    longer = Trainer(tiny_recipe(*COSINE[:-1], "train.steps=12"), tmp_path, resume=True, progress=False)
    err = " ".join(capsys.readouterr().err.split())
    cfg = tiny_recipe(*COSINE[:-1], "train.steps=12").train
    assert longer.opt_g.param_groups[0]["lr"] == cfg.lr * lr_factor(cfg, 4)
    assert (f"learning rate from this recipe, not the checkpoint's: steps 8 -> 12; step 5 trains with lr "
            f"{cfg.lr * lr_factor(cfg, 4):.6g}") in err
    assert err.index("resumed from") < err.index("learning rate from")
    # a change that the step's own rate does not show (the warm-up is the same) is reported too
    Trainer(tiny_recipe("train.steps=8", "train.lr_warmup_steps=6", "train.lr_schedule='linear'"), tmp_path,
            resume=True, progress=False)
    err = " ".join(capsys.readouterr().err.split())
    assert "lr_schedule 'cosine' -> 'linear', lr_warmup_steps 2 -> 6" in err
    # a constant rate does not depend on train.steps: nothing to say
    Trainer(tiny_recipe("train.steps=4"), tmp_path / "flat", progress=False).fit()
    capsys.readouterr()
    Trainer(tiny_recipe("train.steps=6"), tmp_path / "flat", resume=True, progress=False)
    assert "learning rate" not in capsys.readouterr().err


def test_a_finished_run_resumed_with_another_schedule_says_nothing_about_it(tmp_path, capsys) -> None:
    Trainer(tiny_recipe(*COSINE), tmp_path, progress=False).fit()
    capsys.readouterr()
    Trainer(tiny_recipe(*COSINE[:-1], "train.lr_final_ratio=0.5"), tmp_path, resume=True, progress=False).fit()
    err = " ".join(capsys.readouterr().err.split())
    assert "already finished" in err and "learning rate" not in err


@pytest.mark.parametrize(("overrides", "match"), [
    (("train.lr_final_ratio=0.1",), r"train\.lr_final_ratio: 0\.1 is the end of a decay, but .*constant"),
    (("train.lr_schedule='cosine'", "train.lr_final_ratio=1.5"), r"lr_final_ratio: expected a number in \[0.0, 1.0\]"),
    (("train.lr_schedule='step'",), "lr_schedule"),
    (("train.lr_warmup_steps=-1",), "lr_warmup_steps"),
    (("train.steps=20", "train.lr_warmup_steps=20"), r"train\.lr_warmup_steps: 20 warm-up steps in a run of "
                                                     r"train\.steps = 20: .*lower train\.lr_warmup_steps"),
])
def test_bad_schedules_are_refused_by_name(overrides, match) -> None:
    with pytest.raises(ConfigError, match=match):
        tiny_recipe(*overrides)


def test_a_sweep_over_schedules_may_share_a_final_ratio() -> None:
    """The base of a sweep is never run: only its variants are checked for consistency (here the base
    alone would decay to lr_final_ratio under a constant schedule)."""
    from avade.recipe.sweep import expand_sweep

    recipe = tiny_recipe("train.lr_final_ratio=0.1", "sweep.grid={'train.lr_schedule'=['cosine', 'linear']}")
    assert [v.recipe.train.lr_schedule for v in expand_sweep(recipe)] == ["cosine", "linear"]
    bad = tiny_recipe("train.lr_final_ratio=0.1", "sweep.grid={'train.lr_schedule'=['cosine', 'constant']}")
    with pytest.raises(ConfigError, match=r"sweep variant 1 \(.*\): 0\.1 is the end of a decay"):
        expand_sweep(bad)


def test_a_checkpoint_from_before_schedules_resumes_without_a_notice(tmp_path, capsys) -> None:
    """A checkpoint whose recipe predates the schedule keys trained with a constant rate: resumed with
    the same lr, nothing differs and nothing is said."""
    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    for state_file in (tmp_path / "checkpoints").glob("step_*/state.json"):
        state = json.loads(state_file.read_text())
        for key in ("lr_schedule", "lr_warmup_steps", "lr_final_ratio"):
            del state["recipe"]["train"][key]
        write_state(state_file, state)
    capsys.readouterr()
    Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)
    assert "learning rate" not in capsys.readouterr().err
    Trainer(tiny_recipe("train.steps=4", "train.lr_schedule='cosine'"), tmp_path, resume=True, progress=False)
    assert "lr_schedule 'constant' -> 'cosine', steps 2 -> 4" in " ".join(capsys.readouterr().err.split())
