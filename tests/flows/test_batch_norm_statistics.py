"""Batch norm inside coupling networks: running statistics describe data, not the model's samples."""

from __future__ import annotations

import pytest
import torch

from avade import create


def _stats(flow: torch.nn.Module) -> list[torch.Tensor]:
    return [t.clone() for name, t in flow.named_buffers() if name.endswith(("running_mean", "running_var"))]


@pytest.mark.parametrize(("checkerboard", "norm", "net"), [
    ("masked", "weight-norm", "resnet"), ("packed", "weight-norm", "resnet"), ("masked", "batch-norm", "resnet"),
    ("masked", "weight-norm", "reference"), ("packed", "weight-norm", "reference"),
    ("masked", "batch-norm", "reference")])
def test_inverse_in_training_leaves_running_statistics_alone(checkerboard, norm, net):
    # batch-norm as the convolutions' registered norm too, not only the s/t nets' own layers
    flow = create("flow", "realnvp", in_shape=(3, 8, 8), scales=2, blocks=1, hidden=8, batch_norm=True,
                  checkerboard=checkerboard, norm=norm, net=net).train()
    x = torch.randn(6, 3, 8, 8)
    before = _stats(flow)
    assert before
    y, _ = flow(x)
    after_forward = _stats(flow)
    assert any(not torch.equal(a, b) for a, b in zip(before, after_forward, strict=True))
    with torch.no_grad():
        flow.inverse(torch.randn_like(y) * 3)
    assert all(torch.equal(a, b) for a, b in zip(after_forward, _stats(flow), strict=True))


def test_inverse_in_training_still_normalizes_with_batch_statistics():
    flow = create("flow", "realnvp", in_shape=(3, 8, 8), scales=1, blocks=1, hidden=8, batch_norm=True).train()
    with torch.no_grad():
        for p in flow.parameters():  # non-zero output convs, so the s/t networks matter
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(6, 3, 8, 8)
        y, _ = flow(x)
        # Batch statistics in both directions: the inverse of this batch's forward recovers it.
        torch.testing.assert_close(flow.inverse(y), x, rtol=1e-4, atol=1e-4)
