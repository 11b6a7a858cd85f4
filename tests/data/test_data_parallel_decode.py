"""``in_memory = true`` decodes files in a thread pool: the same tensors, labels and errors as decoding in order."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import avade
from avade.data import base
from avade.errors import DataError


def write_folder(root, n: int = 40):
    """``n`` images of different sizes and kinds (PNG and JPEG, RGB, grayscale, RGBA, palette) in two class
    folders, all needing a crop and a resize to 16x16."""
    rng = np.random.default_rng(7)
    for i in range(n):
        h, w = int(rng.integers(18, 60)), int(rng.integers(18, 60))
        array = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
        img = Image.fromarray(array, "RGBA")
        img = [img.convert("RGB"), img.convert("L"), img, img.convert("RGB").convert("P")][i % 4]
        ext = ".jpg" if i % 3 == 0 and img.mode in ("RGB", "L") else ".png"
        path = root / "imgs" / ("cats" if i % 2 else "dogs") / f"{i:03d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)


def load(root, **extra):
    return avade.create("dataset", "image-folder", split="train", root=str(root), folder="imgs", resolution=16,
                        test_fraction=0.0, in_memory=True, **extra)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 images and 4 threads, so that 40 images are decoded by several threads (on any machine)."""
    monkeypatch.setattr(base, "_DECODE_CHUNK", 3)


def test_parallel_decoding_is_bit_identical_to_serial(tmp_path, monkeypatch, small_chunks):
    write_folder(tmp_path)
    monkeypatch.setattr(base, "decode_threads", lambda n: 1)
    serial = load(tmp_path)
    monkeypatch.setattr(base, "decode_threads", lambda n: 4)
    parallel = load(tmp_path)
    (images, labels), (ref_images, ref_labels) = parallel.as_tensors(), serial.as_tensors()
    assert images.shape == (40, 3, 16, 16) and torch.equal(images, ref_images)
    assert torch.equal(labels, ref_labels) and sorted(set(labels.tolist())) == [0, 1]
    assert parallel.files == serial.files and parallel.content_fingerprint() == serial.content_fingerprint()
    # the order is the files' order: each image is the one its file decodes to when read on access
    on_access = avade.create(
        "dataset", "image-folder", split="train", root=str(tmp_path), folder="imgs", resolution=16,
        test_fraction=0.0, in_memory=False)
    for i in range(len(on_access)):
        image, label = on_access[i]
        assert torch.equal(images[i], image) and int(labels[i]) == label, i


def test_decode_into_uses_several_threads_keeps_order_and_restores_torch_threads(small_chunks):
    threads_before = torch.get_num_threads()
    seen: set[str] = set()
    inside: list[int] = []

    def load_one(i: int) -> torch.Tensor:
        seen.add(threading.current_thread().name)
        inside.append(torch.get_num_threads())
        time.sleep(0.002)
        return torch.full((1, 2, 2), i, dtype=torch.uint8)

    out = torch.empty((40, 1, 2, 2), dtype=torch.uint8)
    base.decode_into(out, load_one, threads=4)
    assert out[:, 0, 0, 0].tolist() == list(range(40))
    assert len(seen) > 1 and set(inside[1:]) == {1}  # (the first image is decoded by the calling thread)
    assert torch.get_num_threads() == threads_before


def test_unreadable_image_gives_the_same_one_line_error_as_serial(tmp_path, monkeypatch, small_chunks):
    write_folder(tmp_path)
    files = sorted((tmp_path / "imgs").rglob("*.*"))
    first, later = files[25], files[33]  # (two broken files: the first in order is named, as serially)
    first.write_bytes(b"not an image")
    later.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    threads_before = torch.get_num_threads()
    messages = []
    for threads in (1, 4):
        monkeypatch.setattr(base, "decode_threads", lambda n, threads=threads: threads)
        with pytest.raises(DataError) as caught:
            load(tmp_path)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert messages[1].startswith(f"cannot read image {first}: ") and "\n" not in messages[1]
    assert messages[1].endswith("; remove or replace the file")
    assert torch.get_num_threads() == threads_before


def test_decode_threads_follow_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(base.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(base.os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert base.decode_threads(100_000) == 6  # the affinity, not the machine's 16
    assert base.decode_threads(100) == 2  # at most one thread per chunk of 64 images
    assert base.decode_threads(1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert base.decode_threads(100_000) == 6  # already pinned by the launcher: not shared again
    monkeypatch.setattr(base.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert base.decode_threads(100_000) == 4  # 4 processes of a torchrun job share the node's 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert base.decode_threads(100_000) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(base.os, "cpu_count", lambda: 128)
    monkeypatch.setattr(base.os, "sched_getaffinity", lambda pid: set(range(128)), raising=False)
    assert base.decode_threads(10**6) == 32
