"""What a metric may ask of the evaluation run: real data, model samples, the model's BPD, and places.

avade's evaluation (:class:`avade.evaluate.RunContext`) implements :class:`EvalContext`; metrics only code
against this Protocol, so tests can hand them a small fake (:class:`avade.testing.SyntheticEvalContext`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, device


@runtime_checkable
class EvalContext(Protocol):
    """The evaluation environment of one run.

    Attributes:
        device: where networks (feature extractors, classifiers) run.
        out_dir: existing folder for plots and other files.
        cache_dir: existing folder where reference statistics may be cached.
        dataset_key: identifies the data (e.g. ``"natural-patches/3x32x32/<config hash>"``); part of cache keys.
        num_classes: number of classes, 0 if the data is unlabeled.
        options: eval-wide options, e.g. ``{"inception_weights": "/path/to/file"}`` (may be empty).

    A context may also offer ``labels(split) -> Tensor | None``: a split's int64 labels in the order
    ``real_batches(split)`` yields them, without decoding images. It is optional (not part of the
    Protocol): metrics that only need labels use it when present and fall back to ``real_batches``.
    Likewise ``split_size(split) -> int``: the number of images in a split, for a context whose
    ``real_batches(split, n)`` with ``n`` at least that yields all of them in the order ``real_batches(split)``
    does; cached reference features of "all" and of "n >= the split" are then one file.
    """

    # Read-only: metrics only read them (a plain attribute, a property or an attrs field each satisfies them).
    @property
    def device(self) -> device:
        """Where networks (feature extractors, classifiers) run."""

    @property
    def out_dir(self) -> pathlib.Path:
        """An existing folder for plots and other files."""

    @property
    def cache_dir(self) -> pathlib.Path:
        """An existing folder where reference statistics may be cached."""

    @property
    def dataset_key(self) -> str:
        """What identifies the data in cache keys, e.g. ``"natural-patches/3x32x32/<config hash>"``."""

    @property
    def num_classes(self) -> int:
        """The number of classes, 0 if the data is unlabeled."""

    @property
    def options(self) -> Mapping[str, Any]:
        """Eval-wide options, e.g. ``{"inception_weights": "/path/to/file"}`` (may be empty)."""

    def real_batches(
        self, split: str, n: int | None = None, batch_size: int = 100
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Real images as uint8 ``[B, C, H, W]`` with int64 labels ``[B]``: all, or a fixed random
        subset of ``n`` (the same for every call with the same ``n``)."""
        ...

    def sample_batches(
        self, n: int, batch_size: int = 100, labels: Tensor | None = None
    ) -> Iterator[Tensor]:
        """``n`` model samples, uint8 ``[B, C, H, W]``; conditional on ``labels`` (in order) if given
        (a class-conditional model without them is sampled with the data's class balance). Labels for
        a model that is not class-conditional are an error, not silently ignored."""
        ...

    def bpd(self, split: str = "test", importance_samples: int = 1) -> dict[str, float]:
        """The model's bits per dimension on ``split`` (keys chosen by the model code, e.g. ``"bpd"``)."""
        ...
