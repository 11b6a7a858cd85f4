"""A fake EvalContext and small embedded image sets for the metric tests (CPU, no network).

A uniquely named module (not conftest) so test files can import it without clashing with other areas.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor


class FakeContext:
    """Implements avade.metrics.context.EvalContext over in-memory tensors.

    ``real``: split -> (uint8 images, int64 labels). ``sampler(n, labels)`` returns uint8 "samples".
    Counts calls to ``real_batches`` so tests can check the reference-statistics cache.
    """

    def __init__(self, tmp: pathlib.Path, real: dict[str, tuple[Tensor, Tensor]],
                 sampler: Callable[[int, Tensor | None], Tensor] | None = None, num_classes: int = 0,
                 options: dict[str, Any] | None = None, dataset_key: str = "fake/test/8") -> None:
        self.device = torch.device("cpu")
        self.out_dir = tmp / "out"
        self.cache_dir = tmp / "cache"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.dataset_key = dataset_key
        self.num_classes = num_classes
        self.options = options or {}
        self.real = real
        self.sampler = sampler
        self.real_calls = 0
        self.bpd_calls: list[tuple[str, int]] = []

    def real_batches(self, split: str, n: int | None = None,
                     batch_size: int = 100) -> Iterator[tuple[Tensor, Tensor]]:
        self.real_calls += 1
        x, y = self.real[split]
        if n is not None:
            x, y = x[:n], y[:n]
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]

    def sample_batches(self, n: int, batch_size: int = 100, labels: Tensor | None = None) -> Iterator[Tensor]:
        assert self.sampler is not None
        images = self.sampler(n, labels)
        for i in range(0, n, batch_size):
            yield images[i:i + batch_size]

    def bpd(self, split: str = "test", importance_samples: int = 1) -> dict[str, float]:
        self.bpd_calls.append((split, importance_samples))
        return {"bpd" if importance_samples == 1 else f"bpd_iw{importance_samples}": 3.5 + importance_samples / 100}


def pool_sampler(images: Tensor, labels: Tensor) -> Callable[[int, Tensor | None], Tensor]:
    """'Samples' that are real images: for requested labels, the next unused image of each class."""

    def sample(n: int, want: Tensor | None) -> Tensor:
        if want is None:
            return images[torch.arange(n) % len(images)]
        by_class = {int(c): (labels == c).nonzero().flatten().tolist() for c in labels.unique()}
        used = dict.fromkeys(by_class, 0)
        out = []
        for c in want.tolist():
            pool = by_class[c]
            out.append(pool[used[c] % len(pool)])
            used[c] += 1
        return images[torch.tensor(out)]

    return sample


def load_digits_splits() -> dict[str, tuple[Tensor, Tensor]]:
    """scikit-learn digits as uint8 [N, 1, 8, 8], shuffled (seed 0), 1400 train / 397 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255 / 16)).astype(np.uint8))[:, None]
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return {"train": (x[:1400], y[:1400]), "test": (x[1400:], y[1400:])}


def natural_crops(n: int, size: int = 32, seed: int = 0) -> Tensor:
    """Random RGB crops of scikit-learn's sample photographs, uint8 [n, 3, size, size]."""
    from sklearn.datasets import load_sample_images

    photos = [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        top = int(rng.integers(0, im.shape[1] - size))
        left = int(rng.integers(0, im.shape[2] - size))
        out.append(im[:, top:top + size, left:left + size])
    return torch.stack(out).contiguous()


def noise_images(n: int, size: int = 32, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def crops_against_noise(tmp: pathlib.Path, n_real: int, split: str,
                        sampler: Callable[[int, Tensor | None], Tensor] | None = None) -> FakeContext:
    """``n_real`` photograph crops as the real ``split``, noise images as the model's samples (or ``sampler``'s),
    scored through the test-only random features."""
    from avade.metrics.random_features import RandomConvFeatures

    return FakeContext(tmp, {split: (natural_crops(n_real, seed=0), torch.zeros(n_real, dtype=torch.long))},
                       sampler=sampler or (lambda n, labels: noise_images(n, seed=1)),
                       options={"feature_extractor": RandomConvFeatures(dim=16, seed=0)})
