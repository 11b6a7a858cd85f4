"""``cifar10``: CIFAR-10 (50,000 train / 10,000 test, 32×32 RGB, 10 classes) through torchvision.

On disk: ``<root>/cifar-10-batches-py/`` in the "python version" layout (``data_batch_1`` … ``data_batch_5``,
``test_batch``, ``batches.meta``), exactly what torchvision downloads. The batch files are pickles by the
dataset's own design; they are data, read by torchvision's loader (avade's checkpoints never use pickle).

Loading checks that the needed files are *present* rather than hashing them: torchvision verifies the
archive's MD5 when ``download = true`` fetches it, and hashing 180 MB on every start buys nothing for a
file that loaded once. Transform: none at ``resolution = 32``; any other resolution is a bilinear,
antialiased resize of the whole image (no crop, no augmentation).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import attrs
import numpy as np
import torch
from torchvision.datasets import CIFAR10

from avade.data.base import (
    TensorImageDataset,
    check_split,
    describe_error,
    expand_root,
    missing_data,
    repair_hint,
    resize,
)
from avade.errors import DataError
from avade.schema import between

FOLDER = "cifar-10-batches-py"
NAME = "cifar10"


@attrs.define
class Cifar10Config:
    """CIFAR-10 under ``root``; see the module docstring."""

    @property
    def num_classes(self) -> int:
        """10 (its ten classes): known before loading, so `recipe check` can refuse a conditional model on it."""
        return 10

    root: str = attrs.field(default="~/data", metadata={"help": "folder holding cifar-10-batches-py/"})
    resolution: int = attrs.field(
        default=32,
        validator=between(4, 256),
        metadata={"help": "image side; 32 is native, others are resized"},
    )
    download: bool = attrs.field(default=False, metadata={"help": "fetch with torchvision if missing"})


class _PresenceCheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 with the MD5 checks on load replaced by presence checks (module docstring)."""

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(p) for p in _files(Path(self.root), "train" if self.train else "test"))

    def _load_meta(self) -> None:
        # Class names are not needed for training: read them when the meta file is there, without MD5.
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        self.classes = []
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                self.classes = list(pickle.load(fh, encoding="latin1")[self.meta["key"]])
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def _files(root: Path, split: str) -> list[Path]:
    names = CIFAR10.train_list if split == "train" else CIFAR10.test_list
    return [root / FOLDER / n for n, _ in names]


def locate(cfg: Cifar10Config, split: str) -> list[Path]:
    """The files ``split`` reads; :class:`~avade.errors.DataError` naming them when any is missing."""
    files = _files(expand_root(cfg.root), check_split(split))
    missing = [f for f in files if not f.is_file()]
    if missing:
        searched = [missing[0]] if missing[0].parent.is_dir() else [missing[0].parent]
        raise missing_data(NAME, searched, download=True)
    return files


def _broken_batch(root: Path, split: str) -> tuple[Path, str] | None:
    """After a failed load: the first batch file of ``split`` that is unreadable or lacks images or labels,
    and what is wrong with it (None when each reads on its own, e.g. a network failure)."""
    for file in _files(root, split):
        try:
            with open(file, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
        except FileNotFoundError:
            return None
        except Exception as exc:
            return file, f"cannot be read ({describe_error(exc)})"
        if not isinstance(entry, dict) or "data" not in entry:
            return file, "holds no images (no 'data' entry): it is not a CIFAR-10 batch"
        if "labels" not in entry and "fine_labels" not in entry:
            return file, "holds no labels (no 'labels' entry): it is not a CIFAR-10 batch"
    return None


class Cifar10(TensorImageDataset):
    """CIFAR-10 in memory (uint8, labels 0..9)."""

    def __init__(self, cfg: Cifar10Config, *, split: str = "train") -> None:
        check_split(split)
        root = expand_root(cfg.root)
        if not cfg.download:
            locate(cfg, split)
        try:
            # With download=true torchvision fetches and verifies the archive unless the files are there.
            tv = _PresenceCheckedCIFAR10(str(root), train=split == "train", download=cfg.download)
        except Exception as exc:  # network failures, truncated or foreign files
            action = "download or loading" if cfg.download else "loading"
            culprit = _broken_batch(root, split)
            if culprit is not None:
                file, why = culprit
                raise DataError(f"dataset 'cifar10': {file} {why}; replace it with the file from the official "
                                "CIFAR-10 python archive (cifar-10-python.tar.gz)") from None
            raise DataError(
                f"dataset 'cifar10': {action} failed in {root / FOLDER} ({describe_error(exc)}); "
                f"{repair_hint(exc)}"
            ) from None
        images = torch.from_numpy(np.ascontiguousarray(tv.data.transpose(0, 3, 1, 2)))  # HWC -> CHW
        super().__init__(resize(images, cfg.resolution), torch.as_tensor(tv.targets), num_classes=10)
        self.split = split
        self.classes: list[str] = list(tv.classes)
