"""Evaluation at the paper's scale (50,000 samples) holds each large array once or twice, not more: peak memory
of a subprocess (ru_maxrss) over what the result itself takes, with a cheap stand-in for the Inception."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PRELUDE = """
import json, resource, sys, types, tempfile, pathlib, warnings
import torch
torch.set_num_threads(1)
warnings.simplefilter("ignore")
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
"""

_CASES = {
    # features of n images, 2048-d (as Inception's pool3): the batches and the whole, no third copy
    "extract": """
from avade.metrics.features import FeatureExtractor, extract
class Stand(FeatureExtractor):
    def compute(self, x, probs):
        return x.float().mean((1, 2, 3))[:, None].expand(-1, 2048) + torch.arange(2048.), None
imgs = torch.zeros(100, 3, 8, 8, dtype=torch.uint8)
extract(Stand(), [imgs] * 2)
base = peak()
f, _ = extract(Stand(), (imgs for _ in range(80)))
unit = f.numel() * 4
""",
    # FID's mean and covariance of float32 features: one float64 copy (centred in place), checked in parts
    "stats": """
from avade.metrics.stats import gaussian_stats
x = torch.randn(8000, 2048)
gaussian_stats(x[:100])
base = peak()
gaussian_stats(x)
unit = x.numel() * 4
""",
    # avade sample -n N -o s.npz: the uint8 array np.savez writes, held once (not the batches, the whole and a
    # channels-last copy of it)
    "sample": """
import avade.evaluate.sampling as s
class M(torch.nn.Module):
    num_classes = 0; variant = "av-ade"; data_shape = (3, 64, 64)
    def __init__(self): super().__init__(); self.p = torch.nn.Parameter(torch.zeros(1))
    def sample(self, m, labels, temperature=None, generator=None):
        return torch.randint(0, 256, (m, *self.data_shape), dtype=torch.uint8, generator=generator)
s.load_trained = lambda *a, **k: types.SimpleNamespace(model=M(), datasets=None, class_counts=None)
out = pathlib.Path(tempfile.mkdtemp()) / "s.npz"
s.sample_run("x", n=100, output=out)
base = peak()
s.sample_run("x", n=8000, output=out)
unit = 8000 * 3 * 64 * 64
import numpy as np
with np.load(out) as data:
    assert data["arr_0"].shape == (8000, 64, 64, 3) and data["arr_0"].dtype == np.uint8
""",
}


def _peak_ratio(case: str) -> float:
    code = textwrap.dedent(_PRELUDE) + textwrap.dedent(_CASES[case]) + "\nprint(json.dumps((peak() - base) / unit))\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
@pytest.mark.parametrize(("case", "most"), [("extract", 2.5), ("stats", 3.2), ("sample", 2.0)])
def test_evaluation_holds_large_arrays_at_most_once_or_twice(case, most):
    # Before: extract kept the batches, their concatenation and a clone (3x); gaussian_stats a float64 copy, a
    # centred float64 copy and isfinite's temporaries of the whole (~4x the float32 features); avade sample's
    # .npz the batches, their concatenation and a channels-last copy (~3x the uint8 images).
    assert _peak_ratio(case) < most


def test_real_statistics_are_computed_once_when_not_cached(tmp_path, monkeypatch):
    # real_stats_count computed the covariance of the real features twice (in _compute, for its cache file, and
    # again for its caller): 50,000 x 2048 features, minutes of float64 matrix products on a CPU for nothing.
    import types

    import torch

    import avade.metrics.reference as reference
    from avade.metrics.random_features import RandomConvFeatures

    calls = []
    real_stats = reference.GaussianAccumulator.stats
    monkeypatch.setattr(reference.GaussianAccumulator, "stats", lambda a: calls.append(a.count) or real_stats(a))
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ctx = types.SimpleNamespace(dataset_key="tiny/3x8x8/x", cache_dir=tmp_path, device="cpu",
                                real_batches=lambda split, n=None, batch_size=100: iter([(images, None)]))
    extractor = RandomConvFeatures(dim=8)
    mu, sigma, count = reference.real_stats_count(ctx, extractor, "test")
    assert calls == [12] and count == 12
    cached = reference.real_stats_count(ctx, extractor, "test")  # from the file _compute wrote: the same numbers
    assert calls == [12] and torch.equal(cached[0], mu) and torch.equal(cached[1], sigma)


def test_sample_features_are_shared_within_one_evaluation_only(tmp_path):
    # RunContext kept its sample features for as long as it lived: load_run's context scored the first samples
    # again after the model's temperature (or its weights, or ctx.seed) changed, and held them in memory.
    import torch

    from avade.evaluate import RunContext
    from avade.evaluate.compute import compute_each
    from avade.metrics.random_features import RandomConvFeatures
    from avade.metrics.reference import sample_features

    class Model(torch.nn.Module):
        num_classes = 0
        temperature = 1.0

        def sample(self, m, labels, temperature=None, generator=None):
            drawn.append(m)
            return (torch.rand(m, 3, 8, 8, generator=generator) * 255 * self.temperature).to(torch.uint8)

    drawn: list[int] = []
    ctx = RunContext(Model(), None, None, None, torch.device("cpu"), tmp_path, tmp_path)
    extractor = RandomConvFeatures(dim=8)
    first = sample_features(ctx, extractor, 6).features
    ctx.model.temperature = 0.5
    assert not torch.equal(sample_features(ctx, extractor, 6).features, first)

    class Metric:
        def __init__(self, name):
            self.name = name

        def compute(self, ctx):
            return {self.name: float(sample_features(ctx, extractor, 6).features.mean())}

    drawn.clear()
    compute_each(ctx, [("fid", Metric("fid")), ("is", Metric("is"))], None)
    assert drawn == [6] and ctx.sample_feature_memo is None  # one draw for both metrics, not kept past them
