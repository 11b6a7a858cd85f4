"""On-disk datasets, each fed tiny files written in the test in the dataset's real format (no network)."""

from __future__ import annotations

import io
import pickle
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import avade
from avade.errors import DataError


def rgb_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Distinct random uint8 HWC images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def max_abs_diff(tensor: torch.Tensor, image: Image.Image) -> int:
    """Largest pixel difference between a uint8 [C, H, W] tensor and a PIL image."""
    expected = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    return int((tensor.int() - expected.int()).abs().max())


def save_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# --- cifar10 --------------------------------------------------------------------------------------


def write_fake_cifar10(root, per_batch: int = 3, test: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """torchvision's "python version" layout: pickled dicts with 'data' [N, 3072] and 'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = test if name == "test_batch" else per_batch
        data = rgb_images(n, 32, 32, seed=k).transpose(0, 3, 1, 2).reshape(n, 3072)
        labels = [(k + i) % 10 for i in range(n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, fh, protocol=2)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, fh, protocol=2)
    return written


def test_cifar10_loads_through_torchvision(tmp_path):
    written = write_fake_cifar10(tmp_path)
    train = avade.create("dataset", "cifar10", split="train", root=str(tmp_path))
    test = avade.create("dataset", "cifar10", split="test", root=str(tmp_path))
    assert len(train) == 15 and len(test) == 4 and train.shape == (3, 32, 32) and train.num_classes == 10
    assert train.classes[3] == "class3"
    images, labels = train.as_tensors()
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert torch.equal(images, torch.from_numpy(expected))
    assert labels.tolist() == [lab for i in range(1, 6) for lab in written[f"data_batch_{i}"][1]]
    x, y = test[2]
    assert torch.equal(x, torch.from_numpy(written["test_batch"][0][2].reshape(3, 32, 32)))
    assert y == written["test_batch"][1][2]


def test_cifar10_other_resolution_is_resized(tmp_path):
    write_fake_cifar10(tmp_path)
    ds = avade.create("dataset", "cifar10", split="test", root=str(tmp_path), resolution=16)
    assert ds.shape == (3, 16, 16) and ds.as_tensors()[0].shape == (4, 3, 16, 16)


def test_cifar10_missing_names_the_path(tmp_path):
    with pytest.raises(DataError) as err:
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data.root=" in message and "data.download=true" in message and "natural-patches" in message
    assert "\n" not in message


def test_cifar10_partial_download_names_the_missing_file(tmp_path):
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path))
    assert len(avade.create("dataset", "cifar10", split="test", root=str(tmp_path))) == 4


def test_cifar10_a_broken_batch_is_named(tmp_path):
    write_fake_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match=r"data_batch_3 cannot be read .*; replace it with the file from the official"):
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path))
    with open(batch, "wb") as fh:
        pickle.dump({"data": np.zeros((3, 3072), dtype=np.uint8)}, fh, protocol=2)  # no labels
    with pytest.raises(DataError, match=r"data_batch_3 holds no labels"):
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path))



@pytest.mark.parametrize("labels", [7, ["a", "b", "c"], [1.5, 2.0, 3.0]])
def test_cifar10_labels_that_are_not_integers_are_named(tmp_path, labels):
    # a number escaped as "TypeError: object of type 'int' has no len()", strings as a ValueError from int();
    # floats were truncated to classes without a word
    write_fake_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(batch, "wb") as fh:
        pickle.dump({"data": np.zeros((3, 3072), dtype=np.uint8), "labels": labels}, fh, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_2 holds labels that are not a list of integers .*: it is not a "
                                        r"CIFAR-10 batch; replace it"):
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path))


# --- stl10 ----------------------------------------------------------------------------------------


def write_stl10_bin(path, n: int, seed: int) -> np.ndarray:
    """STL-10's binary layout: column-major 96x96 planes; returns the images as [N, 3, 96, 96]."""
    images = rgb_images(n, 96, 96, seed).transpose(0, 3, 1, 2)  # [N, 3, H, W]
    images.transpose(0, 1, 3, 2).tofile(path)  # stored with H and W swapped
    return images


def test_stl10_unlabeled_train_and_labeled_test(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    unlabeled = write_stl10_bin(folder / "unlabeled_X.bin", 3, seed=1)
    write_stl10_bin(folder / "test_X.bin", 2, seed=2)
    np.array([1, 10], dtype=np.uint8).tofile(folder / "test_y.bin")
    train = avade.create("dataset", "stl10", split="train", root=str(tmp_path), resolution=96)
    assert len(train) == 3 and train.num_classes == 0 and train[0][1] == -1
    assert torch.equal(train.as_tensors()[0], torch.from_numpy(unlabeled))
    test = avade.create("dataset", "stl10", split="test", root=str(tmp_path))  # default 48
    assert test.shape == (3, 48, 48) and len(test) == 2 and test.num_classes == 0
    with pytest.raises(DataError, match=r"train_X\.bin"):
        avade.create("dataset", "stl10", split="train", root=str(tmp_path), train_split="train")


def test_stl10_labels_file_short_of_the_images_is_named(tmp_path):
    # it escaped as "ValueError: labels must have shape [3], got (2,)", a traceback naming no file
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    write_stl10_bin(folder / "train_X.bin", 3, seed=1)
    np.array([1, 2], dtype=np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(DataError, match=rf"^dataset 'stl10': .*train_y.bin holds 2 labels for 3 images; replace "
                                        rf"{folder} with a fresh copy \(unpack stl10_binary.tar.gz again in "
                                        rf"{tmp_path}, or delete it and set data.download=true, needs network\)$"):
        avade.create("dataset", "stl10", split="train", root=str(tmp_path), train_split="train")


@pytest.mark.parametrize("train_split", ["unlabeled", "train", "train+unlabeled"])
@pytest.mark.parametrize("size", [0, 1000])
def test_stl10_empty_or_cut_image_file_is_named(tmp_path, train_split, size):
    # an empty file gave an empty split ("the train split is empty", no file named) or blamed train_y.bin
    # for its labels; a cut one torchvision's "cannot reshape array" of the folder
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    for name in ("train_X.bin", "unlabeled_X.bin"):
        write_stl10_bin(folder / name, 3, seed=1)
    np.array([1, 2, 3], dtype=np.uint8).tofile(folder / "train_y.bin")
    broken = folder / ("unlabeled_X.bin" if train_split == "unlabeled" else "train_X.bin")
    broken.write_bytes(broken.read_bytes()[:size])
    with pytest.raises(DataError, match=rf"^dataset 'stl10': .*{broken.name} holds {size} bytes, not a whole number "
                                        rf"of 96x96 RGB images .*; replace {folder} with a fresh copy \(unpack "
                                        rf"stl10_binary.tar.gz again in {tmp_path}"):
        avade.create("dataset", "stl10", split="train", root=str(tmp_path), train_split=train_split)


def test_stl10_failed_download_says_check_the_network(tmp_path, monkeypatch):
    # it said "delete that folder and download it again (data.download=true, needs network)": the folder was
    # never made, and download was what failed
    import urllib.error

    import torchvision.datasets.stl10 as tv_stl10

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_stl10, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match=r"^dataset 'stl10': download failed into .*stl10_binary \(URLError: .*\); "
                                        r"check the network, or fetch stl10_binary.tar.gz and unpack it into "):
        avade.create("dataset", "stl10", split="train", root=str(tmp_path), download=True)


@pytest.mark.parametrize("stray", [0, 11])
def test_stl10_labels_outside_1_to_10_are_named(tmp_path, stray):
    # a 0 arrived as label 255 (torchvision subtracts 1 in uint8) and was caught later, naming no file
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    write_stl10_bin(folder / "train_X.bin", 3, seed=1)
    np.array([1, stray, 10], dtype=np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(DataError, match=rf"^dataset 'stl10': .*train_y.bin holds the label {stray}, outside 1\.\.10; "
                                        rf"replace {folder} with a fresh copy"):
        avade.create("dataset", "stl10", split="train", root=str(tmp_path), train_split="train")


# --- image-folder ---------------------------------------------------------------------------------


def test_image_folder_with_classes_and_hash_split(tmp_path):
    arrays = rgb_images(24, 20, 30, seed=3)
    for i, a in enumerate(arrays):
        save_png(tmp_path / "imgs" / ("cat" if i % 2 else "dog") / f"{i:03d}.png", a)
    kwargs = {"root": str(tmp_path), "folder": "imgs", "resolution": 8, "test_fraction": 0.25}
    train = avade.create("dataset", "image-folder", split="train", **kwargs)
    test = avade.create("dataset", "image-folder", split="test", **kwargs)
    assert train.classes == ["cat", "dog"] and train.num_classes == 2 and test.num_classes == 2
    assert len(train) + len(test) == 24 and len(test) >= 1 and len(train) >= 12
    assert not set(train.files) & set(test.files)
    x, y = train[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 8, 8) and y == train.classes.index(train.files[0].parent.name)
    assert train.as_tensors() is None
    again = avade.create("dataset", "image-folder", split="test", **kwargs)
    assert again.files == test.files


def test_image_folder_hash_split_is_that_of_each_path_below_the_folder(tmp_path):
    # pinned: the SHA-1 of "a/0.png" (not of "0.png", which every class folder may hold) decides, so the
    # split stays the same across versions, machines and folder moves
    for cls in ("a", "b"):
        for i in range(6):
            save_png(tmp_path / "imgs" / cls / f"{i}.png", rgb_images(1, 2, 2, seed=i)[0])
    test = avade.create("dataset", "image-folder", split="test", root=str(tmp_path), folder="imgs", resolution=4,
                        test_fraction=0.5)
    held_out = sorted(f.relative_to(tmp_path / "imgs").as_posix() for f in test.files)
    assert held_out == ["a/0.png", "a/1.png", "a/2.png", "a/4.png", "b/1.png", "b/2.png", "b/3.png", "b/5.png"]


def test_image_folder_center_crop_resize_matches_pil(tmp_path):
    array = rgb_images(1, 20, 30, seed=4)[0]
    save_png(tmp_path / "one" / "a.png", array)
    save_png(tmp_path / "one" / "b.png", array)
    ds = avade.create(
        "dataset",
        "image-folder",
        split="train",
        root=str(tmp_path),
        folder="one",
        resolution=10,
        test_fraction=0.0,
        in_memory=True,
    )
    expected = Image.fromarray(array[:, 5:25]).resize((10, 10), Image.Resampling.BILINEAR)
    assert torch.equal(ds[0][0], torch.from_numpy(np.array(expected)).permute(2, 0, 1))
    images, labels = ds.as_tensors()
    assert images.shape == (2, 3, 10, 10) and labels.tolist() == [-1, -1] and ds.num_classes == 0


def test_images_are_loaded_upright_by_their_exif_orientation(tmp_path):
    from PIL import Image

    from avade.data.base import load_image

    array = rgb_images(1, 20, 30, seed=21)[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: "rotate 90 degrees clockwise to view"
    (tmp_path / "imgs").mkdir()
    Image.fromarray(array).save(tmp_path / "imgs" / "a.png", exif=exif)
    Image.fromarray(array).save(tmp_path / "imgs" / "b.png")
    upright = torch.from_numpy(np.rot90(array, k=-1).copy()).permute(2, 0, 1)  # 30 x 20, center crop 20
    assert torch.equal(load_image(tmp_path / "imgs" / "a.png", 20),
                       upright[:, 5:25, :])
    assert torch.equal(load_image(tmp_path / "imgs" / "b.png", 20),
                       torch.from_numpy(array).permute(2, 0, 1)[:, :, 5:25])


def test_image_folder_explicit_train_test_and_gray(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for i, a in enumerate(rgb_images(n, 12, 12, seed=n)):
            save_png(tmp_path / "data" / split / f"{i}.png", a)
    test = avade.create(
        "dataset", "image-folder", split="test", root=str(tmp_path), folder="data", resolution=12, channels=1
    )
    assert len(test) == 2 and test.shape == (1, 12, 12) and test.num_classes == 0


TRANSPOSE = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud, 5: lambda a: a.T,
             6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).T, 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("mode", ["L", "I;16", "RGBA", "P"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_uncompressed_tiffs_are_upright_in_every_orientation_and_mode(tmp_path, mode, orientation):
    # Pillow's own reader of uncompressed TIFFs scrambled the pixels of orientations 5-8 (transposed ones)
    # in these modes: a grayscale scan tagged "rotate 90" trained as noise
    from PIL import Image

    from avade.data.base import load_image

    gray = rgb_images(1, 6, 10, seed=3)[0][..., 0]  # 6 x 10: not square, so a transpose shows
    image = Image.fromarray(gray.astype(np.uint16) * 256) if mode == "I;16" else Image.fromarray(gray).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(tmp_path / "a.tif", exif=exif)  # uncompressed (Pillow's default)
    expected = torch.from_numpy(TRANSPOSE[orientation](gray).copy())
    got = load_image(tmp_path / "a.tif", 6, channels=1)[0]
    side = min(expected.shape)
    top, left = (expected.shape[0] - side) // 2, (expected.shape[1] - side) // 2
    assert torch.equal(got, expected[top:top + side, left:left + side])
    from avade.data.base import open_image, pil_to_uint8, upright

    with open_image(io.BytesIO((tmp_path / "a.tif").read_bytes())) as img:  # as LSUN's database values are read
        assert torch.equal(pil_to_uint8(upright(img), 1)[0], expected)



@pytest.mark.parametrize("orientation", [1, 6])
def test_big_endian_16_bit_tiffs_are_scaled_like_other_16_bit_images(tmp_path, orientation):
    # a big-endian ("MM") 16-bit grayscale TIFF opens in mode I;16B, which getextrema refused: "cannot read
    # image ...: ValueError: image has wrong mode; remove or replace the file", for a file that is fine
    from PIL import Image

    from avade.data.base import load_image

    values = np.random.default_rng(8).integers(0, 65536, size=(6, 10), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.frombytes("I;16B", (10, 6), values.astype(">u2").tobytes()).save(tmp_path / "a.tif", exif=exif)
    assert (tmp_path / "a.tif").read_bytes()[:2] == b"MM"
    expected = torch.from_numpy(TRANSPOSE[orientation](values >> 8).astype(np.uint8).copy())
    side = min(expected.shape)
    top, left = (expected.shape[0] - side) // 2, (expected.shape[1] - side) // 2
    assert torch.equal(load_image(tmp_path / "a.tif", 6, channels=1)[0], expected[top:top + side, left:left + side])


def test_a_conditional_model_on_class_folders_with_a_loose_image_says_why_there_are_no_labels(tmp_path):
    # one stray image next to the class folders makes them plain subfolders of unlabeled data; the run was
    # refused with "'image-folder' has no labels", the class folders in plain sight
    from tiny_recipes import tiny_recipe

    from avade.train.datasets import load_datasets

    for k, cls in enumerate(("cat", "dog")):
        for i, a in enumerate(rgb_images(4, 8, 8, seed=k)):
            save_png(tmp_path / "pets" / cls / f"{i}.png", a)
    save_png(tmp_path / "pets" / "thumbnail.png", rgb_images(1, 8, 8, seed=9)[0])
    data = ("data.name='image-folder'", f"data.root={str(tmp_path)!r}", "data.folder='pets'", "data.resolution=8",
            "data.test_fraction=0.0", "data.batch_size=4")
    train, _ = load_datasets(tiny_recipe(*data), test=False)  # an unconditional model: all 9, unlabeled
    assert len(train) == 9 and train.num_classes == 0
    with pytest.raises(DataError, match=r"needs a labelled dataset, but 'image-folder' .* has no labels: "
                                        rf"{tmp_path / 'pets'} holds images \(thumbnail.png\) next to its "
                                        "subfolders, so the subfolders are not classes; move those images"):
        load_datasets(tiny_recipe(*data, "model.conditional=true", "model.decoder.norm=cwn"), test=False)
    (tmp_path / "pets" / "thumbnail.png").unlink()
    train, _ = load_datasets(tiny_recipe(*data, "model.conditional=true", "model.decoder.norm=cwn"), test=False)
    assert train.num_classes == 2 and train.unlabeled_reason == ""


def test_image_folder_skips_hidden_folders_in_the_test_split_as_in_the_train_split(tmp_path):
    # a Jupyter checkpoint folder with images in test/ was refused as a class folder train/ lacks
    for split in ("train", "test"):
        for k, cls in enumerate(("a", "b")):
            for i, a in enumerate(rgb_images(2, 8, 8, seed=k)):
                save_png(tmp_path / "ex" / split / cls / f"{i}.png", a)
        save_png(tmp_path / "ex" / split / ".ipynb_checkpoints" / "x.png", rgb_images(1, 8, 8, seed=5)[0])
    for split in ("train", "test"):
        ds = avade.create("dataset", "image-folder", split=split, root=str(tmp_path), folder="ex", resolution=8)
        assert ds.classes == ["a", "b"] and len(ds) == 4 and ds.labels == [0, 0, 1, 1]


def test_image_folder_classes_are_train_folders_with_images_and_the_test_split_may_not_add_one(tmp_path):
    for split in ("train", "test"):
        for k, cls in enumerate(("a", "b")):
            for i, a in enumerate(rgb_images(2, 8, 8, seed=k)):
                save_png(tmp_path / "ex" / split / cls / f"{i}.png", a)
    (tmp_path / "ex" / "train" / "empty").mkdir()  # no images: no class (labels would run past the real ones)
    (tmp_path / "ex" / "train" / "empty" / "notes.txt").write_text("")
    kwargs = {"root": str(tmp_path), "folder": "ex", "resolution": 8}
    for split in ("train", "test"):
        ds = avade.create("dataset", "image-folder", split=split, **kwargs)
        assert ds.classes == ["a", "b"] and ds.num_classes == 2 and ds.labels == [0, 0, 1, 1]
    save_png(tmp_path / "ex" / "test" / "c" / "0.png", rgb_images(1, 8, 8, seed=7)[0])  # a class train lacks
    with pytest.raises(DataError, match=r"has class folders \['c'\] that .* lacks; give both splits the same"):
        avade.create("dataset", "image-folder", split="test", **kwargs)



def test_image_folder_test_images_outside_the_class_folders_are_named_not_left_out(tmp_path):
    # train/ has class folders: a loose image in test/ has no class; it was left out of the test split without
    # a word, and a test/ of loose images only was "empty (test has no images); ... set data.test_fraction"
    for cls in ("cat", "dog"):
        save_png(tmp_path / "d" / "train" / cls / "0.png", rgb_images(1, 4, 4, seed=0)[0])
        save_png(tmp_path / "d" / "test" / cls / "0.png", rgb_images(1, 4, 4, seed=1)[0])
    save_png(tmp_path / "d" / "test" / "stray.png", rgb_images(1, 4, 4, seed=2)[0])
    kw = {"root": str(tmp_path), "folder": "d", "resolution": 4}
    with pytest.raises(DataError, match=rf"^dataset 'image-folder': {tmp_path / 'd' / 'test'} holds images "
                                        r"\(stray.png\) outside the class folders that .*; move them into their"):
        avade.create("dataset", "image-folder", split="test", **kw)
    assert len(avade.create("dataset", "image-folder", split="test", labels=False, **kw)) == 3
    for cls in ("cat", "dog"):
        (tmp_path / "d" / "test" / cls / "0.png").unlink()
    with pytest.raises(DataError, match=r"holds images \(stray.png\) outside the class folders"):
        avade.create("dataset", "image-folder", split="test", **kw)
    (tmp_path / "d" / "test" / "stray.png").unlink()
    with pytest.raises(DataError, match=r"the test split of .* is empty \(.*test has no images\); add images to "
                                        r"[^,]*test$"):
        avade.create("dataset", "image-folder", split="test", **kw)


def test_image_folder_split_folders_are_not_taken_for_classes(tmp_path):
    # train/ and val/ (no test/): two "classes" named after the splits, which a class-conditional model would
    # learn as its label; refused, with the rename that makes them splits
    for split in ("train", "val"):
        save_png(tmp_path / "d" / split / "0.png", rgb_images(1, 4, 4, seed=0)[0])
    kw = {"root": str(tmp_path), "folder": "d", "resolution": 4}
    with pytest.raises(DataError, match=r"holds train/, val/, which look like splits, not classes; .* rename val/ to "
                                        r"test/ \(class folders inside each, if any\), or point data.folder at "
                                        r".*d/train to split its images alone"):
        avade.create("dataset", "image-folder", split="train", **kw)
    (tmp_path / "d" / "val").rename(tmp_path / "d" / "dog")  # a class of its own beside "train": no split names
    assert avade.create("dataset", "image-folder", split="train", **kw).classes == ["dog", "train"]


@pytest.mark.parametrize("other", ["val", "valid", "validation"])
def test_image_folder_unlabeled_train_and_val_folders_are_not_pooled(tmp_path, other):
    # data.labels=false on d/train/ and d/val/ (no test/): the two official splits would be pooled and split by hash,
    # so most of val/ would be trained on and test bits/dim measured on a few of train/'s images; refused as with labels
    for split, n in (("train", 12), (other, 4)):
        for i in range(n):
            save_png(tmp_path / "d" / split / f"{i}.png", rgb_images(1, 4, 4, seed=i)[0])
    kw = {"root": str(tmp_path), "folder": "d", "resolution": 4, "labels": False}
    for split in ("train", "test"):
        with pytest.raises(DataError, match=rf"holds train/, {other}/, which look like splits, not classes; .*rename "
                                            rf"{other}/ to test/"):
            avade.create("dataset", "image-folder", split=split, **kw)
    (tmp_path / "d" / other).rename(tmp_path / "d" / "test")  # the fix: the splits are the folders
    test = avade.create("dataset", "image-folder", split="test", **kw)
    assert {f.parent.name for f in test.files} == {"test"} and len(test) == 4


def test_image_folder_unlabeled_subfolders_are_not_probed_without_a_train_folder(tmp_path, monkeypatch):
    # data.labels=false: the train/-beside-val/ refusal looks into each subfolder for images only when a train/
    # subfolder is there (an unlabeled folder of 1,000 subfolders was otherwise listed through once more per split)
    import avade.data.image_folder as image_folder

    for sub in ("a", "b", "c"):
        save_png(tmp_path / "d" / sub / "0.png", rgb_images(1, 4, 4, seed=0)[0])
    probed = []
    real = image_folder.has_images

    def has_images(folder, recursive=True):
        probed.append(folder)
        return real(folder, recursive)

    monkeypatch.setattr(image_folder, "has_images", has_images)
    kw = {"root": str(tmp_path), "folder": "d", "resolution": 4, "labels": False}
    assert len(avade.create("dataset", "image-folder", split="train", **kw)) >= 1
    assert not [f for f in probed if f.parent == tmp_path / "d"], probed


@pytest.mark.parametrize("split", ["train", "test"])
def test_image_folder_lone_split_folder_with_classes_is_not_one_class(tmp_path, split):
    # d/train/{cat,dog}/ without d/test/: read as one class "train" (num_classes 1), cat and dog never labels
    for cls in ("cat", "dog"):
        save_png(tmp_path / "d" / split / cls / "0.png", rgb_images(1, 4, 4, seed=0)[0])
    kw = {"root": str(tmp_path), "folder": "d", "resolution": 4, "test_fraction": 0.0}
    with pytest.raises(DataError, match=rf"holds {split}/ \(no train/ and test/ pair\), whose class folders would be "
                                        rf"read as one class named '{split}'; .*point data.folder at .*d/{split} "):
        avade.create("dataset", "image-folder", split="train", **kw)
    assert len(avade.create("dataset", "image-folder", split="train", labels=False, **kw)) == 2
    inner = avade.create("dataset", "image-folder", split="train", **{**kw, "folder": f"d/{split}"})
    assert inner.classes == ["cat", "dog"]


def test_image_folder_lone_split_folder_of_loose_images_still_loads(tmp_path):
    # d/train/*.png (no class folders in it): unlabeled data as before, not refused
    save_png(tmp_path / "d" / "train" / "0.png", rgb_images(1, 4, 4, seed=0)[0])
    ds = avade.create("dataset", "image-folder", split="train", root=str(tmp_path), folder="d", resolution=4,
                      test_fraction=0.0)
    assert len(ds) == 1


def test_image_folder_missing(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "images")):
        avade.create("dataset", "image-folder", split="train", root=str(tmp_path))


def test_image_folder_there_but_without_images_says_so(tmp_path):
    # "not found (searched: <the folder>)" for a folder that is there misled: its files are the problem
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "photo.heic").write_bytes(b"x")
    with pytest.raises(DataError, match=rf"^dataset 'image-folder': {tmp_path / 'images'} holds no image files "
                                        r"\(\.png .*\); put the images there or point data.folder at"):
        avade.create("dataset", "image-folder", split="train", root=str(tmp_path))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(DataError, match=rf"^dataset 'image-folder': {tmp_path / 'file'} is a file, not a folder"):
        avade.create("dataset", "image-folder", split="train", root=str(tmp_path), folder="file")


# --- imagenet (downsampled) -----------------------------------------------------------------------


def write_npz(path, n: int, r: int, seed: int, first_label: int = 1) -> tuple[np.ndarray, np.ndarray]:
    images = rgb_images(n, r, r, seed).transpose(0, 3, 1, 2)  # R, G, B planes after one another
    labels = np.arange(first_label, first_label + n) % 1000 + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, data=images.reshape(n, 3 * r * r), labels=labels.tolist(), mean=np.zeros(3 * r * r))
    return images, labels


def test_imagenet_labels_that_do_not_match_the_images_are_not_a_resolution_problem(tmp_path):
    path = tmp_path / "Imagenet32_val_npz" / "val_data.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, data=np.zeros((10, 3072), dtype=np.uint8), labels=list(range(1, 8)))
    with pytest.raises(DataError, match=r"val_data.npz holds 10 images but 7 labels; the file is damaged") as err:
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
    assert "resolution" not in str(err.value)


def test_imagenet_npz_batches(tmp_path):
    folder = tmp_path / "Imagenet32_train_npz"
    parts = {k: write_npz(folder / f"train_data_batch_{k}.npz", 1, 32, seed=k, first_label=10 * k)
             for k in range(1, 11)}
    val_images, val_labels = write_npz(tmp_path / "Imagenet32_val_npz" / "val_data.npz", 3, 32, seed=7)
    train = avade.create("dataset", "imagenet", split="train", root=str(tmp_path))
    test = avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
    images, labels = train.as_tensors()
    order = range(1, 11)  # numeric, not lexicographic (batch_10 last)
    assert torch.equal(images, torch.from_numpy(np.concatenate([parts[k][0] for k in order])))
    assert labels.tolist() == (np.concatenate([parts[k][1] for k in order]) - 1).tolist()
    assert train.num_classes == 1000 and train.shape == (3, 32, 32)
    x, y = test[1]
    assert torch.equal(x, torch.from_numpy(val_images[1])) and y == int(val_labels[1]) - 1


def test_imagenet_image_folder_layout_and_wrong_resolution(tmp_path):
    for i, a in enumerate(rgb_images(3, 32, 32, seed=9)):
        save_png(tmp_path / "imagenet32" / "valid_32x32" / f"{i}.png", a)
    test = avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
    assert len(test) == 3 and test.num_classes == 0 and test[0][0].shape == (3, 32, 32)
    with pytest.raises(DataError) as err:
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path), resolution=64)
    assert str(tmp_path / "imagenet64" / "valid_64x64") in str(err.value)
    write_npz(tmp_path / "imagenet64" / "val_data.npz", 2, 32, seed=1)  # 32x32 data in the 64 folder
    with pytest.raises(DataError, match=r"data\.resolution"):
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path), resolution=64)


