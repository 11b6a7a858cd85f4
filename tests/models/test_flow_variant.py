"""Variant ``flow``: the flow f alone, a standard normal on f(x) (Real-NVP and Glow, the paper's baselines).

Pinned: its log-likelihood is the exact change of variables (no bound: every k-sample bound equals it), its
samples are f^-1 of N(0, T^2 I) draws, its one latent code is f(x) (so codes, reconstructions and
interpolations are exact), it trains with the one training loop (every parameter gets a gradient: nothing
unused under torchrun's DDP), and the recipe refuses the parts it does not have in one line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from tiny_recipes import perturbed_model, tiny_recipe

from avade.errors import ConfigError

FLOW = ('model.variant="flow"', 'model.encoder="none"', 'model.posterior="none"', 'model.decoder="none"',
        'model.discriminator="none"')
FLOWS = {
    "realnvp": (),
    "glow": ('model.flow={name="glow", scales=2, steps=2, hidden=4}', "model.logit_alpha=0.0"),
}


def _model(*overrides: str, seed: int = 0) -> torch.nn.Module:
    return perturbed_model(*FLOW, *overrides, seed=seed)


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("overrides", FLOWS.values(), ids=FLOWS.keys())
def test_the_likelihood_is_the_exact_change_of_variables(overrides: tuple[str, ...]) -> None:
    model = _model(*overrides).double()
    assert model.flow_only and model.encoder is model.posterior is model.decoder is None
    x = _images()
    u = model.preprocess.dequantize(x, torch.Generator().manual_seed(3)).double()
    out = model.bound_dequantized(u, x, None)
    feat, logdet = model.features(u)  # preprocessing and f, each log-det counted
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(feat).flatten(1).sum(1)
    torch.testing.assert_close(out["log_px"], log_pz + logdet, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out["bpd"], -(log_pz + logdet) / (3 * 8 * 8 * math.log(2.0)), rtol=1e-12, atol=1e-12)
    assert torch.equal(out["kl"], torch.zeros(4, dtype=torch.float64))
    # no latent: an importance-weighted bound is the likelihood itself
    gen = torch.Generator().manual_seed(5)
    plain = model.log_likelihood(x, generator=gen)["log_px"]
    weighted = model.log_likelihood(x, generator=torch.Generator().manual_seed(5), importance_samples=8)["log_px"]
    assert torch.equal(plain, weighted)
    assert model.mean_bpd([x], importance_samples=4) == pytest.approx(model.mean_bpd([x]), rel=1e-12)


@pytest.mark.parametrize("overrides", FLOWS.values(), ids=FLOWS.keys())
def test_samples_are_the_inverse_flow_of_standard_normal_draws(overrides: tuple[str, ...]) -> None:
    model = _model(*overrides)
    for t in (1.0, 0.7):
        torch.manual_seed(11)
        drawn = model.generate(3, temperature=t)
        torch.manual_seed(11)
        expected = model.to_image(t * torch.randn(3, 3, 8, 8))
        assert torch.equal(drawn, expected)  # no decoder noise: the flow's latent is its sample
    modes = model.sample(3, temperature=0.0)
    assert modes.dtype == torch.uint8 and all(torch.equal(m, modes[0]) for m in modes)  # f^-1(0) each time
    a, b = (model.sample(4, generator=torch.Generator().manual_seed(s)) for s in (1, 1))
    assert torch.equal(a, b) and not torch.equal(a, model.sample(4, generator=torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("overrides", FLOWS.values(), ids=FLOWS.keys())
def test_its_one_code_is_f_of_x_so_codes_and_reconstructions_are_exact(overrides: tuple[str, ...]) -> None:
    model = _model(*overrides)
    x, y = _images(), _images(seed=1)
    (code,) = model.encode(x)
    assert code.shape == (4, 3, 8, 8)
    torch.testing.assert_close(code, model.features(model.preprocess.centres(x))[0])
    assert torch.equal(model.decode([code]), x)  # f^-1(f(x)) at each bin's centre
    assert torch.equal(model.reconstruct(x, generator=torch.Generator().manual_seed(0)), x)
    path = model.interpolate(x, y, steps=4)
    assert path.shape == (4, 4, 3, 8, 8) and torch.equal(path[:, 0], x) and torch.equal(path[:, -1], y)
    drawn = model.encode(x, sample=True, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(drawn[0], code) and torch.equal(model.decode(drawn), x)  # a point inside x's bins
    with pytest.raises(Exception, match="code 0 has shape"):
        model.decode([torch.zeros(2, 3, 4, 4)])
    with pytest.raises(Exception, match=r"got 2 code tensors, the model has 1 latent stage \(") as info:
        model.decode([code, code])
    assert "posterior" not in str(info.value)  # (it has none)


def test_it_trains_with_every_parameter_in_the_graph(tmp_path: Path) -> None:
    from avade.train.trainer import Trainer

    recipe = tiny_recipe(*FLOW, *FLOWS["glow"], "train.steps=2", "train.checkpoint_every=2")
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    assert [n for n, _ in trainer.model.named_parameters() if not n.startswith("flow.")] == []
    logs = trainer.train_step(*next(trainer.stream.batches(0)))
    assert set(logs) >= {"l_c", "bpd", "loss"} and "kl" not in logs and "l_q" not in logs
    assert logs["finite"] == 1.0 and math.isfinite(logs["bpd"])
    # (a parameter without a gradient fails under DistributedDataParallel: the flow alone has none)
    assert all(p.grad is not None for p in trainer.model.generator_parameters())
    summary = trainer.fit()
    assert summary["variant"] == "flow" and math.isfinite(summary["bpd"])


@pytest.mark.parametrize(("variant", "part", "message"), [
    ("gan", "encoder", "variant 'gan' needs an encoder; choose one with model.encoder.name"),  # (said "a encoder")
    ("vae", "decoder", "variant 'vae' needs a decoder; choose one with model.decoder.name"),
])
def test_a_missing_part_is_named_with_its_article(variant: str, part: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^model.{part}.name: {re.escape(message)}$"):
        tiny_recipe(f'model.variant="{variant}"', 'model.flow="none"', 'model.discriminator="none"',
                    f'model.{part}="none"')


@pytest.mark.parametrize(("overrides", "message"), [
    (('model.encoder={name="conv"}',), "variant 'flow' has no encoder (its latent is f(x) itself"),
    (('model.posterior={name="topdown"}',), "variant 'flow' has no posterior"),
    (('model.flow="none"',), "variant 'flow' needs a flow"),
    (("model.conditional=true",), "variant 'flow' is unconditional"),
    (("train.kl_warmup_steps=10",), "no KL term to warm up"),
    (('model.likelihood="discretized-logistic"',), "discretized-logistic needs pixel space"),
])
def test_the_parts_it_has_not_are_refused_in_one_line(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        tiny_recipe(*FLOW, *overrides)


def test_switching_a_full_recipe_to_flow_names_every_table_to_drop_at_once() -> None:
    # (`--set model.variant=flow` on the quickstart: one error listing all four tables, not one per attempt)
    with pytest.raises(ConfigError) as info:
        tiny_recipe('model.variant="flow"', 'model.discriminator={name="dcgan"}')
    message = str(info.value)
    assert "\n" not in message and info.value.path == "model.encoder"
    for key in ("encoder", "posterior", "decoder", "discriminator"):
        assert f"[model.{key}]" in message
    assert "set each one's name = \"none\"" in message
    with pytest.raises(ConfigError, match=re.escape("variant 'flow' has no posterior, decoder (its latent is f(x) "
                                                    "itself, standard normal) or discriminator (no L_Q)")):
        tiny_recipe('model.variant="flow"', 'model.encoder="none"', 'model.discriminator={name="dcgan"}')
