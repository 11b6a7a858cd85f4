"""images_per_s is the speed of the steps since the last logged line only: a slow first step (compiling,
warming caches) leaves the later lines' speed alone."""

from __future__ import annotations

import itertools
import json
import time
import types

from tiny_recipes import tiny_recipe

import avade.train.trainer as trainer_module
from avade.train.trainer import Trainer


def test_a_slow_first_step_is_in_its_own_window_only(tmp_path, monkeypatch) -> None:
    clock = itertools.count(0.0, 1.0)  # one second per reading: a step reads it twice, so takes 1 s
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock),
                                                                      time=time.time))
    trainer = Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=100", "train.log_every=2"),
                      tmp_path / "run", progress=False)
    step = trainer.train_step

    def first_slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        if trainer.step == 0:
            for _ in range(7):  # 7 s more: the first step takes 8 s
                next(clock)
        return step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", first_slow)
    trainer.fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["images_per_s"] for r in lines if "images_per_s" in r] == [16 / 9, 8.0]
