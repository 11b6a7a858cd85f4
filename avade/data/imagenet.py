"""``imagenet``: downsampled ImageNet at 32×32 or 64×64 (the resolution picks which data is read).

Two layouts are accepted under ``root`` (``R`` = resolution; the first match wins):

- the batch format of Chrabaszcz et al. (2017, image-net.org "Downsampled ImageNet"): files
  ``train_data_batch_1`` … ``train_data_batch_10`` and ``val_data``, each with ``data`` (uint8 [N, 3·R·R],
  the R, G and B planes one after another) and ``labels`` (1..1000), as ``.npz`` or as the extensionless
  pickled dicts of the "pickle" download (read with an unpickler that builds nothing but numpy arrays and
  builtins). Looked for in ``<root>/imagenet<R>/``, ``<root>/Imagenet<R>_train_npz/`` /
  ``Imagenet<R>_val_npz/``, or ``<root>/Imagenet<R>_train/`` / ``Imagenet<R>_val/``: the folders the official
  archives unpack to. ImageNet-64's training set comes in two archives, used together:
  ``Imagenet64_train_part1_npz/`` (batches 1..5) and ``Imagenet64_train_part2_npz/`` (6..10), or
  ``Imagenet64_train_part1/`` and ``Imagenet64_train_part2/``. A missing batch or part is an error. Served
  in memory with labels 0..999 (1,000 classes); ImageNet-64 needs about 16 GB of RAM this way.
- image folders as in van den Oord et al. (2016) (the "PixelRNN" version, unlabeled):
  ``<root>/imagenet<R>/train_<R>x<R>/`` and ``valid_<R>x<R>/``, or the same folders directly in ``<root>``.
  Decoded on access; ``in_memory = true`` loads them all once.

No transform is applied: the files already hold R×R images (folder images of another size would be
center-cropped and resized). Neither version has a torchvision downloader; get it from image-net.org.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from avade.data.base import (
    FileImageDataset,
    ImageDataset,
    TensorImageDataset,
    check_split,
    describe_error,
    expand_root,
    folder_entries,
    list_images,
    missing_data,
)
from avade.data.configs import ImageNetConfig
from avade.data.safe_pickle import ArrayUnpickler
from avade.errors import DataError

NAME = "imagenet"
NUM_CLASSES = 1000


BATCH = re.compile(r"train_data_batch_(\d+)(\.npz)?")
TRAIN_BATCHES = 10  # train_data_batch_1..10 in the 32x32 and the 64x64 release
LAYOUT_NAMES = {"batches": "batch-file (npz or pickle)", "folder": "image-folder"}


def _batch_files(folders: list[Path], split: str) -> list[Path]:
    """The batch files of ``split`` in ``folders`` (all of them: the parts of one training set), sorted
    by batch number; [] when none of the folders exists. Each folder is read as .npz when it holds any,
    else as the pickle release's extensionless files. DataError when a part or a batch is missing."""
    present = [f for f in folders if f.is_dir()]
    if not present:
        return []
    if len(present) < len(folders):  # ImageNet-64 is two archives: half of it would train unnoticed
        absent = [f for f in folders if f not in present]
        raise DataError(
            f"dataset 'imagenet': found {', '.join(map(str, present))} but not {', '.join(map(str, absent))}; "
            f"the {split} set comes in {len(folders)} parts: unpack {', '.join(f.name + '.zip' for f in absent)} "
            f"into {absent[0].parent}"
        )
    if split == "test":
        for folder in folders:
            for name in ("val_data.npz", "val_data"):
                if (folder / name).is_file():
                    return [folder / name]
        return []
    numbered: dict[int, Path] = {}
    ext = ""
    for folder in folders:
        found = [(m, Path(e.path)) for e in folder_entries(folder) if (m := BATCH.fullmatch(e.name)) and e.is_file()]
        ext = ".npz" if any(m.group(2) for m, _ in found) else ""
        for m, path in found:
            if (m.group(2) or "") != ext:
                continue
            if int(m.group(1)) in numbered:
                raise DataError(f"dataset 'imagenet': {path} and {numbered[int(m.group(1))]} are both batch "
                                f"{m.group(1)}; keep one of them")
            numbered[int(m.group(1))] = path
        if not found and len(folders) > 1:  # an empty part: its batches would be missed without a gap
            raise DataError(f"dataset 'imagenet': {folder} holds no train_data_batch_<k>[.npz] files; "
                            f"unpack {folder.name}.zip into {folder.parent} again")
    if not numbered:
        return []
    # Both releases have exactly TRAIN_BATCHES training batches: a missing one (an interrupted download
    # or copy, a half-unpacked part) would otherwise train on part of the set without a word.
    last = max(TRAIN_BATCHES, max(numbered))
    missing = sorted(set(range(1, last + 1)) - set(numbered))
    if missing:
        where = " and ".join(map(str, folders))
        names = ", ".join(f"train_data_batch_{k}{ext}" for k in missing)
        raise DataError(f"dataset 'imagenet': {where} lacks {names} of train_data_batch_1..{last}{ext}; "
                        "copy the missing files")
    return [numbered[k] for k in sorted(numbered)]  # numerically: batch_10 after batch_9


