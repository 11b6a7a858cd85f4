"""Features of real data (cached as safetensors) and of model samples.

Real-data features depend only on the data, the split, the extractor weights and how many images were
used, so they are cached in ``ctx.cache_dir`` under a name built from ``(dataset_key, split, extractor
hash, count)``. Two files per key: ``*.stats.safetensors`` (FID's float64 mean and covariance, small) and
``*.features.safetensors`` (the features, plus class probabilities when the extractor has them, for
KID, PRD and IS; not written when only FID's statistics were asked for, of more than ``KEEP_FEATURES_BYTES``
of features: those are streamed). No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import re

import attrs
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from avade.atomic_files import replaced_atomically, save_tensors
from avade.errors import AvadeError
from avade.memory import naming_memory
from avade.metrics.context import EvalContext
from avade.metrics.features import FeatureExtractor, extract, iter_features
from avade.metrics.stats import GaussianAccumulator

__all__ = ["FeatureSet", "cache_path", "real_features", "real_stats", "real_stats_count", "sample_features"]


@attrs.define
class FeatureSet:
    """Features ``[N, D]`` (float32) of real images or samples; class probabilities ``[N, K]`` (float64)."""

    features: Tensor
    probs: Tensor | None = None


def _requested(ctx: EvalContext, split: str, n: int | None) -> int | None:
    """``n``, or None (all) when it is at least the number of images in ``split`` (``split_size``, an optional
    EvalContext method): ``real_batches`` then yields the whole split either way, so both are one cache key."""
    size = getattr(ctx, "split_size", None)
    return None if n is not None and callable(size) and n >= size(split) else n


def cache_path(ctx: EvalContext, extractor: FeatureExtractor, split: str, n: int | None,
               what: str) -> pathlib.Path:
    """``cache_dir/ref-<dataset>-<split>[-<content>]-<hash>-<rand{n}|all>.<what>.safetensors`` (file-name
    safe; ``content``: a digest of the split's ``split_fingerprint`` when the context has one);
    ``what`` is ``"stats"`` or ``"features"``. ``rand{n}``: the seeded random subset of ``n`` images
    (:func:`avade.train.data.subset_batches`); ``all`` also for ``n`` of at least the split's ``split_size``
    (when the context has one: the same images)."""
    n = _requested(ctx, split, n)
    # The split's content fingerprint (an optional EvalContext method): statistics of images since added
    # or removed must not be reused.
    fingerprint = getattr(ctx, "split_fingerprint", None)
    content = fingerprint(split) if callable(fingerprint) else ""
    content = f"-{hashlib.sha1(content.encode()).hexdigest()[:8]}" if content else ""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{ctx.dataset_key}-{split}{content}").strip("_")
    count = f"rand{n}" if n is not None else "all"
    return pathlib.Path(ctx.cache_dir) / f"ref-{slug}-{extractor.hash}-{count}.{what}.safetensors"


def _meta(ctx: EvalContext, extractor: FeatureExtractor, split: str, n: int | None,
          count: int) -> dict[str, str]:
    return {"dataset_key": ctx.dataset_key, "split": split, "extractor": extractor.name,
            "extractor_hash": extractor.hash, "requested": str(n), "count": str(count)}


def _save(tensors: dict[str, Tensor], path: pathlib.Path, meta: dict[str, str]) -> None:
    # Write then rename, so a crash never leaves a truncated cache file behind.
    with replaced_atomically(path) as tmp:
        save_tensors({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)


# The most bytes of real features (and class probabilities) that real_stats_count keeps while it streams their
# statistics, to write the features file KID, PRD and PRDC of the same images then read instead of extracting
# them again: 2 GiB, 262,144 Inception features (CIFAR, FFHQ, CelebA), or 132,104 images with an extractor
# that also gives class probabilities (1008 float64 each: CelebA's 162,770 training images are then streamed).
# A larger split (LSUN bedroom's 3M training images: 24 GB) is streamed: one batch and the [D, D] accumulators
# held, no features file written.
KEEP_FEATURES_BYTES = 2**31


def _compute(ctx: EvalContext, extractor: FeatureExtractor, split: str, n: int | None, batch_size: int,
             keep_bytes: int | None = None) -> tuple[FeatureSet | None, Tensor, Tensor, int]:
    """The features of the real images (cached, with their mean and covariance), that mean and covariance, and
    how many images they come from. The statistics are accumulated batch by batch; the features are kept (and
    their file written) while they take at most ``keep_bytes`` (None: always), else dropped (None returned)."""
    images = (x for x, _ in ctx.real_batches(split, n=n, batch_size=batch_size))
    accumulator = GaussianAccumulator()
    feats: list[Tensor] = []
    probs: list[Tensor] = []
    held = 0
    keeping = True
    description = f"features of real {split}"

    def want_probs() -> bool:  # (no class probabilities once the features are dropped)
        return keeping and extractor.has_probs

    for f, p in iter_features(extractor, images, device=ctx.device, total=n, description=description,
                              probs=want_probs):
        accumulator.update(f)
        if keeping:
            held += f.numel() * f.element_size() + (p.numel() * p.element_size() if p is not None else 0)
            if keep_bytes is not None and held > keep_bytes:
                keeping = False
                feats.clear()
                probs.clear()
            else:
                feats.append(f)
                if p is not None:
                    probs.append(p)
    if accumulator.count == 0:
        raise AvadeError(f"{description}: no images to extract features from")
    count = accumulator.count
    if count < 2:
        raise AvadeError(f"{ctx.dataset_key}: split {split!r} has {count} image(s); metrics need >= 2")
    meta = _meta(ctx, extractor, split, n, count)
    found = None
    if keeping:
        found = FeatureSet(torch.cat(feats), torch.cat(probs) if probs else None)
        feats.clear()
        probs.clear()
        tensors = {"features": found.features} | ({"probs": found.probs} if found.probs is not None else {})
        _save(tensors, cache_path(ctx, extractor, split, n, "features"), meta)
    mu, sigma = accumulator.stats()
    _save({"mu": mu, "sigma": sigma}, cache_path(ctx, extractor, split, n, "stats"), meta)
    return found, mu, sigma, count


def _naming_memory(split: str, batch_size: int) -> contextlib.AbstractContextManager[None]:
    return naming_memory(f"while computing the reference statistics of the real {split} images",
                         f"lower the batch size of the metric computing them (now {batch_size}: "
                         "eval.<metric>.batch_size, in the recipe or with avade eval --set)")


def real_features(ctx: EvalContext, extractor: FeatureExtractor, split: str, n: int | None = None,
                  batch_size: int = 100) -> FeatureSet:
    """Features of a fixed random subset of ``n`` (all if None) real images of ``split`` (``ctx.real_batches``),
    from the cache when present."""
    n = _requested(ctx, split, n)  # (all of the split: its "all" file, however it is asked for)
    path = cache_path(ctx, extractor, split, n, "features")
    if path.is_file():
        data = load_file(str(path))
        if not extractor.has_probs or "probs" in data:
            return FeatureSet(data["features"], data.get("probs"))
    with _naming_memory(split, batch_size):
        found = _compute(ctx, extractor, split, n, batch_size)[0]
    assert found is not None  # (kept: no limit)
    return found


def real_stats(ctx: EvalContext, extractor: FeatureExtractor, split: str, n: int | None = None,
               batch_size: int = 100) -> tuple[Tensor, Tensor]:
    """FID reference statistics (float64 mean ``[D]``, covariance ``[D, D]``), from the cache when present."""
    return real_stats_count(ctx, extractor, split, n, batch_size)[:2]


def real_stats_count(ctx: EvalContext, extractor: FeatureExtractor, split: str, n: int | None = None,
                     batch_size: int = 100) -> tuple[Tensor, Tensor, int | None]:
    """:func:`real_stats` and how many images they come from (None for a cache file that does not say)."""
    n = _requested(ctx, split, n)
    path = cache_path(ctx, extractor, split, n, "stats")
    if path.is_file():
        data = load_file(str(path))
        with safe_open(str(path), "pt") as handle:
            count = (handle.metadata() or {}).get("count")
        return data["mu"], data["sigma"], int(count) if count and count.isdigit() else None
    # (the statistics _compute saved: a second covariance of 50,000 x 2048 features would take minutes on a CPU;
    # streamed, with the features kept for KID, PRD and PRDC only up to KEEP_FEATURES_BYTES)
    with _naming_memory(split, batch_size):
        _, mu, sigma, count = _compute(ctx, extractor, split, n, batch_size, KEEP_FEATURES_BYTES)
    return mu, sigma, count


def sample_features(ctx: EvalContext, extractor: FeatureExtractor, n: int, batch_size: int = 100,
                    probs: bool = False, labels: Tensor | None = None) -> FeatureSet:
    """Features (and class probabilities if asked) of ``n`` model samples (``ctx.sample_batches``).

    A context whose ``sample_batches`` draws the same samples in every call may offer a dict
    ``sample_feature_memo`` (optional, as avade's :class:`~avade.evaluate.RunContext` does while ``compute_each``
    runs one evaluation's metrics): the features are kept there, so the metrics of one evaluation that score
    the same samples (FID, KID, PRDC and IS of ``samples`` each) draw and embed them once, not once each (at
    50,000 samples, most of an evaluation's time). Callers must not change the tensors returned."""
    memo = getattr(ctx, "sample_feature_memo", None) if labels is None else None
    key = (type(extractor).__qualname__, extractor.name, extractor.hash, n, batch_size)
    known = memo.get(key) if memo is not None else None
    if known is not None and (known.probs is not None or not probs):
        return known
    feats, p = extract(extractor, ctx.sample_batches(n, batch_size=batch_size, labels=labels),
                       device=ctx.device, total=n, description="features of samples", probs=probs)
    if len(feats) < 2:
        raise AvadeError(f"metrics need at least 2 samples, got {len(feats)}")
    if memo is not None:
        memo[key] = FeatureSet(feats, p)
    return FeatureSet(feats, p)
