"""A reference features file without class probabilities (written for FID, say, or by an older avade) is not
taken for a metric that needs them (IS, gan-test): they are computed, and the file rewritten with them."""

from __future__ import annotations

import torch
from metric_helpers import crops_against_noise
from safetensors.torch import load_file, save_file

from avade.metrics import reference
from avade.metrics.random_features import RandomConvFeatures


def test_a_cached_features_file_without_probs_is_recomputed_for_an_extractor_with_them(tmp_path) -> None:
    ctx = crops_against_noise(tmp_path, 6, "test")
    extractor = RandomConvFeatures(dim=8, seed=0, num_classes=5)
    path = reference.cache_path(ctx, extractor, "test", None, "features")
    save_file({"features": torch.zeros(6, 8)}, str(path))
    found = reference.real_features(ctx, extractor, "test")
    assert found.probs is not None and found.probs.shape == (6, 5) and bool(found.features.abs().sum() > 0)
    assert "probs" in load_file(str(path))


def test_asking_first_for_as_many_images_as_the_split_has_computes_all_of_it(tmp_path, monkeypatch) -> None:
    """(the "all" file then says it holds all of the split, in the split's own order, whichever call wrote it)"""
    from avade.data.synthetic import Synthetic, SyntheticConfig
    from avade.evaluate.study import DataOnlyContext

    config = SyntheticConfig(size=24, test_size=8, resolution=8)
    extractor = RandomConvFeatures(dim=8, seed=0, size=16)
    computed = []
    compute = reference._compute
    monkeypatch.setattr(reference, "_compute", lambda *a: computed.append(a[3]) or compute(*a))
    for call in (reference.real_stats_count, reference.real_features):
        (tmp_path / call.__name__).mkdir()
        ctx = DataOnlyContext(Synthetic(config, split="train"), "synthetic", {}, cache_dir=tmp_path / call.__name__,
                              device=torch.device("cpu"), config=config)
        call(ctx, extractor, "train", 24)
    assert computed == [None, None]
