"""Shared neural-network building blocks used by the components."""

from avade.nn.layers import normed

__all__ = ["normed"]
