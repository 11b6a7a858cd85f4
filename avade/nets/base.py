"""The encoder/decoder interfaces the VAE model drives (bottom-up pass, then a top-down pass by stages).

``stage_shapes`` lists ``(C, H, W)`` per stage, index 0 = bottom (finest), last = top (coarsest). The
model runs::

    hs = encoder(x, y)                                  # one feature map per stage
    d = decoder.initial_state(B)                        # learned constant at the top stage
    for i in reversed(range(len(stage_shapes))):
        if i in posterior.stage_ids:
            d, log_q, log_p = posterior.forward_stage(i, d, hs[i], T, y)
        d = decoder.forward_stage(i, d, y)              # stage i -> stage i-1 (stage 0 keeps its shape)
    mean = decoder.head(d, y)                           # [B, *out_shape]
"""

from __future__ import annotations

import torch
from torch import nn

from avade.errors import ConfigError
from avade.nets.shapes import Shape, as_shape, check_batch, check_stages
from avade.nn import elu


class Encoder(nn.Module):
    """Bottom-up deterministic pass: ``forward(x, y=None)`` -> one feature map per stage, bottom to top.

    Subclasses fill ``self.stages`` (modules with ``forward(x, y)``, one per stage) and may set
    ``self.stem`` (applied before the first stage).
    """

    stage_shapes: list[Shape]
    stages: nn.ModuleList
    in_shape: Shape | None = None  # set by a subclass: inputs of another shape are refused (see forward)
    who: str = "encoder"

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
        """One feature map per stage, bottom (finest) to top, from ``x`` and optional labels ``y``."""
        if self.in_shape is not None:
            # another size ran through the convolutions into feature maps of other shapes than stage_shapes,
            # which failed later, elsewhere (the posterior, the decoder), or broadcast silently
            check_batch(x, self.in_shape, self.who)
        stem = self._modules.get("stem")  # optional submodule (a class default would shadow it)
        if stem is not None:
            x = stem(x, y)
        hs = []
        for stage in self.stages:
            x = stage(x, y)
            hs.append(x)
        return hs


class Decoder(nn.Module):
    """Top-down pass by stages: a learned top state, one block per stage, and an output head.

    Subclasses fill ``self.stages`` (one module with ``forward(d, y)`` per stage) and ``self.out`` (the
    head conv applied to ``elu(d)``). The head gives the Gaussian *mean* of the data (or flow features);
    the model owns the scale.
    """

    def __init__(self, stage_shapes: list[Shape], out_shape: Shape, who: str) -> None:
        super().__init__()
        self.stage_shapes = check_stages(stage_shapes, who)
        self.out_shape = as_shape(out_shape, f"{who}: out_shape")
        if self.stage_shapes[0][1:] != self.out_shape[1:]:
            raise ConfigError(
                f"{who}: the finest stage is {self.stage_shapes[0][1]}x{self.stage_shapes[0][2]} but the "
                f"output is {self.out_shape[1]}x{self.out_shape[2]}; stage 0 must have the output resolution"
            )
        # A learned constant rather than zeros, so that gradients reach the first layers that read it.
        self.top = nn.Parameter(torch.randn(1, *self.stage_shapes[-1]))
        self.stages = nn.ModuleList()
        self.out: nn.Module

    def initial_state(self, batch: int) -> torch.Tensor:
        """The top-down state at the top stage: ``[batch, *stage_shapes[-1]]``."""
        return self.top.expand(batch, -1, -1, -1)

    def forward_stage(self, i: int, d: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Block ``i``: a state of shape ``stage_shapes[i]`` -> ``stage_shapes[i-1]`` (stage 0 keeps it)."""
        return self.stages[i](d, y)

    def head(self, d: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Stage-0 state -> the output mean, ``[B, *out_shape]``."""
        return self.out(elu(d), y)
