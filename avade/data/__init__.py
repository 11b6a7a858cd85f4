"""Datasets (kind ``dataset``): 8-bit image datasets served as ``(uint8 [C, H, W], label)`` items.

A dataset factory is ``factory(cfg, *, split)`` with ``split`` "train" or "test"; it returns an
:class:`avade.data.base.ImageDataset` (``shape``, ``num_classes``, ``as_tensors()``). Two datasets need
no network and no files (the quickstart and the tests run offline): ``natural-patches`` and ``digits``.

Light on import: nothing here imports torch; registrations are lazy "module:attr" strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avade.registry import Registry

# Datasets that work on any install, offline (usable as a fallback and in the quickstart).
OFFLINE_DATASETS: tuple[str, ...] = ("natural-patches", "digits", "synthetic")


def register(registry: Registry) -> None:
    """Register the built-in datasets."""
    r = registry.register
    r(
        "dataset",
        "natural-patches",
        factory="avade.data.natural_patches:NaturalPatches",
        config="avade.data.configs:NaturalPatchesConfig",
        summary="RGB patches of photos bundled in scikit-image/scikit-learn; offline, held-out test photos.",
    )
    r(
        "dataset",
        "digits",
        factory="avade.data.digits:Digits",
        config="avade.data.configs:DigitsConfig",
        summary="scikit-learn handwritten digits (8x8, 10 classes), resized to 8/16/32; offline.",
    )
    r(
        "dataset",
        "synthetic",
        factory="avade.data.synthetic:Synthetic",
        config="avade.data.configs:SyntheticConfig",
        summary="Generated class-dependent stripes and blobs, tiny and seeded; for tests and smoke runs.",
    )
    r(
        "dataset",
        "cifar10",
        factory="avade.data.cifar10:Cifar10",
        config="avade.data.configs:Cifar10Config",
        summary="CIFAR-10 (32x32, 10 classes) from torchvision's on-disk format under root.",
    )
    r(
        "dataset",
        "stl10",
        factory="avade.data.stl10:Stl10",
        config="avade.data.configs:Stl10Config",
        summary="STL-10 resized to 48x48 (or 64), unlabeled/train/train+unlabeled for training.",
    )
    r(
        "dataset",
        "lsun",
        factory="avade.data.lsun:lsun_dataset",
        config="avade.data.configs:LsunConfig",
        summary="One LSUN category (LMDB or exported images), center crop + resize to 64/128.",
    )
    r(
        "dataset",
        "imagenet",
        factory="avade.data.imagenet:imagenet_dataset",
        config="avade.data.configs:ImageNetConfig",
        summary="Downsampled ImageNet 32x32/64x64 (npz or pickle batches with labels, or image folders).",
    )
    r(
        "dataset",
        "celeba",
        factory="avade.data.celeba:CelebA",
        config="avade.data.configs:CelebAConfig",
        summary="CelebA aligned faces, center crop 140 then resize to 64.",
    )
    r(
        "dataset",
        "image-folder",
        factory="avade.data.image_folder:ImageFolder",
        config="avade.data.configs:ImageFolderConfig",
        summary="Any folder of images, optionally one subfolder per class; center crop + resize.",
    )


def dataset_status(name: str, cfg: Any = None, *, conditional: bool = False) -> tuple[bool, str]:
    """Whether dataset ``name`` finds its data (without loading it); see :mod:`avade.data.status`."""
    from avade.data.status import dataset_status as status

    return status(name, cfg, conditional=conditional)
