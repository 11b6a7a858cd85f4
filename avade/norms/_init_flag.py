"""A data-dependent-init flag that is checkpointed (a buffer) but read without a host sync."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from avade.errors import DataError


class InitFlag(nn.Module):
    """``done`` is a buffer (saved in state dicts); a Python mirror avoids reading it every forward,
    which on a GPU would be a device-to-host sync per layer."""

    done: torch.Tensor  # buffers, registered in __init__

    def __init__(self, done: bool = False) -> None:
        super().__init__()
        self.register_buffer("done", torch.tensor(done))
        self._known = done

    def is_set(self) -> bool:
        """Whether the init has run; reads the buffer (a host sync on a GPU) only until it is known to be set.
        A method rather than ``__bool__`` alone: torch.compile cannot trace ``bool()`` of a module (a graph break
        at every weight-normed layer) but traces this, the known flag short-circuiting the read."""
        if not self._known and bool(self.done):
            self._known = True
        return self._known

    def __bool__(self) -> bool:
        return self.is_set()

    def set(self) -> None:
        self.done.fill_(True)
        self._known = True

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # known from the loaded value (a checkpoint's CPU tensor: no host sync): left unknown, a resumed
        # train.compile run's first step broke its graph at every layer reading the buffer (the run that
        # initialised before compiling never did)
        self._known = loaded_as_set(state_dict.get(prefix + "done"))


def loaded_as_set(value: Any) -> bool:
    """Whether a state dict's init flag is a one-value tensor holding True (not a meta or misshapen one: the
    buffer is then read when first needed)."""
    return isinstance(value, torch.Tensor) and not value.is_meta and value.numel() == 1 and bool(value)


def check_init_batch(out: torch.Tensor, dims: Sequence[int], who: str, off: str) -> None:
    """A DataError unless the batch a data-dependent init reads has at least 2 values per output channel
    (over ``dims``): with one (batch 1 at a 1x1 stage) its standard deviation is NaN or 0, and the init
    would leave NaN or enormous weights that no training step recovers from. ``off`` says how to turn it off."""
    n = math.prod(out.shape[d] for d in dims)
    if n < 2:
        raise DataError(f"{who}: the data-dependent init reads one value per output channel from its first "
                        f"training batch (output {list(out.shape)}), which has no standard deviation; train with "
                        f"at least 2 images per batch (data.batch_size), or {off}")
