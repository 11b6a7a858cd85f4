"""Downsampled ImageNet as the official archives unpack: npz or pickle batches, ImageNet-64 in two parts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import avade
from avade.data.status import dataset_status
from avade.errors import DataError


def write_batch(folder, name: str, fmt: str, n: int, r: int, seed: int, protocol: int = 4):
    """One batch file as released: ``data`` uint8 [N, 3·R·R] (R, G, B planes), 1-based ``labels``."""
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 3, r, r), dtype=np.uint8)
    labels = (np.arange(n) * 7 + seed) % 1000 + 1
    folder.mkdir(parents=True, exist_ok=True)
    data = images.reshape(n, 3 * r * r)
    if fmt == "npz":
        np.savez(folder / f"{name}.npz", data=data, labels=labels, mean=np.zeros(3 * r * r))
    else:  # the "pickle" download: extensionless pickled dicts, labels a list of ints
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels.tolist(), "mean": data.mean(0)}, fh, protocol=protocol)
    return images, labels


def write_release(root, r: int, fmt: str, batches: int = 10):
    """The official folders of resolution ``r`` in format ``fmt``; returns (train, val) images and labels."""
    suffix = "_npz" if fmt == "npz" else ""
    train = []
    for k in range(1, batches + 1):
        if r == 64:  # two archives: part1 holds batches 1..5, part2 6..10
            folder = root / f"Imagenet64_train_part{1 if k <= 5 else 2}{suffix}"
        else:
            folder = root / f"Imagenet{r}_train{suffix}"
        train.append(write_batch(folder, f"train_data_batch_{k}", fmt, 1, r, seed=k, protocol=2 + k % 4))
    val = write_batch(root / f"Imagenet{r}_val{suffix}", "val_data", fmt, 3, r, seed=99)
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])), val


@pytest.mark.parametrize(("r", "fmt"), [(32, "pickle"), (64, "npz"), (64, "pickle")])
def test_official_archives_unpacked_as_is_are_loaded(tmp_path, r, fmt):
    (train_x, train_y), (val_x, val_y) = write_release(tmp_path, r, fmt)
    train = avade.create("dataset", "imagenet", split="train", root=str(tmp_path), resolution=r)
    test = avade.create("dataset", "imagenet", split="test", root=str(tmp_path), resolution=r)
    images, labels = train.as_tensors()
    assert torch.equal(images, torch.from_numpy(train_x))  # batch_1 .. batch_10 in numeric order
    assert labels.tolist() == (train_y - 1).tolist() and train.num_classes == 1000 and train.shape == (3, r, r)
    images, labels = test.as_tensors()
    assert torch.equal(images, torch.from_numpy(val_x)) and labels.tolist() == (val_y - 1).tolist()
    present, message = dataset_status("imagenet", {"root": str(tmp_path), "resolution": r})
    assert present, message


@pytest.mark.parametrize("fmt", ["npz", "pickle"])
def test_a_missing_part_or_batch_of_imagenet64_is_named(tmp_path, fmt):
    write_release(tmp_path, 64, fmt)
    suffix, ext = ("_npz", ".npz") if fmt == "npz" else ("", "")
    part2 = tmp_path / f"Imagenet64_train_part2{suffix}"
    kw = {"split": "train", "root": str(tmp_path), "resolution": 64}
    (part2 / f"train_data_batch_7{ext}").unlink()
    with pytest.raises(DataError, match=rf"lacks train_data_batch_7{ext} of train_data_batch_1\.\.10"):
        avade.create("dataset", "imagenet", **kw)
    for f in part2.iterdir():
        f.unlink()
    with pytest.raises(DataError, match=rf"Imagenet64_train_part2{suffix} holds no train_data_batch"):
        avade.create("dataset", "imagenet", **kw)
    write_batch(part2, "train_data_batch_6", fmt, 1, 64, seed=6)  # part 2 only partly unpacked
    with pytest.raises(DataError, match=rf"lacks train_data_batch_7{ext}, .*train_data_batch_10{ext} of "):
        avade.create("dataset", "imagenet", **kw)
    for f in part2.iterdir():
        f.unlink()
    part2.rmdir()  # only the first archive unpacked: half the training set
    with pytest.raises(DataError) as err:
        avade.create("dataset", "imagenet", **kw)
    message = str(err.value)
    assert str(part2) in message and f"unpack Imagenet64_train_part2{suffix}.zip" in message and "\n" not in message


def test_pickle_train_split_pairs_with_either_batch_format_but_not_folders(tmp_path):
    for k in range(1, 11):
        write_batch(tmp_path / "Imagenet32_train", f"train_data_batch_{k}", "pickle", 1, 32, seed=k)
    (tmp_path / "valid_32x32").mkdir()
    with pytest.raises(DataError, match=r"train split is in the batch-file .* test split found is in the image-folder"):
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
    val_x, _ = write_batch(tmp_path / "Imagenet32_val_npz", "val_data", "npz", 2, 32, seed=5)  # same arrays
    test = avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
    assert torch.equal(test.as_tensors()[0], torch.from_numpy(val_x))
    (tmp_path / "Imagenet32_train" / "train_data_batch_2").unlink()
    with pytest.raises(DataError, match=r"Imagenet32_train lacks train_data_batch_2 of train_data_batch_1\.\.10;"):
        avade.create("dataset", "imagenet", split="train", root=str(tmp_path))


class _Exploit:
    """Unpickling this with plain pickle would run ``exec`` (here: create a marker file)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_pickle_batches_are_read_without_running_code(tmp_path):
    folder = tmp_path / "Imagenet32_val"
    folder.mkdir()
    marker = tmp_path / "pwned"
    with open(folder / "val_data", "wb") as fh:
        pickle.dump({"data": _Exploit(marker), "labels": [1]}, fh)
    with pytest.raises(DataError) as err:
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
    assert not marker.exists()
    message = str(err.value)
    assert "builtins.exec is not allowed" in message and str(folder / "val_data") in message and "\n" not in message
    (folder / "val_data").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"cannot read .*val_data \(TypeError: holds a list\); expected a pickled dict"):
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
    write_batch(folder, "val_data", "pickle", 2, 32, seed=1)
    (folder / "val_data").write_bytes((folder / "val_data").read_bytes()[:500])  # an interrupted copy
    with pytest.raises(DataError, match="cannot read"):
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
