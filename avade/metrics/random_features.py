"""A tiny fixed random conv net as a stand-in feature extractor -- FOR TESTS AND SMOKE RUNS ONLY.

Its numbers are not Inception metrics and are never comparable to published FID/IS. It is never picked
automatically: it is used only when passed explicitly (``options["feature_extractor"]``), and metrics
warn whenever they report with it (``is_reference = False``).
"""

from __future__ import annotations

import hashlib
import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

from avade.metrics.features import FeatureExtractor


class RandomConvFeatures(FeatureExtractor):
    """Deterministic random 3-layer conv net: ``dim`` pooled features and ``num_classes`` softmax outputs.

    Same ``(dim, seed, num_classes)`` -> same weights on every machine (drawn from a seeded CPU generator).
    Images are resized to ``size`` x ``size`` and scaled to [-1, 1].
    """

    is_reference = False

    head: torch.Tensor  # buffers, registered in __init__

    def __init__(self, dim: int = 64, seed: int = 0, num_classes: int = 10, size: int = 32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        widths = [3, 16, 32, dim]
        for i, (cin, cout) in enumerate(itertools.pairwise(widths)):
            w = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (cin * 9)) ** 0.5
            self.register_buffer(f"w{i}", w)
            self.register_buffer(f"b{i}", torch.randn(cout, generator=g) * 0.1)
        self.register_buffer("head", torch.randn(dim, num_classes, generator=g) * dim**-0.5)
        self.size = size
        self.has_probs = num_classes > 0
        self.name = f"random-conv(dim={dim}, seed={seed}; test only)"
        self.source = "random weights (test only)"
        key = f"random-conv/{dim}/{seed}/{num_classes}/{size}"
        self.hash = "rc" + hashlib.sha256(key.encode()).hexdigest()[:10]

    def compute(self, x: Tensor, probs: bool) -> tuple[Tensor, Tensor | None]:
        """See :meth:`FeatureExtractor.compute`: three fixed random convolutions, mean-pooled."""
        h = x.float() / 127.5 - 1.0
        if h.shape[-2:] != (self.size, self.size):
            h = F.interpolate(h, size=(self.size, self.size), mode="bilinear", align_corners=False)
        for i, stride in enumerate((1, 2, 2)):
            h = F.conv2d(h, getattr(self, f"w{i}"), getattr(self, f"b{i}"), stride=stride, padding=1)
            h = F.relu(h) if i < 2 else h
        feats = h.mean(dim=(2, 3))
        p = torch.softmax(feats @ self.head, dim=1) if probs else None
        return feats, p
