"""Binary masks that split an image's dimensions into a kept half and a transformed half."""

from __future__ import annotations

import torch


def checkerboard(shape: tuple[int, int, int], parity: int) -> torch.Tensor:
    """``[1, C, H, W]`` mask that is 1 where ``(row + col) % 2 == parity``, in every channel."""
    c, h, w = shape
    rows = torch.arange(h).view(h, 1)
    cols = torch.arange(w).view(1, w)
    board = ((rows + cols) % 2 == parity).float()
    return board.expand(c, h, w).reshape(1, c, h, w).clone()


def channel(shape: tuple[int, int, int], parity: int) -> torch.Tensor:
    """``[1, C, H, W]`` mask that is 1 on the first ``ceil(C/2)`` channels (the others if ``parity``)."""
    c, h, w = shape
    first = torch.zeros(c)
    first[: (c + 1) // 2] = 1.0
    keep = first if parity == 0 else 1.0 - first
    return keep.view(1, c, 1, 1).expand(1, c, h, w).clone()
