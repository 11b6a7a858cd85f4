"""``dataset_status`` (for ``avade doctor``) and the registrations of the dataset kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import avade
import avade.data
from avade.data import dataset_status
from avade.data.cifar10 import Cifar10Config
from avade.registry import Registry
from avade.testing.checks import check_dataset

NAMES = (
    "natural-patches",
    "digits",
    "synthetic",
    "cifar10",
    "stl10",
    "lsun",
    "imagenet",
    "celeba",
    "image-folder",
)


def test_all_datasets_registered_with_a_summary():
    registry = Registry()
    avade.data.register(registry)
    infos = {i.name: i for i in registry.list(kind="dataset")}
    assert set(infos) == set(NAMES)
    for info in infos.values():
        assert info.summary and "\n" not in info.summary
        assert info.context_params() == ["split"]  # factory(cfg, *, split)
        fields = {f.name for f in attrs.fields(info.load_config())}
        assert "resolution" in fields
        if info.name not in ("synthetic",):
            assert {"root", "download"} <= fields  # a recipe can switch datasets with data.name alone


def test_package_import_does_not_load_torch():
    code = "import sys, avade.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", NAMES)
def test_conformance_check_passes(name, tmp_path):
    # Built-in data builds; on-disk data is absent under an empty root and must refuse in one line.
    config = {} if name in avade.data.OFFLINE_DATASETS else {"root": str(tmp_path)}
    if name == "natural-patches":
        config = {"test_patches_per_image": 4}
    check_dataset(name, **config)


def test_embedded_datasets_are_present():
    for name in avade.data.OFFLINE_DATASETS:
        present, message = dataset_status(name)
        assert present, message
    assert "chelsea" in dataset_status("natural-patches")[1]


def test_cifar10_status_missing_then_present(tmp_path):
    present, message = dataset_status("cifar10", {"root": str(tmp_path)})
    assert not present and str(tmp_path / "cifar-10-batches-py") in message
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(b"")  # status only looks, it does not load
    present, message = dataset_status("cifar10", Cifar10Config(root=str(tmp_path)))
    assert not present and "test_batch" in message
    (folder / "test_batch").write_bytes(b"")
    present, message = dataset_status("cifar10", {"root": str(tmp_path)})
    assert present and str(folder) in message and "5 files" in message


def test_a_file_this_user_may_not_read_is_not_present(tmp_path, monkeypatch):
    # (was: "ok / ready" for a chmod 000 batch, and the run stopped at it; root may read anything, so the check
    # is made to fail as another user's would)
    import os

    import avade.data.status as status

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(b"")
    assert dataset_status("cifar10", {"root": str(tmp_path)})[0]
    locked = folder / "data_batch_3"
    monkeypatch.setattr(status.os, "access", lambda path, mode: Path(path) != locked and os.path.exists(path))
    present, message = dataset_status("cifar10", {"root": str(tmp_path)})
    assert not present and message == (f"dataset 'cifar10': {locked} cannot be read by this user; make it readable "
                                       f"(e.g. chmod -R u+rX {locked})"), message


def test_status_of_folder_datasets(tmp_path):
    from PIL import Image

    assert not dataset_status("image-folder", {"root": str(tmp_path)})[0]
    (tmp_path / "images").mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(tmp_path / "images" / f"{i}.png")
    present, message = dataset_status("image-folder", {"root": str(tmp_path), "test_fraction": 0.5})
    assert present, message
    present, message = dataset_status("celeba", {"root": str(tmp_path)})
    assert not present and str(tmp_path / "celeba") in message
    present, message = dataset_status("imagenet", {"root": str(tmp_path), "resolution": 64})
    assert not present and "imagenet64" in message


def test_status_for_a_conditional_model_needs_labels(tmp_path):
    # `avade doctor` said "ready" for a conditional model on class folders beside a loose image (or on a
    # folder without class folders); the run then stopped at its start for want of labels
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(tmp_path / "pets" / cls / f"{i}.png")
    cfg = {"root": str(tmp_path), "folder": "pets", "test_fraction": 0.5}
    assert dataset_status("image-folder", cfg, conditional=True)[0]
    Image.new("RGB", (8, 8)).save(tmp_path / "pets" / "thumbnail.png")
    assert dataset_status("image-folder", cfg)[0]  # fine for an unconditional model: 17 unlabeled images
    present, message = dataset_status("image-folder", cfg, conditional=True)
    assert not present and message.startswith("dataset 'image-folder': model.conditional = true needs labels")
    assert "thumbnail.png" in message and "move those images" in message
    present, message = dataset_status("image-folder", {**cfg, "labels": False}, conditional=True)
    assert not present and message.endswith("its images are not in class subfolders")
    assert dataset_status("digits", None, conditional=True)[0]  # a dataset whose locate says nothing of labels


def test_status_lsun_lmdb_without_package(tmp_path, monkeypatch):
    (tmp_path / "lsun").mkdir()
    (tmp_path / "lsun" / "tower_train_lmdb").mkdir()
    (tmp_path / "lsun" / "tower_val_lmdb").mkdir()
    monkeypatch.setitem(sys.modules, "lmdb", None)
    present, message = dataset_status("lsun", {"root": str(tmp_path), "category": "tower"})
    assert not present and "pip install lmdb" in message


def test_status_bad_config_and_unknown_name(tmp_path):
    present, message = dataset_status("cifar10", {"rot": str(tmp_path)})
    assert not present and "root" in message  # did-you-mean
    present, message = dataset_status("cifar100")
    assert not present and "cifar10" in message


class _Toy:
    """A plugin-style dataset whose module (this test file) defines no ``locate``."""

    def __init__(self, *, split: str) -> None:
        self.split = split


def test_status_of_a_dataset_without_locate(monkeypatch):
    registry = Registry()
    registry.register("dataset", "toy", factory=_Toy, summary="toy")
    monkeypatch.setattr("avade.registry._REGISTRY", registry)
    present, message = dataset_status("toy")
    assert present and "no presence check" in message