def candidates(cfg: ImageNetConfig, split: str) -> list[tuple[str, list[Path]]]:
    """``(layout, folders)`` searched for ``split``, in order of preference; a "batches" candidate with
    several folders is one training set unpacked from several archives (ImageNet-64's two parts)."""
    root, r = expand_root(cfg.root), cfg.resolution
    part = "train" if check_split(split) == "train" else "val"
    folder = f"train_{r}x{r}" if split == "train" else f"valid_{r}x{r}"
    batch_folders = [[root / f"imagenet{r}"], [root / f"Imagenet{r}_{part}_npz"], [root / f"Imagenet{r}_{part}"]]
    if split == "train" and r == 64:  # the official archives of ImageNet-64: two parts, npz or pickle
        batch_folders.insert(2, [root / f"Imagenet{r}_train_part{k}_npz" for k in (1, 2)])
        batch_folders.append([root / f"Imagenet{r}_train_part{k}" for k in (1, 2)])
    return [
        *(("batches", folders) for folders in batch_folders),
        ("folder", [root / f"imagenet{r}" / folder]),
        ("folder", [root / folder]),
    ]


def _where(found: list[Path]) -> str:
    return ", ".join(sorted({str(f.parent) for f in found}))


def locate(cfg: ImageNetConfig, split: str) -> tuple[str, list[Path]]:
    """The layout and the batch files or the image folder ``split`` reads; DataError naming every path searched.

    The test split is read in the layout the training split was found in: the batch release (npz or
    pickle, the same arrays) and the PixelRNN image folders are downsampled differently, so mixing them
    would measure test BPD on other data than the model was trained on."""
    if split != "test":
        return _locate(cfg, split)
    try:
        train_layout, train_found = _locate(cfg, "train")
    except DataError:
        return _locate(cfg, split)  # a test split alone (evaluation only): nothing to match
    layout, found = _locate(cfg, split, prefer=train_layout)
    if train_layout != layout:
        train_at = _where(train_found) if train_layout == "batches" else train_found[0]
        raise DataError(
            f"dataset 'imagenet': the train split is in the {LAYOUT_NAMES[train_layout]} layout ({train_at}) but "
            f"the test split found is in the {LAYOUT_NAMES[layout]} layout ({found[0]}); they are downsampled "
            "differently: put the matching test files next to the training ones"
        )
    return layout, found


def _locate(cfg: ImageNetConfig, split: str, prefer: str | None = None) -> tuple[str, list[Path]]:
    searched: list[Path | str] = []
    # Candidates in the layout ``prefer`` names first (a stable sort keeps the order within a layout).
    for layout, folders in sorted(candidates(cfg, split), key=lambda c: c[0] != prefer if prefer else 0):
        if layout == "batches":
            files = _batch_files(folders, split)
            pattern = "train_data_batch_<k>[.npz]" if split == "train" else "val_data[.npz]"
            searched += [f"{folder}/{pattern}" for folder in folders]
            if files:
                return layout, files
        else:
            searched += folders
            if folders[0].is_dir():
                return layout, folders
    what = f"{cfg.resolution}x{cfg.resolution} ({split} split)"
    raise missing_data(NAME, searched, download=False, what=what, source="image-net.org (Downsampled ImageNet)",
                       root=expand_root(cfg.root))


# What a damaged file raises: a truncated npz BadZipFile; a damaged pickle any of the others.
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError,
               pickle.UnpicklingError, zipfile.BadZipFile)


