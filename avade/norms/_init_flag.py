"""A data-dependent-init flag that is checkpointed (a buffer) but read without a host sync."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class InitFlag(nn.Module):
    """``done`` is a buffer (saved in state dicts); a Python mirror avoids reading it every forward,
    which on a GPU would be a device-to-host sync per layer."""

    done: torch.Tensor  # buffers, registered in __init__

    def __init__(self, done: bool = False) -> None:
        super().__init__()
        self.register_buffer("done", torch.tensor(done))
        self._known = done

    def __bool__(self) -> bool:
        if not self._known and bool(self.done):
            self._known = True
        return self._known

    def set(self) -> None:
        self.done.fill_(True)
        self._known = True

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._known = False
        super()._load_from_state_dict(*args, **kwargs)
