"""The dataset contract (avade.data.validate), n_bits wrapping and file fingerprints, checked directly."""

from __future__ import annotations

from pathlib import Path

import torch

from avade.data.base import FileImageDataset, TensorImageDataset
from avade.data.posterized import PosterizedDataset, with_bits
from avade.data.validate import dataset_problem, label_problem


def _images(n: int, channels: int = 1) -> torch.Tensor:
    return torch.zeros(n, channels, 2, 2, dtype=torch.uint8)


def test_images_of_other_than_one_or_three_channels_break_the_contract() -> None:
    assert dataset_problem(TensorImageDataset(_images(4, 3)), "train") is None
    assert "has 2 channels" in dataset_problem(TensorImageDataset(_images(4, 2)), "train")


def test_labels_run_from_minus_one_to_num_classes_minus_one() -> None:
    assert label_problem(torch.tensor([-1, 0, 2]), 3) is None
    assert "labels must be in 0..2" in label_problem(torch.tensor([0, 3]), 3)
    assert "labels must be in 0..2" in label_problem(torch.tensor([-2, 0]), 3)
    ds = TensorImageDataset(_images(4), torch.tensor([0, 1, 2, 3]), num_classes=3)
    assert "got values in [0, 3]" in dataset_problem(ds, "train")


def test_every_bit_depth_below_eight_is_posterized() -> None:
    ds = TensorImageDataset(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8))
    assert with_bits(ds, 8) is ds
    seven = with_bits(ds, 7)
    assert isinstance(seven, PosterizedDataset) and int(seven[0][0].max()) == 254


def test_a_file_dataset_fingerprint_changes_when_a_file_is_renamed(tmp_path: Path) -> None:
    one = FileImageDataset([tmp_path / "a.png", tmp_path / "b.png"], None, num_classes=0, resolution=4)
    other = FileImageDataset([tmp_path / "a.png", tmp_path / "c.png"], None, num_classes=0, resolution=4)
    assert one.content_fingerprint() != other.content_fingerprint()
    assert one.content_fingerprint().startswith("n2-")
