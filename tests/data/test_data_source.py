"""What a run records of the data each split read (``state.json``'s ``data_read``): name, paths, image count and
the dataset's own version facts, from what locating the data found; fed tiny files in the real layouts."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest
from fake_datasets import FAKE_DATASETS, _pngs
from test_data_imagenet_layouts import write_release

import avade
from avade.data.base import TensorImageDataset, data_source
from avade.data.posterized import with_bits
from avade.errors import DataError


def record(name: str, split: str = "train", **cfg):
    """The record of ``split`` as training writes it (the dataset built through the registry)."""
    return data_source(avade.create("dataset", name, split=split, **cfg), name, None)


def test_every_on_disk_builtin_records_its_folder_count_and_layout(tmp_path):
    for name, write in FAKE_DATASETS.items():
        root = tmp_path / name
        write(root)
        cfg = {"root": str(root), **({"resolution": 32} if name == "imagenet" else {})}
        for split in ("train", "test"):
            dataset = avade.create("dataset", name, split=split, **cfg)
            rec = data_source(dataset, name, None)
            assert rec["dataset"] == name and rec["images"] == len(dataset) > 0, rec
            assert rec["paths"] and all(p.startswith(str(root)) for p in rec["paths"]), rec
            assert len(rec["paths"]) <= 2, rec  # folders, not file lists
            assert name == "image-folder" or rec["layout"], rec


def test_imagenet_records_which_downsampled_version_was_read(tmp_path):
    write_release(tmp_path, 32, "pickle")
    pixelrnn = tmp_path / "imagenet32" / "train_32x32"
    _pngs(pixelrnn, 2, 32, 32, seed=0)
    rec = record("imagenet", root=str(tmp_path), resolution=32)  # both present: the batch files win
    assert rec["layout"] == "batches" and rec["format"] == "pickle" and "Chrabaszcz" in rec["version"], rec
    assert rec["paths"] == [str(tmp_path / "Imagenet32_train")] and rec["images"] == 10, rec
    alone = tmp_path / "pixelrnn"
    (alone / "imagenet32").mkdir(parents=True)
    pixelrnn.rename(alone / "imagenet32" / "train_32x32")
    rec = record("imagenet", root=str(alone), resolution=32)
    assert rec["layout"] == "folder" and "PixelRNN" in rec["version"], rec
    assert rec["paths"] == [str(alone / "imagenet32" / "train_32x32")] and rec["images"] == 2, rec


def test_imagenet64_records_both_parts_folders(tmp_path):
    write_release(tmp_path, 64, "npz")
    rec = record("imagenet", root=str(tmp_path), resolution=64)
    assert rec["format"] == "npz" and rec["paths"] == [str(tmp_path / f"Imagenet64_train_part{k}_npz")
                                                        for k in (1, 2)], rec


def test_celeba_records_its_partition_file_or_fraction_and_its_crop(tmp_path):
    FAKE_DATASETS["celeba"](tmp_path)
    base = tmp_path / "celeba"
    rec = record("celeba", split="test", root=str(tmp_path), crop=100)
    assert rec["layout"] == "torchvision" and rec["split_by"] == "partition file" and rec["crop"] == 100, rec
    assert rec["partition_file"] == str(base / "list_eval_partition.txt") and rec["images"] == 2, rec
    text = (base / "list_eval_partition.txt").read_text()
    (base / "list_eval_partition.txt").unlink()
    (base / "list_eval_partition.csv").write_text("image_id,partition\n" + text.replace(" ", ","))
    assert record("celeba", root=str(tmp_path))["partition_file"].endswith(".csv")
    (base / "list_eval_partition.csv").unlink()
    rec = record("celeba", root=str(tmp_path), test_fraction=0.2)
    assert rec["split_by"] == "test_fraction" and rec["test_fraction"] == 0.2 and rec["images"] == 4, rec
    assert "partition_file" not in rec, rec
    (base / "img_align_celeba").rename(base / "k")  # Kaggle's copy: the folder nested in itself
    (base / "img_align_celeba").mkdir()
    (base / "k").rename(base / "img_align_celeba" / "img_align_celeba")
    assert record("celeba", root=str(tmp_path))["layout"] == "kaggle"


def test_image_folder_records_whether_its_split_came_from_folders_or_the_hash(tmp_path):
    FAKE_DATASETS["image-folder"](tmp_path)
    rec = record("image-folder", split="test", root=str(tmp_path), resolution=8)
    assert rec["split_by"] == "train/test folders" and rec["classes"] == 2, rec
    assert rec["paths"] == [str(tmp_path / "images" / "test")] and "test_fraction" not in rec, rec
    rec = record("image-folder", root=str(tmp_path), folder="images/train", resolution=8, test_fraction=0.25)
    assert rec["split_by"] == "hash" and rec["test_fraction"] == 0.25, rec
    assert rec["paths"] == [str(tmp_path / "images" / "train")], rec


def test_stl10_records_which_set_its_train_split_serves(tmp_path):
    FAKE_DATASETS["stl10"](tmp_path)
    assert record("stl10", root=str(tmp_path))["stl10_split"] == "unlabeled"
    assert record("stl10", split="test", root=str(tmp_path))["stl10_split"] == "test"


def test_lsun_records_folder_or_lmdb(tmp_path):
    FAKE_DATASETS["lsun"](tmp_path)
    rec = record("lsun", root=str(tmp_path), category="bedroom")
    assert rec["layout"] == "folder" and rec["paths"] == [str(tmp_path / "lsun" / "bedroom")], rec
    assert rec["category"] == "bedroom" and rec["images"] == 2, rec


def test_the_record_passes_through_n_bits(tmp_path):
    FAKE_DATASETS["cifar10"](tmp_path)
    dataset = with_bits(avade.create("dataset", "cifar10", split="train", root=str(tmp_path)), 5)
    assert data_source(dataset, "cifar10", None)["layout"].startswith("python")


@attrs.frozen
class _Config:
    root: str = "~/my-data"


class _Plain(TensorImageDataset):
    """A plugin's dataset that says nothing of its data."""


