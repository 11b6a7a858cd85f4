"""A DataLoader worker stuck in a dataset's ``__getitem__`` (storage that stopped answering) must end the run
with one line after ``AVADE_DATA_TIMEOUT_MIN``, not hold it (and its allocation) forever, and the stuck worker,
which ignores SIGTERM, must not outlive its loader."""

from __future__ import annotations

import multiprocessing
import sys
import time

import pytest
import torch
import torch.utils.data._utils as loader_utils
from torch.utils.data import Dataset

from avade.errors import ConfigError, DataError
from avade.train.data import DATA_TIMEOUT_ENV, MAX_DATA_TIMEOUT_S, BatchStream, eval_batches, worker_timeout_s

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork-started workers")

STUCK_S = 30.0  # finite, so that without the timeout the test fails (the batch comes late) rather than hangs


class StuckAtFive(Dataset):
    """Every item at once, but item 5 only after ``STUCK_S`` in a loader worker."""

    shape, num_classes = (1, 4, 4), 0

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == 5 and torch.utils.data.get_worker_info() is not None:
            time.sleep(STUCK_S)
        return torch.full((1, 4, 4), i, dtype=torch.uint8), -1


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_TIMEOUT_ENV, "0.02")  # 1.2 s
    # DataLoader's own waits while shutting down (5 s each by default), so that the test stays short
    monkeypatch.setattr(loader_utils, "MP_STATUS_CHECK_INTERVAL", 0.2)


def _training_batches():
    return BatchStream(StuckAtFive(), batch_size=4, seed=0, num_workers=1).batches(0)


def _evaluation_batches():
    return eval_batches(StuckAtFive(), batch_size=4, num_workers=1)


@pytest.mark.parametrize("batches", [_training_batches, _evaluation_batches], ids=["training", "evaluation"])
def test_a_stuck_worker_is_one_line_naming_the_timeout_and_is_killed(short_timeouts, batches):
    # (training's stream reads the dataset in a random order: item 5 comes within its first 4 batches)
    iterator = batches()
    started = time.monotonic()
    with pytest.raises(DataError) as info:
        for _ in range(4):
            next(iterator)
    waited = time.monotonic() - started
    message = str(info.value)
    left = multiprocessing.active_children()
    for worker in left:  # (a stuck worker ignores SIGTERM: it would hang this test process at exit)
        worker.kill()
    assert "\n" not in message and DATA_TIMEOUT_ENV in message and "stuck" in message, message
    assert "0.02 minutes" in message and "data.root" in message and "--resume" in message
    assert waited < STUCK_S / 2, waited
    assert left == []


def test_workers_that_answer_are_not_cut_short(monkeypatch: pytest.MonkeyPatch):
    class Slow(StuckAtFive):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            time.sleep(0.05)
            return torch.full((1, 4, 4), i, dtype=torch.uint8), -1

    monkeypatch.setenv(DATA_TIMEOUT_ENV, "0.02")  # 1.2 s per batch, each taking 0.2 s
    seen = [int(x[0, 0, 0, 0]) for x, _ in eval_batches(Slow(), batch_size=4, num_workers=2)]
    assert seen == [0, 4, 8, 12]
    assert multiprocessing.active_children() == []


def test_the_timeout_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(DATA_TIMEOUT_ENV, raising=False)
    assert worker_timeout_s(0) == 0  # no workers: a read in this process cannot be timed out
    assert worker_timeout_s(2) == 30 * 60
    monkeypatch.setenv(DATA_TIMEOUT_ENV, " 7.5 ")
    assert worker_timeout_s(1) == 450
    for bad in ("0", "-1", "inf", "nan", "ten"):
        monkeypatch.setenv(DATA_TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=f"^{DATA_TIMEOUT_ENV}='{bad}': give the data loader's timeout as a "
                                              "positive number of minutes$"):
            worker_timeout_s(1)
    assert worker_timeout_s(0) == 0  # unread without workers: the bad value left set does not matter there


@pytest.mark.parametrize("batches", [_training_batches, _evaluation_batches], ids=["training", "evaluation"])
def test_a_timeout_too_long_for_the_loader_waits_as_long_as_it_can(monkeypatch: pytest.MonkeyPatch, batches):
    # A huge setting (to wait "for ever") must not fail the first batch: the loader's queues poll in milliseconds
    # held in a C int (some 24.8 days), beyond which they raise OverflowError ("timeout is too large").
    monkeypatch.setattr(StuckAtFive, "__getitem__", lambda self, i: (torch.full((1, 4, 4), i, dtype=torch.uint8), -1))
    monkeypatch.setenv(DATA_TIMEOUT_ENV, "1e9")
    assert worker_timeout_s(1) == MAX_DATA_TIMEOUT_S < 25 * 24 * 3600
    iterator = batches()
    try:
        assert [x.shape[0] for x, _ in (next(iterator) for _ in range(4))] == [4, 4, 4, 4]
    finally:
        iterator.close()
    assert multiprocessing.active_children() == []
