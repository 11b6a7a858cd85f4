"""LSUN's LMDB layout, fed tiny databases written with the ``lmdb`` package as the official download holds
them (torchvision reads the same): keys are image ids, values the encoded images (WebP in the originals)."""

from __future__ import annotations

import hashlib
import io
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import avade
from avade.errors import DataError

lmdb = pytest.importorskip("lmdb")


def rgb_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Distinct random uint8 HWC images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def encode(array: np.ndarray, fmt: str) -> bytes:
    """An image file's bytes: lossless WebP (exact pixels), JPEG (lossy) or PNG."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def lsun_id(i: int) -> bytes:
    """An LSUN-style key: a 40-digit hex id."""
    return hashlib.sha1(str(i).encode()).hexdigest().encode()


def write_lmdb(path, entries: dict[bytes, bytes]) -> None:
    """A database in ``path`` (a folder holding data.mdb), entries written in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)
    env.close()


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def test_lmdb_images_decode_to_their_rgb_pixels_in_key_order(tmp_path):
    arrays = rgb_images(4, 16, 16, seed=20)
    fmts = ["WEBP", "JPEG", "WEBP", "PNG"]
    values = {lsun_id(i): encode(a, fmt) for i, (a, fmt) in enumerate(zip(arrays, fmts, strict=True))}
    write_lmdb(tmp_path / "lsun" / "bedroom_train_lmdb", dict(reversed(values.items())))
    kw = {"split": "train", "root": str(tmp_path), "category": "bedroom", "resolution": 16}
    ds = avade.create("dataset", "lsun", **kw)
    assert len(ds) == 4 and ds.shape == (3, 16, 16) and ds.num_classes == 0 and ds.as_tensors() is None
    keys = sorted(values)
    assert [ds.key(i) for i in range(4)] == keys and ds.key(-1) == keys[-1]
    for i, key in enumerate(keys):
        x, y = ds[i]
        k = [lsun_id(j) for j in range(4)].index(key)
        assert x.dtype == torch.uint8 and y == -1
        if fmts[k] == "JPEG":  # lossy: the reader must give exactly what Pillow decodes, as RGB
            assert torch.equal(x, as_tensor(np.array(Image.open(io.BytesIO(values[key])).convert("RGB"))))
        else:
            assert torch.equal(x, as_tensor(arrays[k]))
    again = avade.create("dataset", "lsun", **kw)
    assert [again.key(i) for i in range(4)] == keys
    with pytest.raises(IndexError):
        ds.key(4)


def test_lmdb_crop_and_resize_match_the_folder_layout_and_splits_map_to_databases(tmp_path):
    train, val = rgb_images(3, 30, 50, seed=21), rgb_images(2, 50, 30, seed=22)
    for split, arrays in (("tower", train), ("tower_val", val)):  # the image-folder export
        for i, a in enumerate(arrays):
            path = tmp_path / "folders" / "lsun" / split / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(path)
    for split, arrays in (("train", train), ("val", val)):  # torchvision's layout: databases in root itself
        write_lmdb(tmp_path / "dbs" / f"tower_{split}_lmdb", {lsun_id(i): encode(a, "WEBP") for i, a in
                                                                enumerate(arrays)})
    for split, n in (("train", 3), ("test", 2)):
        kw = {"split": split, "category": "tower", "resolution": 12}
        folder = avade.create("dataset", "lsun", root=str(tmp_path / "folders"), **kw)
        db = avade.create("dataset", "lsun", root=str(tmp_path / "dbs"), **kw)
        assert len(folder) == len(db) == n and db.shape == folder.shape == (3, 12, 12)
        for j in range(n):  # the folder lists i.png in order i; the database sorts by id
            i = [lsun_id(k) for k in range(n)].index(db.key(j))
            assert torch.equal(db[j][0], folder[i][0])
    # <root>/lsun/ wins over <root> when both hold the category.
    write_lmdb(tmp_path / "dbs" / "lsun" / "tower_val_lmdb", {b"only": encode(val[0], "PNG")})
    assert len(avade.create("dataset", "lsun", split="test", root=str(tmp_path / "dbs"), category="tower")) == 1


