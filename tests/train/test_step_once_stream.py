"""step_once's own batches from a step other than 0 and its weight average: a loop that starts at step s
takes the run's batch of step s, and each step moves the average (fit calls step_once too, so comparing the
two cannot show either)."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_recipes import tiny_recipe

from avade.train.trainer import Trainer

SETTINGS = ("train.steps=3", "train.checkpoint_every=100", "train.ema_decay=0.5")


def test_a_loop_started_at_a_later_step_takes_that_step_s_batch(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    trainer.step = 2
    expected = next(trainer.stream.batches(2))
    assert not torch.equal(expected[0], next(trainer.stream.batches(0))[0])
    assert torch.equal(trainer._next_batch()[0], expected[0])


def test_each_step_moves_the_weight_average(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    assert trainer.ema is not None
    before = [t.detach().clone() for t in trainer.ema.shadow]
    trainer.step_once()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.ema.shadow, strict=True))
