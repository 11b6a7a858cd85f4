"""``cifar10``: CIFAR-10 (50,000 train / 10,000 test, 32×32 RGB, 10 classes) through torchvision.

On disk: ``<root>/cifar-10-batches-py/`` in the "python version" layout (``data_batch_1`` … ``data_batch_5``,
``test_batch``, ``batches.meta``), exactly what torchvision downloads. The batch files are pickles by the
dataset's own design; they are read with a restricted unpickler that rebuilds arrays and builtins only, so a
crafted file cannot run code (avade's own files never use pickle).

Loading checks that the needed files are *present* rather than hashing them: torchvision verifies the
archive's MD5 when ``download = true`` fetches it, and hashing 180 MB on every start buys nothing for a
file that loaded once. Transform: none at ``resolution = 32``; any other resolution is a bilinear,
antialiased resize of the whole image (no crop, no augmentation).
"""

from __future__ import annotations

import pickle
from pathlib import Path

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
from avade.data.configs import Cifar10Config
from avade.data.safe_pickle import ArrayUnpickler
from avade.errors import DataError

FOLDER = "cifar-10-batches-py"
NAME = "cifar10"


def _files(root: Path, split: str) -> list[Path]:
    names = CIFAR10.train_list if split == "train" else CIFAR10.test_list
    return [root / FOLDER / n for n, _ in names]


def locate(cfg: Cifar10Config, split: str) -> list[Path]:
    """The files ``split`` reads; :class:`~avade.errors.DataError` naming them when any is missing."""
    files = _files(expand_root(cfg.root), check_split(split))
    missing = [f for f in files if not f.is_file()]
    if missing:
        searched = [missing[0]] if missing[0].parent.is_dir() else [missing[0].parent]
        raise missing_data(NAME, searched, download=True, root=expand_root(cfg.root))
    return files


# What a damaged or foreign batch file raises while it is unpickled.
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError,
               pickle.UnpicklingError)


def _read_batch(file: Path) -> tuple[np.ndarray, list[int]]:
    """(uint8 images [N, 3, 32, 32], labels) of one batch file, read without running code; a DataError
    naming the file when it cannot be read or is not a CIFAR-10 batch."""
    try:
        with open(file, "rb") as fh:
            # encoding: the release is Python 2 pickles (keys as str, array bytes as latin-1 str)
            entry = ArrayUnpickler(fh, encoding="latin1").load()
    except PermissionError as exc:
        raise DataError(f"dataset 'cifar10': {file} cannot be read ({describe_error(exc)}); "
                        f"{repair_hint(exc)}") from None
    except _UNREADABLE as exc:
        raise DataError(f"dataset 'cifar10': {file} cannot be read ({describe_error(exc)}); replace it with the "
                        "file from the official CIFAR-10 python archive (cifar-10-python.tar.gz)") from None
    if not isinstance(entry, dict) or "data" not in entry:
        raise DataError(f"dataset 'cifar10': {file} holds no images (no 'data' entry): it is not a CIFAR-10 batch; "
                        "replace it with the file from the official CIFAR-10 python archive")
    labels = entry.get("labels", entry.get("fine_labels"))
    if labels is None:
        raise DataError(f"dataset 'cifar10': {file} holds no labels (no 'labels' entry): it is not a CIFAR-10 "
                        "batch; replace it with the file from the official CIFAR-10 python archive")
    try:  # (a foreign file's "labels" may be anything: a number, strings, ragged lists)
        labels = np.asarray(labels)
    except ValueError:
        labels = np.asarray(None)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"dataset 'cifar10': {file} holds labels that are not a list of integers ({labels.dtype}, "
                        f"shape {list(labels.shape)}): it is not a CIFAR-10 batch; replace it with the file from the "
                        "official CIFAR-10 python archive")
    data = np.asarray(entry["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"dataset 'cifar10': {file} holds data of shape {list(data.shape)} ({data.dtype}) and "
                        f"{len(labels)} labels; a CIFAR-10 batch holds uint8 [N, 3072] and N labels")
    return data.reshape(-1, 3, 32, 32), [int(v) for v in labels]


def _class_names(root: Path) -> list[str]:
    """The class names from ``batches.meta``; none when it is absent or unreadable (training needs none)."""
    try:
        with open(root / FOLDER / "batches.meta", "rb") as fh:
            meta = ArrayUnpickler(fh, encoding="latin1").load()
        return [str(name) for name in meta["label_names"]]
    except (*_UNREADABLE, FileNotFoundError):
        return []


def _download(root: Path) -> None:
    """Fetch and unpack the official archive with torchvision (it verifies its MD5) into ``root``."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except Exception as exc:  # network failures, a bad archive
        raise DataError(f"dataset 'cifar10': download failed into {root / FOLDER} ({describe_error(exc)}); "
                        "check the network, or fetch cifar-10-python.tar.gz and unpack it there") from None


class Cifar10(TensorImageDataset):
    """CIFAR-10 in memory (uint8, labels 0..9), read from the batch files with a restricted unpickler."""

    def __init__(self, cfg: Cifar10Config, *, split: str = "train") -> None:
        check_split(split)
        root = expand_root(cfg.root)
        if cfg.download and any(not f.is_file() for f in _files(root, split)):
            _download(root)
        files = locate(cfg, split)
        batches = [_read_batch(f) for f in files]
        images = torch.from_numpy(np.ascontiguousarray(np.concatenate([b[0] for b in batches])))
        labels = torch.as_tensor([label for b in batches for label in b[1]], dtype=torch.int64)
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
            raise DataError(f"dataset 'cifar10': labels of the {split} split lie in {int(labels.min())}.."
                            f"{int(labels.max())}, not 0..9: these are not CIFAR-10 batches")
        super().__init__(resize(images, cfg.resolution), labels, num_classes=10)
        self.split = split
        self.classes: list[str] = _class_names(root)
        # recorded in the run directory (avade.data.base.data_source)
        self.data_source = {"paths": [root / FOLDER], "layout": "python batches (cifar-10-python.tar.gz)"}