# --- celeba ---------------------------------------------------------------------------------------


def test_celeba_torchvision_layout_with_partition(tmp_path):
    base = tmp_path / "celeba"
    arrays = rgb_images(5, 218, 178, seed=11)
    for i, a in enumerate(arrays):
        save_png(base / "img_align_celeba" / f"{i + 1:06d}.png", a)  # lossless, to compare pixels
    names = [f"{i + 1:06d}.png" for i in range(5)]
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for n, p in zip(names, [0, 0, 1, 2, 2], strict=True))
    )
    train = avade.create("dataset", "celeba", split="train", root=str(tmp_path))
    test = avade.create("dataset", "celeba", split="test", root=str(tmp_path))
    assert [f.name for f in train.files] == names[:2] and [f.name for f in test.files] == names[3:]
    crop = arrays[3][39:179, 19:159]  # the centered 140x140 square of a 218x178 image
    expected = Image.fromarray(crop).resize((64, 64), Image.Resampling.BILINEAR)
    # PIL and torch round a few pixels differently; a misplaced crop would differ everywhere.
    assert max_abs_diff(test[0][0], expected) <= 1


def test_celeba_partition_file_problems_are_named(tmp_path):
    base = tmp_path / "celeba"
    for i, a in enumerate(rgb_images(3, 30, 30, seed=14)):
        save_png(base / "img_align_celeba" / f"{i + 1:06d}.png", a)
    partition = base / "list_eval_partition.txt"
    # a partial unzip: the partition lists an image that is not there
    partition.write_text("000001.png 0\n000002.png 0\n000003.png 2\n000004.png 2\n")
    with pytest.raises(DataError, match=r"1 of the 2 test images that list_eval_partition.txt lists are not in .* "
                                        r"\(e.g. 000004.png\); finish extracting"):
        avade.create("dataset", "celeba", split="test", root=str(tmp_path))
    assert len(avade.create("dataset", "celeba", split="train", root=str(tmp_path))) == 2
    partition.write_text("<html>not a partition</html>\n")
    with pytest.raises(DataError, match=r"cannot parse .*list_eval_partition.txt: no '<image> <partition>' lines"):
        avade.create("dataset", "celeba", split="train", root=str(tmp_path))


