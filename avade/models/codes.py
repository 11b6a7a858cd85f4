"""Latent codes: a model's latents in its prior's standard coordinates, checked, and paths between two of them.

A code holds one tensor per latent stage (``posterior.stage_ids`` order). In a hierarchical model a lower
group's prior depends on the groups above it, so its raw z means nothing on its own; its code, z measured
in the standard deviations of the prior it was drawn under, is standard normal under the prior at every
stage, so codes interpolate, perturb and mix like the N(0, I) latents of a GAN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from avade.errors import DataError

Codes = list[torch.Tensor]


def checked_codes(what: str, codes: object, shapes: Sequence[tuple[int, ...] | None]) -> Codes:
    """``codes`` as a list of float tensors, one per latent stage, of one batch size and (where ``shapes``
    knows it) their stage's shape; a DataError naming what is wrong otherwise."""
    if isinstance(codes, torch.Tensor) or not isinstance(codes, Sequence):
        raise DataError(f"{what}: codes must be a list of tensors, one per latent stage ({len(shapes)}), as "
                        f"encode returns them; got {type(codes).__name__}")
    if len(codes) != len(shapes):
        # (the order is posterior.stage_ids', not named: the flow alone has no posterior, its one code is f(x))
        stages = f"{len(shapes)} latent stage{'' if len(shapes) == 1 else 's'}"
        raise DataError(f"{what}: got {len(codes)} code tensors, the model has {stages} (one tensor each, in the "
                        "order encode returns them)")
    out: Codes = []
    for k, (code, shape) in enumerate(zip(codes, shapes, strict=True)):
        # (one entry per image; [B, C, H, W] for avade's posteriors, a plugin's as its encode_stage gives them)
        if not isinstance(code, torch.Tensor) or not code.dtype.is_floating_point or code.dim() < 1:
            got = f"{code.dtype} {list(code.shape)}" if isinstance(code, torch.Tensor) else type(code).__name__
            raise DataError(f"{what}: code {k} must be a float tensor of one entry per image, [B, ...] ([B, C, H, W] "
                            f"for a latent map), got {got}")
        if shape is not None and tuple(code.shape[1:]) != tuple(shape):
            raise DataError(f"{what}: code {k} has shape {list(code.shape[1:])} per image; its stage takes "
                            f"{list(shape)}")
        if code.shape[0] != codes[0].shape[0] or code.shape[0] < 1:
            raise DataError(f"{what}: the codes hold {[c.shape[0] for c in codes]} images; every stage needs the "
                            "same number, at least one")
        out.append(code)
    return out


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between the rows of ``a`` and ``b`` ([B, N]) at ``t`` in [0, 1]: along the great
    circle between them, their norms interpolated, which keeps a path between two typical N(0, I) draws
    typical (a straight line passes through the improbably small norms near 0: White 2016). Linear where the
    two are (anti)parallel, where the circle is not defined."""
    a64, b64 = a.double(), b.double()
    na, nb = a64.norm(dim=1, keepdim=True), b64.norm(dim=1, keepdim=True)
    cos = ((a64 * b64).sum(1, keepdim=True) / (na * nb).clamp_min(1e-30)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    ok = sin > 1e-6
    safe = torch.where(ok, sin, torch.ones_like(sin))
    wa = torch.where(ok, torch.sin((1 - t) * omega) / safe, torch.full_like(sin, 1 - t))
    wb = torch.where(ok, torch.sin(t * omega) / safe, torch.full_like(sin, t))
    # the direction on the unit sphere between the two, then the norm interpolated linearly
    direction = wa * a64 / na.clamp_min(1e-30) + wb * b64 / nb.clamp_min(1e-30)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-30)
    out = torch.where(ok, direction * ((1 - t) * na + t * nb), (1 - t) * a64 + t * b64)
    return out.to(a.dtype)


def path(a: Codes, b: Codes, steps: int, spherical: bool = True) -> list[Codes]:
    """``steps`` codes from ``a`` to ``b`` (both ends included), each image's whole code (every stage at once)
    interpolated spherically (:func:`slerp`) or linearly."""
    flat_a = torch.cat([c.reshape(c.shape[0], -1) for c in a], 1)
    flat_b = torch.cat([c.reshape(c.shape[0], -1) for c in b], 1)
    sizes = [c[0].numel() for c in a]
    out = []
    for s in range(steps):
        t = s / (steps - 1) if steps > 1 else 0.0
        flat = slerp(flat_a, flat_b, t) if spherical else torch.lerp(flat_a, flat_b, t)
        if s == 0 or s == steps - 1:  # the ends exactly, whatever rounding the weights have
            flat = flat_a if s == 0 else flat_b
        out.append([part.view_as(c) for part, c in zip(flat.split(sizes, 1), a, strict=True)])
    return out
