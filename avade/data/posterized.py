"""``data.n_bits``: any dataset seen at fewer bits per colour value (Glow's ``n_bits_x``).

The images stay uint8 in 0..255, each value replaced by the lowest of its 2^(8 - b) wide bin (torchvision's
``posterize``), so everything that shows or scores real images -- sample grids, reconstructions, FID's
reference statistics -- sees the same b-bit data the model's density is over (``Preprocess(bits=b)``).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from avade.data.base import ImageDataset, content_fingerprint

#: bytes of images up to which a posterized in-memory copy is kept (uint8: one byte per value)
COPY_LIMIT = 2**30


class PosterizedDataset(ImageDataset):
    """``dataset`` with every image posterized to ``bits`` bits per value; its other attributes
    (``labels``, ``files``, ...) are the wrapped dataset's."""

    def __init__(self, dataset: Any, bits: int) -> None:
        if not 1 <= int(bits) < 8:
            raise ValueError(f"bits must be in 1..7 (8 is the dataset itself), got {bits}")
        self.dataset = dataset
        self.bits = int(bits)
        self.shape = tuple(dataset.shape)
        self.num_classes = int(dataset.num_classes)
        self._tensors: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def content_fingerprint(self) -> str:
        """The wrapped dataset's (its images decide the posterized ones)."""
        return content_fingerprint(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[i]
        return TF.posterize(image, self.bits), label

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A posterized copy of the wrapped dataset's tensors, up to :data:`COPY_LIMIT` bytes; above it None,
        so batches are read item by item (posterized as they are read) instead of doubling a large
        in-memory dataset (ImageNet-64: 16 GB)."""
        if self._tensors is None:
            tensors = getattr(self.dataset, "as_tensors", lambda: None)()
            if tensors is None or tensors[0].numel() > COPY_LIMIT:
                return None
            images, labels = tensors
            self._tensors = (TF.posterize(images, self.bits), labels)
        return self._tensors

    def training_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The wrapped dataset's own tensors, for the training stream: the model takes each value's level
        itself (``Preprocess.levels``), so training needs no posterized copy, however large the data."""
        return getattr(self.dataset, "as_tensors", lambda: None)()

    @property
    def data_source(self) -> Any:  # type: ignore[override]
        """The wrapped dataset's (what was read; the posterizing is in the recipe's data.n_bits)."""
        return getattr(self.dataset, "data_source", None)

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes this wrapper lacks; "dataset" itself guards against recursion
        # while unpickling (DataLoader workers), before __init__ has set it
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"PosterizedDataset({self.dataset!r}, bits={self.bits})"


def with_bits(dataset: Any, bits: int) -> Any:
    """``dataset`` at ``bits`` bits per value: itself at 8, else a :class:`PosterizedDataset`."""
    return dataset if int(bits) == 8 else PosterizedDataset(dataset, bits)
