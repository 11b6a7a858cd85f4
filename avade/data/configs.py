"""The attrs config classes of the built-in datasets, in a module that does not import torch.

``avade recipe show``, ``recipe keys`` and ``list-components --json --schema`` resolve a recipe against
these classes only; kept apart from the components' modules (which import torch and re-export them),
they resolve without loading torch. Keep this module free of heavy imports.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from avade.errors import ConfigError
from avade.schema import between, ge, one_of


def _check_scale_range(_inst: Any, attr: attrs.Attribute, value: tuple[float, float]) -> None:
    low, high = value
    if not (0.5 <= low <= high):
        raise ConfigError(f"expected 0.5 <= low <= high, got {list(value)}", path=attr.name)


@attrs.define
class NaturalPatchesConfig:
    """Patches of bundled photographs; see the module docstring for how they are cut."""

    @property
    def num_classes(self) -> int:
        """0 (unlabeled): known before loading, so `recipe check` can refuse a conditional model on it."""
        return 0

    resolution: int = attrs.field(
        default=32, validator=between(4, 256), metadata={"help": "side of the square patches, pixels"}
    )
    patches_per_image: int = attrs.field(
        default=512, validator=ge(1), metadata={"help": "patches per training photograph"}
    )
    test_patches_per_image: int = attrs.field(
        default=256, validator=ge(1), metadata={"help": "patches per test photograph"}
    )
    scale_range: tuple[float, float] = attrs.field(
        default=(1.0, 6.0),
        validator=_check_scale_range,
        metadata={"help": "downscale factors [low, high]: a patch covers factor × resolution photo pixels"},
    )
    num_scales: int = attrs.field(
        default=4, validator=ge(1), metadata={"help": "number of geometric steps in scale_range"}
    )
    min_std: float = attrs.field(
        default=8.0,
        validator=ge(0),
        metadata={"help": "drop flat candidates: min luminance std (0..255 units)"},
    )
    # numpy's generators take non-negative seeds only
    seed: int = attrs.field(default=0, validator=ge(0),
                            metadata={"help": "seed of the patch positions and the shuffle"})
    # Accepted so that a recipe written for an on-disk dataset can switch with only `data.name`.
    root: str = attrs.field(default="~/data", metadata={"help": "unused (built-in data)"})
    download: bool = attrs.field(default=False, metadata={"help": "unused (built-in data)"})


@attrs.define
class DigitsConfig:
    """scikit-learn digits, upsampled to ``resolution``; see the module docstring."""

    @property
    def num_classes(self) -> int:
        """10 (the ten digits): known before loading, so `recipe check` can refuse a conditional model on it."""
        return 10

    resolution: int = attrs.field(
        default=16, validator=one_of(8, 16, 32), metadata={"help": "side of the images: 8 (native), 16 or 32"}
    )
    channels: Literal[1, 3] = attrs.field(default=1, metadata={"help": "1 (gray) or 3 (gray repeated)"})
    test_fraction: float = attrs.field(
        default=0.2,
        validator=between(0.05, 0.5),
        metadata={"help": "share of each class held out for the test split"},
    )
    # scikit-learn's random_state takes 0 .. 2**32 - 1 only
    seed: int = attrs.field(default=0, validator=between(0, 2**32 - 1),
                            metadata={"help": "seed of the stratified split"})
    # Accepted so that a recipe written for an on-disk dataset can switch with only `data.name`.
    root: str = attrs.field(default="~/data", metadata={"help": "unused (built-in data)"})
    download: bool = attrs.field(default=False, metadata={"help": "unused (built-in data)"})


@attrs.define
class SyntheticConfig:
    """Generated stripes-and-blob images; see the module docstring."""

    size: int = attrs.field(default=256, validator=ge(1), metadata={"help": "number of train images"})
    test_size: int = attrs.field(default=64, validator=ge(1), metadata={"help": "number of test images"})
    resolution: int = attrs.field(default=16, validator=between(2, 256), metadata={"help": "image side"})
    channels: Literal[1, 3] = attrs.field(default=3, metadata={"help": "1 (gray) or 3 (colored)"})
    num_classes: int = attrs.field(
        default=4, validator=between(0, 64), metadata={"help": "pattern classes; 0 = unlabeled"}
    )
    noise: float = attrs.field(
        default=0.05,
        validator=between(0.0, 1.0),
        metadata={"help": "std of the added Gaussian noise, in units of the 0..1 range"},
    )
    # the streams are seeded 2·seed and 2·seed + 1, which torch takes in -2**63 .. 2**64 - 1; as train.seed
    seed: int = attrs.field(default=0, validator=between(-(2**32 - 1), 2**32 - 1),
                            metadata={"help": "seed of the generator (|seed| < 2**32)"})


@attrs.define
class Cifar10Config:
    """CIFAR-10 under ``root``; see the module docstring."""

    @property
    def num_classes(self) -> int:
        """10 (its ten classes): known before loading, so `recipe check` can refuse a conditional model on it."""
        return 10

    root: str = attrs.field(default="~/data", metadata={"help": "folder holding cifar-10-batches-py/"})
    resolution: int = attrs.field(
        default=32,
        validator=between(4, 256),
        metadata={"help": "image side; 32 is native, others are resized"},
    )
    download: bool = attrs.field(default=False, metadata={"help": "fetch with torchvision if missing"})


@attrs.define
class Stl10Config:
    """STL-10 under ``root``; see the module docstring."""

    @property
    def num_classes(self) -> int:
        """10 when training on the labelled ``train`` split, else 0; known before loading (`recipe check`)."""
        return 10 if self.train_split == "train" else 0

    root: str = attrs.field(default="~/data", metadata={"help": "folder holding stl10_binary/"})
    resolution: int = attrs.field(
        default=48, validator=between(4, 96), metadata={"help": "image side (48 or 64 customary; 96 native)"}
    )
    train_split: Literal["unlabeled", "train", "train+unlabeled"] = attrs.field(
        default="unlabeled", metadata={"help": "what the train split serves"}
    )
    download: bool = attrs.field(default=False, metadata={"help": "fetch with torchvision if missing"})


Category = Literal[
    "bedroom",
    "tower",
    "bridge",
    "kitchen",
    "church_outdoor",
    "living_room",
    "dining_room",
    "classroom",
    "conference_room",
    "restaurant",
]


@attrs.define
class LsunConfig:
    """One LSUN category under ``root``; see the module docstring for the layouts."""

    @property
    def num_classes(self) -> int:
        """0 (one category, unlabeled): known before loading, so `recipe check` can refuse a conditional model on it."""
        return 0

    root: str = attrs.field(default="~/data", metadata={"help": "folder holding lsun/ (or the *_lmdb folders)"})
    category: Category = attrs.field(default="bedroom", metadata={"help": "scene category"})
    resolution: int = attrs.field(
        default=64,
        validator=between(4, 512),
        metadata={"help": "image side after center crop (64 or 128 customary)"},
    )
    download: bool = attrs.field(default=False, metadata={"help": "unsupported for LSUN (no torchvision downloader)"})


@attrs.define
class ImageNetConfig:
    """Downsampled ImageNet under ``root``; see the module docstring for the layouts."""

    root: str = attrs.field(default="~/data", metadata={"help": "folder holding imagenet<R>/ or Imagenet<R>_*/"})
    resolution: int = attrs.field(
        default=32, validator=one_of(32, 64), metadata={"help": "32 or 64: which downsampled version is read"}
    )
    in_memory: bool = attrs.field(
        default=False, metadata={"help": "image-folder layout: decode all images once at start"}
    )
    download: bool = attrs.field(default=False, metadata={"help": "unsupported (no torchvision downloader)"})


@attrs.define
class CelebAConfig:
    """CelebA under ``root``; see the module docstring for the layouts and the split."""

    @property
    def num_classes(self) -> int:
        """0 (unlabeled): known before loading, so `recipe check` can refuse a conditional model on it."""
        return 0

    root: str = attrs.field(default="~/data", metadata={"help": "folder holding celeba/"})
    resolution: int = attrs.field(default=64, validator=between(4, 512), metadata={"help": "image side"})
    crop: int = attrs.field(default=140, validator=ge(1), metadata={"help": "side of the centered crop"})
    test_fraction: float = attrs.field(
        default=0.1,
        validator=between(0.0, 0.5),
        metadata={"help": "plain-folder layout only: share held out for test"},
    )
    in_memory: bool = attrs.field(default=False, metadata={"help": "decode all images once at start"})
    download: bool = attrs.field(default=False, metadata={"help": "fetch with torchvision if missing"})


@attrs.define
class ImageFolderConfig:
    """A folder of images; see the module docstring for the split and the labels."""

    root: str = attrs.field(default="~/data", metadata={"help": "base folder; `folder` is looked up under it"})
    folder: str = attrs.field(default="images", metadata={"help": "image folder, relative to root or absolute"})
    resolution: int = attrs.field(default=64, validator=between(4, 1024), metadata={"help": "image side"})
    channels: Literal[1, 3] = attrs.field(default=3, metadata={"help": "3 = RGB, 1 = grayscale"})
    labels: bool = attrs.field(default=True, metadata={"help": "use class subfolders as labels when present"})
    test_fraction: float = attrs.field(
        default=0.1,
        validator=between(0.0, 0.9),
        metadata={"help": "share held out for test when there is no test/ folder"},
    )
    crop: int | None = attrs.field(
        default=None,
        validator=ge(1),
        metadata={"help": "side of the centered square crop; default the short side"},
    )
    in_memory: bool = attrs.field(default=False, metadata={"help": "decode all images once at start"})
    download: bool = attrs.field(default=False, metadata={"help": "unused (nothing to download)"})