def test_lmdb_keys_are_kept_exactly(tmp_path):
    a = rgb_images(1, 8, 8, seed=23)[0]
    write_lmdb(tmp_path / "kitchen_val_lmdb", {b"k\x00": encode(a, "PNG"), b"k": encode(a[::-1], "PNG")})
    ds = avade.create("dataset", "lsun", split="test", root=str(tmp_path), category="kitchen", resolution=8)
    assert [ds.key(0), ds.key(1)] == [b"k", b"k\x00"]  # numpy's bytes arrays would strip the NUL
    assert torch.equal(ds[1][0], as_tensor(a))


def test_a_damaged_lmdb_is_a_one_line_data_error_naming_database_and_key(tmp_path):
    good = encode(rgb_images(1, 8, 8, seed=24)[0], "WEBP")
    db = tmp_path / "lsun" / "classroom_train_lmdb"
    write_lmdb(db, {lsun_id(0): good, lsun_id(1): b"not an image", lsun_id(2): good[: len(good) // 2]})
    ds = avade.create("dataset", "lsun", split="train", root=str(tmp_path), category="classroom", resolution=8)
    for i in range(3):
        if ds.key(i) == lsun_id(0):
            continue
        with pytest.raises(DataError) as err:
            ds[i]
        message = str(err.value)
        assert str(db) in message and ds.key(i).decode() in message and "download" in message
        assert "\n" not in message and "BytesIO" not in message


def test_a_folder_that_is_not_an_lmdb_database_is_a_data_error(tmp_path):
    kw = {"split": "test", "root": str(tmp_path), "category": "bridge"}
    db = tmp_path / "bridge_val_lmdb"
    db.mkdir()  # an interrupted unzip
    with pytest.raises(DataError, match=r"bridge_val_lmdb is not an LMDB database \(it has no data\.mdb\)"):
        avade.create("dataset", "lsun", **kw)
    (db / "data.mdb").write_bytes(b"\x00" * 8192)
    with pytest.raises(DataError, match=r"cannot open .*bridge_val_lmdb as an LMDB database"):
        avade.create("dataset", "lsun", **kw)
    (db / "data.mdb").unlink()
    write_lmdb(db, {})
    with pytest.raises(DataError, match="holds no images"):
        avade.create("dataset", "lsun", **kw)


def test_a_missing_lmdb_package_gives_the_install_hint(tmp_path, monkeypatch):
    write_lmdb(tmp_path / "lsun" / "restaurant_train_lmdb", {lsun_id(0): b""})
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` fail
    with pytest.raises(DataError) as err:
        avade.create("dataset", "lsun", split="train", root=str(tmp_path), category="restaurant")
    message = str(err.value)
    assert "restaurant_train_lmdb" in message and "pip install lmdb" in message and "avade[lsun]" in message
    assert "\n" not in message


def test_the_run_records_that_an_lmdb_database_was_read(tmp_path):
    from avade.data.base import data_source

    db = tmp_path / "lsun" / "church_outdoor_val_lmdb"
    write_lmdb(db, {lsun_id(i): encode(rgb_images(1, 8, 8, i)[0], "PNG") for i in range(3)})
    dataset = avade.create("dataset", "lsun", split="test", root=str(tmp_path), category="church_outdoor")
    rec = data_source(dataset, "lsun", None)
    real = os.path.realpath(db)  # (a tmp_path may lie under a symlink)
    assert rec.pop("resolved") == ({} if real == str(db) else {str(db): real}), rec
    assert rec == {"dataset": "lsun", "images": 3, "paths": [str(db)], "layout": "lmdb",
                   "category": "church_outdoor"}