def test_a_dataset_that_says_nothing_still_records_name_path_and_count(tmp_path):
    import torch

    dataset = _Plain(torch.zeros(3, 1, 4, 4, dtype=torch.uint8))
    rec = data_source(dataset, "my-data", _Config(root=str(tmp_path / "d")))
    assert rec.pop("resolved") == _led(tmp_path / "d")  # (where the path really leads: {} but through a symlink)
    assert rec == {"dataset": "my-data", "images": 3, "paths": [str(tmp_path / "d")]}
    assert data_source(dataset, "my-data", object()) == {"dataset": "my-data", "images": 3, "paths": []}


def test_a_plugin_adds_its_own_facts_by_attribute_or_method(tmp_path):
    import torch

    class Own(_Plain):
        def data_source(self):
            return {"paths": [tmp_path / "v2"], "version": "v2", "images": 99, "shards": (1, 2)}

    dataset = Own(torch.zeros(3, 1, 4, 4, dtype=torch.uint8))
    rec = data_source(with_bits(dataset, 4), "my-data", _Config())
    # (its facts cannot rename or recount the data; paths become absolute strings)
    assert rec.pop("resolved") == _led(tmp_path / "v2")
    assert rec == {"dataset": "my-data", "images": 3, "paths": [str(tmp_path / "v2")], "version": "v2",
                   "shards": [1, 2]}
    plain = _Plain(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    plain.data_source = {"version": "2024"}
    assert data_source(plain, "my-data", None)["version"] == "2024"
    plain.data_source = ["v1"]
    with pytest.raises(DataError, match=r"dataset 'my-data': its data_source is a list, not a dict"):
        data_source(plain, "my-data", None)


def _led(*paths: Path) -> dict[str, str]:
    """``resolved`` as data_source records it for ``paths`` (a tmp_path may itself lie under a symlink)."""
    return {str(p): real for p in paths if (real := os.path.realpath(p)) != str(p)}


def test_a_symlinked_folder_records_where_it_really_leads(tmp_path):
    # (a data folder re-pointed to another disk reads other files under the same path: a resume compares targets)
    import torch

    (tmp_path / "disk1" / "cifar10").mkdir(parents=True)
    (tmp_path / "data").symlink_to(tmp_path / "disk1", target_is_directory=True)
    dataset = _Plain(torch.zeros(3, 1, 4, 4, dtype=torch.uint8))
    link = tmp_path / "data" / "cifar10"
    rec = data_source(dataset, "my-data", _Config(root=str(link)))
    assert rec["paths"] == [str(link)] and rec["resolved"] == {str(link): os.path.realpath(tmp_path / "disk1" /
                                                                                           "cifar10")}, rec
    assert "resolved" not in data_source(dataset, "my-data", object())  # (no paths, nothing to resolve)


def test_the_offline_builtins_record_the_versions_of_the_wheels_their_images_ship_in():
    import importlib.metadata

    # (another scikit-learn may split the digits otherwise, another scikit-image ship other photographs)
    digits = record("digits", resolution=8)
    assert digits["scikit-learn"] == importlib.metadata.version("scikit-learn"), digits
    assert digits["embedded"] == ["sklearn.datasets.data/digits.csv.gz"] and digits["paths"] == [], digits
    patches = record("natural-patches", "test", resolution=8, test_patches_per_image=2)
    assert patches["scikit-learn"] == importlib.metadata.version("scikit-learn"), patches
    assert patches["scikit-image"] == importlib.metadata.version("scikit-image"), patches
    assert patches["photographs"] == ["chelsea", "flower"] and patches["images"] == 4, patches


@pytest.mark.parametrize("name", ["natural-patches", "digits"])
def test_embedded_data_record_the_package_files_read_not_the_unused_root(name, tmp_path):
    # (their config accepts data.root only so that a recipe can switch datasets by data.name: nothing is read there)
    from avade.data.configs import DigitsConfig, NaturalPatchesConfig

    config = {"natural-patches": NaturalPatchesConfig, "digits": DigitsConfig}[name](root=str(tmp_path))
    for split in ("train", "test"):
        dataset = avade.create("dataset", name, split=split, root=str(tmp_path))
        rec = data_source(dataset, name, config)
        assert rec["paths"] == [] and rec["images"] == len(dataset) > 0, rec
        assert rec["embedded"] and all("/" in f for f in rec["embedded"]), rec
    assert any(f.endswith("chelsea.png") for f in record("natural-patches", split="test")["embedded"])
    assert record("digits")["embedded"] == ["sklearn.datasets.data/digits.csv.gz"]


def test_a_path_that_names_no_local_folder_records_no_target(tmp_path, monkeypatch):
    # a plugin's remote or hub source ("s3://...", "user/set") resolved against the working directory looked like
    # a symlink, and a resume from another directory warned its data "now leading to" elsewhere
    import torch

    remote = _Plain(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    remote.data_source = {"paths": ["s3://bucket/cifar", "user/cifar-set"]}
    monkeypatch.chdir(tmp_path)
    rec = data_source(remote, "remote", None)
    assert rec["paths"] == ["s3://bucket/cifar", "user/cifar-set"] and rec["resolved"] == {}, rec
