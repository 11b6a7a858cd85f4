"""A terminal's Ctrl-C reaches the whole foreground process group, DataLoader workers included (and a
cluster's SIGTERM every process of the job): they
must leave it to the training process (which stops at the step boundary), not die and take the
batches of the steps up to that boundary with them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
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
