"""Every registered encoder/decoder pair runs the VAE's top-down loop with every registered posterior."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import avade
from avade.nets.blocks import ZeroScaled

IN_SHAPE = (3, 16, 16)
# Tiny settings for the built-ins; components from plugins run with their defaults.
ENCODER_OPTS: dict[str, dict[str, Any]] = {
    "conv": {"channels": (4, 6, 8)},
    "resnet": {"channels": (4, 6, 8), "stem": 4},
}
POSTERIOR_CASES: dict[str, dict[str, Any]] = {
    "diagonal": {"latent_channels": 3},
    "iaf": {"latent_channels": 3, "iaf_hidden": 6, "iaf_steps": 2},
    "topdown": {"latent_channels": 3},
    "topdown-iaf": {"latent_channels": 3, "iaf_hidden": 6, "iaf_steps": 1},
}


def _names(kind: str) -> list[str]:
    return [info.name for info in avade.get_registry().list(kind)]


PAIRS = sorted(set(_names("encoder")) & set(_names("decoder")))
POSTERIORS = [pytest.param(name, POSTERIOR_CASES.get(name, {}), id=name) for name in _names("posterior")]
if "topdown" in _names("posterior"):
    POSTERIORS.append(pytest.param("topdown", POSTERIOR_CASES["topdown-iaf"], id="topdown-iaf"))


def build(net: str, posterior: str, post_opts: dict[str, Any]) -> tuple[Any, Any, Any]:
    enc = avade.create("encoder", net, in_shape=IN_SHAPE, **ENCODER_OPTS.get(net, {}))
    dec = avade.create("decoder", net, stage_shapes=enc.stage_shapes, out_shape=IN_SHAPE)
    post = avade.create("posterior", posterior, stage_shapes=enc.stage_shapes, **post_opts)
    return enc, dec, post


def run_loop(enc: Any, dec: Any, post: Any, x: torch.Tensor | None, batch: int, temperature: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's loop (the contract of avade.nets.base); h = None samples from the prior."""
    hs = enc(x) if x is not None else None
    d = dec.initial_state(batch)
    log_q = log_p = torch.zeros(batch)
    n = len(enc.stage_shapes)
    for i in reversed(range(n)):
        assert d.shape[1:] == enc.stage_shapes[i]
        if i in post.stage_ids:
            d, lq, lp = post.forward_stage(i, d, hs[i] if hs is not None else None, temperature)
            assert d.shape[1:] == enc.stage_shapes[i] and lq.shape == lp.shape == (batch,)
            log_q, log_p = log_q + lq, log_p + lp
        d = dec.forward_stage(i, d)
        assert d.shape[1:] == enc.stage_shapes[max(i - 1, 0)]
    return dec.head(d), log_q, log_p


@pytest.mark.parametrize("posterior,post_opts", POSTERIORS)
@pytest.mark.parametrize("net", PAIRS)
def test_loop_shapes_and_gradients(net: str, posterior: str, post_opts: dict[str, Any]) -> None:
    torch.manual_seed(0)
    enc, dec, post = build(net, posterior, post_opts)
    assert [len(s) for s in enc.stage_shapes] == [3] * len(enc.stage_shapes)
    assert post.stage_ids and set(post.stage_ids) <= set(range(len(enc.stage_shapes)))
    # Zero-initialised gains block gradients to the layer they scale: perturb them first.
    for module in (*dec.modules(), *post.modules()):
        if isinstance(module, ZeroScaled):
            module.scale.data.normal_(0.0, 0.5)
    x = torch.randn(2, *IN_SHAPE)
    mean, log_q, log_p = run_loop(enc, dec, post, x, 2)
    assert mean.shape == (2, *IN_SHAPE)
    assert torch.isfinite(mean).all() and torch.isfinite(log_q).all() and torch.isfinite(log_p).all()
    assert (log_q != 0).all()
    loss = (mean - x).square().mean() + (log_q - log_p).mean()
    loss.backward()
    params = [*enc.named_parameters(), *dec.named_parameters(), *post.named_parameters()]
    dead = [name for name, p in params if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("posterior,post_opts", POSTERIORS)
@pytest.mark.parametrize("net", PAIRS)
def test_loop_samples_from_prior(net: str, posterior: str, post_opts: dict[str, Any]) -> None:
    torch.manual_seed(1)
    enc, dec, post = build(net, posterior, post_opts)
    with torch.no_grad():
        mean, log_q, log_p = run_loop(enc, dec, post, None, 3, temperature=0.7)
        assert mean.shape == (3, *IN_SHAPE) and torch.isfinite(mean).all()
        assert (log_q == 0).all() and torch.isfinite(log_p).all()
        # At temperature 0 the prior sample is its mean: deterministic, equal across the batch.
        a, _, _ = run_loop(enc, dec, post, None, 2, temperature=0.0)
        b, _, _ = run_loop(enc, dec, post, None, 2, temperature=0.0)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], a[1])
