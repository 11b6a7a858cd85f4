"""A terminal's Ctrl-C reaches the whole foreground process group, DataLoader workers included (and a
cluster's SIGTERM every process of the job): they
must leave it to the training process (which stops at the step boundary), not die and take the
batches of the steps up to that boundary with them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time

import pytest
import torch
from torch.utils.data import Dataset

from avade.train.data import BatchStream
from avade.train.preemption import stop_on_signals

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class SlowImages(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        time.sleep(0.05)
        return torch.full((1, 4, 4), i, dtype=torch.uint8), 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)],
                         ids=["Ctrl-C", "SIGTERM (SLURM signals every process of the job)", "SIGUSR1"])
def test_a_stop_signal_to_the_process_group_leaves_the_loader_workers_running(signum):
    stream = BatchStream(SlowImages(), batch_size=4, seed=0, num_workers=2)
    batches = stream.batches(0)
    next(batches)
    loader_workers = [p.pid for p in multiprocessing.active_children()]
    assert len(loader_workers) == 2
    with stop_on_signals(announce=False) as stop:
        for pid in [os.getpid(), *loader_workers]:  # what the terminal does on Ctrl-C
            os.kill(pid, signum)
        time.sleep(0.3)
        for _ in range(3):  # the steps up to the boundary still get their batches
            x, _ = next(batches)
            assert x.shape == (4, 1, 4, 4)
    assert stop.signal == signal.Signals(signum).name


def test_the_trainer_ends_its_loader_workers_however_training_ends(fresh_registry, tmp_path):
    # they ignore stop signals, so the trainer must close its loader itself (else they would outlive it)
    import attrs
    from tiny_recipes import tiny_dict

    from avade.recipe.load import recipe_from_dict
    from avade.registry import get_registry
    from avade.train.trainer import Trainer

    @attrs.define
    class ItemsConfig:
        pass

    class Items(SlowImages):
        shape, num_classes = (1, 4, 4), 0

        def __init__(self, cfg, *, split):
            pass

        def __getitem__(self, i):
            return torch.full((1, 4, 4), i, dtype=torch.uint8), -1

    get_registry().register("dataset", "items", factory=Items, config=ItemsConfig)
    raw = tiny_dict("train.steps=2", "model.encoder.channels=[4]", "model.discriminator.channels=[4]")
    raw["data"] = {"name": "items", "batch_size": 4, "eval_batch_size": 8, "num_workers": 2}
    Trainer(recipe_from_dict(raw), tmp_path / "done", progress=False).fit()
    assert multiprocessing.active_children() == []
    trainer = Trainer(recipe_from_dict(raw), tmp_path / "failed", progress=False)
    calls = []

    def failing_step(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("a step failed")

    trainer.train_step = failing_step
    with pytest.raises(RuntimeError) as info:  # (its traceback holds the loop's frame, and with it the loader)
        trainer.fit()
    left = multiprocessing.active_children()
    for worker in left:  # (ignoring SIGTERM, they would hang this test process at exit)
        worker.kill()
    assert calls and info.value is not None and left == []


_KILLED_WITH_WORKERS = """
import os, signal, sys, time, torch
from torch.utils.data import Dataset
from avade.atomic_files import held_alone
from avade.train.data import BatchStream

class Images(Dataset):
    def __len__(self):
        return 16
    def __getitem__(self, i):
        time.sleep(0.05)
        return torch.zeros((1, 4, 4), dtype=torch.uint8), 0

with held_alone(__import__("pathlib").Path(sys.argv[1]), "busy"):
    batches = BatchStream(Images(), batch_size=4, seed=0, num_workers=2).batches(0)
    next(batches)
    import multiprocessing
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_training_process_leaves_its_run_lock_to_no_loader_worker(tmp_path):
    # kill -9 (the OOM killer, a user) ends the training process but not at once its DataLoader workers,
    # forked while it held the run's lock: an immediate --resume must not be refused as "another process
    # is training" while they wind down.
    import subprocess

    from avade.atomic_files import held_alone

    lock = tmp_path / ".train.lock"
    # TMPDIR: each worker that sent a batch holds a multiprocessing folder (pymp-*) there, which the SIGKILLs
    # leave behind: a folder of this test's own, and a short one (tmp_path need not be), as the socket in it
    # must fit AF_UNIX's 107 characters, else the workers cannot send batches and the test hangs.
    with tempfile.TemporaryDirectory(prefix="avade-kill-") as scratch:
        # (not subprocess.run: it would wait for the workers too, which hold its output pipe)
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WITH_WORKERS, str(lock)], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "TMPDIR": scratch})
        assert proc.stdout is not None
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert proc.wait(timeout=120) == -signal.SIGKILL
        try:
            assert workers and all(_alive(pid) for pid in workers)  # still winding down
            with held_alone(lock, "busy"):
                pass
        finally:
            proc.stdout.close()
            for pid in workers:
                with __import__("contextlib").suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class OneUnreadable(Dataset):
    """Images read in the workers; item 5 is a file that cannot be decoded."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from avade.errors import DataError

        if i == 5:
            raise DataError("cannot read image /data/5.png: OSError: image file is truncated; remove or replace "
                            "the file")
        return torch.zeros((1, 4, 4), dtype=torch.uint8), 0


@pytest.mark.parametrize("reader", ["training", "evaluation"])
def test_a_file_that_fails_in_a_loader_worker_is_one_line_and_ends_the_workers(reader):
    # torch re-raised the worker's DataError as "Caught DataError in DataLoader worker process 0." plus the
    # worker's traceback (a 15-line `error:`), and the failed iteration's traceback held the loader's
    # iterator: its workers, ignoring SIGTERM, outlived it, and the process hung at exit joining them.
    from avade.errors import DataError
    from avade.train.data import eval_batches

    if reader == "training":
        batches = BatchStream(OneUnreadable(), batch_size=4, seed=0, num_workers=2).batches(0)
    else:
        batches = eval_batches(OneUnreadable(), 4, num_workers=2)
    with pytest.raises(DataError) as info:
        for _ in range(8):
            next(batches)
    left = multiprocessing.active_children()
    for worker in left:  # (they would hang this test process at exit)
        worker.kill()
    assert str(info.value) == ("cannot read image /data/5.png: OSError: image file is truncated; remove or "
                               "replace the file")
    assert left == []
