"""The optimizers of ``train.optimizer`` and the gradient norm that clipping and the skip of bad steps read."""

from __future__ import annotations

import torch


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float,
                   betas: tuple[float, float]) -> torch.optim.Optimizer:
    """The ``train.optimizer`` named ``name`` (adamax or adam) over ``params``."""
    cls = {"adamax": torch.optim.Adamax, "adam": torch.optim.Adam}[name]
    # foreach (multi-tensor) updates on CPU too, where torch defaults to a per-parameter loop: the same
    # numbers (bit for bit), about 40 % less optimizer time for the many small tensors of these models.
    return cls(params, lr=lr, betas=betas, foreach=True)


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all ``grads`` together (``clip_grad_norm_``'s, without the clipping)."""
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None:
        return get_total_norm(grads)
    if not grads:
        return torch.tensor(0.0)
    norms = [torch.linalg.vector_norm(g) for g in grads]
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
