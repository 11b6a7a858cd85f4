"""``natural-patches``: RGB crops of the photographs shipped inside the scikit-image and scikit-learn wheels.

Needs no network and no files of its own: the photographs are package data of the two wheels (read with
``importlib.resources``, never through scikit-image's downloader). A photograph missing from an installed
version is skipped; a split left with no photograph raises :class:`~avade.errors.DataError`.

Split by photograph, so that test patches come from scenes the model never saw:

- train: astronaut, coffee, rocket, motorcycle (left view), immunohistochemistry (scikit-image) and
  china (scikit-learn);
- test: chelsea (the cat, scikit-image) and flower (scikit-learn).

The right view of the motorcycle stereo pair is left out: it is nearly the left view, and using it would
only duplicate training data. Grayscale images and mostly-black ones (hubble, retina) are left out too.

Patches (deterministic, no augmentation): each photograph is resized once per scale of a geometric ladder
of ``num_scales`` downscale factors in ``scale_range`` (factor s: a patch covers an s·resolution square of
the photograph, so larger factors show whole objects rather than texture). Candidate positions and scales
are drawn from a generator seeded by ``(seed, photograph name)``; candidates whose luminance standard
deviation is below ``min_std`` (flat sky, blank walls) are dropped in favour of later ones. The result is
shuffled with ``seed`` and cached in memory per config, so building again is free.
"""

from __future__ import annotations

import functools
import zlib
from importlib import resources
from typing import Any

import attrs
import numpy as np
import torch
from PIL import Image

from avade.data.base import TensorImageDataset, check_split, describe_error, package_versions
from avade.data.configs import NaturalPatchesConfig
from avade.data.configs import _check_scale_range as _check_scale_range
from avade.errors import DataError

# (package holding the file, file name, short name). Order is part of the dataset's definition.
TRAIN_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("skimage.data", "astronaut.png", "astronaut"),
    ("skimage.data", "coffee.png", "coffee"),
    ("skimage.data", "rocket.jpg", "rocket"),
    ("skimage.data", "motorcycle_left.png", "motorcycle"),
    ("skimage.data", "ihc.png", "immunohistochemistry"),
    ("sklearn.datasets.images", "china.jpg", "china"),
)
TEST_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("skimage.data", "chelsea.png", "chelsea"),
    ("sklearn.datasets.images", "flower.jpg", "flower"),
)


def _read_photo(package: str, filename: str) -> np.ndarray | None:
    """The bundled photograph as uint8 [H, W, 3], or None when this install does not ship it.

    A file that is there but cannot be decoded is a DataError: skipping it would quietly build the
    split from fewer photographs, another dataset under the same name."""
    try:
        ref = resources.files(package).joinpath(filename)
        if not ref.is_file():
            return None
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return None
    try:
        with ref.open("rb") as fh, Image.open(fh) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"dataset 'natural-patches': the bundled photograph {package}/{filename} cannot be read "
                        f"({describe_error(exc)}); reinstall {package.split('.')[0]}") from None


@functools.cache
def _photo(package: str, filename: str) -> np.ndarray | None:
    return _read_photo(package, filename)


def available_sources(split: str) -> list[str]:
    """Short names of the photographs this install provides for ``split``."""
    sources = TRAIN_SOURCES if check_split(split) == "train" else TEST_SOURCES
    return [name for package, filename, name in sources if _photo(package, filename) is not None]


def locate(cfg: NaturalPatchesConfig, split: str) -> list[str]:
    """The photographs ``split`` uses; :class:`~avade.errors.DataError` when this install ships none."""
    names = available_sources(split)
    if not names:
        sources = TRAIN_SOURCES if split == "train" else TEST_SOURCES
        wanted = ", ".join(f"{p}/{f}" for p, f, _ in sources)
        raise DataError(
            f"dataset 'natural-patches' ({split}): none of the bundled photographs ({wanted}) is "
            "installed; reinstall scikit-image and scikit-learn"
        )
    return names


def _scales(cfg: NaturalPatchesConfig) -> list[float]:
    low, high = cfg.scale_range
    if cfg.num_scales == 1 or low == high:
        return [float(low)]
    return [float(low * (high / low) ** (j / (cfg.num_scales - 1))) for j in range(cfg.num_scales)]


