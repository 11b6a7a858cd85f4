"""``Trainer.step_once``: a notebook's own loop trains exactly as ``fit`` does (the step count, the weight
average and the run's batches advanced), takes batches of its own, and refuses bad ones in one line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
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


_WORKERS = """
import sys, attrs, torch
from tiny_recipes import tiny_dict
from avade.recipe.load import recipe_from_dict
from avade.registry import get_registry
from avade.train.trainer import Trainer

@attrs.define
class ItemsConfig:
    pass

class Items(torch.utils.data.Dataset):
    shape, num_classes = (1, 4, 4), 0
    def __init__(self, cfg, *, split): pass
    def __len__(self): return 16
    def __getitem__(self, i): return torch.full((1, 4, 4), i, dtype=torch.uint8), -1

get_registry().register("dataset", "items", factory=Items, config=ItemsConfig)
raw = tiny_dict("model.encoder.channels=[4]", "model.discriminator.channels=[4]")
raw["data"] = {"name": "items", "batch_size": 4, "eval_batch_size": 8, "num_workers": 2}
trainer = Trainer(recipe_from_dict(raw), sys.argv[1], progress=False)
trainer.step_once()
import multiprocessing
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
if sys.argv[2] == "close":
    trainer.close()
    assert multiprocessing.active_children() == []
trainer.step_once()  # started again
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("end", ["close", "exit"])
def test_step_once_s_loader_workers_end_with_close_or_the_script(tmp_path: Path, end: str) -> None:
    # A script's loop of step_once calls, with data.num_workers: the workers ignore SIGTERM, and
    # multiprocessing's exit (terminate, then join) hung for ever on them.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", _WORKERS, str(tmp_path / "run"), end], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    workers = [int(pid) for pid in proc.stdout.readline().split()]
    try:
        assert proc.wait(timeout=120) == 0  # (a hang guard, far above the seconds it takes)
    finally:
        proc.kill()
        proc.stdout.close()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert len(workers) == 2


def test_a_stream_that_failed_is_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    batches = trainer.stream.batches

    def failing(start: int):  # an unreadable image at the second batch
        stream = batches(start)
        yield next(stream)
        raise DataError("cannot read image 5.png")

    monkeypatch.setattr(trainer.stream, "batches", failing)
    trainer.step_once()
    with pytest.raises(DataError, match=r"5\.png"):
        trainer.step_once()
    trainer.step += 1  # skipped by hand: that step's batch, not a StopIteration from the failed stream
    trainer.step_once()
    assert trainer.step == 3


def test_step_once_counts_the_skipped_steps_in_a_row_as_fit_does(tmp_path: Path, monkeypatch) -> None:
    trainer = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    finite = iter([0.0, 0.0, 1.0, 0.0])
    monkeypatch.setattr(trainer, "train_step", lambda x, y: {"finite": next(finite)})
    counts = []
    for _ in range(4):
        trainer.step_once()
        counts.append(trainer.bad_steps)
    assert counts == [1, 2, 0, 1] and trainer.step == 4


def test_a_loop_started_at_a_later_step_takes_that_step_s_batch(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    trainer.step = 2
    expected = next(trainer.stream.batches(2))
    assert not torch.equal(expected[0], next(trainer.stream.batches(0))[0])
    assert torch.equal(trainer._next_batch()[0], expected[0])


def test_each_step_moves_the_weight_average(tmp_path: Path) -> None:
    """(fit calls step_once too, so comparing the two cannot show an average that stands still)"""
    trainer = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    assert trainer.ema is not None
    before = [t.detach().clone() for t in trainer.ema.shadow]
    trainer.step_once()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.ema.shadow, strict=True))


def test_a_notebook_trainer_on_a_saved_run_is_told_of_resume_true(tmp_path: Path) -> None:
    from avade.errors import CheckpointError

    first = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    first.step_once()
    first.save()
    first.close()
    with pytest.raises(CheckpointError, match=r"already holds checkpoints; continue it with --resume \(from "
                                              r"Python: Trainer\(\.\.\., resume=True\)\)"):
        Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", progress=False)
    again = Trainer(tiny_recipe(*SETTINGS), tmp_path / "run", resume=True, progress=False)
    assert again.step == 1
    again.close()


def test_step_once_past_train_steps_is_warned_of_once(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe("train.steps=1", "train.checkpoint_every=100"), tmp_path / "run", progress=False)
    trainer.step_once()
    with pytest.warns(UserWarning, match=r"step_once at step 1, past train.steps = 1: .* raise train.steps"):
        trainer.step_once()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.step_once()  # (said once)
    assert trainer.step == 3
    trainer.close()
