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
