"""``celeba``: CelebA aligned faces, center crop 140×140 then resize to 64×64 (the customary preprocessing).

Layouts under ``root`` (the first match wins):

- torchvision's: ``<root>/celeba/img_align_celeba/*.jpg``, with ``<root>/celeba/list_eval_partition.txt``
  (or Kaggle's ``list_eval_partition.csv``) when present: train = partition 0, test = partition 2; the
  validation partition 1 is not served;
- Kaggle's copy (``celeba-dataset.zip``) unzipped into ``<root>/celeba/``: the images one folder deeper,
  ``<root>/celeba/img_align_celeba/img_align_celeba/*.jpg``, with ``list_eval_partition.csv`` in
  ``<root>/celeba/`` (split as above);
- a plain folder of images, ``<root>/celeba/*.jpg`` (or ``img_align_celeba/`` without a partition
  file): files sorted by name, the last ``test_fraction`` of them are the test split. This is *not* the
  official split (whose test part is the last 19,962 files, with 19,867 validation files before them);
  add the partition file for that.

Only the images are read, not the attribute/landmark files that ``torchvision.datasets.CelebA`` requires;
``download = true`` uses torchvision's downloader (Google Drive, needs network) and then reads the same
layout. Transform (deterministic): a centered ``crop`` × ``crop`` square (clipped to the image), then a
bilinear, antialiased resize to ``resolution``. Unlabeled. Decoded on access unless ``in_memory = true``.
"""

from __future__ import annotations

from pathlib import Path

from avade.data.base import FileImageDataset, check_split, describe_error, expand_root, list_images, missing_data
from avade.data.configs import CelebAConfig
from avade.errors import DataError

NAME = "celeba"
PARTITION_FILE = "list_eval_partition.txt"
_PARTITION = {"train": "0", "test": "2"}


def candidates(cfg: CelebAConfig) -> list[Path]:
    """Folders searched for the images, in order."""
    base = expand_root(cfg.root) / "celeba"
    return [base / "img_align_celeba", base / "img_align_celeba" / "img_align_celeba", base]


def locate(cfg: CelebAConfig, split: str) -> list[Path]:
    """The image files of ``split``; :class:`~avade.errors.DataError` naming every folder searched."""
    return _locate(cfg, split)[1]


#: the layout of each folder of :func:`candidates`, in its order (module docstring)
LAYOUTS = ("torchvision", "kaggle", "plain folder")


def _locate(cfg: CelebAConfig, split: str) -> tuple[int, list[Path]]:
    """(the index in :func:`candidates` of the folder read, the image files of ``split``)."""
    check_split(split)
    for index, folder in enumerate(candidates(cfg)):
        files = list_images(folder, recursive=False) if folder.is_dir() else []
        if files:
            return index, _split(cfg, folder, files, split)
    raise missing_data(NAME, candidates(cfg), download=True, root=expand_root(cfg.root))


def partition_file(folder: Path) -> Path:
    """The official partition next to the images: ``list_eval_partition.txt`` (torchvision, Google Drive)
    or ``.csv`` (the Kaggle copy, ``image_id,partition`` with a header); the .txt path when neither exists.
    It lies in ``celeba/``, above ``img_align_celeba/`` (Kaggle's copy nests that folder in itself)."""
    base = folder
    while base.name == "img_align_celeba":
        base = base.parent
    for name in (PARTITION_FILE, PARTITION_FILE.replace(".txt", ".csv")):
        if (base / name).is_file():
            return base / name
    return base / PARTITION_FILE


def _split(cfg: CelebAConfig, folder: Path, files: list[Path], split: str) -> list[Path]:
    partition = partition_file(folder)
    if partition.is_file():
        keep = set()
        try:
            text = partition.read_text(encoding="utf-8-sig")  # (a BOM: a .csv saved again by Excel, Notepad)
        except UnicodeDecodeError as exc:
            raise DataError(f"dataset 'celeba': {partition} is not a text file ({exc.reason}); replace it with "
                            "the official list_eval_partition.txt") from None
        entries = 0
        for line in text.splitlines():
            parts = line.replace(",", " ").split()
            if len(parts) == 2 and parts[1] in {"0", "1", "2"}:
                entries += 1
                if parts[1] == _PARTITION[split]:
                    keep.add(parts[0])
        if not entries:
            raise DataError(f"dataset 'celeba': cannot parse {partition}: no '<image> <partition>' lines; replace "
                            "it with the official list_eval_partition.txt")
        names = {f.name for f in files}
        absent = sorted(keep - names)
        if absent:  # a partial download or unzip would otherwise be a silently smaller split
            raise DataError(f"dataset 'celeba': {len(absent)} of the {len(keep)} {split} images that {partition.name} "
                            f"lists are not in {folder} (e.g. {absent[0]}); finish extracting the images, or "
                            "remove the partition file to split the images that are there")
        chosen = [f for f in files if f.name in keep]
        if not chosen:
            raise DataError(f"dataset 'celeba': {partition} lists no {split} image (partition "
                            f"{_PARTITION[split]}); replace it with the official list_eval_partition.txt")
    else:
        n_test = max(1, round(len(files) * cfg.test_fraction)) if len(files) > 1 and cfg.test_fraction else 0
        chosen = files[: len(files) - n_test] if split == "train" else files[len(files) - n_test :]
    if not chosen:
        raise DataError(
            f"dataset 'celeba': the {split} split of {folder} is empty (no partition file); "
            "add images or set data.test_fraction"
        )
    return chosen


class CelebA(FileImageDataset):
    """CelebA faces, center-cropped and resized (module docstring)."""

    def __init__(self, cfg: CelebAConfig, *, split: str = "train") -> None:
        check_split(split)
        try:
            index, files = _locate(cfg, split)
        except DataError:
            if not cfg.download:
                raise
            _download(cfg)
            index, files = _locate(cfg, split)
        super().__init__(files, None, num_classes=0, resolution=cfg.resolution, crop=cfg.crop, in_memory=cfg.in_memory)
        self.split = split
        # recorded in the run directory (avade.data.base.data_source): the official split or a fraction of the
        # sorted files, and the crop, decide what test bits/dim are of
        folder = candidates(cfg)[index]
        partition = partition_file(folder)
        how: dict[str, object] = {"split_by": "partition file", "partition_file": partition} if partition.is_file() \
            else {"split_by": "test_fraction", "test_fraction": cfg.test_fraction}
        self.data_source = {"paths": [folder], "layout": LAYOUTS[index], **how, "crop": cfg.crop}


def _download(cfg: CelebAConfig) -> None:
    from torchvision.datasets import CelebA as TorchvisionCelebA

    root = expand_root(cfg.root)
    try:
        TorchvisionCelebA(str(root), split="all", target_type=[], download=True)
    except Exception as exc:  # network, quota (Google Drive) or extraction failures
        raise DataError(
            f"dataset 'celeba': download into {root / 'celeba'} failed ({describe_error(exc)}); "
            "download img_align_celeba.zip by hand and unzip it there"
        ) from None
