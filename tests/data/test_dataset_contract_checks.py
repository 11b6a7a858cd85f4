"""The dataset contract (avade.data.validate), n_bits wrapping and file fingerprints, checked directly."""

from __future__ import annotations

from pathlib import Path

import torch

from avade.data.base import FileImageDataset, TensorImageDataset
from avade.data.posterized import PosterizedDataset, with_bits
from avade.data.validate import dataset_problem, label_problem


def _images(n: int) -> torch.Tensor:
    return torch.zeros(n, 1, 2, 2, dtype=torch.uint8)


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


class _Items:
    """A dataset read item by item (no as_tensors), serving ``label`` for every image."""

    shape, num_classes = (1, 2, 2), 2

    def __init__(self, label: object) -> None:
        self.label = label

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> tuple[torch.Tensor, object]:
        return _images(1)[0], self.label


def test_a_label_must_be_a_python_int_not_a_bool() -> None:
    assert dataset_problem(_Items(1), "train") is None
    assert dataset_problem(_Items(True), "train") == "item 0's label must be a python int, got bool"


class _Int32Labels(TensorImageDataset):
    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels.int()


class _Shifted(TensorImageDataset):
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i] + 1, int(self.labels[i])


def test_as_tensors_must_be_int64_labels_and_the_items_images() -> None:
    labels = torch.tensor([0, 1, 0, 1])
    assert dataset_problem(TensorImageDataset(_images(4), labels, num_classes=2), "train") is None
    int32 = _Int32Labels(_images(4), labels, num_classes=2)
    assert dataset_problem(int32, "train") == "as_tensors() labels are torch.int32 (4,), expected int64 (4,)"
    shifted = _Shifted(_images(4), labels, num_classes=2)
    assert dataset_problem(shifted, "train") == "item 0 differs from as_tensors()'s image and label 0"
