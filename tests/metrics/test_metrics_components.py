"""Metric components end to end on a fake EvalContext: FID/KID/IS/BPD, the reference cache, registration."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from metric_helpers import FakeContext, natural_crops, noise_images
from safetensors import safe_open

import avade
from avade.errors import ConfigError
from avade.metrics.bpd import BPD, BPDConfig
from avade.metrics.fid import FID, FIDConfig
from avade.metrics.inception_score import InceptionScore, InceptionScoreConfig
from avade.metrics.kid import KID, KIDConfig
from avade.metrics.random_features import RandomConvFeatures
from avade.metrics.subset_study import subset_study

pytestmark = pytest.mark.filterwarnings("ignore:.*test-only feature extractor:UserWarning")

REAL = natural_crops(80, seed=0)
LABELS = torch.zeros(80, dtype=torch.long)


def _ctx(tmp_path, sampler, **kw) -> FakeContext:
    options = {"feature_extractor": RandomConvFeatures(dim=24, seed=0)}
    return FakeContext(tmp_path, {"test": (REAL, LABELS), "train": (REAL, LABELS)}, sampler=sampler,
                       options=options, dataset_key="natural-patches/test/32", **kw)


def test_fid_component_uses_and_reuses_the_cache(tmp_path) -> None:
    ctx = _ctx(tmp_path, lambda n, labels: REAL[:n])
    fid = FID(FIDConfig(samples=80, batch_size=32))
    with pytest.warns(UserWarning, match="test-only"):
        first = fid.compute(ctx)
    assert abs(first["fid"]) < 1e-6  # the "samples" are the real images
    assert ctx.real_calls == 1
    assert fid.compute(ctx) == first
    assert ctx.real_calls == 1  # second time from the cache
    files = sorted(p.name for p in ctx.cache_dir.iterdir())
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)
    assert any("rc" in f and "natural-patches_test_32-test" in f and "-all." in f for f in files)
    stats = next(ctx.cache_dir.glob("*.stats.safetensors"))
    with safe_open(str(stats), "pt") as f:
        assert f.metadata()["count"] == "80" and f.get_tensor("sigma").dtype == torch.float64
    # Another sample count of real data is another cache entry.
    FID(FIDConfig(samples=40, real_samples=40)).compute(ctx)
    assert ctx.real_calls == 2


def test_fid_kid_grow_from_photographs_to_noise(tmp_path) -> None:
    same = _ctx(tmp_path / "a", lambda n, labels: natural_crops(n, seed=1))
    noise = _ctx(tmp_path / "b", lambda n, labels: noise_images(n, seed=1))
    fid_same = FID(FIDConfig(samples=80)).compute(same)["fid"]
    fid_noise = FID(FIDConfig(samples=80)).compute(noise)["fid"]
    assert 0.0 < fid_same < fid_noise / 5
    kid_cfg = KIDConfig(samples=80, subsets=10, subset_size=50)
    kid_same, kid_noise = KID(kid_cfg).compute(same), KID(kid_cfg).compute(noise)
    assert set(kid_same) == {"kid_mean", "kid_std"}
    assert kid_same["kid_mean"] < kid_noise["kid_mean"] / 5
    assert KID(kid_cfg).compute(same) == kid_same  # seeded subsets


def test_inception_score_component(tmp_path) -> None:
    ctx = _ctx(tmp_path, lambda n, labels: natural_crops(n, seed=2))
    out = InceptionScore(InceptionScoreConfig(samples=50, splits=5)).compute(ctx)
    assert out["is_mean"] >= 1.0 and out["is_std"] >= 0.0


def test_inception_score_with_fewer_samples_than_splits_is_a_config_error() -> None:
    # e.g. `avade eval -m is --samples 5`: an error naming the settings, not a ValueError after sampling
    with pytest.raises(ConfigError, match="splits = 10"):
        InceptionScore(InceptionScoreConfig(samples=5, splits=10))
    InceptionScore(InceptionScoreConfig(samples=10, splits=10))


def test_bpd_component_passes_options_through(tmp_path) -> None:
    ctx = _ctx(tmp_path, None)
    assert BPD(BPDConfig(importance_samples=8)).compute(ctx) == {
        "bpd": pytest.approx(3.51), "bpd_iw8": pytest.approx(3.58)}  # both, as training reports them
    assert ctx.bpd_calls == [("test", 1), ("test", 8)]
    # another split is named as such: bpd is always the test split's
    assert BPD(BPDConfig(importance_samples=8, split="train")).compute(ctx) == {
        "bpd_train": pytest.approx(3.51), "bpd_iw8_train": pytest.approx(3.58)}
    assert ctx.bpd_calls[2:] == [("train", 1), ("train", 8)]


def test_subset_study_table7_shape(tmp_path) -> None:
    ctx = _ctx(tmp_path, None)
    rows = subset_study(ctx, split="train", is_splits=4)
    assert [r["fraction"] for r in rows] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05])
    assert rows[0]["fid"] == pytest.approx(0.0, abs=1e-6)  # the full set against itself
    assert rows[-1]["fid"] > rows[1]["fid"] > 0.0  # smaller subsets drift further
    assert all("is_mean" in r for r in rows)
    counts = subset_study(ctx, sizes=[80, 40, 0.25], split="train")
    assert [r["size"] for r in counts] == [80, 40, 20]
    with pytest.raises(avade.AvadeError, match="subset size"):
        subset_study(ctx, sizes=[500], split="train")


def test_subset_study_refuses_bad_sizes_before_extracting_features(tmp_path) -> None:
    # `avade study subsets --fractions 0`: refused at once, not after the split's Inception features (minutes)
    ctx = _ctx(tmp_path, None)
    for bad, match in (([1.0, 0.0], "fraction 0.0 is not in"), ([float("nan")], "fraction nan is not in")):
        with pytest.raises(avade.AvadeError, match=match):
            subset_study(ctx, sizes=bad, split="train")
    ctx.split_size = lambda split: len(ctx.real[split][0])  # type: ignore[attr-defined]
    with pytest.raises(avade.AvadeError, match="subset size 500"):
        subset_study(ctx, sizes=[500], split="train")
    assert ctx.real_calls == 0  # no image read


def test_all_metrics_are_registered_and_validated() -> None:
    names = {c.split("/")[1] for c in avade.list_components(kind="metric")}
    assert {"bpd", "fid", "kid", "is", "prd", "prdc", "gan-test", "gan-train"} <= names
    for name in ("bpd", "fid", "kid", "is", "prd", "prdc", "gan-test", "gan-train"):
        metric = avade.create("metric", name)
        assert metric.name == name and callable(metric.compute)
    assert avade.create("metric", "fid", samples=500, split="train").cfg.samples == 500
    with pytest.raises(ConfigError, match="samples"):
        avade.create("metric", "fid", samples=0)
    with pytest.raises(ConfigError, match="num_clusters"):
        avade.create("metric", "prd", num_clusters="20")


def test_metrics_package_does_not_import_torch() -> None:
    code = ("import sys, avade.metrics; from avade.registry import Registry; r = Registry(); "
            "avade.metrics.register(r); print('torch' in sys.modules, len(r.list('metric')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "8"]


def test_fid_against_published_reference_statistics(tmp_path) -> None:
    import numpy as np

    from avade.metrics.stats import gaussian_stats

    ctx = _ctx(tmp_path, lambda n, labels: natural_crops(n, seed=1))
    own = FID(FIDConfig(samples=80)).compute(ctx)["fid"]
    # The statistics of the same real images, saved as TTUR / pytorch-fid / clean-fid do: the same FID.
    feats = RandomConvFeatures(dim=24, seed=0)(REAL)
    mu, sigma = gaussian_stats(feats)
    np.savez(tmp_path / "stats.npz", mu=mu.numpy(), sigma=sigma.numpy())
    calls = ctx.real_calls
    published = FID(FIDConfig(samples=80, reference=str(tmp_path / "stats.npz"))).compute(ctx)["fid"]
    assert published == pytest.approx(own, rel=1e-6) and ctx.real_calls == calls  # no real images read
    np.savez(tmp_path / "wrong_dims.npz", mu=np.zeros(5), sigma=np.eye(5))
    np.savez(tmp_path / "no_sigma.npz", mu=mu.numpy())
    np.savez(tmp_path / "nan.npz", mu=np.full(24, np.nan), sigma=np.eye(24))
    np.save(tmp_path / "pickled.npy", np.array([{"mu": 1}], dtype=object))
    np.save(tmp_path / "bare.npy", np.zeros(3))
    # a download cut short (a truncated zip), an empty file, text arrays: each one line, not a traceback
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "stats.npz").read_bytes()[:300])
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "text.npz", mu=np.array(["0.5"] * 24), sigma=np.eye(24))
    for name, message in (("truncated.npz", "cannot read FID statistics .*truncated.npz"),
                          ("empty.npz", "cannot read FID statistics .*empty.npz"),
                          ("text.npz", "mu and sigma are <U3 and float64 arrays, not numbers"),
                          ("wrong_dims.npz", "5-dimensional features, but the feature extractor"),
                          ("no_sigma.npz", "holds mu, not sigma"),
                          ("nan.npz", "NaN or infinite"),
                          ("pickled.npy", "cannot read FID statistics"),
                          ("bare.npy", "a single array, not an .npz archive"),
                          ("missing.npz", "cannot read FID statistics")):
        with pytest.raises(ConfigError, match=message) as err:
            FID(FIDConfig(samples=80, reference=str(tmp_path / name))).compute(ctx)
        assert "eval.fid.reference" in str(err.value) and "\n" not in str(err.value)


def test_too_few_samples_for_fid_and_a_capped_kid_subset_are_said(tmp_path, recwarn) -> None:
    ctx = _ctx(tmp_path, lambda n, labels: natural_crops(n, seed=1))
    FID(FIDConfig(samples=20)).compute(ctx)  # 20 samples of 24-dimensional features
    FID(FIDConfig(samples=80)).compute(ctx)
    KID(KIDConfig(samples=40, subsets=4, subset_size=1000)).compute(ctx)
    KID(KIDConfig(samples=40, subsets=4, subset_size=30)).compute(ctx)
    KID(KIDConfig(samples=80, subsets=4, subset_size=80)).compute(ctx)  # 80 real images: every subset the same
    said = [str(w.message) for w in recwarn if "test-only" not in str(w.message)]
    assert len(said) == 3, said
    assert said[2].startswith("KID subsets of 80 images from sets of 80: every subset is the same, so kid_std is 0")
    assert said[0].startswith("FID from 20 samples of 24-dimensional features is biased upward")
    assert said[1].startswith("KID used subsets of 40 images, the smaller set's size, not subset_size = 1000")


def test_subset_study_says_why_it_has_no_is_column(tmp_path, recwarn) -> None:
    ctx = FakeContext(tmp_path, {"train": (REAL, LABELS)},
                      options={"feature_extractor": RandomConvFeatures(dim=24, seed=0, num_classes=0)})
    rows = subset_study(ctx, sizes=[80, 40], split="train")
    assert all("is_mean" not in r for r in rows)
    assert any(str(w.message).startswith("subset study: no IS column") for w in recwarn)


def test_too_few_real_images_for_fid_are_said_computed_and_cached(tmp_path) -> None:
    ctx = _ctx(tmp_path, lambda n, labels: natural_crops(n, seed=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # computed, then read from the cache (whose metadata keeps the count)
            FID(FIDConfig(samples=80, real_samples=20)).compute(ctx)  # 20 real images of 24-dimensional features
        FID(FIDConfig(samples=80, real_samples=40)).compute(ctx)
    said = [str(w.message) for w in caught if "test-only" not in str(w.message)]
    assert ctx.real_calls == 2 and len(said) == 2, said
    assert all(s.startswith("FID's reference statistics come from 20 real images (test split) of 24-dimensional")
               for s in said)
    assert all(s.endswith("raise eval.fid.real_samples (or drop it for the whole split)") for s in said)
    with warnings.catch_warnings(record=True) as caught:  # the whole split, and the train split at that
        warnings.simplefilter("always")
        small = FakeContext(tmp_path / "b", {"train": (REAL[:20], LABELS[:20])}, sampler=lambda n, labels: REAL[:n],
                            options={"feature_extractor": RandomConvFeatures(dim=24, seed=0)})
        FID(FIDConfig(samples=80, split="train")).compute(small)
        FID(FIDConfig(samples=80, split="train", real_samples=10000)).compute(small)  # more than the split has
    said = [str(w.message) for w in caught if "test-only" not in str(w.message)]
    assert len(said) == 2 and all(s.endswith("the split itself is this small: compare only with FIDs from as many "
                                             "images") for s in said), said


def test_inceptions_on_a_gpu_are_released_after_an_evaluation(monkeypatch) -> None:
    from avade.metrics import features

    cpu, gpu = ("w:1", "cpu"), ("w:1", "cuda:0")
    monkeypatch.setattr(features, "_LOADED", {cpu: object(), gpu: object()})
    features.release_gpu_extractors()
    assert list(features._LOADED) == [cpu], "the CPU copy is kept (evaluation processes reuse it)"


def test_reference_statistics_of_changed_data_are_not_reused(tmp_path) -> None:
    # Images added to (or removed from) a split since its statistics were cached: computed again.
    ctx = _ctx(tmp_path, lambda n, labels: REAL[:n])
    ctx.split_fingerprint = lambda split: "n80-aaaa"
    fid = FID(FIDConfig(samples=80, batch_size=32))
    first = fid.compute(ctx)
    assert fid.compute(ctx) == first and ctx.real_calls == 1
    ctx.split_fingerprint = lambda split: "n90-bbbb"
    fid.compute(ctx)
    assert ctx.real_calls == 2


def test_datasets_fingerprint_their_content(tmp_path) -> None:
    from PIL import Image

    from avade.data.base import FileImageDataset, TensorImageDataset

    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    same = TensorImageDataset(images.clone()).content_fingerprint()
    assert TensorImageDataset(images).content_fingerprint() == same
    changed = images.clone()
    changed[0] += 1
    assert TensorImageDataset(changed).content_fingerprint() != same
    late = images.clone()
    late[-1] += 1  # any image, not only the first: the hash samples the whole set
    assert TensorImageDataset(late).content_fingerprint() != same
    assert TensorImageDataset(images[:49]).content_fingerprint() != same
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.new("RGB", (4, 4)).save(files[-1])
    folder = FileImageDataset(files, None, num_classes=0, resolution=4).content_fingerprint()
    assert FileImageDataset(files[:2], None, num_classes=0, resolution=4).content_fingerprint() != folder
    assert FileImageDataset(list(files), None, num_classes=0, resolution=4).content_fingerprint() == folder


def test_posterized_data_keep_their_content_fingerprint() -> None:
    from avade.data.base import TensorImageDataset
    from avade.data.posterized import with_bits

    a = TensorImageDataset(torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8))
    b = TensorImageDataset(torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8))
    assert with_bits(a, 5).content_fingerprint() == a.content_fingerprint()
    assert with_bits(a, 5).content_fingerprint() != with_bits(b, 5).content_fingerprint()


def test_all_of_a_split_and_as_many_images_as_it_has_are_one_cache_entry(tmp_path, monkeypatch) -> None:
    """FID of the whole split and PRD/PRDC/KID of as many real images as it has (e.g. CIFAR-10's test split with
    samples = 10000) read the same images in the same order: they were two cache files, computed twice."""
    from avade.data.synthetic import Synthetic, SyntheticConfig
    from avade.evaluate.study import DataOnlyContext
    from avade.metrics import reference

    config = SyntheticConfig(size=24, test_size=8, resolution=8)
    data = Synthetic(config, split="train")
    extractor = RandomConvFeatures(dim=8, seed=0, size=16)
    ctx = DataOnlyContext(data, "synthetic", {}, cache_dir=tmp_path, device=torch.device("cpu"), config=config)
    computed = []
    compute = reference._compute
    monkeypatch.setattr(reference, "_compute", lambda *a: computed.append(a[3]) or compute(*a))
    mu, sigma = reference.real_stats(ctx, extractor, "train")
    for n in (24, 25):  # as many as the split has, or more: all of it
        assert reference.cache_path(ctx, extractor, "train", n, "stats") == reference.cache_path(
            ctx, extractor, "train", None, "stats")
        assert reference.real_features(ctx, extractor, "train", n).features.shape == (24, 8)
        mu_n, sigma_n, count = reference.real_stats_count(ctx, extractor, "train", n)
        assert torch.equal(mu_n, mu) and torch.equal(sigma_n, sigma) and count == 24
    assert computed == [None] and len(list(tmp_path.iterdir())) == 2
    reference.real_features(ctx, extractor, "train", 23)  # fewer: a random subset, cached apart
    assert computed == [None, 23] and len(list(tmp_path.iterdir())) == 4
