"""``Trainer.step_once``: a notebook's own loop trains exactly as ``fit`` does (the step count, the weight
average and the run's batches advanced), takes batches of its own, and refuses bad ones in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.errors import DataError
from avade.train.trainer import Trainer

SETTINGS = ("train.steps=3", "train.checkpoint_every=100", "train.ema_decay=0.5", "train.lr_warmup_steps=2",
            "train.kl_warmup_steps=2")


def _state(trainer: Trainer) -> list[torch.Tensor]:
    average = list(trainer.ema.shadow) if trainer.ema is not None else []
    return [t.detach().clone() for t in (*trainer.model.state_dict().values(), *average)]


def test_a_loop_of_step_once_trains_as_fit_does(tmp_path: Path) -> None:
    fitted = Trainer(tiny_recipe(*SETTINGS), tmp_path / "fit", progress=False)
    fitted.fit()
    looped = Trainer(tiny_recipe(*SETTINGS), tmp_path / "loop", progress=False)
    logs = [looped.step_once() for _ in range(3)]
    assert looped.step == 3 and all(entry["finite"] for entry in logs)
    assert all(torch.equal(a, b) for a, b in zip(_state(fitted), _state(looped), strict=True))
    # step_once's own saves resume like fit's
    path = looped.save()
    assert path is not None and path.name == "step_00000003"


def test_step_once_takes_a_batch_of_its_own_as_the_run_would_give_it(tmp_path: Path) -> None:
    given = Trainer(tiny_recipe(*SETTINGS), tmp_path / "a", progress=False)
    x, y = next(given.stream.batches(0))
    given.step_once(x, y)
    own = Trainer(tiny_recipe(*SETTINGS), tmp_path / "b", progress=False)
    own.step_once()
    assert all(torch.equal(a, b) for a, b in zip(_state(given), _state(own), strict=True))
    # an unconditional model's batch needs no labels
    given.step_once(x)
    assert given.step == 2


def test_a_step_set_by_hand_takes_that_step_s_batch(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    first = trainer._next_batch()
    trainer.step = 1
    second = trainer._next_batch()
    trainer.step = 0  # back: a new stream at step 0
    assert torch.equal(trainer._next_batch()[0], first[0])
    assert not torch.equal(first[0], second[0])


def test_bad_batches_are_refused_in_one_line(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    x, y = next(trainer.stream.batches(0))
    with pytest.raises(DataError, match=r"step_once: labels came without images"):
        trainer.step_once(labels=y)
    with pytest.raises(DataError, match=r"step_once: images must be uint8 \[B, 3, 8, 8\]"):
        trainer.step_once(x.float(), y)
    conditional = Trainer(tiny_recipe(*SETTINGS, "model.conditional=true"), tmp_path / "cond", progress=False)
    with pytest.raises(DataError, match=r"step_once: the model is class-conditional \(4 classes\): pass labels"):
        conditional.step_once(x)
    assert trainer.step == 0 and conditional.step == 0
