"""Shared neural-network building blocks used by the components."""

from avade.nn.layers import frozen, normed

__all__ = ["frozen", "normed"]
