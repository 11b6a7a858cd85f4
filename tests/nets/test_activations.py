"""avade.nn.elu is torch's ELU: values to float rounding, the same gradients, double backward."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from avade.nn import elu


def test_values_match_torch_including_special_values() -> None:
    x = torch.cat([torch.randn(10_000) * 4, torch.tensor([0.0, -0.0, 1e-8, -1e-8, -100.0, math.inf, -math.inf])])
    torch.testing.assert_close(elu(x), F.elu(x), rtol=0, atol=2e-7)
    assert elu(torch.tensor([math.nan])).isnan().all()
    assert elu(x).shape == x.shape and elu(x).dtype == x.dtype


def test_gradients_match_torch_and_double_backward() -> None:
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    g = torch.randn_like(x)
    (ours,) = torch.autograd.grad(elu(x), x, g)
    (theirs,) = torch.autograd.grad(F.elu(x), x, g)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    xd = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(elu, (xd,))
    assert torch.autograd.gradgradcheck(elu, (xd,))


def test_keeps_the_memory_format() -> None:
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert elu(x).is_contiguous(memory_format=torch.channels_last)


def test_other_devices_use_torchs_kernel(monkeypatch) -> None:
    from avade.nn import activations

    def cpu_path_only(x):
        raise AssertionError("the exp-based path is for CPU tensors only")

    monkeypatch.setattr(activations._ELU, "apply", cpu_path_only)
    assert elu(torch.empty(2, 3, device="meta")).device.type == "meta"


def test_torch_func_transforms() -> None:
    x = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(elu)(x.view(5, 1)).view(5), F.elu(x))
    torch.testing.assert_close(torch.func.jacrev(elu)(x), torch.func.jacrev(F.elu)(x))
