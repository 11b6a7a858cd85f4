"""An image folder is listed once per split: at CIFAR-10 size (60,000 files) every extra listing of the whole
folder cost seconds at each start of `recipe run`, `eval` and `doctor`. Counted, not timed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from avade.data import image_folder
from avade.data.base import list_images
from avade.data.image_folder import ImageFolderConfig, locate


def _tree(root: Path, explicit: bool) -> int:
    """Empty ".png" files (listing reads no pixels): 4 classes, 60 train and 15 test images each when
    ``explicit`` (train/ and test/), else 75 per class in the class folders themselves."""
    count = 0
    for c in range(4):
        for split, n in (("train", 60), ("test", 15)) if explicit else (("", 75),):
            folder = root / split / f"class{c}" if split else root / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i:03d}.png").touch()
                count += 1
    return count


@pytest.mark.parametrize("explicit", [True, False], ids=["train-test-folders", "hash-split"])
def test_each_split_lists_its_images_once(tmp_path, monkeypatch, explicit):
    total = _tree(tmp_path / "imgs", explicit)
    listed: list[int] = []

    def counting(folder, recursive=True):
        found = list_images(folder, recursive)
        listed.append(len(found))
        return found

    monkeypatch.setattr(image_folder, "list_images", counting)
    cfg = ImageFolderConfig(root=str(tmp_path), folder="imgs", test_fraction=0.2)
    sizes = {}
    for split in ("train", "test"):
        listed.clear()
        listing = locate(cfg, split)
        sizes[split] = len(listing.files)
        # what it lists is its own split: the folder's other images are not listed to learn that it holds images
        # or which subfolders are classes (that was 3 listings of the training images, 2 of the whole folder)
        expected = len(listing.files) if explicit else total  # (a hash split has to look at every image)
        assert sum(listed) == expected, (split, listed)
        assert listing.classes == [f"class{c}" for c in range(4)]
    assert sizes["train"] + sizes["test"] == total and sizes["test"] > 0


def test_listing_order_is_the_order_of_paths_not_of_strings(tmp_path):
    # "a/x" sorts before "a-b/x" as paths (part by part) but after it as strings ("-" < "/"): the order is
    # the datasets' index order, so it decides the batches of a seed and must not move
    for rel in ("a-b/x.png", "a/x.png", "a/b/y.png", "a.b/z.png", "A/w.png", "ab.png", "a/Y.PNG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    found = list_images(tmp_path)
    assert found == sorted(found) and all(type(p) is type(tmp_path) for p in found)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "A/w.png", "a/Y.PNG", "a/b/y.png", "a/x.png", "a-b/x.png", "a.b/z.png", "ab.png"]


def test_the_hash_split_is_of_the_posix_path_relative_to_the_folder(tmp_path):
    _tree(tmp_path / "imgs", explicit=False)
    (tmp_path / "imgs" / "class0" / "deeper").mkdir()
    for i in range(40):
        (tmp_path / "imgs" / "class0" / "deeper" / f"{i}.png").touch()
    cfg = ImageFolderConfig(root=str(tmp_path), folder="imgs", labels=False, test_fraction=0.3)
    base = tmp_path / "imgs"

    def share(path: Path) -> float:
        digest = hashlib.sha1(path.relative_to(base).as_posix().encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    every = list_images(base)
    assert locate(cfg, "test").files == [f for f in every if share(f) < 0.3]
    assert locate(cfg, "train").files == [f for f in every if share(f) >= 0.3]
