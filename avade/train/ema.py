"""An exponential moving average of the generator's weights (``train.ema_decay``).

GAN and hybrid generators sample and score better from a running average of their recent weights than
from the last iterate (Yazıcı et al. 2019; BigGAN, StyleGAN). The average covers the parameters the
generator's optimizer trains (flow, posterior, encoder, decoder; never the critic); buffers (batch-norm
running statistics, ActNorm's init flags) are the live model's. Evaluation, sample grids and
``avade eval`` / ``avade sample`` / :func:`avade.load_model` use the averaged weights when a run has them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from avade.errors import CheckpointError


class WeightAverage:
    """``shadow <- decay * shadow + (1 - decay) * weights`` after every step past ``start`` (until then the
    shadow copies the weights, so the average does not remember the untrained start)."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], decay: float, start: int = 0) -> None:
        self.names = list(averaged_names(model, params))
        self.params = params
        self.decay = decay
        self.start = start
        self.shadow = [p.detach().clone() for p in params]
        self._lerp = get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """After optimizer step number ``step`` (1-based)."""
        current = [p.detach() for p in self.params]
        if step <= self.start:
            torch._foreach_copy_(self.shadow, current)
        else:
            self._lerp(self.shadow, current, None)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it (copied in
        place: compiled graphs and optimizers keep their tensors)."""
        with torch.no_grad():
            live = [p.detach().clone() for p in self.params]
            torch._foreach_copy_([p.detach() for p in self.params], self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in self.params], live)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the model's parameter names (CPU, for safetensors)."""
        return {name: t.detach().cpu().contiguous() for name, t in zip(self.names, self.shadow, strict=True)}

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        """Averaged weights saved by :meth:`state_dict`; CheckpointError when they do not fit."""
        check_fits(tensors, dict(zip(self.names, self.params, strict=True)), path)
        for name, t in zip(self.names, self.shadow, strict=True):
            t.copy_(tensors[name])


def check_fits(tensors: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor], path: Path) -> None:
    """A one-line CheckpointError unless ``tensors`` holds exactly ``params``' names and shapes."""
    from avade.train.checkpoint import check_finite, unfit_hint

    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: ema.safetensors does not fit this model (missing {len(missing)} "
                              f"/ unexpected {len(unexpected)} tensors, e.g. {(missing or unexpected)[0]}); "
                              f"{unfit_hint(path, 'ema.safetensors')}")
    for name, p in params.items():
        if tensors[name].shape != p.shape:
            raise CheckpointError(f"checkpoint {path}: ema.safetensors has {name} of shape "
                                  f"{tuple(tensors[name].shape)}, the model {tuple(p.shape)}; "
                                  f"{unfit_hint(path, 'ema.safetensors')}")
    check_finite(tensors, path, "ema.safetensors")


def averaged_names(model: nn.Module, params: list[nn.Parameter]) -> dict[str, nn.Parameter]:
    """``params`` (the generator's) under their names in ``model``."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(p)]: p for p in params}


def apply_average(model: nn.Module, params: list[nn.Parameter], tensors: dict[str, torch.Tensor],
                  path: Path) -> None:
    """Overwrite ``params`` (the generator's, in ``model``) with a checkpoint's averaged weights, as
    ``avade eval`` / ``avade sample`` / :func:`avade.load_model` do."""
    named = averaged_names(model, params)
    check_fits(tensors, named, path)
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(tensors[name])
