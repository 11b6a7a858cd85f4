"""``lsun``: one LSUN scene category (bedroom, tower, church_outdoor, ...), center-cropped and resized.

Two layouts are accepted under ``root`` (the first one found wins, image folders first):

- an image-folder export: ``<root>/lsun/<category>/`` (train) and ``<root>/lsun/<category>_val/`` (test),
  any depth of subfolders, any common image format (the official export script writes ``.webp``);
- the official LMDB databases: ``<root>/lsun/<category>_train_lmdb`` / ``<category>_val_lmdb``, or the same
  names directly in ``<root>`` (torchvision's layout): the folders the download's zip files unpack to, each
  holding ``data.mdb``, whose keys are image ids and values the encoded images (WebP). Items come in key
  order. Reading them needs the optional package ``lmdb`` (``pip install lmdb`` or ``pip install avade[lsun]``).

avade reads LMDB itself rather than through ``torchvision.datasets.LSUN``, which writes a pickle cache of
the keys into the current directory. The key list is read once per construction (a few seconds for the
largest categories). LSUN cannot be downloaded through torchvision: get it with the LSUN project's
download script. Transform (deterministic): largest centered square crop, then a bilinear, antialiased
resize to ``resolution``. Items are decoded on access (``as_tensors`` is None), so the data may be large.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from avade.data.base import (
    FileImageDataset,
    ImageDataset,
    center_crop_resize,
    check_split,
    describe_error,
    expand_root,
    list_images,
    missing_data,
    open_image,
    pil_to_uint8,
    upright,
)
from avade.data.configs import Category as Category
from avade.data.configs import LsunConfig
from avade.errors import DataError

NAME = "lsun"
SOURCE = "the LSUN download script (github.com/fyu/lsun)"


def candidates(cfg: LsunConfig, split: str) -> list[tuple[str, Path]]:
    """``(layout, path)`` pairs searched for ``split``, in order of preference."""
    root = expand_root(cfg.root)
    folder = cfg.category if check_split(split) == "train" else f"{cfg.category}_val"
    db = f"{cfg.category}_{'train' if split == 'train' else 'val'}_lmdb"
    return [("folder", root / "lsun" / folder), ("lmdb", root / "lsun" / db), ("lmdb", root / db)]


def locate(cfg: LsunConfig, split: str) -> tuple[str, Path]:
    """The layout and path ``split`` reads; :class:`~avade.errors.DataError` naming every path searched."""
    searched = candidates(cfg, split)
    for layout, path in searched:
        if path.is_dir():
            if layout == "lmdb":
                _import_lmdb(path)  # fail now, with the fix, rather than at the first item
                if not (path / "data.mdb").is_file():  # an interrupted unzip, or a folder made by hand
                    raise DataError(
                        f"dataset 'lsun': {path} is not an LMDB database (it has no data.mdb); "
                        f"unzip {path.name}.zip from {SOURCE} into {path.parent} again, or remove the folder"
                    )
            return layout, path
    for layout, path in searched:  # the download, not yet unzipped
        archive = path.with_name(f"{path.name}.zip")
        if layout == "lmdb" and archive.is_file():
            raise DataError(f"dataset 'lsun': found {archive} but not the folder it unzips to; unzip it in place "
                            f"(`unzip {archive.name}` in {archive.parent})")
    what = f"category '{cfg.category}' ({split} split)"
    raise missing_data(NAME, [p for _, p in searched], download=False, what=what, source=SOURCE,
                       root=expand_root(cfg.root))


def _import_lmdb(path: Path) -> Any:
    try:
        import lmdb  # optional dependency: only LSUN's LMDB layout needs it
    except ImportError:
        raise DataError(
            f"dataset 'lsun': {path} is an LMDB database but the Python package 'lmdb' is not installed; "
            "run `pip install lmdb` (or `pip install avade[lsun]`), or export the images to a folder"
        ) from None
    return lmdb


# One read-only environment per database, opened on first use. LMDB refuses to open a database twice in
# a process and its handles must not cross a fork, so they are all closed just before the process forks
# (DataLoader workers): the children open their own, and the parent reopens on its next read.
_ENVS: dict[str, Any] = {}


def _env(path: Path) -> Any:
    key = str(path)
    if key not in _ENVS:
        lmdb = _import_lmdb(path)
        _ENVS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False)
    return _ENVS[key]


def _close_all() -> None:
    while _ENVS:
        _ENVS.popitem()[1].close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_all)


class LmdbImages(ImageDataset):
    """Images stored as encoded bytes in an LMDB database, decoded on access; unlabeled.

    Items follow the database's key order (LMDB sorts keys bytewise), so the order is the same on every
    run and machine. Keys are any bytes: they are kept concatenated, with their end offsets.
    """

    def __init__(self, path: Path, resolution: int) -> None:
        self.path = Path(path)
        self.resolution = int(resolution)
        self.shape = (3, self.resolution, self.resolution)
        self.num_classes = 0
        lmdb = _import_lmdb(self.path)
        try:
            with _env(self.path).begin(write=False) as txn:
                keys = list(txn.cursor().iternext(keys=True, values=False))
        except lmdb.Error as exc:
            raise DataError(
                f"dataset 'lsun': cannot open {self.path} as an LMDB database ({describe_error(exc)}); "
                "check that its files are readable, or download and unzip it again"
            ) from None
        if not keys:
            raise DataError(f"dataset 'lsun': the LMDB database {self.path} holds no images; download it again")
        # One bytes object and an offset array are far smaller than millions of Python bytes objects,
        # and unlike a fixed-width numpy bytes array they keep keys that end in NUL bytes intact.
        self._keys = b"".join(keys)
        self._ends = np.cumsum([len(k) for k in keys], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ends)

    def key(self, i: int) -> bytes:
        """The database key of item ``i``."""
        i = range(len(self))[i]  # negative indices count from the end; IndexError past it
        return self._keys[int(self._ends[i - 1]) if i else 0 : int(self._ends[i])]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        key = self.key(i)
        with _env(self.path).begin(write=False) as txn:
            buf = txn.get(key)
        if buf is None:
            raise DataError(f"dataset 'lsun': key {_show(key)} vanished from {self.path}; is it being rewritten?")
        try:
            with open_image(io.BytesIO(buf)) as img:
                tensor = pil_to_uint8(upright(img))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            if isinstance(exc, UnidentifiedImageError):  # its own message names only an anonymous buffer
                why = "no format Pillow can decode"
                fix = "unless Pillow lacks WebP support (PIL.features.check('webp')), the database is damaged"
            else:
                why, fix = describe_error(exc), "the database is damaged"
            raise DataError(
                f"dataset 'lsun': the entry with key {_show(key)} in {self.path} is not a readable image "
                f"({why}); {fix}: download and unzip it again"
            ) from None
        return center_crop_resize(tensor, self.resolution), -1


def _show(key: bytes) -> str:
    """A key for messages: its text when printable ASCII (LSUN's hex ids), else ``0x`` and its hex digits."""
    text = key.decode("ascii", errors="replace")
    return repr(text) if text.isprintable() and text.isascii() else f"0x{key.hex()}"


def lsun_dataset(cfg: LsunConfig, *, split: str = "train") -> ImageDataset:
    """Build the LSUN ``category`` split from whichever layout is found (module docstring)."""
    layout, path = locate(cfg, check_split(split))
    dataset: ImageDataset
    if layout == "lmdb":
        dataset = LmdbImages(path, cfg.resolution)
    else:
        files = list_images(path)
        if not files:
            raise DataError(
                f"dataset 'lsun': {path} contains no image files (.webp, .jpg, .png, ...); "
                "put the exported images there or point data.root at the folder holding lsun/"
            )
        dataset = FileImageDataset(files, None, num_classes=0, resolution=cfg.resolution)
    # recorded in the run directory (avade.data.base.data_source): the export and the databases may differ
    dataset.data_source = {"paths": [path], "layout": layout, "category": cfg.category}
    return dataset