def _luminance_std(patches: np.ndarray) -> np.ndarray:
    luma = patches.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return luma.reshape(len(patches), -1).std(axis=1)


def _patches_of(photo: np.ndarray, name: str, count: int, cfg: NaturalPatchesConfig) -> np.ndarray:
    """``count`` patches [count, r, r, 3] of one photograph (deterministic in cfg.seed and name)."""
    r = cfg.resolution
    height, width = photo.shape[:2]
    pyramid = []
    for s in _scales(cfg):
        size = (round(width / s), round(height / s))
        if min(size) < r:
            continue  # this photograph is too small for a patch at this scale
        level = (
            photo
            if size == (width, height)
            else np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR, reducing_gap=None))
        )
        pyramid.append(level)
    if not pyramid:
        return np.empty((0, r, r, 3), dtype=np.uint8)
    rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
    candidates = 4 * count  # spare candidates to replace flat ones
    levels = rng.integers(len(pyramid), size=candidates)
    heights = np.array([p.shape[0] - r + 1 for p in pyramid])[levels]
    widths = np.array([p.shape[1] - r + 1 for p in pyramid])[levels]
    ys, xs = rng.integers(heights), rng.integers(widths)
    patches = np.stack([pyramid[lv][y : y + r, x : x + r] for lv, y, x in zip(levels, ys, xs, strict=True)])
    std = _luminance_std(patches)
    passing = np.flatnonzero(std >= cfg.min_std)[:count]
    if len(passing) < count:  # too few textured candidates: fill with the least flat of the rest
        rest = np.setdiff1d(np.arange(candidates), passing)
        rest = rest[np.argsort(-std[rest], kind="stable")][: count - len(passing)]
        passing = np.concatenate([passing, rest])
    return patches[np.sort(passing)]


@functools.lru_cache(maxsize=16)
def _build(key: tuple[Any, ...], split: str) -> tuple[torch.Tensor, tuple[str, ...], tuple[str, ...]]:
    cfg = NaturalPatchesConfig(*key)
    sources = TRAIN_SOURCES if split == "train" else TEST_SOURCES
    count = cfg.patches_per_image if split == "train" else cfg.test_patches_per_image
    parts, used, files = [], [], []
    for package, filename, name in sources:
        photo = _photo(package, filename)
        if photo is None:
            continue
        patches = _patches_of(photo, name, count, cfg)
        if len(patches):
            parts.append(patches)
            used.append(name)
            files.append(f"{package}/{filename}")
    if not parts:
        wanted = ", ".join(f"{p}/{f}" for p, f, _ in sources)
        raise DataError(
            f"dataset 'natural-patches' ({split}): none of the bundled photographs ({wanted}) is available "
            f"at resolution {cfg.resolution}; lower data.resolution or reinstall scikit-image/scikit-learn"
        )
    patches = np.concatenate(parts)
    order = np.random.default_rng([cfg.seed, 1 if split == "train" else 2]).permutation(len(patches))
    images = torch.from_numpy(np.ascontiguousarray(patches[order].transpose(0, 3, 1, 2)))
    return images, tuple(used), tuple(files)


class NaturalPatches(TensorImageDataset):
    """Unlabeled RGB patches of bundled photographs, in memory; ``sources`` names the photographs used."""

    def __init__(self, cfg: NaturalPatchesConfig, *, split: str = "train") -> None:
        key = tuple(tuple(v) if isinstance(v, list) else v for v in attrs.astuple(cfg, recurse=False))
        images, sources, files = _build(key, check_split(split))
        # A copy, so that a caller writing into the tensors cannot corrupt the shared cache.
        super().__init__(images.clone(), None, num_classes=0)
        self.split = split
        self.sources: tuple[str, ...] = sources
        # recorded in the run directory (avade.data.base.data_source): the wheels' photographs, not data.root,
        # which this dataset accepts but never reads (a photograph missing from an install is skipped), and the
        # versions of the wheels they ship in
        self.data_source = {"paths": [], "embedded": list(files), "photographs": list(sources),
                            **package_versions("scikit-image", "scikit-learn")}
