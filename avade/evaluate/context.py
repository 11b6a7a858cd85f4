"""The evaluation context of a model: :class:`RunContext` implements
:class:`avade.metrics.context.EvalContext` over a model and its datasets, so every metric component works
the same during training and from the CLI."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from avade.data.base import class_counts, content_fingerprint
from avade.errors import AvadeError, ConfigError
from avade.models import GenerativeModel
from avade.recipe.schema import LIKELIHOOD_VARIANTS, Recipe
from avade.train.data import eval_batches, subset_batches


def dataset_key(name: str, shape: Sequence[int], config: Any) -> str:
    """What identifies a dataset's images in cache keys (cached reference features): its name, image shape,
    config and how its files are decoded (:data:`~avade.data.base.DECODING_VERSION`)."""
    from avade.data.base import DECODING_VERSION

    digest = hashlib.sha1(f"{config!r}/decoding{DECODING_VERSION}".encode()).hexdigest()[:8]
    return f"{name}/{'x'.join(map(str, shape))}/{digest}"


def draw_class_labels(counts: Sequence[int] | None, num_classes: int, n: int, seed: int) -> torch.Tensor:
    """``n`` class labels drawn independently (seeded) in the proportions of ``counts`` (uniformly when it
    is None): evaluation and ``avade sample -o X.npz`` draw the same labels from the same counts and seed."""
    weights = (torch.as_tensor(counts, dtype=torch.float64) if counts and sum(counts) > 0
               else torch.ones(num_classes, dtype=torch.float64))
    return torch.multinomial(weights, n, replacement=True, generator=torch.Generator().manual_seed(seed))


@attrs.define
class RunContext:
    """The evaluation environment of one model (see EvalContext). ``train``: the training split, or a
    function that loads it when a metric first asks for it (evaluating on the test split needs no training
    data); ``class_counts``: its labels per class as the checkpoint recorded them."""

    model: GenerativeModel
    recipe: Recipe
    train: Any
    test_set: Any
    device: torch.device
    out_dir: Path
    cache_dir: Path
    options: dict[str, Any] = attrs.Factory(dict)
    seed: int = 0
    checkpoint: Path | None = None  # the checkpoint the weights came from
    weights: str = "last"  # "ema": the run's averaged weights (train.ema_decay)
    class_counts: list[int] | None = None
    # the sample features of one evaluation's metrics, drawn once (avade.metrics.reference.sample_features): a dict
    # while compute_each runs them, None otherwise (the model, its temperature or the seed may change in between)
    sample_feature_memo: dict[Any, Any] | None = attrs.field(default=None, repr=False)

    @property
    def train_set(self) -> Any:
        """The training split, loaded on first use (only metrics that read it pay for it)."""
        if callable(self.train) and not isinstance(self.train, torch.utils.data.Dataset):
            self.train = self.train()
        return self.train

    @property
    def dataset_key(self) -> str:
        """The data's key in cache file names: dataset, shape and config (and ``n_bits`` when below 8)."""
        ref = self.recipe.data.dataset
        bits = self.recipe.data.options.n_bits
        config = ref.config if ref is not None else ""
        # posterized images have reference statistics of their own
        return dataset_key(self.recipe.data.options.name, self.test_set.shape,
                           config if bits == 8 else f"{config!r}/bits{bits}")

    @property
    def num_classes(self) -> int:
        """The data's number of classes (0: unlabeled)."""
        return int(self.test_set.num_classes)

    def _split(self, split: str) -> Any:
        if split not in ("train", "test"):
            raise ConfigError(f"unknown split '{split}'; use train or test")
        return self.train_set if split == "train" else self.test_set

    def data_read(self) -> dict[str, Any]:
        """What data the splits loaded so far read (:func:`avade.train.provenance.data_read`'s record, as each
        checkpoint's ``data_read``): the test split, and the training split once a metric (or the checkpoint's
        want of class counts) loaded it."""
        from avade.train.provenance import data_read

        loaded = not (callable(self.train) and not isinstance(self.train, torch.utils.data.Dataset))
        if self.recipe.data.dataset is None:
            return {}
        return data_read(self.recipe, self.train if loaded else None, self.test_set)

    def split_fingerprint(self, split: str) -> str:
        """What changes when ``split``'s images do (the cache key of its reference features); an optional
        extension of :class:`~avade.metrics.context.EvalContext`."""
        return content_fingerprint(self._split(split))

    def split_size(self, split: str) -> int:
        """The number of images in ``split`` (``real_batches`` of as many or more yields all of them, in order);
        an optional extension of :class:`~avade.metrics.context.EvalContext`."""
        return len(self._split(split))

    def labels(self, split: str) -> torch.Tensor | None:
        """The labels of ``split`` in dataset order, without decoding its images (None when the dataset
        keeps no label list); an optional extension of :class:`~avade.metrics.context.EvalContext`."""
        known = getattr(self._split(split), "labels", None)
        return None if known is None else torch.as_tensor(known, dtype=torch.int64)

    def real_batches(self, split: str, n: int | None = None, batch_size: int = 100
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """See :meth:`~avade.metrics.context.EvalContext.real_batches`; decoded by ``data.num_workers`` loader
        processes, as bits/dim's batches are (reference features of 50,000 images read from files)."""
        return subset_batches(self._split(split), n, batch_size, num_workers=self.recipe.data.options.num_workers,
                              device=self.device)

    @property
    def sample_seed(self) -> int:
        """The seed model samples are drawn with (``train.seed + 1``): ``avade sample --seed`` of it (and
        ``--batch-size`` of the metric's) draws them again; eval.json records it with each sample metric's settings."""
        return self.seed + 1

    def class_labels(self, n: int) -> torch.Tensor:
        """``n`` labels drawn (seeded) with the training split's class balance, for a class-conditional
        model (uniform when the split's labels are not at hand)."""
        counts = self.class_counts if self.class_counts is not None else class_counts(self.train_set)
        return draw_class_labels(counts, self.model.num_classes, n, self.seed + 2)

    @torch.no_grad()
    def sample_batches(self, n: int, batch_size: int = 100, labels: torch.Tensor | None = None
                       ) -> Iterator[torch.Tensor]:
        """See :meth:`~avade.metrics.context.EvalContext.sample_batches`; drawn with :attr:`sample_seed`."""
        if labels is not None and not self.model.num_classes:
            raise ConfigError("class-conditional samples were asked for, but the model is not class-conditional "
                              "(model.conditional = false); train one with model.conditional = true, or drop "
                              "the metric that needs them")
        if labels is None and self.model.num_classes:
            # Training always conditions on a class; the unconditional path was never trained.
            labels = self.class_labels(n)
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.sample_seed)
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            lab = labels[start:start + m].to(self.device) if labels is not None else None
            yield self.model.sample(m, lab, generator=gen).cpu()

    def bpd_defined(self) -> None:
        """A ConfigError unless the model has a likelihood (a GAN has none)."""
        if self.recipe.variant not in LIKELIHOOD_VARIANTS:
            raise ConfigError(f"variant '{self.recipe.variant}' is trained without a likelihood term, so bpd is "
                              "undefined for it; evaluate it with sample metrics, e.g. --metrics fid,kid")

    def bpd_images(self, split: str = "test") -> tuple[int, int]:
        """(images the bits/dim of ``split`` are averaged over, images in it): fewer with ``train.eval_batches``."""
        total = len(self._split(split))
        limit = self.recipe.train.eval_batches
        return (min(total, limit * self.recipe.data.options.eval_batch_size) if limit else total), total

    def bpd(self, split: str = "test", importance_samples: int = 1) -> dict[str, float]:
        """See :meth:`~avade.metrics.context.EvalContext.bpd`; a warning when ``train.eval_batches`` caps the images."""
        self.bpd_defined()
        used, total = self.bpd_images(split)
        if used < total:  # as training reported it, but not the published measure: say so
            warnings.warn(f"bpd averaged over {used} of the {total} {split} images (train.eval_batches = "
                          f"{self.recipe.train.eval_batches}); for the whole split: --set train.eval_batches=0",
                          UserWarning, stacklevel=2)
        options = self.recipe.data.options
        batches = eval_batches(self._split(split), options.eval_batch_size, self.recipe.train.eval_batches,
                               options.num_workers, self.device)
        key = "bpd" if importance_samples == 1 else f"bpd_iw{importance_samples}"
        return {key: self.model.mean_bpd(batches, importance_samples)}


def cache_dir() -> Path:
    """Reference statistics of real data are shared by every run: ``$AVADE_CACHE`` or ~/.cache/avade."""
    configured = os.environ.get("AVADE_CACHE")
    path = Path(configured or Path.home() / ".cache" / "avade").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "AVADE_CACHE" if configured else "the default cache folder"
        raise AvadeError(f"{where}: cannot use {path} as the folder for cached reference statistics "
                         f"({exc.strerror or exc}); point AVADE_CACHE at a writable folder") from None
    return path


def inception_options(recipe: Recipe) -> dict[str, Any]:
    """The feature extractors' options of a recipe (its ``eval.inception_weights`` file, when it names one)."""
    return {"inception_weights": recipe.eval.inception_weights} if recipe.eval.inception_weights else {}