def _read(f: Path, *keys: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of one batch file: an .npz (only those arrays are read), or a pickled dict."""
    expected = "an npz file" if f.suffix == ".npz" else "a pickled dict"
    try:
        if f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as npz:
                return {k: np.asarray(npz[k]) for k in keys}
        with open(f, "rb") as fh:
            # encoding: Python 2 pickles (keys as str, array bytes as latin-1 str), as numpy documents.
            batch = ArrayUnpickler(fh, encoding="latin1").load()
        if not isinstance(batch, dict):
            raise TypeError(f"holds a {type(batch).__name__}")
        return {k: np.asarray(batch[k]) for k in keys}
    except _UNREADABLE as exc:
        raise DataError(
            f"dataset 'imagenet': cannot read {f} ({describe_error(exc)}); "
            f"expected {expected} with arrays 'data' and 'labels'"
        ) from None


def _load_batches(files: list[Path], r: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Labels first (small), so that the images go straight into one preallocated tensor: holding every
    # file's array and then concatenating would need twice the memory (32 GB for ImageNet-64). A pickle
    # is read whole, so pickles are read twice, except the last one, whose images are kept.
    labels: list[np.ndarray] = []
    kept: dict[Path, np.ndarray] = {}
    for f in files:
        kept.clear()
        arrays = _read(f, "labels") if f.suffix == ".npz" else _read(f, "labels", "data")
        if arrays["labels"].size and arrays["labels"].dtype.kind not in "iu":
            raise DataError(f"dataset 'imagenet': the labels in {f} are {arrays['labels'].dtype}, not integers; "
                            "expected the 1-based class numbers of the downsampled-ImageNet files")
        labels.append(arrays["labels"].astype(np.int64).reshape(-1))
        if "data" in arrays:
            kept[f] = arrays["data"]
        del arrays
    images = torch.empty((sum(len(lab) for lab in labels), 3, r, r), dtype=torch.uint8)
    start = 0
    for f, lab in zip(files, labels, strict=True):
        data = kept.pop(f) if f in kept else _read(f, "data")["data"]
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * r * r:
            raise DataError(
                f"dataset 'imagenet': {f} holds data {data.dtype} {data.shape} and {len(lab)} labels; "
                f"expected uint8 [N, {3 * r * r}] for {r}x{r} images; check data.resolution"
            )
        if len(lab) != len(data):  # the right images, the wrong labels: not a resolution problem
            raise DataError(f"dataset 'imagenet': {f} holds {len(data)} images but {len(lab)} labels; the file is "
                            "damaged or not a downsampled-ImageNet batch: replace it")
        images[start : start + len(data)] = torch.from_numpy(data.reshape(-1, 3, r, r))
        start += len(data)
        del data
    targets = torch.from_numpy(np.concatenate(labels)) - 1  # the files count from 1
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= NUM_CLASSES):
        raise DataError(
            f"dataset 'imagenet': labels in {_where(files)} are outside 1..{NUM_CLASSES}; "
            "expected the 1-based labels of the downsampled-ImageNet batch files"
        )
    return images, targets


def imagenet_dataset(cfg: ImageNetConfig, *, split: str = "train") -> ImageDataset:
    """Build the split from whichever layout is found (module docstring)."""
    layout, found = locate(cfg, check_split(split))
    dataset: ImageDataset
    if layout == "batches":
        images, labels = _load_batches(found, cfg.resolution)
        dataset = TensorImageDataset(images, labels, num_classes=NUM_CLASSES)
    else:
        files = list_images(found[0])
        if not files:
            raise DataError(f"dataset 'imagenet': {found[0]} contains no image files; put the downsampled images "
                            "there or set data.root")
        dataset = FileImageDataset(files, None, num_classes=0, resolution=cfg.resolution, in_memory=cfg.in_memory)
    dataset.data_source = source_facts(layout, found)
    return dataset


#: what each layout is: the two versions are downsampled differently, so their bits/dim do not compare
VERSIONS = {"batches": "Chrabaszcz et al. 2017 (image-net.org Downsampled ImageNet)",
            "folder": "van den Oord et al. 2016 (PixelRNN image folders)"}


def source_facts(layout: str, found: list[Path]) -> dict[str, object]:
    """What the run directory records of the data a split read (avade.data.base.data_source): the version, the
    layout (the batch files' format: npz or pickle) and the folders, not the files."""
    if layout == "batches":
        return {"paths": sorted({f.parent for f in found}), "layout": layout, "version": VERSIONS[layout],
                "format": "npz" if found[0].suffix == ".npz" else "pickle"}
    return {"paths": found, "layout": layout, "version": VERSIONS[layout]}
