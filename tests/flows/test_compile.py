"""The built-in flows trace into one graph under ``torch.compile`` (no graph breaks), in both directions,
and the compiled forward/backward equal the eager ones.

This is what makes ``train.compile`` pay off for flows (benchmarks/README.md, Findings). The
``aot_eager`` backend traces forward *and* backward exactly as inductor would, without generating code,
so the check is fast; a graph break anywhere (e.g. a host sync, an untraceable autograd Function)
fails ``fullgraph=True``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import avade

FLOWS: dict[str, tuple[str, dict[str, Any]]] = {
    "glow": ("glow", {"scales": 2, "steps": 2, "hidden": 8, "lu": True}),
    "realnvp masked": ("realnvp", {"scales": 2, "layers": 2, "blocks": 1, "hidden": 8}),
    "realnvp packed": ("realnvp", {"scales": 2, "layers": 2, "blocks": 1, "hidden": 8, "checkerboard": "packed"}),
    "realnvp bn_out": ("realnvp", {"scales": 2, "layers": 2, "blocks": 1, "hidden": 8, "out_batch_norm": True,
                                   "hidden_growth": 2}),
    "realnvp reference": ("realnvp", {"scales": 2, "layers": 2, "blocks": 1, "hidden": 8, "net": "reference"}),
}


@pytest.mark.parametrize("case", list(FLOWS))
def test_flow_compiles_as_one_graph(case: str) -> None:
    name, options = FLOWS[case]
    torch._dynamo.reset()
    flow = avade.create("flow", name, in_shape=(3, 8, 8), **options)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        flow(x)  # data-dependent init (ActNorm, weight norm) runs eagerly once, as in training
        for p in flow.parameters():  # leave the identity init behind: zero last layers hide mistakes
            p.add_(0.05 * torch.randn_like(p))

    def loss(y: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
        return 0.5 * y.square().flatten(1).sum(1).mean() - logdet.mean()

    y_eager, logdet_eager = flow(x)
    loss(y_eager, logdet_eager).backward()
    params = [p for p in flow.parameters() if p.requires_grad]  # the reference net has fixed magnitudes
    grads_eager = [p.grad.clone() for p in params]
    flow.zero_grad(set_to_none=True)

    compiled = torch.compile(flow, backend="aot_eager", fullgraph=True)
    y, logdet = compiled(x)
    loss(y, logdet).backward()
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(logdet, logdet_eager)
    for p, want in zip(params, grads_eager, strict=True):
        torch.testing.assert_close(p.grad, want)

    with torch.no_grad():
        if options.get("out_batch_norm"):  # the batch-norm flow inverts with running averages: eval mode
            flow.eval()
            y = flow(x)[0]
        x_back = torch.compile(flow.inverse, backend="aot_eager", fullgraph=True)(y)
    torch.testing.assert_close(x_back, x)
