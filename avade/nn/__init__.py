"""Shared neural-network building blocks used by the components."""

from avade.nn.activations import elu
from avade.nn.conv import Conv2d
from avade.nn.layers import frozen, normed

__all__ = ["Conv2d", "elu", "frozen", "normed"]
