"""``digits``: scikit-learn's handwritten digits (1,797 images, 8×8, 10 classes), bundled in its wheel.

Transform (deterministic): the 0..16 intensities become 0..255 (``round(v · 255 / 16)``), then the 8×8
images are resized bilinearly to ``resolution`` (8 keeps them as they are) and repeated to 3 channels
when ``channels = 3``. Split: stratified by class, ``test_fraction`` of each class held out, chosen by
``seed`` (scikit-learn's ``train_test_split``); the same config always gives the same split.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Literal

import attrs
import numpy as np
import torch

from avade.data.base import TensorImageDataset, check_split, resize
from avade.errors import DataError
from avade.schema import between, one_of


@attrs.define
class DigitsConfig:
    """scikit-learn digits, upsampled to ``resolution``; see the module docstring."""

    @property
    def num_classes(self) -> int:
        """10 (the ten digits): known before loading, so `recipe check` can refuse a conditional model on it."""
        return 10

    resolution: int = attrs.field(
        default=16, validator=one_of(8, 16, 32), metadata={"help": "side of the images: 8 (native), 16 or 32"}
    )
    channels: Literal[1, 3] = attrs.field(default=1, metadata={"help": "1 (gray) or 3 (gray repeated)"})
    test_fraction: float = attrs.field(
        default=0.2,
        validator=between(0.05, 0.5),
        metadata={"help": "share of each class held out for the test split"},
    )
    # scikit-learn's random_state takes 0 .. 2**32 - 1 only
    seed: int = attrs.field(default=0, validator=between(0, 2**32 - 1),
                            metadata={"help": "seed of the stratified split"})
    # Accepted so that a recipe written for an on-disk dataset can switch with only `data.name`.
    root: str = attrs.field(default="~/data", metadata={"help": "unused (built-in data)"})
    download: bool = attrs.field(default=False, metadata={"help": "unused (built-in data)"})


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
    return ["sklearn.datasets.data/digits.csv.gz"]


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
