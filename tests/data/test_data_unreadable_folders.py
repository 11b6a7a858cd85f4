"""A data folder that cannot be read stops loading with a one-line DataError; it is never skipped.

The suite may run as root, for whom ``chmod 000`` blocks nothing: ``os.scandir`` (what the listings use) is
patched to refuse the folders instead, as it does for other users.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import avade
from avade.data.base import list_images
from avade.errors import DataError


def save_png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def deny(monkeypatch):
    """``deny(folder, ...)``: ``os.scandir`` raises PermissionError for those folders from now on."""
    real = os.scandir
    denied: set[str] = set()

    def scandir(path=".", *args, **kwargs):
        if os.path.abspath(os.fspath(path)) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    return lambda *folders: denied.update(os.path.abspath(f) for f in folders)


def check_names_folder(err: pytest.ExceptionInfo, folder: Path) -> None:
    message = str(err.value)
    assert str(folder) in message and "permissions" in message and "\n" not in message


def test_list_images_refuses_an_unreadable_subfolder_at_any_depth(tmp_path, deny):
    for rel in ("a/1.png", "a/deep/2.png", "b/3.png"):
        save_png(tmp_path / rel)
    assert len(list_images(tmp_path)) == 3
    deny(tmp_path / "a" / "deep")
    with pytest.raises(DataError) as err:
        list_images(tmp_path)
    check_names_folder(err, tmp_path / "a" / "deep")
    assert [p.name for p in list_images(tmp_path / "b")] == ["3.png"]  # other folders still list
    assert list_images(tmp_path / "missing") == []  # absent is not unreadable: callers report it
    deny(tmp_path)
    with pytest.raises(DataError) as err:
        list_images(tmp_path, recursive=False)
    check_names_folder(err, tmp_path)


def test_image_folder_with_an_unreadable_class_folder(tmp_path, deny):
    for i in range(4):
        save_png(tmp_path / "imgs" / ("cat" if i % 2 else "dog") / f"{i}.png", seed=i)
    kw = {"split": "train", "root": str(tmp_path), "folder": "imgs", "test_fraction": 0.0}
    assert avade.create("dataset", "image-folder", **kw).classes == ["cat", "dog"]
    deny(tmp_path / "imgs" / "dog")
    with pytest.raises(DataError) as err:
        avade.create("dataset", "image-folder", **kw)
    check_names_folder(err, tmp_path / "imgs" / "dog")


def test_image_folder_with_an_unreadable_test_folder(tmp_path, deny):
    for split in ("train", "test"):
        save_png(tmp_path / "data" / split / "cat" / "0.png")
    deny(tmp_path / "data" / "test")
    with pytest.raises(DataError) as err:
        avade.create("dataset", "image-folder", split="test", root=str(tmp_path), folder="data")
    check_names_folder(err, tmp_path / "data" / "test")


def test_lsun_export_and_imagenet_batches_in_unreadable_folders(tmp_path, deny):
    for part in ("a", "b"):
        save_png(tmp_path / "lsun" / "tower" / part / "0.png")
    folder = tmp_path / "Imagenet32_train_npz"
    folder.mkdir()
    deny(tmp_path / "lsun" / "tower" / "b", folder)
    with pytest.raises(DataError) as err:
        avade.create("dataset", "lsun", split="train", root=str(tmp_path), category="tower")
    check_names_folder(err, tmp_path / "lsun" / "tower" / "b")
    with pytest.raises(DataError) as err:
        avade.create("dataset", "imagenet", split="train", root=str(tmp_path))
    check_names_folder(err, folder)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any folder")
def test_a_real_unreadable_folder(tmp_path):
    save_png(tmp_path / "a" / "0.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b").chmod(0)
    try:
        with pytest.raises(DataError) as err:
            list_images(tmp_path)
        check_names_folder(err, tmp_path / "b")
    finally:
        (tmp_path / "b").chmod(0o755)


def test_symlinked_folders_are_followed_but_loops_end(tmp_path: Path) -> None:
    # Data assembled from links (class folders on other disks) is common; torchvision follows them.
    elsewhere = tmp_path / "elsewhere" / "cats"
    elsewhere.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(elsewhere / "a.png")
    root = tmp_path / "data"
    (root / "dogs").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "dogs" / "b.png")
    (root / "cats").symlink_to(elsewhere, target_is_directory=True)
    (root / "dogs" / "loop").symlink_to(root, target_is_directory=True)  # a loop ends
    (root / "kittens").symlink_to(elsewhere, target_is_directory=True)  # a second link to the same folder
    assert list_images(root) == [root / "cats" / "a.png", root / "dogs" / "b.png", root / "kittens" / "a.png"]


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_an_image_link_that_leads_nowhere_is_a_data_error_naming_it(tmp_path: Path, link: str) -> None:
    # a dangling one was skipped without a word (the data short of it); links in a loop raised a bare OSError,
    # which doctor reported as a failed presence check and a run as "could not be read"
    for i in range(3):
        save_png(tmp_path / "cats" / f"{i}.png", seed=i)
    bad = tmp_path / "cats" / "3.png"
    if link == "dangling":
        bad.symlink_to(tmp_path / "moved" / "3.png")
    else:
        bad.symlink_to(tmp_path / "cats" / "4.png")
        (tmp_path / "cats" / "4.png").symlink_to(bad)
    with pytest.raises(DataError) as err:
        avade.create("dataset", "image-folder", split="train", root=str(tmp_path), folder=".", test_fraction=0.0,
                     resolution=8)
    message = str(err.value)
    assert str(tmp_path / "cats") in message and "\n" not in message
    assert (f"{bad} is a broken symbolic link" if link == "dangling" else "point it at an image") in message
    (tmp_path / "cats" / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not an image: nothing is missing
    for leftover in (bad, tmp_path / "cats" / "4.png"):
        leftover.unlink(missing_ok=True)
    assert len(list_images(tmp_path)) == 3
