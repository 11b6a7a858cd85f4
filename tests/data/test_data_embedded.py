"""Offline datasets (natural-patches, digits, synthetic): fast, deterministic, well-formed, cleanly split."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.data import natural_patches
from avade.data.digits import Digits, DigitsConfig
from avade.data.natural_patches import NaturalPatches, NaturalPatchesConfig, _build
from avade.data.synthetic import Synthetic, SyntheticConfig
from avade.errors import ConfigError, DataError


def check_well_formed(ds, channels: int, resolution: int, labeled: bool) -> None:
    """Shapes, dtypes, ranges, and as_tensors agreeing with __getitem__."""
    assert ds.shape == (channels, resolution, resolution)
    images, labels = ds.as_tensors()
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (len(ds), channels, resolution, resolution)
    assert labels.shape == (len(ds),)
    for i in (0, len(ds) // 2, len(ds) - 1):
        x, y = ds[i]
        assert x.dtype == torch.uint8 and x.shape == ds.shape
        assert torch.equal(x, images[i]) and y == int(labels[i]) and isinstance(y, int)
    if labeled:
        assert int(labels.min()) >= 0 and int(labels.max()) < ds.num_classes
    else:
        assert ds.num_classes == 0 and bool((labels == -1).all())
    # Real images, not a constant: a wide range of intensities.
    assert int(images.max()) - int(images.min()) > 150


# --- natural-patches ------------------------------------------------------------------------------


def test_natural_patches_shapes_and_sizes():
    # (how fast the cut is belongs to benchmarks, not to a timed test: on a loaded 2-core machine the wall
    # clock of its ~0.2 s passed a 2 s limit)
    _build.cache_clear()
    train = avade.create("dataset", "natural-patches", split="train")
    test = avade.create("dataset", "natural-patches", split="test")
    check_well_formed(train, 3, 32, labeled=False)
    check_well_formed(test, 3, 32, labeled=False)
    assert 2000 <= len(train) <= 6000 and 200 <= len(test) <= 1500


def test_natural_patches_deterministic_and_seeded():
    cfg = NaturalPatchesConfig(patches_per_image=64, test_patches_per_image=32)
    a = NaturalPatches(cfg, split="train").images
    _build.cache_clear()  # a real rebuild, not the cached tensor
    b = NaturalPatches(cfg, split="train").images
    assert torch.equal(a, b)
    c = NaturalPatches(NaturalPatchesConfig(patches_per_image=64, test_patches_per_image=32, seed=1)).images
    assert not torch.equal(a, c)


def test_natural_patches_splits_use_disjoint_photographs():
    cfg = NaturalPatchesConfig(patches_per_image=16, test_patches_per_image=16)
    train, test = NaturalPatches(cfg, split="train"), NaturalPatches(cfg, split="test")
    assert len(train.sources) >= 3 and len(test.sources) >= 1
    assert not set(train.sources) & set(test.sources)
    assert len(train) == 16 * len(train.sources) and len(test) == 16 * len(test.sources)
    # No test patch appears among the train patches.
    flat_train = {bytes(x.numpy().tobytes()) for x in train.images}
    assert not any(bytes(x.numpy().tobytes()) in flat_train for x in test.images)


def test_natural_patches_show_structure_not_flat_color():
    ds = NaturalPatches(NaturalPatchesConfig(patches_per_image=64, test_patches_per_image=16, min_std=8.0))
    gray = (ds.images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    std = gray.flatten(1).std(1, unbiased=False)
    assert float((std >= 7.99).float().mean()) > 0.95


def test_natural_patches_cache_is_not_shared_mutably():
    cfg = NaturalPatchesConfig(patches_per_image=8, test_patches_per_image=8)
    first = NaturalPatches(cfg)
    first.images.zero_()
    assert int(NaturalPatches(cfg).images.max()) > 0


def test_natural_patches_unreadable_bundled_photograph_is_an_error_not_a_missing_one(tmp_path, monkeypatch):
    # A photograph this install lacks is skipped; one that is there but corrupt must not be, or the
    # split would silently be built from fewer photographs.
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    monkeypatch.setattr(natural_patches.resources, "files", lambda package: tmp_path)
    assert natural_patches._read_photo("skimage.data", "absent.png") is None
    with pytest.raises(DataError, match=r"broken\.png cannot be read"):
        natural_patches._read_photo("skimage.data", "broken.png")


def test_natural_patches_other_resolution_and_validation():
    ds = avade.create("dataset", "natural-patches", split="test", resolution=16, test_patches_per_image=8)
    assert ds.shape == (3, 16, 16)
    with pytest.raises(ConfigError, match="resolution"):
        avade.create("dataset", "natural-patches", split="test", resolution=2)
    with pytest.raises(ConfigError, match="scale_range"):
        avade.create("dataset", "natural-patches", split="test", scale_range=[4.0, 2.0])


# --- digits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("resolution", "channels"), [(8, 1), (16, 1), (32, 3)])
def test_digits_shapes(resolution, channels):
    train = avade.create("dataset", "digits", split="train", resolution=resolution, channels=channels)
    test = avade.create("dataset", "digits", split="test", resolution=resolution, channels=channels)
    check_well_formed(train, channels, resolution, labeled=True)
    check_well_formed(test, channels, resolution, labeled=True)
    assert train.num_classes == 10 and len(train) + len(test) == 1797
    if channels == 3:
        x = train.images
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_digits_native_resolution_is_the_scaled_data():
    from sklearn.datasets import load_digits

    ds = Digits(DigitsConfig(resolution=8), split="test")
    raw = load_digits().images[ds.indices.numpy()]
    expected = torch.from_numpy(raw * 255.0 / 16.0).round().to(torch.uint8)
    assert torch.equal(ds.images[:, 0], expected)
    assert torch.equal(ds.labels, torch.from_numpy(load_digits().target[ds.indices.numpy()]))


def test_digits_split_is_disjoint_stratified_and_deterministic():
    cfg = DigitsConfig()
    train, test = Digits(cfg, split="train"), Digits(cfg, split="test")
    assert not set(train.indices.tolist()) & set(test.indices.tolist())
    counts = torch.bincount(test.labels, minlength=10)
    assert int(counts.min()) >= 30 and int(counts.max()) <= 40  # ~20% of ~180 per class
    again = Digits(DigitsConfig(), split="test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    other = Digits(DigitsConfig(seed=3), split="test")
    assert not torch.equal(other.indices, test.indices)


def test_digits_rejects_unsupported_resolution():
    with pytest.raises(ConfigError, match="resolution"):
        avade.create("dataset", "digits", split="train", resolution=12)


# --- synthetic ------------------------------------------------------------------------------------


def test_synthetic_well_formed_deterministic_and_disjoint():
    cfg = SyntheticConfig(size=40, test_size=12, resolution=8, channels=3, num_classes=3, seed=5)
    train, test = Synthetic(cfg, split="train"), Synthetic(cfg, split="test")
    check_well_formed(train, 3, 8, labeled=True)
    assert len(train) == 40 and len(test) == 12 and train.num_classes == 3
    assert torch.equal(Synthetic(cfg, split="train").images, train.images)
    assert not any(torch.equal(t, x) for t in test.images for x in train.images)


def test_synthetic_test_split_is_its_own_stream_even_at_the_train_split_s_size():
    # (a test split drawn from the train split's stream repeats the train images when the sizes are equal)
    cfg = SyntheticConfig(size=8, test_size=8, resolution=4, seed=1)
    train, test = Synthetic(cfg, split="train"), Synthetic(cfg, split="test")
    assert not any(torch.equal(t, x) for t in test.images for x in train.images)


def test_synthetic_classes_are_distinguishable():
    ds = Synthetic(SyntheticConfig(size=400, resolution=16, channels=3, num_classes=4, noise=0.0))
    images, labels = ds.as_tensors()
    x = images.float()
    # The class-mean images differ far more than noise would allow: the structure is learnable.
    means = torch.stack([x[labels == k].mean(0) for k in range(4)])
    gaps = [(means[i] - means[j]).abs().mean() for i in range(4) for j in range(i + 1, 4)]
    assert min(float(g) for g in gaps) > 10.0


def test_synthetic_unlabeled_gray():
    ds = avade.create("dataset", "synthetic", split="train", size=6, channels=1, num_classes=0, resolution=4)
    assert ds.shape == (1, 4, 4) and ds.num_classes == 0 and ds[0][1] == -1


def test_synthetic_seed_out_of_range_is_a_config_error_not_unreadable_data():
    # seed 2**63 overflowed torch's generator seed (2 * seed + 1): "dataset 'synthetic' could not be read:
    # ValueError: Overflow ...; check or replace its files"
    with pytest.raises(ConfigError, match=r"seed"):
        avade.create("dataset", "synthetic", split="test", seed=2**63, test_size=2)
    assert len(avade.create("dataset", "synthetic", split="test", seed=-(2**32 - 1), test_size=2)) == 2
