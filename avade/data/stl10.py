"""``stl10``: STL-10 (96×96 RGB) through torchvision, served at 48×48 by default (also 64, or any side ≤ 96).

On disk: ``<root>/stl10_binary/`` as torchvision downloads it (``train_X.bin``, ``train_y.bin``,
``unlabeled_X.bin``, ``test_X.bin``, ``test_y.bin``). ``train_split`` picks what the train split serves:
``"unlabeled"`` (100,000 images, the usual choice for unconditional models), ``"train"`` (5,000 labeled)
or ``"train+unlabeled"``; the test split is always the 8,000 labeled test images. Labels are kept only
when ``train_split = "train"`` (``num_classes`` 10); otherwise everything is unlabeled (``num_classes`` 0,
label -1) so that both splits agree.

As for CIFAR-10, loading checks that the needed files are present instead of hashing them (torchvision
would hash the 2.6 GB unlabeled file on every start; it verifies the archive when downloading).
Transform: a bilinear, antialiased resize of the whole image to ``resolution`` (no crop, no augmentation).
The whole split is held in memory at the served resolution (the unlabeled set at 48×48: about 0.7 GB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import STL10

from avade.data.base import (
    TensorImageDataset,
    check_split,
    describe_error,
    expand_root,
    missing_data,
    repair_hint,
    resize,
)
from avade.data.configs import Stl10Config
from avade.errors import DataError

FOLDER = "stl10_binary"
NAME = "stl10"
_FILES = {
    "train": ("train_X.bin", "train_y.bin"),
    "unlabeled": ("unlabeled_X.bin",),
    "train+unlabeled": ("train_X.bin", "train_y.bin", "unlabeled_X.bin"),
    "test": ("test_X.bin", "test_y.bin"),
}


def _tv_split(cfg: Stl10Config, split: str) -> str:
    return cfg.train_split if split == "train" else "test"


class _PresenceCheckedSTL10(STL10):
    """torchvision's STL10 checking only that this split's files exist (module docstring)."""

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(os.path.join(self.root, FOLDER, f)) for f in _FILES[self.split])


def locate(cfg: Stl10Config, split: str) -> list[Path]:
    """The files ``split`` reads; :class:`~avade.errors.DataError` naming them when any is missing."""
    folder = expand_root(cfg.root) / FOLDER
    files = [folder / f for f in _FILES[_tv_split(cfg, check_split(split))]]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise missing_data(NAME, [missing[0] if folder.is_dir() else folder], download=True, root=folder.parent)
    return files


IMAGE_BYTES = 3 * 96 * 96  # one image of an *_X.bin file


def _check_image_files(files: list[Path]) -> None:
    """Each ``*_X.bin`` of ``files`` holds a positive whole number of images; a DataError naming it if not (an
    empty one gave an empty split, named by no file; a cut one torchvision's "cannot reshape" of the folder)."""
    for f in files:
        if f.name.endswith("_X.bin") and f.is_file():
            size = f.stat().st_size
            if size == 0 or size % IMAGE_BYTES:
                raise DataError(f"dataset 'stl10': {f} holds {size} bytes, not a whole number of 96x96 RGB images "
                                f"({IMAGE_BYTES} bytes each), so it is empty or cut short; "
                                f"{repair_hint(OSError(), f.parent, STL10.filename)}")


class Stl10(TensorImageDataset):
    """STL-10 in memory at ``resolution``."""

    def __init__(self, cfg: Stl10Config, *, split: str = "train") -> None:
        check_split(split)
        root = expand_root(cfg.root)
        if not cfg.download:
            locate(cfg, split)
        files = [root / FOLDER / f for f in _FILES[_tv_split(cfg, split)]]
        _check_image_files(files)
        fetching = cfg.download and not all(f.is_file() for f in files)
        try:
            # With download=true torchvision fetches and verifies the archive unless the files are there.
            tv = _PresenceCheckedSTL10(str(root), split=_tv_split(cfg, split), download=cfg.download)
        except Exception as exc:  # network failures, truncated or foreign files
            if fetching and not isinstance(exc, PermissionError):  # (no folder to delete: the fetch failed)
                raise DataError(f"dataset 'stl10': download failed into {root / FOLDER} ({describe_error(exc)}); "
                                f"check the network, or fetch {STL10.filename} and unpack it into {root}") from None
            action = "download or loading" if cfg.download else "loading"
            raise DataError(
                f"dataset 'stl10': {action} failed in {root / FOLDER} ({describe_error(exc)}); "
                f"{repair_hint(exc, root / FOLDER, STL10.filename)}"
            ) from None
        labeled = cfg.train_split == "train"
        images = resize(torch.from_numpy(np.asarray(tv.data)), cfg.resolution)
        del tv.data  # the 96×96 copy can be large (2.6 GB for the unlabeled set)
        labels = torch.from_numpy(np.asarray(tv.labels, dtype=np.int64)) if labeled else None
        if labels is not None and len(labels) != len(images):  # (a truncated or foreign labels file)
            y_file = root / FOLDER / _FILES[_tv_split(cfg, split)][1]
            raise DataError(f"dataset 'stl10': {y_file} holds {len(labels)} labels for {len(images)} images; "
                            f"{repair_hint(OSError(), y_file.parent, STL10.filename)}")
        if labels is not None and len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < 10:
            # the file holds 1..10; torchvision subtracts 1 in uint8, so a stray 0 arrives as 255
            y_file = root / FOLDER / _FILES[_tv_split(cfg, split)][1]
            bad = labels[(labels < 0) | (labels >= 10)][0].item() + 1
            raise DataError(f"dataset 'stl10': {y_file} holds the label {bad % 256}, outside 1..10; "
                            f"{repair_hint(OSError(), y_file.parent, STL10.filename)}")
        super().__init__(images, labels, num_classes=10 if labeled else 0)
        self.split = split
        # recorded in the run directory (avade.data.base.data_source): which of STL-10's sets this split serves
        self.data_source = {"paths": [root / FOLDER], "layout": "binary (stl10_binary.tar.gz)",
                            "stl10_split": _tv_split(cfg, split)}
