"""Tiny copies of the built-in on-disk datasets, in each one's real layout, under a ``root`` folder.

The registry-wide conformance test (tests/test_conformance.py) builds every dataset from its defaults,
whose ``root`` is ``~/data``: without files there it only checks that the dataset refuses in one line,
and with a user's real copy there it reads that. Fed these files instead, it checks what each
dataset serves, the same on every machine. (tests/data/test_data_on_disk.py checks the loaders in
detail; this is only enough data for both splits to build.)
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def _images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Distinct random uint8 HWC images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _pngs(folder: Path, n: int, h: int, w: int, seed: int, pattern: str = "{i:06d}.png") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [pattern.format(i=i + 1) for i in range(n)]
    for name, array in zip(names, _images(n, h, w, seed), strict=True):
        Image.fromarray(array).save(folder / name)
    return names


def _cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = _images(3, 32, 32, seed=k).transpose(0, 3, 1, 2).reshape(3, 3072)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": [(k + i) % 10 for i in range(3)], "batch_label": name}, fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh, protocol=2)


def _stl10(root: Path) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for name, n, seed in (("unlabeled_X.bin", 3, 1), ("test_X.bin", 2, 2)):
        # column-major 96x96 planes: stored with H and W swapped
        _images(n, 96, 96, seed).transpose(0, 3, 2, 1).tofile(folder / name)
    np.array([1, 10], dtype=np.uint8).tofile(folder / "test_y.bin")


def _lsun(root: Path) -> None:
    for split, seed in (("bedroom", 1), ("bedroom_val", 2)):
        _pngs(root / "lsun" / split / "a", 2, 40, 60, seed)


def _imagenet(root: Path) -> None:
    def npz(path: Path, n: int, seed: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _images(n, 32, 32, seed).transpose(0, 3, 1, 2).reshape(n, 3072)
        np.savez(path, data=data, labels=[(seed + i) % 1000 + 1 for i in range(n)], mean=np.zeros(3072))

    for k in range(1, 11):
        npz(root / "Imagenet32_train_npz" / f"train_data_batch_{k}.npz", 1, k)
    npz(root / "Imagenet32_val_npz" / "val_data.npz", 2, 11)


def _celeba(root: Path) -> None:
    base = root / "celeba"
    names = _pngs(base / "img_align_celeba", 5, 218, 178, seed=3)
    partitions = [0, 0, 1, 2, 2]  # train, train, valid, test, test
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for n, p in zip(names, partitions, strict=True)))


def _image_folder(root: Path) -> None:
    for k, (split, label) in enumerate((("train", "cat"), ("train", "dog"), ("test", "cat"), ("test", "dog"))):
        _pngs(root / "images" / split / label, 2, 12, 10, seed=20 + k)


#: dataset name -> writes a tiny copy of it under the given root (its ``data.root``)
FAKE_DATASETS: dict[str, Callable[[Path], None]] = {
    "cifar10": _cifar10,
    "stl10": _stl10,
    "lsun": _lsun,
    "imagenet": _imagenet,
    "celeba": _celeba,
    "image-folder": _image_folder,
}
