"""The training stream's batch order: which images batch ``step`` holds, from (seed, step) alone."""

from __future__ import annotations

import pytest
import torch

from avade.errors import ConfigError, DataError
from avade.train.data import BatchStream


def _data(n: int) -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1),
                                          torch.zeros(n, dtype=torch.int64))


def test_each_epoch_drops_its_last_incomplete_batch_and_visits_the_rest_once() -> None:
    stream = BatchStream(_data(10), 4, seed=1)  # 2 full batches an epoch, 2 images left out
    for epoch in range(3):
        batches = [stream.indices(2 * epoch + j) for j in range(2)]
        assert all(len(b) == 4 for b in batches)
        seen = torch.cat(batches)
        assert len(set(seen.tolist())) == 8  # no image twice within an epoch
        assert torch.equal(seen, stream._epoch_perm(epoch)[:8])


def test_every_epoch_and_every_seed_has_its_own_order() -> None:
    stream = BatchStream(_data(64), 64, seed=5)  # one batch an epoch: the batch is the epoch's order
    orders = [stream.indices(step).tolist() for step in range(4)]
    assert all(sorted(o) == list(range(64)) for o in orders)
    assert len({tuple(o) for o in orders}) == 4, "epochs repeat one order"
    other = BatchStream(_data(64), 64, seed=6)
    assert other.indices(0).tolist() != orders[0], "the seed does not change the order"
    # and it is the same for a new stream (a resumed run), whichever step it starts at
    again = BatchStream(_data(64), 64, seed=5)
    assert again.indices(3).tolist() == orders[3] and again.indices(1).tolist() == orders[1]


def test_the_batches_of_a_stream_started_at_a_step_are_those_of_the_whole_stream() -> None:
    data = _data(12)
    whole = BatchStream(data, 4, seed=2).batches(0)
    expected = [next(whole)[0].flatten().tolist() for _ in range(7)]
    resumed = BatchStream(data, 4, seed=2).batches(4)
    assert [next(resumed)[0].flatten().tolist() for _ in range(3)] == expected[4:]


def test_a_batch_the_processes_cannot_share_evenly_is_refused() -> None:
    # (Trainer used directly under torchrun meets no earlier check: the ranks' shares would leave images out)
    with pytest.raises(ConfigError, match="batch size 6 is not divisible by the 4 processes") as info:
        BatchStream(_data(16), 6, seed=0, rank=1, world=4)
    assert info.value.path == "data.batch_size"
    assert BatchStream(_data(16), 8, seed=0, rank=1, world=4).indices(0).numel() == 2


class _ReadItems(torch.utils.data.Dataset):
    """Items read one by one (no as_tensors): image 5 has a label past the 2 classes."""

    num_classes = 2

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(1, 2, 2, dtype=torch.uint8), 7 if i == 5 else 0


def test_a_training_batch_read_item_by_item_is_checked_as_it_arrives() -> None:
    # (else the bad label reaches the model's class embedding as an IndexError, or trains unnoticed)
    with pytest.raises(DataError, match=r"^a training batch of the dataset: labels must be in 0\.\.1 .*\[0, 7\]$"):
        for _ in BatchStream(_ReadItems(), 8, seed=0).batches(0):
            break


class _Files(torch.utils.data.Dataset):
    """Items read one by one (no as_tensors), each its own image and label: the DataLoader path."""

    num_classes = 5

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((1, 2, 2), i, dtype=torch.uint8), i % 5


def test_loader_workers_change_where_batches_are_read_not_what_they_hold() -> None:
    # (data.num_workers = "auto" starts workers on an accelerator: the run's batches must be those of 0 workers)
    def first(workers: int, start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        stream = BatchStream(_Files(), 4, seed=3, num_workers=workers)
        assert stream.num_workers == workers
        batches = stream.batches(start)
        try:
            return [next(batches) for _ in range(5)]  # across epochs of 2 batches
        finally:
            batches.close()

    for start in (0, 3):
        alone, with_workers = first(0, start), first(2, start)
        for (x, y), (xw, yw) in zip(alone, with_workers, strict=True):
            assert torch.equal(x, xw) and torch.equal(y, yw)
