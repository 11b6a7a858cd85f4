"""A small, offline :class:`~avade.metrics.context.EvalContext` for checking metrics without a trained
model or Inception weights: seeded class-dependent images (avade's ``synthetic`` data) as the real splits,
real images with noise as the "model samples", a fixed bits/dim, and the test-only random conv feature
extractor in place of Inception (so its numbers are not Inception metrics, only well-formed ones)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class SyntheticEvalContext:
    """Implements ``EvalContext`` (plus its optional ``labels(split)``) over 3x16x16 synthetic images.

    ``num_classes`` 0 gives an unlabeled context (labels -1, unconditional samples)."""

    def __init__(self, num_classes: int = 10, size: int = 96, root: Path | None = None, seed: int = 0) -> None:
        from avade.data.synthetic import SyntheticConfig, generate
        from avade.metrics.features import EXTRACTOR_OPTION
        from avade.metrics.random_features import RandomConvFeatures

        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="avade-kit-")
        base = Path(root) if root is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.device = torch.device("cpu")
        self.out_dir, self.cache_dir = base / "out", base / "cache"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.num_classes = int(num_classes)
        self.dataset_key = f"kit-synthetic/{self.num_classes}/{size}/{seed}"
        self.options: dict[str, Any] = {EXTRACTOR_OPTION: RandomConvFeatures(dim=16, seed=seed, size=16)}
        cfg = SyntheticConfig(size=size, test_size=size, resolution=16, num_classes=self.num_classes, seed=seed)
        self._real = {split: generate(cfg, split) for split in ("train", "test")}
        self._seed = seed

    def labels(self, split: str) -> Tensor:
        """A split's labels, in the order :meth:`real_batches` yields them."""
        return self._real[split][1]

    def real_batches(self, split: str, n: int | None = None, batch_size: int = 100
                     ) -> Iterator[tuple[Tensor, Tensor]]:
        """See :meth:`~avade.metrics.context.EvalContext.real_batches`."""
        images, labels = self._real[split]
        if n is not None:
            keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(n))[:n].sort().values
            images, labels = images[keep], labels[keep]
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size], labels[i:i + batch_size]

    def sample_batches(self, n: int, batch_size: int = 100, labels: Tensor | None = None) -> Iterator[Tensor]:
        """See :meth:`~avade.metrics.context.EvalContext.sample_batches`: noised real training images stand in."""
        if labels is not None and not self.num_classes:
            raise ValueError("labels given for samples of an unconditional model")
        images, real_labels = self._real["train"]
        g = torch.Generator().manual_seed(self._seed + 1)
        if labels is None:  # drawn from the real images: a "model" that is right about the data
            idx = torch.randint(0, len(images), (n,), generator=g)
        else:  # an image of each asked-for class
            pools = [torch.nonzero(real_labels == c).flatten() for c in range(self.num_classes)]
            idx = torch.stack([pools[int(c)][torch.randint(0, len(pools[int(c)]), (1,), generator=g)][0]
                               for c in labels])
        noise = torch.randint(-12, 13, (n, *images.shape[1:]), generator=g)
        samples = (images[idx].to(torch.int16) + noise).clamp(0, 255).to(torch.uint8)
        for i in range(0, n, batch_size):
            yield samples[i:i + batch_size]

    def bpd(self, split: str = "test", importance_samples: int = 1) -> dict[str, float]:
        """A fixed made-up BPD, keyed as a run keys it (``bpd``, or ``bpd_iw<k>``)."""
        # keyed as a run's context keys it: "bpd", or "bpd_iw<k>" for the k-sample bound
        if importance_samples == 1:
            return {"bpd": 5.0}
        return {f"bpd_iw{importance_samples}": 5.0 - 0.01 * min(importance_samples, 50) / 50}
