"""``avade study subsets``: the paper's Table 7 (FID/IS of real-data subsets), over data without a model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console

from avade.data.base import content_fingerprint
from avade.errors import ConfigError, DataError
from avade.evaluate.context import cache_dir, dataset_key
from avade.recipe.load import parse_override
from avade.registry import get_registry
from avade.train.data import subset_batches
from avade.train.device import resolve_device


def subset_study_cli(dataset: str, overrides: Sequence[str], fractions: Sequence[float],
                     console: Console | None = None, options: Mapping[str, Any] | None = None
                     ) -> list[dict[str, float]]:
    """``avade study subsets``: Table 7 on a dataset (``--set`` keys are the dataset's own config, given
    as ``resolution=16`` or, as in a recipe, ``data.resolution=16``)."""
    from avade.metrics.subset_study import subset_study

    registry = get_registry()
    info = registry.get("dataset", dataset)
    settings = {}
    for text in overrides:
        key, value = parse_override(text)
        settings[key.removeprefix("data.")] = value
    config = registry.validate("dataset", dataset, settings, path="data")
    try:
        train_set = registry.build(info, config, split="train")
    except DataError as exc:  # this command names its dataset with --data, not a recipe's data.name
        raise DataError(str(exc).replace("--set data.name=", "--data ")) from None
    ctx = DataOnlyContext(train_set, dataset, dict(options or {}), config=config)
    if console is not None:  # the features of a few thousand images take many minutes on a CPU: not in silence
        console.print(f"computing Inception features of the {len(train_set)} '{dataset}' training images ...")
    return subset_study(ctx, list(fractions), split="train")


@attrs.define
class DataOnlyContext:
    """EvalContext over real data only (no model), for studies of the data itself."""

    data: Any
    name: str
    options: dict[str, Any]
    out_dir: Path = Path(".")
    cache_dir: Path = attrs.Factory(cache_dir)
    device: torch.device = attrs.Factory(lambda: resolve_device("auto"))
    config: Any = None

    @property
    def dataset_key(self) -> str:
        """The data's key in cache file names: dataset name, image shape and config."""
        return dataset_key(self.name, self.data.shape, self.config)

    def split_fingerprint(self, split: str) -> str:
        """The data's content fingerprint (see :meth:`RunContext.split_fingerprint`)."""
        return content_fingerprint(self.data)

    def split_size(self, split: str) -> int:
        """The number of images (see :meth:`RunContext.split_size`); ``split`` is ignored."""
        return len(self.data)

    @property
    def num_classes(self) -> int:
        """The dataset's number of classes (0 when unlabeled)."""
        return int(self.data.num_classes)

    def real_batches(self, split: str, n: int | None = None, batch_size: int = 100
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The data's images and labels in batches: all, or a fixed random subset of ``n``; ``split`` is ignored
        (the study has one set of data)."""
        return subset_batches(self.data, n, batch_size)

    def sample_batches(self, n: int, batch_size: int = 100, labels: torch.Tensor | None = None
                       ) -> Iterator[torch.Tensor]:
        """Always raises :class:`~avade.errors.ConfigError`: a study of data has no model to sample."""
        raise ConfigError("this study has no model to sample from")

    def bpd(self, split: str = "test", importance_samples: int = 1) -> dict[str, float]:
        """Always raises :class:`~avade.errors.ConfigError`: a study of data has no model."""
        raise ConfigError("this study has no model")
