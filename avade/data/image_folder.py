"""``image-folder``: any folder of images (``<root>/<folder>``), optionally with one subfolder per class.

Split: when the folder holds both ``train/`` and ``test/`` subfolders they are the splits (``train/`` beside
``val/`` or ``valid/`` and no ``test/`` is refused, with or without labels: rename it to ``test/``, rather than
have two classes named after the splits or, unlabeled, both pooled and split by hash; so is ``train/`` alone
holding class folders, which would be one class named ``train``). Otherwise each image goes to the test split
when a hash of its path relative to the folder falls below ``test_fraction`` (SHA-1, so the assignment is stable
across runs and machines, and adding images never moves the others between splits).

Labels: when ``labels = true`` and the split folder holds only subfolders (no loose images), each first-level
subfolder that holds images is a class (sorted by name, label = index, like torchvision's ``ImageFolder``;
hidden and empty subfolders are not classes), with the class list taken from the train side (images of
``test/`` outside those class folders are an error: they have no class); otherwise every image below the
folder, at any depth, is used unlabeled. Images are turned upright (EXIF orientation),
converted to RGB (or grayscale for ``channels = 1``; an alpha channel is dropped, as torchvision's
``ImageFolder`` does; 16-bit grayscale is scaled by 1/256; floating-point and 32-bit or signed integer images
are refused: they have no defined 8-bit scale), center-cropped to a square of side ``crop`` (default: the
short side) and resized bilinearly with antialiasing to ``resolution``.
Decoded on access unless ``in_memory = true``. There is nothing to download.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs

from avade.data.base import (
    IMAGE_EXTENSIONS,
    FileImageDataset,
    check_split,
    expand_root,
    folder_entries,
    has_images,
    list_images,
    missing_data,
)
from avade.data.configs import ImageFolderConfig
from avade.errors import DataError

NAME = "image-folder"


@attrs.frozen
class Listing:
    """What a split of an image folder holds."""

    files: list[Path]
    labels: list[int] | None
    classes: list[str]
    #: why class subfolders are not used as labels although ``labels = true`` ("" when they are, or there are none)
    unlabeled_reason: str = ""
    #: the folder the split's images were listed in (``<folder>/train``, ``<folder>/test``, or ``<folder>``)
    folder: Path | None = None
    #: how the split was made: "train/test folders", or "hash" (of each path, against ``test_fraction``)
    split_by: str = ""


def folder_path(cfg: ImageFolderConfig) -> Path:
    """``<root>/<folder>`` (``folder`` may be absolute)."""
    return expand_root(cfg.root) / expand_root(cfg.folder)


def _subfolders(base: Path) -> list[Path]:
    """``base``'s first-level subfolders, sorted; hidden ones (``.ipynb_checkpoints``) are never classes."""
    return sorted(Path(d.path) for d in folder_entries(base) if d.is_dir() and not d.name.startswith("."))


def _classes(base: Path, labeled: bool) -> list[str]:
    if not labeled or has_images(base, recursive=False):
        return []
    return [d.name for d in _subfolders(base) if has_images(d)]


def _unlabeled_reason(base: Path, labeled: bool, classes: list[str]) -> str:
    """Why ``base``'s subfolders are not classes: loose images next to them (a class-conditional model would
    otherwise be refused for "no labels", the class folders in plain sight)."""
    if not labeled or classes:
        return ""
    loose = list_images(base, recursive=False)
    if not loose or not _subfolders(base):
        return ""
    return (f"{base} holds images ({_first_of(loose)}) next to its subfolders, so the subfolders are not "
            "classes; move those images into a class folder or out of it")


#: subfolder names that are splits, not classes
_SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "dev", "test"})


def _first_of(images: list[Path]) -> str:
    """``"a.png and 3 more"``: the images an error is about, named by the first."""
    return images[0].name + (f" and {len(images) - 1} more" if len(images) > 1 else "")


