"""The k-sample importance-weighted bound is ``logsumexp_j(log w_j) - log k`` (Burda et al. 2016), checked
against that formula with importance weights the test chooses."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.models import build_model


@pytest.mark.parametrize("offsets", [[0.0, 0.0, 0.0], [0.0, 1.5, -2.0, 0.25]])
def test_the_importance_weighted_bound_is_the_log_mean_of_the_weights(monkeypatch, offsets) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_recipe(), (3, 8, 8), 0).eval()
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    batch, k = x.shape[0], len(offsets)
    original = model._top_down
    shifts = torch.tensor(offsets, dtype=torch.float32).repeat_interleave(batch)  # row j*batch+i: offsets[j]

    def top_down(n, hs, labels, temperature):
        # the k copies of one image get the same latents, with log p shifted by offsets[j]: log w_j = log w + c_j
        mean, log_q, log_p = original(batch, None if hs is None else [h[:batch] for h in hs], labels, temperature)
        reps = n // batch
        return (mean.repeat(reps, *([1] * (mean.dim() - 1))), log_q.repeat(reps),
                log_p.repeat(reps) + (shifts if reps == k else 0.0))

    monkeypatch.setattr(model, "_top_down", top_down)

    def bound(importance_samples: int) -> torch.Tensor:
        torch.manual_seed(1)
        with torch.no_grad():
            return model.bound(x, None, torch.Generator().manual_seed(2), importance_samples)["log_px"]

    single, weighted = bound(1), bound(k)
    expected = single + (torch.logsumexp(torch.tensor(offsets, dtype=torch.float64), 0) - math.log(k)).item()
    # (log p(x) is ~1e3 nats in float32: 1e-2 is far below the log k and spread of the offsets)
    torch.testing.assert_close(weighted, expected.to(weighted.dtype), rtol=0, atol=1e-2)
