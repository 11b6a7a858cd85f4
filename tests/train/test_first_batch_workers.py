"""A fresh run's data-dependent initialisation reads one batch: in the main process, without starting
``data.num_workers`` loader workers that would be shut down after that one batch (and whose prefetched
batches would be decoded for nothing); the batch is the one the workers give."""

from __future__ import annotations

import numpy as np
import torch
import torch.utils.data.dataloader as dataloader
from PIL import Image
from tiny_recipes import tiny_dict

from avade.recipe.load import recipe_from_dict
from avade.train.trainer import Trainer


def test_data_init_starts_no_workers_and_reads_the_first_batch_the_workers_give(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        folder = tmp_path / "imgs" / split
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    raw = tiny_dict()
    raw["data"] = {"name": "image-folder", "root": str(tmp_path), "folder": "imgs", "resolution": 8,
                   "batch_size": 8, "eval_batch_size": 8, "num_workers": 2}
    started: list[int] = []
    multi = dataloader._MultiProcessingDataLoaderIter.__init__

    def counting(self, loader):
        started.append(loader.num_workers)
        multi(self, loader)

    monkeypatch.setattr(dataloader._MultiProcessingDataLoaderIter, "__init__", counting)
    trainer = Trainer(recipe_from_dict(raw), tmp_path / "run", progress=False)
    assert started == []  # (a worker start for one batch: seconds each under spawn, macOS' default)
    first, _ = trainer.stream.batch(0)
    with_workers = trainer.stream.batches(0)
    x, _ = next(with_workers)
    with_workers.close()
    assert started == [2] and torch.equal(x, first)
