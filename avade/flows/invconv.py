"""Invertible 1x1 convolution (Glow), plain or LU-decomposed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from avade.flows.base import Flow, Shape, check_in_shape
from avade.flows.configs import InvConvConfig


class InvConv(Flow):
    """``y = W x`` at every pixel with a learned ``C x C`` matrix; ``logdet = H * W * log|det W|``.

    ``W`` starts as a random rotation (QR of a Gaussian matrix), so the flow starts volume preserving.
    With ``lu=True`` the permutation ``P`` and the signs of the diagonal are fixed buffers and
    ``log|s|`` is learned, which makes the log-determinant a sum. Without autograd (evaluation,
    sampling) the weight, its inverse and the log-determinant are cached until a parameter changes.
    """

    perm: torch.Tensor  # buffers, registered in __init__
    sign_s: torch.Tensor
    lower_mask: torch.Tensor
    eye: torch.Tensor

    def __init__(self, cfg: InvConvConfig | None = None, *, in_shape: Shape) -> None:
        cfg = cfg or InvConvConfig()
        c, h, w = check_in_shape(in_shape, "invconv")
        super().__init__((c, h, w))
        self.lu = cfg.lu
        q = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64))[0]
        dtype = torch.get_default_dtype()
        if not self.lu:
            self.weight = nn.Parameter(q.to(dtype))
        else:
            p, lower, upper = torch.linalg.lu(q)
            s = torch.diagonal(upper)
            self.register_buffer("perm", p.to(dtype))
            self.register_buffer("sign_s", torch.sign(s).to(dtype))
            lower_mask = torch.tril(torch.ones(c, c, dtype=dtype), -1)
            self.register_buffer("lower_mask", lower_mask, persistent=False)
            self.register_buffer("eye", torch.eye(c, dtype=dtype), persistent=False)
            self.lower = nn.Parameter(lower.to(dtype))
            self.upper = nn.Parameter(torch.triu(upper, 1).to(dtype))
            self.log_s = nn.Parameter(torch.log(s.abs()).to(dtype))
        self._cache: dict[str, tuple[tuple[Any, ...], Any]] = {}

    # -- the matrix and its inverse ----------------------------------------------------------------
    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return lower, upper

    def _weight_logdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W`` and ``log|det W|`` (per pixel)."""
        if not self.lu:
            return self.weight, torch.linalg.slogdet(self.weight)[1]
        lower, upper = self._factors()
        return self.perm @ (lower @ upper), self.log_s.sum()

    def _inverse_weight(self) -> torch.Tensor:
        if not self.lu:
            # inv_ex does not check for singularity, so it never forces a host sync.
            return torch.linalg.inv_ex(self.weight)[0]
        lower, upper = self._factors()
        # W^-1 = U^-1 L^-1 P^T through two triangular solves (more accurate than a general inverse).
        y = torch.linalg.solve_triangular(lower, self.perm.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, y, upper=True)

    def _cached(self, name: str, compute: Callable[[], Any]) -> Any:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            # Autograd needs a fresh graph; a compiled graph computes W in place of a lookup (the
            # cache key, storage pointers and version counters, would be a guard failing every step).
            return compute()
        # Parameters change in place (optimizer, load_state_dict: version bump) or are replaced
        # (.to(), .double(): new storage); either changes the key.
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device)
                    for t in (*self.parameters(recurse=False), *self.buffers(recurse=False)))
        hit = self._cache.get(name)
        if hit is None or hit[0] != key:
            hit = (key, compute())
            self._cache[name] = hit
        return hit[1]

    def weight_matrix(self) -> torch.Tensor:
        """The current ``C x C`` weight."""
        return self._weight_logdet()[0]

    # -- flow --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W x, logdet [B])``, ``W`` a 1x1 convolution; without autograd ``W`` and its log-det are cached."""
        weight, logdet = self._cached("forward", self._weight_logdet)
        c = weight.shape[0]
        y = F.conv2d(x, weight.view(c, c, 1, 1))
        return y, (logdet * (x.shape[2] * x.shape[3])).expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``W^-1 y``; without autograd the inverse weight is cached, as in :meth:`forward`."""
        weight_inv = self._cached("inverse", self._inverse_weight)
        c = weight_inv.shape[0]
        return F.conv2d(y, weight_inv.view(c, c, 1, 1))

    def __getstate__(self) -> dict[str, Any]:
        # The cache is derived data: never pickle or deep-copy it.
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state
