"""FID's reference statistics of a huge split (LSUN bedroom's 3M training images: 24 GB of 2048-d features) are
streamed: one batch held at a time, not all the features, with the two-pass mean and covariance's values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from avade.metrics import reference
from avade.metrics.random_features import RandomConvFeatures
from avade.metrics.stats import GaussianAccumulator, gaussian_stats

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_streamed_statistics_equal_the_two_pass_ones(offset) -> None:
    # (with a large common offset, sum(x x^T) - n mu mu^T would lose ~8 of float64's 16 digits)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3001, 16, generator=g) * torch.linspace(0.1, 3, 16) + offset).float()
    x[:, 1] = x[:, 0] * 0.5 + x[:, 1] * 0.01  # correlated columns
    mu, sigma = gaussian_stats(x)
    accumulator = GaussianAccumulator()
    for part in torch.split(x, [1, 99, 0, 1000, 1, 1900]):  # uneven batches, one empty
        accumulator.update(part)
    mu_s, sigma_s = accumulator.stats()
    assert accumulator.count == 3001 and mu_s.dtype == sigma_s.dtype == torch.float64
    assert torch.allclose(mu_s, mu, rtol=1e-10, atol=0)
    assert torch.allclose(sigma_s, sigma, rtol=1e-10, atol=1e-12 * float(sigma.abs().max()))


def test_streamed_statistics_refuse_too_few_and_non_finite_rows() -> None:
    accumulator = GaussianAccumulator()
    accumulator.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="N >= 2"):
        accumulator.stats()
    accumulator.update(torch.tensor([[float("nan"), 0, 0, 0], [1.0, 2, 3, 4]]))
    with pytest.raises(ValueError, match="1 of the 3 feature rows hold NaN"):
        accumulator.stats()
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        accumulator.update(torch.zeros(2, 5))


def _ctx(tmp_path, batches):
    return types.SimpleNamespace(dataset_key="tiny/3x8x8/x", cache_dir=tmp_path, device="cpu",
                                 real_batches=lambda split, n=None, batch_size=100: iter([(b, None) for b in batches]))


def test_statistics_over_the_limit_are_streamed_and_write_no_features_file(tmp_path, monkeypatch) -> None:
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, (k, 3, 8, 8), dtype=torch.uint8, generator=g) for k in (7, 5, 9)]
    extractor = RandomConvFeatures(dim=8, num_classes=3)  # (with probabilities: not computed once streaming)
    (tmp_path / "a").mkdir()
    want_mu, want_sigma = gaussian_stats(reference.real_features(_ctx(tmp_path / "a", batches), extractor,
                                                                 "test").features)
    (tmp_path / "b").mkdir()
    monkeypatch.setattr(reference, "KEEP_FEATURES_BYTES", 8 * 4 * 10)  # features of 10 images: the first batch
    mu, sigma, count = reference.real_stats_count(_ctx(tmp_path / "b", batches), extractor, "test")
    assert count == 21 and [p.name.split(".")[-2] for p in (tmp_path / "b").iterdir()] == ["stats"]
    assert torch.allclose(mu, want_mu, rtol=1e-10) and torch.allclose(sigma, want_sigma, rtol=1e-10, atol=1e-12)
    cached = reference.real_stats_count(_ctx(tmp_path / "b", []), extractor, "test")  # from the stats file
    assert torch.equal(cached[0], mu) and torch.equal(cached[1], sigma) and cached[2] == 21
    # KID / PRD / PRDC of the same images then extract them (and write the features file)
    assert reference.real_features(_ctx(tmp_path / "b", batches), extractor, "test").features.shape == (21, 8)


def test_statistics_within_the_limit_keep_the_features_file(tmp_path) -> None:
    # (FID then KID of the same images: one extraction, as before)
    batches = [torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)] * 2
    extractor = RandomConvFeatures(dim=8)
    reference.real_stats_count(_ctx(tmp_path, batches), extractor, "test")
    assert sorted(p.name.split(".")[-2] for p in tmp_path.iterdir()) == ["features", "stats"]
    assert reference.real_features(_ctx(tmp_path, []), extractor, "test").features.shape == (12, 8)


_STREAM = """
import json, resource, tempfile, types, pathlib, warnings
import torch
torch.set_num_threads(1)
warnings.simplefilter("ignore")
from avade.metrics import reference
from avade.metrics.features import FeatureExtractor
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
reference.KEEP_FEATURES_BYTES = 0  # as a split of millions of images does by itself (no effect before streaming)
D, B, BATCHES = 64, 8000, 100
class Stand(FeatureExtractor):
    hash = "stand"
    def compute(self, x, probs):
        return torch.randn(len(x), D) + 1e3, None
image = torch.zeros(B, 1, 1, 1, dtype=torch.uint8)
def ctx(batches):
    return types.SimpleNamespace(dataset_key=f"big{batches}", cache_dir=pathlib.Path(tempfile.mkdtemp()),
                                 device="cpu", real_batches=lambda split, n=None, batch_size=100:
                                 ((image, None) for _ in range(batches)))
reference.real_stats_count(ctx(2), Stand(), "train")
base = peak()
mu, sigma, count = reference.real_stats_count(ctx(BATCHES), Stand(), "train")
assert count == B * BATCHES and mu.shape == (D,)
print(json.dumps((peak() - base) / (B * BATCHES * D * 4)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_reference_statistics_hold_one_batch_not_all_the_features() -> None:
    # Before: real_stats_count extracted all the features (the batches and their concatenation), then a float64
    # copy for the covariance: ~4x the float32 features (at LSUN bedroom's 3M images, ~100 GB). Now: one batch.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_STREAM)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ratio = float(json.loads(done.stdout.strip().splitlines()[-1]))
    assert ratio < 0.1, f"peak memory {ratio:.2f}x the features (of 800,000 images): they were held, not streamed"


def test_batches_are_drawn_in_inference_mode_and_the_caller_runs_outside_it() -> None:
    # As extract drew them before iter_features: a context's sample_batches (a model sampling, in a custom
    # EvalContext without torch.no_grad) must record no autograd graph; the caller's code between two batches
    # (the streamed statistics' updates) runs in the mode it called from.
    from avade.metrics.features import extract, iter_features

    modes = []

    def batches():
        for _ in range(2):
            modes.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
            yield torch.zeros(3, 3, 8, 8, dtype=torch.uint8)

    extractor = RandomConvFeatures(dim=4)
    assert extract(extractor, batches())[0].shape == (6, 4)
    assert modes == [(False, True)] * 2
    for _ in iter_features(extractor, batches()):
        assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    assert modes == [(False, True)] * 4
