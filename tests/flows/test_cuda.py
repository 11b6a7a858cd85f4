"""GPU-only checks: training forwards run without host synchronisations (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

import avade

pytestmark = pytest.mark.cuda


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "name, config",
    [
        ("glow", {"scales": 2, "steps": 2, "hidden": 16, "lu": True}),
        ("glow", {"scales": 2, "steps": 2, "hidden": 16, "lu": False}),
        ("realnvp", {"scales": 2, "blocks": 1, "hidden": 16, "norm": "none"}),
    ],
)
def test_forward_and_inverse_do_not_sync(name, config) -> None:
    torch.set_default_dtype(torch.float32)
    flow = avade.create("flow", name, in_shape=(3, 16, 16), **config).cuda().train()
    x = torch.randn(8, 3, 16, 16, device="cuda")
    flow(x)  # first call: data-dependent init reads its flag once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y, logdet = flow(x)
        (y.square().sum() - logdet.sum()).backward()
        with torch.no_grad():
            flow.eval()
            flow.inverse(flow(x)[0])
    finally:
        torch.cuda.set_sync_debug_mode("default")
