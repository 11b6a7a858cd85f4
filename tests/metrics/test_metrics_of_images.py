"""FID, KID, IS, PRD and PRDC of image sets a user holds (tensors, arrays, another tool's .npz): the run's metrics'
formulas on the same features, whatever the layout the images come in."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from avade.errors import AvadeError, DataError
from avade.metrics.features import extract
from avade.metrics.fid import fid_from_features
from avade.metrics.images import (
    as_image_batch,
    fid_of_images,
    image_features,
    inception_score_of_images,
    kid_of_images,
    prd_of_images,
    prdc_of_images,
)
from avade.metrics.inception_score import inception_score
from avade.metrics.kid import kernel_inception_distance
from avade.metrics.prd import prd_from_features
from avade.metrics.prdc import prdc_from_features
from avade.metrics.random_features import RandomConvFeatures

pytestmark = pytest.mark.filterwarnings("ignore:.*test-only feature extractor")


def _images(seed: int, n: int = 24) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_fid_and_kid_of_images_are_the_metrics_on_their_features(tmp_path) -> None:
    net = RandomConvFeatures(dim=16)
    real, fake = _images(0), _images(1) // 2
    expected = fid_from_features(extract(net, [real])[0], extract(net, [fake])[0])
    assert fid_of_images(real, fake, extractor=net, batch_size=7) == pytest.approx(expected, rel=1e-5)
    assert fid_of_images(real, real, extractor=net) == pytest.approx(0.0, abs=1e-3)
    # another tool's samples: uint8 [N, H, W, C] as an array, or the .npz `avade sample -o s.npz` writes
    np.savez(tmp_path / "s.npz", fake.permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "s.npy", fake.permute(0, 2, 3, 1).numpy())
    for other in (fake.permute(0, 2, 3, 1).numpy(), tmp_path / "s.npz", str(tmp_path / "s.npz"), tmp_path / "s.npy"):
        assert fid_of_images(real, other, extractor=net) == pytest.approx(expected, rel=1e-5)
    kid = kernel_inception_distance(extract(net, [real])[0], extract(net, [fake])[0], 10, 8,
                                    generator=torch.Generator().manual_seed(0))
    assert kid_of_images(real, fake, extractor=net, subsets=10, subset_size=8) == pytest.approx(kid, rel=1e-6)
    assert image_features(real[:, :1], extractor=net).shape == (24, 16)  # grayscale is repeated to RGB
    scores = prdc_from_features(extract(net, [real])[0], extract(net, [fake])[0], 3)
    assert prdc_of_images(real, tmp_path / "s.npz", extractor=net, nearest_k=3) == pytest.approx(scores, abs=1e-9)


def test_inception_score_and_prd_of_images_are_the_metrics_on_their_outputs(tmp_path) -> None:
    net = RandomConvFeatures(dim=16, num_classes=10)
    real, fake = _images(0), _images(1) // 2
    features, probs = extract(net, [fake], probs=True)
    assert inception_score_of_images(fake.permute(0, 2, 3, 1).numpy(), extractor=net, splits=4, batch_size=5) \
        == pytest.approx(inception_score(probs, 4), rel=1e-6, abs=1e-9)  # (batches of 5: float32 rounding)
    precision, recall = prd_of_images(real, fake, extractor=net, num_clusters=5, num_angles=11, num_runs=2)
    expected = prd_from_features(features, extract(net, [real])[0], 5, 11, 2)
    np.testing.assert_allclose(precision, expected[0], atol=1e-9)
    np.testing.assert_allclose(recall, expected[1], atol=1e-9)
    with pytest.raises(DataError, match="batch_size must be an int >= 1, got 0"):
        inception_score_of_images(fake, extractor=net, batch_size=0)
    with pytest.raises(DataError, match="batch_size must be an int >= 1, got '8'"):  # (was: '<' not supported ...)
        fid_of_images(real, fake, extractor=net, batch_size="8")
    assert fid_of_images(real, fake, extractor=net, batch_size=np.int64(7)) == pytest.approx(  # numpy's ints too
        fid_of_images(real, fake, extractor=net, batch_size=7))
    with pytest.raises(ValueError, match="PRD needs as many samples as real images"):
        prd_of_images(real, fake[:10], extractor=net)


def test_images_that_cannot_be_scored_are_refused_in_one_line(tmp_path) -> None:
    with pytest.raises(DataError, match=r"fake images: expected uint8 images .* got torch.float32 \[4, 3, 8, 8\]"):
        fid_of_images(_images(0), torch.rand(4, 3, 8, 8), extractor=RandomConvFeatures(dim=16))
    with pytest.raises(DataError, match=r"images: expected 1 or 3 channels, first or last, got shape \[4, 5, 8, 8\]"):
        as_image_batch(torch.zeros(4, 5, 8, 8, dtype=torch.uint8))
    np.savez(tmp_path / "two.npz", a=np.zeros((4, 8, 8, 3), np.uint8), b=np.zeros(4))
    with pytest.raises(DataError, match=r"holds a, b, and no arr_0"):
        as_image_batch(tmp_path / "two.npz")
    with pytest.raises(DataError, match=r"cannot read images from"):
        as_image_batch(tmp_path / "missing.npz")
    # another tool's samples cut short (a truncated zip) or an empty file: one line, not a traceback
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "two.npz").read_bytes()[:200])
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("truncated.npz", "empty.npz"):
        with pytest.raises(DataError, match=rf"images: cannot read images from .*{name}"):
            as_image_batch(tmp_path / name)


def test_bad_arguments_are_refused_before_the_inception_runs() -> None:
    """splits = 0 was a ZeroDivisionError, and a bad nearest_k or unequal PRD sets were named only after the
    Inception had run over every image (minutes for 50,000)."""

    class NoRun(RandomConvFeatures):
        def features_and_probs(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise AssertionError("the Inception ran before the arguments were checked")

    net, real, fake = NoRun(dim=16, num_classes=10), _images(0), _images(1)
    with pytest.raises(ValueError, match=r"splits must be an int >= 1, got 0"):
        inception_score_of_images(fake, extractor=net, splits=0)
    with pytest.raises(ValueError, match=r"need probabilities \[N >= splits=30, K\]"):
        inception_score_of_images(fake, extractor=net, splits=30)
    with pytest.raises(ValueError, match="nearest_k must be an int >= 1, got 0"):
        prdc_of_images(real, fake, extractor=net, nearest_k=0)
    with pytest.raises(ValueError, match="balls need more than 24 features per side"):
        prdc_of_images(real, fake, extractor=net, nearest_k=24)
    with pytest.raises(ValueError, match="PRD needs as many samples as real images, got 10 and 24"):
        prd_of_images(real, fake[:10], extractor=net)


@pytest.mark.parametrize(("option", "value"), [("subsets", 0), ("subset_size", 1), ("subset_size", 0), ("degree", 0)])
def test_kid_of_images_names_a_bad_option_before_the_inception_runs(option: str, value: int) -> None:
    """`subsets=0` was a bare `stack expects a non-empty TensorList`, `subset_size=1` said "KID needs >= 2 real and
    fake features, got 24 and 24" (it had them): each names the argument, before any features are extracted."""

    class Refuses(RandomConvFeatures):
        def compute(self, x: torch.Tensor, probs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
            raise AssertionError("features extracted before the options were checked")

    with pytest.raises(ValueError, match=f"KID: {option} must be an int >= "):
        kid_of_images(_images(0), _images(1), extractor=Refuses(dim=16), **{option: value})
    with pytest.raises(ValueError, match=f"KID: {option} must be an int >= "):
        kernel_inception_distance(torch.zeros(8, 4), torch.zeros(8, 4),
                                  **{"subsets": 2, "subset_size": 4, option: value})


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "gpu"])
def test_metrics_of_images_name_a_device_this_machine_lacks(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`device="cuda"` on a machine without a GPU was torch's "Found no NVIDIA driver on your system"."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DataError, match=r"^device: .*pass device='cpu'"):
        fid_of_images(_images(0), _images(1), extractor=RandomConvFeatures(dim=16), device=device)


def test_kid_of_images_says_when_its_std_is_zero_by_construction() -> None:
    """The default subset_size (1000) over two sets of 24: every subset is both whole sets, kid_std ~1e-16, which
    read as a precise KID; a run's `kid` warned of it, kid_of_images did not."""
    net = RandomConvFeatures(dim=16)
    with pytest.warns(UserWarning, match="KID subsets of 24 images from sets of 24: every subset is the same") as got:
        kid_of_images(_images(0), _images(1), extractor=net, subsets=3)
    assert any(w.filename == __file__ for w in got if "every subset" in str(w.message))  # (the caller's line)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "KID subsets")
        kid_of_images(_images(0), _images(1), extractor=net, subsets=3, subset_size=12)


def test_inception_errors_name_the_argument_not_a_recipe_key(tmp_path, monkeypatch) -> None:
    """A Python caller holds no recipe: "set eval.inception_weights" was no fix they could apply."""
    with pytest.raises(AvadeError) as err:  # weights without the classifier head
        inception_score_of_images(_images(0), extractor=RandomConvFeatures(dim=16, num_classes=0), splits=2)
    assert "; pass as inception_weights a file with the classifier head: " in str(err.value)
    assert "eval." not in str(err.value)
    with pytest.raises(AvadeError, match=r"^inception_weights: Inception weights file not found: .*nope\.pt$"):
        fid_of_images(_images(0), _images(1), inception_weights=tmp_path / "nope.pt")
    monkeypatch.delenv("AVADE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr("avade.metrics.features.locate_wheel_weights", lambda: None)
    with pytest.raises(AvadeError) as err:  # none at all
        image_features(_images(0))
    assert "or pass as inception_weights (or set AVADE_INCEPTION_WEIGHTS to) a TorchScript" in str(err.value)
    assert "eval." not in str(err.value)
