"""KID with ``real_samples`` unset extracts at most ``subsets * subset_size`` real images (its subsets can touch
no more): a fixed random pool of a larger split (LSUN bedroom's 3M images: 24 GB of features before), the whole
split, with the values of before, when it is no larger."""

from __future__ import annotations

import torch

from avade.metrics.features import get_extractor
from avade.metrics.fid import FID, FIDConfig
from avade.metrics.kid import KID, KIDConfig, kernel_inception_distance
from avade.metrics.reference import real_features, sample_features
from avade.testing import SyntheticEvalContext


class _SizedContext(SyntheticEvalContext):
    """The synthetic context with ``split_size`` (as avade's RunContext has), counting the real images it yields."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.real_images = 0

    def split_size(self, split: str) -> int:
        return len(self._real[split][0])

    def real_batches(self, split, n=None, batch_size=100):
        for x, y in super().real_batches(split, n, batch_size):
            self.real_images += len(x)
            yield x, y


def _kid_of_the_whole_split(ctx, cfg: KIDConfig) -> dict[str, float]:
    """KID as computed before the pool: every real image of the split."""
    extractor = get_extractor(ctx.options, ctx.device)
    real = real_features(ctx, extractor, cfg.split, None, cfg.batch_size).features
    fake = sample_features(ctx, extractor, cfg.samples, cfg.batch_size).features
    mean, std = kernel_inception_distance(real, fake, cfg.subsets, cfg.subset_size, cfg.degree, cfg.gamma, cfg.coef,
                                          torch.Generator().manual_seed(cfg.seed))
    return {"kid_mean": mean, "kid_std": std}


def test_a_split_no_larger_than_the_pool_gives_the_kid_of_before(tmp_path) -> None:
    for size, subsets in ((96, 4), (96, 3)):  # pools of 128 and of exactly the split's 96 images
        cfg = KIDConfig(samples=64, subsets=subsets, subset_size=32, batch_size=40)
        ctx = _SizedContext(size=size, root=tmp_path / f"{subsets}")
        kid = KID(cfg)
        assert kid.compute(ctx) == _kid_of_the_whole_split(SyntheticEvalContext(size=size), cfg)
        assert kid.used["real_images"] == size and ctx.real_images == size
        assert {p.name.split("-")[-1].split(".")[0] for p in ctx.cache_dir.iterdir()} == {"all"}


def test_a_split_larger_than_the_pool_extracts_only_the_pool(tmp_path) -> None:
    cfg = KIDConfig(samples=64, subsets=2, subset_size=16, batch_size=10)  # pool of 32 of 96 images
    ctx = _SizedContext(size=96, root=tmp_path / "a")
    kid = KID(cfg)
    got = kid.compute(ctx)
    assert ctx.real_images == 32 and kid.used == {"real_images": 32, "subset_size": 16}
    # the images real_samples = 32 takes (a fixed random subset, cached as such)
    assert got == KID(KIDConfig(samples=64, subsets=2, subset_size=16, real_samples=32, batch_size=10)).compute(
        SyntheticEvalContext(size=96))
    assert {p.name.split("-")[-1].split(".")[0] for p in ctx.cache_dir.iterdir()} == {"rand32"}
    # FID of those real images shares KID's cache files both ways: neither extracts them again
    FID(FIDConfig(samples=64, real_samples=32)).compute(ctx)
    assert ctx.real_images == 32
    fid_first = _SizedContext(size=96, root=tmp_path / "b")
    FID(FIDConfig(samples=64, real_samples=32, batch_size=10)).compute(fid_first)
    assert KID(cfg).compute(fid_first) == got and fid_first.real_images == 32

def test_the_pooled_kid_is_deterministic(tmp_path) -> None:
    cfg = KIDConfig(samples=64, subsets=3, subset_size=8)
    first, second = (KID(cfg).compute(_SizedContext(size=96, root=tmp_path / name)) for name in "ab")
    assert first == second and first["kid_std"] > 0
