"""``avade sample --interpolations``' pairs and rows, on a stand-in model: which images pair up and in which
order, how many pairs, when the shortfall is said, and each batch's labels."""

from __future__ import annotations

import warnings

import pytest
import torch

from avade.evaluate.sampling import _interpolation_rows, _pairs
from avade.train.data import subset_batches

IMAGES = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
LABELS = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 1])
DATASET = torch.utils.data.TensorDataset(IMAGES, LABELS)


def test_unconditional_pairs_are_consecutive_images_of_the_seeded_subset_first_to_second() -> None:
    order, _ = next(subset_batches(DATASET, 6, batch_size=6))
    a, b, labels = _pairs(DATASET, 3, 0, None, batch_size=2)
    assert labels is None
    assert a[:, 0, 0, 0].tolist() == order[0::2, 0, 0, 0].tolist()
    assert b[:, 0, 0, 0].tolist() == order[1::2, 0, 0, 0].tolist()


def test_a_conditional_model_gets_n_pairs_however_many_one_batch_holds() -> None:
    a, b, labels = _pairs(DATASET, 1, 3, None, batch_size=10)
    assert labels.tolist() == [1] and a[:, 0, 0, 0].tolist() == [1] and b[:, 0, 0, 0].tolist() == [3]


def test_one_pair_short_is_said() -> None:
    with pytest.warns(UserWarning, match="^n=2: the test split \\(10 images\\) gives 1 pair of class 2;"):
        _pairs(DATASET, 2, 3, 2, batch_size=4)  # (class 2: images 2 and 5, then 6 alone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _pairs(DATASET, 1, 3, 2, batch_size=4)


class _Recorder:
    """A stand-in model: its frames are its first images repeated; it records the labels of each call."""

    num_classes = 3

    def __init__(self) -> None:
        self.labels: list[list[int]] = []

    def interpolate(self, xa, xb, steps, labels=None, generator=None):  # type: ignore[no-untyped-def]
        self.labels.append(labels.tolist())
        assert bool((LABELS[xa[:, 0, 0, 0].long()] == labels).all() and (LABELS[xb[:, 0, 0, 0].long()] == labels).all())
        return xa[:, None].expand(-1, steps, -1, -1, -1)


def test_each_batch_of_rows_takes_its_own_pairs_labels() -> None:
    model = _Recorder()
    grid = _interpolation_rows(model, DATASET, 3, 2, None, torch.Generator(), batch_size=2)  # type: ignore[arg-type]
    assert model.labels == [[1, 0], [2]]
    assert grid.shape == (3 * 4, 3, 2, 2)
    assert grid[3::4, 0, 0, 0].tolist() == [3, 4, 5]  # each row ends with its second image


def test_sample_run_refuses_a_temperature_with_reconstructions_or_interpolations(tmp_path) -> None:
    """(the CLI refused it; from Python the temperature was ignored silently)"""
    from avade.errors import ConfigError
    from avade.evaluate.sampling import sample_run

    for flag in ("reconstructions", "interpolations"):
        with pytest.raises(ConfigError, match=f"^temperature sets the prior's temperature, and {flag} draws"):
            sample_run(tmp_path, temperature=0.5, **{flag: True})
