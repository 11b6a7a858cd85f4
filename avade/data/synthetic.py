"""``synthetic``: a tiny generated dataset with learnable structure, for tests and smoke runs.

Each image is a sinusoidal stripe pattern plus one soft round blob plus a little noise. The class fixes
the stripes' orientation (``π·k/K``), their frequency (2, 3 or 4 periods per image) and, with 3 channels,
their color (hue ``k/K``); the phase and the blob's place and size vary per image. So a model can learn
the class-conditional structure, and the images are far from noise. With ``num_classes = 0`` all images
follow class 0's pattern and are unlabeled (label -1).

Deterministic: the train split is drawn from ``seed``, the test split from a separate stream of the same
seed, so the two never share an image.
"""

from __future__ import annotations

import functools
import math

import attrs
import torch

from avade.data.base import TensorImageDataset, check_split
from avade.data.configs import SyntheticConfig


def locate(cfg: SyntheticConfig, split: str) -> list[str]:
    """Nothing to find: the images are generated (present for any config)."""
    check_split(split)
    return []


def _hue_to_rgb(h: torch.Tensor) -> torch.Tensor:
    """Fully saturated colors for hues in [0, 1): [K] -> [K, 3] in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6.0) % 6.0
    return 1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def generate(cfg: SyntheticConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 [N, C, R, R], int64 [N])`` for ``split`` (cached by :class:`Synthetic`)."""
    n = cfg.size if check_split(split) == "train" else cfg.test_size
    gen = torch.Generator().manual_seed(cfg.seed * 2 + (0 if split == "train" else 1))
    k_classes = max(cfg.num_classes, 1)
    labels = torch.randint(k_classes, (n,), generator=gen)
    r = cfg.resolution
    coords = (torch.arange(r, dtype=torch.float64) + 0.5) / r
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # [R, R] in (0, 1)

    angle = math.pi * labels.double() / k_classes
    freq = 2.0 + (labels % 3).double()
    phase = 2 * math.pi * torch.rand(n, generator=gen, dtype=torch.float64)
    proj = xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None]
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * freq[:, None, None] * proj + phase[:, None, None])

    center = 0.2 + 0.6 * torch.rand(n, 2, generator=gen, dtype=torch.float64)
    radius = 0.12 + 0.1 * torch.rand(n, generator=gen, dtype=torch.float64)
    dist2 = (xx - center[:, 0, None, None]) ** 2 + (yy - center[:, 1, None, None]) ** 2
    blob = torch.exp(-dist2 / (2 * radius[:, None, None] ** 2))

    if cfg.channels == 3:
        color = _hue_to_rgb(torch.arange(k_classes, dtype=torch.float64) / k_classes)[labels]  # [N, 3]
        img = 0.1 + 0.6 * stripes[:, None] * color[:, :, None, None] + 0.3 * blob[:, None]
    else:
        img = 0.1 + 0.6 * stripes[:, None] + 0.3 * blob[:, None]
    img = img + cfg.noise * torch.randn(img.shape, generator=gen, dtype=torch.float64)
    images = torch.round(img.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    if cfg.num_classes == 0:
        labels = torch.full((n,), -1, dtype=torch.int64)
    return images.contiguous(), labels.to(torch.int64)


@functools.lru_cache(maxsize=16)
def _cached(key: tuple, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return generate(SyntheticConfig(*key), split)


class Synthetic(TensorImageDataset):
    """The generated images, in memory."""

    def __init__(self, cfg: SyntheticConfig, *, split: str = "train") -> None:
        images, labels = _cached(attrs.astuple(cfg, recurse=False), check_split(split))
        super().__init__(images.clone(), labels.clone(), num_classes=cfg.num_classes)
        self.split = split