def test_celeba_plain_folder_holds_out_the_last_files(tmp_path):
    for i, a in enumerate(rgb_images(10, 50, 40, seed=12)):
        save_png(tmp_path / "celeba" / f"{i:03d}.jpg", a)  # a real (lossy) JPEG
    test = avade.create("dataset", "celeba", split="test", root=str(tmp_path), resolution=16, crop=30)
    train = avade.create("dataset", "celeba", split="train", root=str(tmp_path), resolution=16, crop=30)
    assert [f.name for f in test.files] == ["009.jpg"] and len(train) == 9
    assert test[0][0].shape == (3, 16, 16)


def test_celeba_missing(tmp_path):
    with pytest.raises(DataError) as err:
        avade.create("dataset", "celeba", split="train", root=str(tmp_path))
    assert str(tmp_path / "celeba" / "img_align_celeba") in str(err.value)


# --- lsun -----------------------------------------------------------------------------------------


def test_lsun_exported_folder(tmp_path):
    for split in ("church_outdoor", "church_outdoor_val"):
        for i, a in enumerate(rgb_images(2, 40, 60, seed=13)):
            save_png(tmp_path / "lsun" / split / "a" / f"{i}.png", a)
    ds = avade.create("dataset", "lsun", split="test", root=str(tmp_path), category="church_outdoor")
    assert len(ds) == 2 and ds[1][0].shape == (3, 64, 64) and ds[1][1] == -1 and ds.num_classes == 0
    with pytest.raises(DataError) as err:
        avade.create("dataset", "lsun", split="train", root=str(tmp_path), category="bedroom")
    message = str(err.value)
    assert str(tmp_path / "lsun" / "bedroom") in message and "bedroom_train_lmdb" in message


