"""``digits``: scikit-learn's handwritten digits (1,797 images, 8×8, 10 classes), bundled in its wheel.

Transform (deterministic): the 0..16 intensities become 0..255 (``round(v · 255 / 16)``), then the 8×8
images are resized bilinearly to ``resolution`` (8 keeps them as they are) and repeated to 3 channels
when ``channels = 3``. Split: stratified by class, ``test_fraction`` of each class held out, chosen by
``seed`` (scikit-learn's ``train_test_split``); the same config always gives the same split.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import torch

from avade.data.base import TensorImageDataset, check_split, package_versions, resize
from avade.data.configs import DigitsConfig
from avade.errors import DataError

#: the bundled file the digits are read from (scikit-learn's package data)
DIGITS_FILE = "sklearn.datasets.data/digits.csv.gz"


def locate(cfg: DigitsConfig, split: str) -> list[str]:
    """Where the digits come from; :class:`~avade.errors.DataError` if scikit-learn lacks them."""
    check_split(split)
    try:
        present = resources.files("sklearn.datasets.data").joinpath("digits.csv.gz").is_file()
    except ModuleNotFoundError:
        present = False
    if not present:
        raise DataError(
            "dataset 'digits': sklearn/datasets/data/digits.csv.gz is missing; "
            "reinstall scikit-learn (`pip install --force-reinstall scikit-learn`)"
        )
    return [DIGITS_FILE]


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # scikit-learn is heavy to import: only when used

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=16)
def _build(
    resolution: int, channels: int, test_fraction: float, seed: int, split: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.model_selection import train_test_split

    images, labels = _raw()
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    x = torch.from_numpy(images[idx]).unsqueeze(1)  # [N, 1, 8, 8]
    x = resize(x, resolution)
    if channels == 3:
        x = x.repeat(1, 3, 1, 1)
    return x.contiguous(), torch.from_numpy(labels[idx]), torch.from_numpy(idx.astype(np.int64))


class Digits(TensorImageDataset):
    """The digits as an in-memory labeled dataset (10 classes); ``indices`` are rows of ``load_digits()``."""

    def __init__(self, cfg: DigitsConfig, *, split: str = "train") -> None:
        images, labels, indices = _build(cfg.resolution, cfg.channels, cfg.test_fraction, cfg.seed, check_split(split))
        super().__init__(images.clone(), labels.clone(), num_classes=10)
        self.split = split
        self.indices = indices.clone()
        # recorded in the run directory (avade.data.base.data_source): scikit-learn's file, not data.root, which
        # this dataset accepts but never reads; its train_test_split draws the split, so scikit-learn's version says
        # which digits each split holds
        self.data_source = {"paths": [], "embedded": [DIGITS_FILE], **package_versions("scikit-learn")}