def _test_share(path: Path, base: Path) -> float:
    # (the path relative to base, "/"-joined: what path.relative_to(base).as_posix() gives, without a Path per image)
    digest = hashlib.sha1("/".join(path.parts[len(base.parts):]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _holds_images_itself(root: Path) -> bool:
    """Whether ``root`` holds loose images itself: an image folder. (Images only in its subfolders are not taken for
    that: they may be classes, or other image folders beside the one data.folder names, moved or renamed.)"""
    return root.is_dir() and has_images(root, recursive=False)


def locate(cfg: ImageFolderConfig, split: str) -> Listing:
    """The files (and labels) of ``split``; :class:`~avade.errors.DataError` naming the folder when empty."""
    base = folder_path(cfg)
    check_split(split)
    if base.exists() and not base.is_dir():
        raise DataError(f"dataset '{NAME}': {base} is a file, not a folder; point data.folder (under data.root) at the "
                        "folder that holds the images")
    if not base.is_dir():
        root = expand_root(cfg.root)
        if not expand_root(cfg.folder).is_absolute() and _holds_images_itself(root):
            # data.root is the folder of images itself (folder = "images" by default): "set data.root=<the
            # folder that holds it>" would name what the user already did
            raise DataError(f"dataset '{NAME}': {base} not found, but data.root {root} holds the images itself "
                            f"(data.folder, here {cfg.folder!r}, is the folder of images under data.root); set "
                            "data.folder=. to use them")
        where = "data.folder" if expand_root(cfg.folder).is_absolute() else "data.root"  # root is moot then
        raise missing_data(NAME, [base], download=False, location=where)
    if not has_images(base):  # (there, but no image in it: another format, or the images one level up)
        raise DataError(f"dataset '{NAME}': {base} holds no image files ({' '.join(IMAGE_EXTENSIONS)}, at any depth; "
                        "hidden ones skipped); put the images there or point data.folder at the folder that holds "
                        "them")
    explicit = (base / "train").is_dir() and (base / "test").is_dir()
    train_base = base / "train" if explicit else base
    classes = _classes(train_base, cfg.labels)
    # Subfolders named as splits are refused whether or not they would be labels: unlabeled, train/ and val/
    # would be pooled and hash-split, training on most of val/'s images and measuring test BPD on a few of train/'s.
    # (unlabeled, the subfolders are looked into only when one is train/: each is listed to its first image)
    splits = classes if cfg.labels else _classes(train_base, True) if (train_base / "train").is_dir() else []
    if not explicit and "train" in splits and len(splits) > 1 and set(splits) <= _SPLIT_NAMES:
        # (with labels, train/ and val/ taken for two classes: a class-conditional model would learn the split)
        others = [c for c in splits if c != "train"]
        raise DataError(f"dataset '{NAME}': {base} holds {', '.join(f'{c}/' for c in splits)}, which look like "
                        f"splits, not classes; avade splits by train/ and test/ folders: rename {others[0]}/ to test/ "
                        f"(class folders inside each, if any), or point data.folder at {base / 'train'} to split its "
                        "images alone by data.test_fraction")
    if not explicit and classes and set(classes) <= _SPLIT_NAMES and any(_classes(base / c, True) for c in classes):
        # (train/ alone, its class folders inside: one class named "train", the real classes never read)
        lone = classes[0]
        what = f"one class named '{lone}'" if len(classes) == 1 else f"classes named {', '.join(classes)}"
        raise DataError(f"dataset '{NAME}': {base} holds {', '.join(f'{c}/' for c in classes)} (no train/ and test/ "
                        f"pair), whose class folders would be read as {what}; add the other split "
                        f"folder (train/ and test/, class folders inside each), point data.folder at {base / lone} "
                        "to split its images by data.test_fraction, or set data.labels=false to use every image "
                        "unlabeled")
    split_base = (base / split) if explicit else base
    if classes:
        files, labels = [], []
        for index, name in enumerate(classes):
            found = list_images(split_base / name) if (split_base / name).is_dir() else []
            files += found
            labels += [index] * len(found)
        if explicit and split_base != train_base:
            loose = list_images(split_base, recursive=False)
            if loose:  # (they have no class: left out, the split would be short of them without a word)
                raise DataError(
                    f"dataset '{NAME}': {split_base} holds images ({_first_of(loose)}) outside the class folders "
                    f"that {train_base} has; move them into their class folders, or set data.labels=false to use "
                    "all images unlabeled"
                )
            stray = [d.name for d in _subfolders(split_base) if d.name not in classes and has_images(d)]
            if stray:
                raise DataError(
                    f"dataset '{NAME}': {split_base} has class folders {stray} that {train_base} lacks; "
                    "give both splits the same class subfolders"
                )
    else:
        files, labels = list_images(split_base), None
    if not explicit:
        keep = [(_test_share(f, base) < cfg.test_fraction) == (split == "test") for f in files]
        files = [f for f, k in zip(files, keep, strict=True) if k]
        labels = [lab for lab, k in zip(labels, keep, strict=True) if k] if labels is not None else None
    if not files:
        if explicit:  # (data.test_fraction is moot with train/ and test/ folders)
            raise DataError(f"dataset '{NAME}': the {split} split of {base} is empty ({split_base} has no images); "
                            f"add images to {split_base}")
        raise DataError(
            f"dataset '{NAME}': the {split} split of {base} is empty (test_fraction={cfg.test_fraction} leaves it "
            "empty); add images, create train/ and test/ subfolders, or set data.test_fraction"
        )
    return Listing(files, labels, classes, _unlabeled_reason(train_base, cfg.labels, classes), folder=split_base,
                   split_by="train/test folders" if explicit else "hash")


class ImageFolder(FileImageDataset):
    """Images of a folder, split and labeled as in the module docstring; ``classes`` names the labels."""

    def __init__(self, cfg: ImageFolderConfig, *, split: str = "train") -> None:
        listing = locate(cfg, split)
        super().__init__(
            listing.files,
            listing.labels,
            num_classes=len(listing.classes),
            resolution=cfg.resolution,
            channels=cfg.channels,
            crop=cfg.crop,
            in_memory=cfg.in_memory,
        )
        self.split = split
        self.classes = listing.classes
        self.unlabeled_reason = listing.unlabeled_reason
        # recorded in the run directory (avade.data.base.data_source): folders or a hash split, and the classes
        how: dict[str, object] = {"split_by": listing.split_by}
        if listing.split_by == "hash":
            how["test_fraction"] = cfg.test_fraction
        self.data_source = {"paths": [listing.folder], **how, "classes": len(listing.classes)}
