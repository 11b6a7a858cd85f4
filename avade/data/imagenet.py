"""``imagenet``: downsampled ImageNet at 32×32 or 64×64 (the resolution picks which data is read).

Two layouts are accepted under ``root`` (``R`` = resolution; the first match wins):

- the batch format of Chrabaszcz et al. (2017, image-net.org "Downsampled ImageNet"): files
  ``train_data_batch_1.npz`` … ``train_data_batch_10.npz`` and ``val_data.npz``, each with ``data``
  (uint8 [N, 3·R·R], the R, G and B planes one after another) and ``labels`` (1..1000), in
  ``<root>/imagenet<R>/``, ``<root>/Imagenet<R>_train_npz/`` / ``Imagenet<R>_val_npz/``, or
  ``<root>/Imagenet<R>_train/`` / ``Imagenet<R>_val/``. Served in memory with labels 0..999
  (1,000 classes); ImageNet-64 needs about 16 GB of RAM this way.
- image folders as in van den Oord et al. (2016) (the "PixelRNN" version, unlabeled):
  ``<root>/imagenet<R>/train_<R>x<R>/`` and ``valid_<R>x<R>/``, or the same folders directly in ``<root>``.
  Decoded on access; ``in_memory = true`` loads them all once.

No transform is applied: the files already hold R×R images (folder images of another size would be
center-cropped and resized). Neither version has a torchvision downloader; get it from image-net.org.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import attrs
import numpy as np
import torch

from avade.data.base import (
    FileImageDataset,
    ImageDataset,
    TensorImageDataset,
    check_split,
    describe_error,
    expand_root,
    list_images,
    missing_data,
)
from avade.errors import DataError
from avade.schema import one_of

NAME = "imagenet"
NUM_CLASSES = 1000


@attrs.define
class ImageNetConfig:
    """Downsampled ImageNet under ``root``; see the module docstring for the layouts."""

    root: str = attrs.field(default="~/data", metadata={"help": "folder holding imagenet<R>/ (or the npz folders)"})
    resolution: int = attrs.field(
        default=32, validator=one_of(32, 64), metadata={"help": "32 or 64: which downsampled version is read"}
    )
    in_memory: bool = attrs.field(
        default=False, metadata={"help": "image-folder layout: decode all images once at start"}
    )
    download: bool = attrs.field(default=False, metadata={"help": "unsupported (no torchvision downloader)"})


def _npz_files(folder: Path, split: str) -> list[Path]:
    if split == "test":
        return [folder / "val_data.npz"] if (folder / "val_data.npz").is_file() else []
    files = [p for p in folder.glob("train_data_batch_*.npz") if p.is_file()]

    def batch_number(p: Path) -> int:
        match = re.search(r"(\d+)\.npz$", p.name)
        return int(match.group(1)) if match else 0

    files = sorted(files, key=batch_number)  # numerically: batch_10 after batch_9
    missing = sorted(set(range(1, max(map(batch_number, files), default=0) + 1)) - set(map(batch_number, files)))
    if missing:  # an interrupted download or copy: training on part of the set would go unnoticed
        raise DataError(f"dataset 'imagenet': {folder} lacks train_data_batch_{', '.join(map(str, missing))}.npz "
                        f"of train_data_batch_1..{batch_number(files[-1])}.npz; copy the missing files")
    return files


def candidates(cfg: ImageNetConfig, split: str) -> list[tuple[str, Path]]:
    """``(layout, path)`` pairs searched for ``split``, in order of preference."""
    root, r = expand_root(cfg.root), cfg.resolution
    part = "train" if check_split(split) == "train" else "val"
    folder = f"train_{r}x{r}" if split == "train" else f"valid_{r}x{r}"
    return [
        ("npz", root / f"imagenet{r}"),
        ("npz", root / f"Imagenet{r}_{part}_npz"),
        ("npz", root / f"Imagenet{r}_{part}"),
        ("folder", root / f"imagenet{r}" / folder),
        ("folder", root / folder),
    ]


def locate(cfg: ImageNetConfig, split: str) -> tuple[str, list[Path]]:
    """The layout and the files (npz) or folder ``split`` reads; DataError naming every path searched.

    The test split is read in the layout the training split was found in: the npz release and the
    PixelRNN image folders are downsampled differently, so mixing them would measure test BPD on other
    data than the model was trained on."""
    if split != "test":
        return _locate(cfg, split)
    try:
        train_layout, train_found = _locate(cfg, "train")
    except DataError:
        return _locate(cfg, split)  # a test split alone (evaluation only): nothing to match
    layout, found = _locate(cfg, split, prefer=train_layout)
    if train_layout != layout:
        train_at = train_found[0].parent if train_layout == "npz" else train_found[0]
        raise DataError(f"dataset 'imagenet': the train split is the {train_layout} layout ({train_at}) but the "
                        f"test split found is the {layout} layout ({found[0]}); they are downsampled "
                        "differently: put the matching test files next to the training ones")
    return layout, found


def _locate(cfg: ImageNetConfig, split: str, prefer: str | None = None) -> tuple[str, list[Path]]:
    searched = []
    # Candidates in the layout ``prefer`` names first (a stable sort keeps the order within a layout).
    for layout, path in sorted(candidates(cfg, split), key=lambda c: c[0] != prefer if prefer else 0):
        if layout == "npz":
            files = _npz_files(path, split) if path.is_dir() else []
            searched.append(path / ("train_data_batch_*.npz" if split == "train" else "val_data.npz"))
            if files:
                return layout, files
        else:
            searched.append(path)
            if path.is_dir():
                return layout, [path]
    what = f"{cfg.resolution}x{cfg.resolution} ({split} split)"
    raise missing_data(NAME, searched, download=False, what=what, source="image-net.org (Downsampled ImageNet)")


def _read(f: Path, key: str) -> np.ndarray:
    try:
        with np.load(f, allow_pickle=False) as npz:
            return np.asarray(npz[key])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated npz: BadZipFile
        raise DataError(
            f"dataset 'imagenet': cannot read {f} ({describe_error(exc)}); "
            "expected an npz file with arrays 'data' and 'labels'"
        ) from None


def _load_npz(files: list[Path], r: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Labels first (small), so that the images go straight into one preallocated tensor: holding every
    # file's array and then concatenating would need twice the memory (32 GB for ImageNet-64).
    labels = [_read(f, "labels").astype(np.int64).reshape(-1) for f in files]
    images = torch.empty((sum(len(lab) for lab in labels), 3, r, r), dtype=torch.uint8)
    start = 0
    for f, lab in zip(files, labels, strict=True):
        data = _read(f, "data")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * r * r or len(lab) != len(data):
            raise DataError(
                f"dataset 'imagenet': {f} holds data {data.dtype} {data.shape} and {len(lab)} labels; "
                f"expected uint8 [N, {3 * r * r}] for {r}x{r} images; check data.resolution"
            )
        images[start : start + len(data)] = torch.from_numpy(data.reshape(-1, 3, r, r))
        start += len(data)
        del data
    targets = torch.from_numpy(np.concatenate(labels)) - 1  # the files count from 1
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= NUM_CLASSES):
        raise DataError(
            f"dataset 'imagenet': labels in {files[0].parent} are outside 1..{NUM_CLASSES}; "
            "expected the 1-based labels of the downsampled-ImageNet npz files"
        )
    return images, targets


def imagenet_dataset(cfg: ImageNetConfig, *, split: str = "train") -> ImageDataset:
    """Build the split from whichever layout is found (module docstring)."""
    layout, found = locate(cfg, check_split(split))
    if layout == "npz":
        images, labels = _load_npz(found, cfg.resolution)
        return TensorImageDataset(images, labels, num_classes=NUM_CLASSES)
    files = list_images(found[0])
    if not files:
        raise DataError(
            f"dataset 'imagenet': {found[0]} contains no image files; put the downsampled images there or set data.root"
        )
    return FileImageDataset(files, None, num_classes=0, resolution=cfg.resolution, in_memory=cfg.in_memory)