def test_lsun_download_left_zipped_says_to_unzip_it(tmp_path):
    (tmp_path / "lsun").mkdir()
    (tmp_path / "lsun" / "tower_val_lmdb.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"found .*tower_val_lmdb\.zip but not the folder it unzips to; unzip it"):
        avade.create("dataset", "lsun", split="test", root=str(tmp_path), category="tower")


def test_lsun_lmdb_without_the_package_says_how_to_fix(tmp_path, monkeypatch):
    (tmp_path / "tower_val_lmdb").mkdir()
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` fail
    with pytest.raises(DataError, match="pip install lmdb"):
        avade.create("dataset", "lsun", split="test", root=str(tmp_path), category="tower")


def test_lsun_lmdb_reader(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    import io

    arrays = rgb_images(3, 48, 64, seed=14)
    (tmp_path / "lsun").mkdir()
    env = lmdb.open(str(tmp_path / "lsun" / "kitchen_val_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, a in enumerate(arrays):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            txn.put(f"{i:040x}".encode(), buf.getvalue())
    env.close()
    ds = avade.create("dataset", "lsun", split="test", root=str(tmp_path), category="kitchen", resolution=16)
    assert len(ds) == 3 and ds.as_tensors() is None
    expected = Image.fromarray(arrays[2][:, 8:56]).resize((16, 16), Image.Resampling.BILINEAR)
    assert max_abs_diff(ds[2][0], expected) <= 1
    clone = pickle.loads(pickle.dumps(ds))  # what spawned DataLoader workers receive
    assert torch.equal(clone[0][0], ds[0][0])
    # Forked workers after the parent has read: each must open the database itself.
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    (batch, labels), *_ = list(loader)
    assert torch.equal(batch[2], ds[2][0]) and labels.tolist() == [-1, -1, -1]


def test_unreadable_files_raise_one_line_data_errors(tmp_path):
    write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x02 not a pickle")
    with pytest.raises(DataError) as err:
        avade.create("dataset", "cifar10", split="test", root=str(tmp_path))
    assert "test_batch cannot be read" in str(err.value) and "\n" not in str(err.value)
    save_png(tmp_path / "imgs" / "good.png", rgb_images(1, 8, 8, seed=0)[0])
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not an image")
    ds = avade.create("dataset", "image-folder", split="train", root=str(tmp_path), folder="imgs", test_fraction=0.0)
    with pytest.raises(DataError, match=r"bad\.png"):
        ds[[f.name for f in ds.files].index("bad.png")]


def test_imagenet_with_a_missing_or_truncated_batch_is_one_data_error(tmp_path):
    folder = tmp_path / "Imagenet32_train_npz"
    for k in (1, 2, 4, 5, 6, 7, 8, 9):
        write_npz(folder / f"train_data_batch_{k}.npz", 1, 32, seed=k)
    # a gap, and the missing last batch (both releases have 10)
    with pytest.raises(DataError, match=r"lacks train_data_batch_3\.npz, train_data_batch_10\.npz of "
                                        r"train_data_batch_1\.\.10\.npz"):
        avade.create("dataset", "imagenet", split="train", root=str(tmp_path))
    write_npz(folder / "train_data_batch_3.npz", 1, 32, seed=3)
    write_npz(folder / "train_data_batch_10.npz", 1, 32, seed=10)
    val = tmp_path / "Imagenet32_val_npz" / "val_data.npz"
    write_npz(val, 2, 32, seed=7)
    val.write_bytes(val.read_bytes()[:100])  # an interrupted copy
    with pytest.raises(DataError, match="cannot read"):
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path))


def test_16_bit_grayscale_images_are_scaled_not_clipped(tmp_path):
    from avade.data.base import load_image

    Image.fromarray(np.full((4, 4), 30000, dtype=np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    x = load_image(tmp_path / "g16.png", 4)
    assert x.shape == (3, 4, 4) and int(x.min()) == int(x.max()) == 30000 // 256


def test_16_bit_images_are_scaled_by_their_format_not_by_their_own_maximum(tmp_path):
    # Pillow reads a 16-bit PGM/PPM (and, before Pillow 10, a 16-bit PNG) as mode "I": a dark one (values
    # <= 255 of 65535) was taken for 8-bit data and came out 256 times too bright, unlike the same pixels as
    # a 16-bit PNG, and unlike the brighter images of the same folder
    from avade.data.base import load_image

    dark = np.tile(np.arange(0, 256, 32, dtype=np.uint16), (8, 1))
    for values, name in ((dark, "dark"), (dark * 257, "bright")):
        (tmp_path / f"{name}.ppm").write_bytes(b"P5 8 8 65535\n" + values.astype(">u2").tobytes())
        Image.fromarray(values).save(tmp_path / f"{name}.png")
        as_png, as_pgm = load_image(tmp_path / f"{name}.png", 8), load_image(tmp_path / f"{name}.ppm", 8)
        assert torch.equal(as_pgm, as_png), name
    assert int(load_image(tmp_path / "dark.ppm", 8).max()) == 0
    assert load_image(tmp_path / "bright.ppm", 8)[0, 0].tolist() == list(range(0, 256, 32))


@pytest.mark.parametrize(("pixels", "what"), [(np.linspace(0, 1, 64, dtype=np.float32), "floating-point pixels"),
                                              (np.arange(64, dtype=np.int32) - 32, "signed 32-bit integer")],
                         ids=["float 0..1", "int32"])
def test_images_without_an_8_bit_scale_are_refused_naming_the_file(tmp_path, pixels, what):
    # PIL's conversion clipped them: a float image in 0..1 trained as a black one, without a word
    from avade.data.base import load_image

    Image.fromarray(pixels.reshape(8, 8)).save(tmp_path / "x.tif")
    with pytest.raises(DataError) as info:
        load_image(tmp_path / "x.tif", 8)
    assert str(info.value).startswith(f"cannot read image {tmp_path / 'x.tif'}: it holds {what}")
    assert str(info.value).endswith("save it as an 8-bit (or 16-bit) image")


def test_a_file_the_loader_cannot_parse_is_a_data_error_naming_the_dataset(tmp_path):
    from tiny_recipes import tiny_recipe

    from avade.train.datasets import load_datasets

    write_fake_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    entry = pickle.loads(batch.read_bytes())
    entry["labels"] = entry["labels"][:-1]  # one label short
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    recipe = tiny_recipe("data.name='cifar10'", f"data.root={str(tmp_path)!r}", "data.resolution=8")
    with pytest.raises(DataError, match=r"dataset 'cifar10': .*data_batch_2 holds data of shape \[3, 3072\] \(uint8\) "
                                        r"and 2 labels; a CIFAR-10 batch holds uint8 \[N, 3072\] and N labels"):
        load_datasets(recipe)


def test_celeba_kaggle_csv_partition_gives_the_official_split(tmp_path):
    base = tmp_path / "celeba"
    names = [f"{i + 1:06d}.jpg" for i in range(5)]
    for name, a in zip(names, rgb_images(5, 30, 30, seed=3), strict=True):
        save_png(base / "img_align_celeba" / name, a)
    (base / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{n},{p}\n" for n, p in zip(names, [0, 2, 1, 0, 2], strict=True)))
    kw = {"root": str(tmp_path), "resolution": 8, "crop": 20}
    assert [f.name for f in avade.create("dataset", "celeba", split="train", **kw).files] == [names[0], names[3]]
    assert [f.name for f in avade.create("dataset", "celeba", split="test", **kw).files] == [names[1], names[4]]
    # saved again with a BOM (Excel's "CSV UTF-8", Notepad): its first name began with U+FEFF, "not in" the folder
    partition = base / "list_eval_partition.csv"
    partition.write_bytes(b"\xef\xbb\xbf" + partition.read_text().replace("image_id,partition\n", "").encode())
    assert [f.name for f in avade.create("dataset", "celeba", split="train", **kw).files] == [names[0], names[3]]
    (base / "list_eval_partition.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not a text file"):
        avade.create("dataset", "celeba", split="train", **kw)



def test_celeba_kaggle_copy_with_its_nested_image_folder_is_found(tmp_path):
    # Kaggle's celeba-dataset.zip unzips to img_align_celeba/img_align_celeba/*.jpg with the .csv partition two
    # levels up: "not found" for it, and no data.root could fix that
    base = tmp_path / "celeba"
    names = [f"{i + 1:06d}.jpg" for i in range(4)]
    for name, a in zip(names, rgb_images(4, 30, 30, seed=5), strict=True):
        save_png(base / "img_align_celeba" / "img_align_celeba" / name, a)
    (base / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{n},{p}\n" for n, p in zip(names, [0, 1, 2, 0], strict=True)))
    kw = {"root": str(tmp_path), "resolution": 8, "crop": 20}
    assert [f.name for f in avade.create("dataset", "celeba", split="train", **kw).files] == [names[0], names[3]]
    assert [f.name for f in avade.create("dataset", "celeba", split="test", **kw).files] == [names[2]]


def test_image_listings_skip_hidden_folders(tmp_path):
    from avade.data.base import list_images

    for rel in ("a/1.png", "a/.ipynb_checkpoints/1-checkpoint.png", ".cache/2.png", "b/.hidden.png"):
        save_png(tmp_path / rel, rgb_images(1, 4, 4, seed=0)[0])
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/1.png"]


def test_an_unreadable_cifar_file_asks_for_permissions_not_a_new_download(tmp_path, monkeypatch):
    import avade.data.cifar10 as cifar10

    write_fake_cifar10(tmp_path)

    def unreadable(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(cifar10, "open", unreadable, raising=False)  # (root reads any file: chmod would not do)
    with pytest.raises(DataError, match="check their permissions") as err:
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path))
    assert "download it again" not in str(err.value)


def test_imagenet_test_split_follows_the_training_layout(tmp_path):
    for k in range(1, 11):
        write_npz(tmp_path / "Imagenet32_train_npz" / f"train_data_batch_{k}.npz", 1, 32, seed=k)
    for i, a in enumerate(rgb_images(2, 32, 32, seed=5)):
        save_png(tmp_path / "valid_32x32" / f"{i}.png", a)  # the PixelRNN folder: other downsampling
    with pytest.raises(DataError, match=r"train split is in the batch-file .* test split found is in the image-folder"):
        avade.create("dataset", "imagenet", split="test", root=str(tmp_path))
    write_npz(tmp_path / "Imagenet32_val_npz" / "val_data.npz", 3, 32, seed=7)
    assert len(avade.create("dataset", "imagenet", split="test", root=str(tmp_path))) == 3
    # Train from the folder layout: its test folder wins over an npz test file.
    other = tmp_path / "other"
    for split in ("train_32x32", "valid_32x32"):
        for i, a in enumerate(rgb_images(2, 32, 32, seed=6)):
            save_png(other / split / f"{i}.png", a)
    write_npz(other / "Imagenet32_val_npz" / "val_data.npz", 3, 32, seed=7)
    assert len(avade.create("dataset", "imagenet", split="test", root=str(other))) == 2


def test_cifar10_batches_are_unpickled_without_running_code(tmp_path):
    # A crafted batch file (a pickle that calls a function when loaded) is refused, not run.
    import os

    write_fake_cifar10(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Payload()}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch cannot be read .*is not allowed in a data file"):
        avade.create("dataset", "cifar10", split="test", root=str(tmp_path))
    assert not marker.exists()
    # numpy's _reconstruct, allowed to rebuild arrays, allocates the shape it is given: a few bytes asked for
    # terabytes (an internal MemoryError, or on an overcommitting system an array that large)
    reconstruct = np.empty(0).__reduce__()[0]

    class Huge:
        def __reduce__(self):
            return (reconstruct, (np.ndarray, (10**13,), b"b"))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Huge(), "labels": [0]},
                                                                              protocol=2))
    with pytest.raises(DataError, match=r"test_batch cannot be read .*_reconstruct of shape \(10000000000000,\) is "
                                        r"not allowed in a data file"):
        avade.create("dataset", "cifar10", split="test", root=str(tmp_path))
    # numpy.ndarray itself, allowed as _reconstruct's argument, was callable as well: ndarray((10**13,), "u1")
    # asked for terabytes the same way (a raw MemoryError, or an array that large)
    huge = (b"\x80\x02}(X\x04\x00\x00\x00datacnumpy\nndarray\n"  # {"data": ndarray((10**13,), "u1"), "labels": []}
            b"\x8a\x06\x00\xa0rN\x18\t\x85X\x02\x00\x00\x00u1\x86RX\x06\x00\x00\x00labels]u.")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(huge)
    with pytest.raises(DataError, match=r"test_batch cannot be read .*numpy.ndarray\(...\) called to build an array is "
                                        r"not allowed in a data file"):
        avade.create("dataset", "cifar10", split="test", root=str(tmp_path))
    # an unreadable batches.meta costs the class names only (training needs none)
    write_fake_cifar10(tmp_path / "other")
    (tmp_path / "other" / "cifar-10-batches-py" / "batches.meta").write_bytes(b"\x80\x02 truncated")
    assert avade.create("dataset", "cifar10", split="test", root=str(tmp_path / "other")).classes == []


def test_a_relative_data_root_not_found_names_the_folder_it_was_looked_for_from(tmp_path, monkeypatch):
    """``data.root = "data"`` is from the current directory, not the recipe's folder (as `extends` is): the
    error says which, else "searched: data/imgs" from another directory reads as the recipe's data/imgs."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"searched: data/imgs, from the current directory {tmp_path}, not the "):
        avade.create("dataset", "image-folder", split="train", root="data", folder="imgs")
    with pytest.raises(DataError) as err:  # an absolute one needs no such note
        avade.create("dataset", "image-folder", split="train", root=str(tmp_path / "data"), folder="imgs")
    assert "current directory" not in str(err.value)


@pytest.mark.parametrize("hw", [(30, 20), (20, 30)])
def test_a_crop_larger_than_the_image_is_clipped_to_its_short_side_on_either_orientation(hw):
    from avade.data.base import center_crop_resize

    image = torch.from_numpy(rgb_images(1, *hw, seed=7)[0]).permute(2, 0, 1).contiguous()
    # a crop of 25 on a 20-wide (or 20-tall) image is the 20 x 20 center square, never a padded one
    assert torch.equal(center_crop_resize(image, 10, crop=25), center_crop_resize(image, 10))


def test_tensor_dataset_labels_are_int64_whatever_dtype_they_come_in():
    from avade.data.base import TensorImageDataset

    ds = TensorImageDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2, 1], dtype=torch.int32),
                            num_classes=3)
    assert ds.as_tensors()[1].dtype == torch.int64 and ds.labels.tolist() == [0, 2, 1]


def test_image_folder_root_that_is_the_image_folder_itself_says_set_folder_dot(tmp_path):
    # data.root pointed at the images (data.folder left at "images"): "set data.root=<the folder that holds it>"
    # would name what was already done; the fix is data.folder=.
    save_png(tmp_path / "pics" / "0.png", rgb_images(1, 4, 4, seed=0)[0])
    with pytest.raises(DataError, match=r"holds the images itself .* set data\.folder=\. to use them$"):
        avade.create("dataset", "image-folder", split="train", root=str(tmp_path / "pics"), resolution=4)
    assert len(avade.create("dataset", "image-folder", split="train", root=str(tmp_path / "pics"), folder=".",
                            resolution=4, test_fraction=0.0)) == 1


@pytest.mark.parametrize("depth", [("cat",), ("other", "set")])
def test_image_folder_root_holding_images_only_in_subfolders_is_still_not_found(tmp_path, depth):
    # (subfolders of images may be classes, or image folders beside the one data.folder names: moved or renamed)
    save_png(tmp_path.joinpath(*depth) / "0.png", rgb_images(1, 4, 4, seed=0)[0])
    with pytest.raises(DataError, match=r"not found \(searched: .*; set data\.root="):
        avade.create("dataset", "image-folder", split="train", root=str(tmp_path), resolution=4)


@pytest.mark.parametrize(("name", "folder", "extra"), [
    ("cifar10", "cifar-10-batches-py", {}),
    ("stl10", "stl10_binary", {}),
    ("celeba", "celeba", {}),
    ("lsun", "bedroom_train_lmdb", {"category": "bedroom"}),
])
def test_a_data_root_that_is_the_dataset_folder_itself_names_the_folder_above(tmp_path, name, folder, extra):
    # (the usual slip: data.root at cifar-10-batches-py/ rather than at the folder holding it)
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "something").write_bytes(b"")
    with pytest.raises(DataError) as err:
        avade.create("dataset", name, split="train", root=str(tmp_path / folder), **extra)
    message = str(err.value)
    assert message.endswith(f"data.root {tmp_path / folder} is the {folder} folder itself; set data.root={tmp_path}, "
                            "the folder that holds it")
    assert "\n" not in message


@pytest.mark.parametrize(("name", "folder", "extra"), [
    ("cifar10", "cifar-10-batches-py", {}),
    ("stl10", "stl10_binary", {}),
    ("celeba", "celeba/img_align_celeba", {}),
    ("lsun", "bedroom_train_lmdb", {"category": "bedroom"}),
    ("imagenet", "train_32x32", {"resolution": 32}),
])
def test_a_data_root_one_level_above_the_dataset_names_the_subfolder(tmp_path, name, folder, extra):
    # (the other usual slip: data.root=~/data with the data in ~/data/cifar10/cifar-10-batches-py; was the
    # generic "not found ...; set data.root=<the folder that holds it>, set data.download=true")
    (tmp_path / ".hidden" / folder).mkdir(parents=True)  # (hidden folders are not looked in)
    (tmp_path / "notes").mkdir()
    with pytest.raises(DataError) as err:
        avade.create("dataset", name, split="train", root=str(tmp_path), **extra)
    assert "but it is in" not in str(err.value)
    (tmp_path / "mine" / folder).mkdir(parents=True)
    with pytest.raises(DataError) as err:
        avade.create("dataset", name, split="train", root=str(tmp_path), **extra)
    message = str(err.value)
    assert message.endswith(f"not found in data.root {tmp_path}, but it is in {tmp_path / 'mine'}: "
                            f"set data.root={tmp_path / 'mine'}"), message
    assert message.startswith(f"dataset '{name}'") and "\n" not in message


def test_an_unreadable_subfolder_of_data_root_still_gives_the_not_found_error(tmp_path, monkeypatch):
    # a data.root that is a file system's root holds lost+found (mode 700, root's): Python 3.11's Path.exists
    # raises PermissionError there, which escaped as a traceback instead of the "not found" DataError
    import os

    (tmp_path / "lost+found").mkdir()
    (tmp_path / "mine" / "cifar-10-batches-py").mkdir(parents=True)
    stat = os.stat

    def denied(path, *args, **kwargs):  # (as for a user other than root, whatever user runs the tests)
        if str(path).startswith(str(tmp_path / "lost+found") + os.sep):
            raise PermissionError(13, "Permission denied", str(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(DataError) as err:
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path))
    assert str(err.value).endswith(f"but it is in {tmp_path / 'mine'}: set data.root={tmp_path / 'mine'}"), err.value


@pytest.mark.parametrize(("name", "archive", "command"), [
    ("cifar10", "cifar-10-python.tar.gz", "tar xf"),
    ("stl10", "stl10_binary.tar.gz", "tar xf"),
    ("celeba", "img_align_celeba.zip", "unzip"),
])
def test_a_dataset_archive_not_extracted_is_named_with_the_command(tmp_path, name, archive, command):
    # (was: "not found ...; set data.root=<the folder that holds it>, set data.download=true ...": the data were
    # there, packed)
    (tmp_path / archive).write_bytes(b"")
    (tmp_path / "unrelated.zip").write_bytes(b"")  # another dataset's archive is not named
    with pytest.raises(DataError) as err:
        avade.create("dataset", name, split="train", root=str(tmp_path))
    message = str(err.value)
    # (celeba's unpacks into data.root/celeba, where the dataset looks: see the test below)
    assert f"but {tmp_path / archive} is there, not extracted: extract it " in message, message
    assert f"({command} {tmp_path / archive} " in message, message
    assert "download" not in message and "\n" not in message
    (tmp_path / archive).unlink()
    with pytest.raises(DataError) as err:
        avade.create("dataset", name, split="train", root=str(tmp_path))
    assert "not extracted" not in str(err.value) and "unrelated" not in str(err.value)


def test_an_archive_is_named_only_where_extracting_it_makes_the_data_found(tmp_path):
    # (was: any archive holding the dataset's name in the nearest existing folder: cifar-100-python.tar.gz for
    # cifar10, one in a folder above a data.root that does not exist, and img_align_celeba.zip in data.root
    # unpacked "where it is", after which celeba still searched data.root/celeba/img_align_celeba: the same error)
    import zipfile

    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path))
    assert "not extracted" not in str(err.value)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DataError) as err:  # a data.root that does not exist (a typo): the archive above is no fix
        avade.create("dataset", "cifar10", split="train", root=str(tmp_path / "typo"))
    assert "not extracted" not in str(err.value)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    with zipfile.ZipFile(tmp_path / "img_align_celeba.zip", "w") as archive:
        archive.write(image, "img_align_celeba/000001.png")
    with pytest.raises(DataError) as err:
        avade.create("dataset", "celeba", split="train", root=str(tmp_path))
    assert (f"but {tmp_path / 'img_align_celeba.zip'} is there, not extracted: extract it into {tmp_path / 'celeba'} "
            f"(unzip {tmp_path / 'img_align_celeba.zip'} -d {tmp_path / 'celeba'})") in str(err.value)
    with zipfile.ZipFile(tmp_path / "img_align_celeba.zip") as archive:  # as that command does
        archive.extractall(tmp_path / "celeba")
    assert len(avade.create("dataset", "celeba", split="train", root=str(tmp_path))) == 1


def test_an_image_the_process_may_not_read_asks_for_permissions_not_a_new_file(tmp_path, monkeypatch):
    import avade.data.base as base

    save_png(tmp_path / "images" / "a.png", rgb_images(1, 8, 8, seed=0)[0])
    dataset = avade.create("dataset", "image-folder", split="train", root=str(tmp_path), test_fraction=0.0)

    def unreadable(source, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(source))

    monkeypatch.setattr(base.Image, "open", unreadable)  # (root reads any file: chmod would not do)
    with pytest.raises(DataError) as err:
        dataset[0]
    message = str(err.value)
    assert message.startswith(f"cannot read image {tmp_path / 'images' / 'a.png'}: PermissionError")
    assert "make it readable (e.g. chmod u+r " in message and "remove or replace" not in message
