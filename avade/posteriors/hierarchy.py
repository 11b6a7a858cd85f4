"""The latent model the VAE drives: latent groups at some decoder stages (kind ``posterior``).

The model calls ``forward_stage(i, d, h_i, T, y)`` for each ``i in stage_ids`` during its top-down pass
(see :mod:`avade.nets.base`; ``y``: the labels of a class-conditional model, else None) and sums
``log_q - log_p``: a single-sample KL estimate per example that also serves the importance-weighted bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from avade.errors import ConfigError
from avade.nets.shapes import Shape, check_stages
from avade.posteriors.configs import free_bits_field as free_bits_field
from avade.posteriors.configs import kl_field as kl_field
from avade.posteriors.group import LatentGroup, LatentSample


class LatentModel(nn.Module):
    """Latent groups at ``stage_ids``, each a :class:`LatentGroup` with the same options."""

    def __init__(self, stage_shapes: Sequence[Sequence[int]], stage_ids: Iterable[int], *,
                 latent_channels: int, norm: str = "weight-norm", num_classes: int | None = None,
                 iaf_steps: int = 0, iaf_hidden: int = 64, iaf_kernel: int = 3, residual: bool = False,
                 free_bits: float = 0.0, kl: str = "sample", who: str = "posterior") -> None:
        super().__init__()
        self.stage_shapes: list[Shape] = check_stages(stage_shapes, who)
        self.stage_ids: list[int] = sorted(set(stage_ids))
        self.latent_channels = latent_channels
        self.groups = nn.ModuleDict({
            str(i): LatentGroup(self.stage_shapes[i][0], latent_channels, norm=norm, num_classes=num_classes,
                                iaf_steps=iaf_steps, iaf_hidden=iaf_hidden, iaf_kernel=iaf_kernel,
                                residual=residual, free_bits=free_bits, kl=kl)
            for i in self.stage_ids
        })

    def group(self, i: int) -> LatentGroup:
        """The latent group at stage ``i`` (ValueError if that stage carries none)."""
        if i not in self.stage_ids:
            raise ValueError(f"stage {i} carries no latent group; stage_ids = {self.stage_ids}")
        return self.groups[str(i)]  # type: ignore[return-value]

    def latent_shape(self, i: int) -> Shape:
        """``(latent_channels, H_i, W_i)``: the shape of z at stage ``i``."""
        self.group(i)
        return (self.latent_channels, *self.stage_shapes[i][1:])  # type: ignore[return-value]

    def sample(self, i: int, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0,
               noise: torch.Tensor | None = None, y: torch.Tensor | None = None) -> LatentSample:
        """Sample z at stage ``i`` (see :meth:`LatentGroup.sample`) without merging it into ``d``."""
        return self.group(i).sample(d, h, temperature, noise, y)

    def forward_stage(self, i: int, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0,
                      y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample z_i from q(z_i|h_i, d, y) (or from p(z_i|d, y) at ``temperature`` if ``h`` is None) and
        return ``(d_new, log_q, log_p)``: ``d_new`` has ``d``'s shape; ``log_q``, ``log_p`` are ``[B]``
        (log_q = 0 for prior samples). ``y``: class labels ([B]) of a conditional model, else None."""
        return self.group(i)(d, h, temperature, y)

    def encode_stage(self, i: int, d: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None,
                     sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d_new, code)``: ``d`` updated by z from q(z_i|h_i, d, y) (deterministic unless ``sample``) and z's
        code, its coordinates under the prior p(z_i|d, y), standard normal there (``latent_shape(i)``)."""
        return self.group(i).encode(d, h, y, sample)

    def decode_stage(self, i: int, d: torch.Tensor, code: torch.Tensor,
                     y: torch.Tensor | None = None) -> torch.Tensor:
        """``d`` updated by the z of prior coordinates ``code`` (:meth:`encode_stage`'s inverse: code 0 is the
        prior's mode, a standard normal code a prior sample)."""
        return self.group(i).decode(d, code, y)

    def analytic_kl(self, i: int, d: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Closed-form KL(q || p) at stage ``i`` ([B]); ValueError for a group with IAF."""
        return self.group(i).analytic_kl(d, h, y)


def top_stages(stage_shapes: Sequence[Sequence[int]], groups: int | None, who: str) -> list[int]:
    """The indices of the top ``groups`` stages (all stages when ``groups`` is None)."""
    n = len(stage_shapes)
    if groups is None:
        return list(range(n))
    if groups > n:
        raise ConfigError(f"{who}: groups = {groups} but the encoder has only {n} stages; use groups <= {n}",
                          path="groups")
    return list(range(n - groups, n))
