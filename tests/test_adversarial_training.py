"""Quality-driven (adversarial) training through the real trainer: Algorithm 1 for every variant,
the ``flow_adv_grad`` switch, MLE warm-up, class conditioning with conditional weight norm.

Everything is tiny (synthetic 8x8 images, a few channels, 1-3 steps) so the file runs in seconds on CPU.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from avade.errors import ConfigError
from avade.losses.adversarial import ModeCollapseDetector, generator_loss
from avade.models.preprocess import to_unit
from avade.nn import normed
from avade.norms.cwn import ConditionalWeightNorm
from avade.recipe.load import apply_overrides, recipe_from_dict
from avade.recipe.schema import Recipe
from avade.train.trainer import Trainer

TINY: dict[str, Any] = {
    "name": "tiny_adv",
    "model": {
        "variant": "av-ade",
        "flow": {"name": "realnvp", "scales": 1, "blocks": 1, "layers": 2, "hidden": 4},
        "encoder": {"name": "resnet", "stem": 4, "channels": [4, 8]},
        "posterior": {"name": "topdown", "latent_channels": 2},
        "decoder": {"name": "resnet"},
        "discriminator": {"name": "resnet", "stem": 4, "channels": [4, 8]},
    },
    "data": {"name": "synthetic", "size": 32, "test_size": 8, "resolution": 8, "num_classes": 4,
             "batch_size": 8, "eval_batch_size": 8},
    # Paper weights (appendix C): gradient penalty 100, adversarial weight 100, Adamax 0.002.
    "train": {"steps": 3, "log_every": 1, "sample_every": 10_000, "checkpoint_every": 10_000, "seed": 0,
              "adv_weight": 100.0, "gp_weight": 100.0, "device": "cpu"},
    "eval": {"metrics": ["bpd"]},
}

ADV_KEYS = {"l_q", "d_loss", "gp", "d_real", "d_fake"}
MLE_KEYS = {"l_c", "bpd", "kl"}


def tiny_recipe(*overrides: str) -> Recipe:
    """The tiny recipe with ``dotted.key=value`` overrides (TOML values, as on the CLI)."""
    return recipe_from_dict(apply_overrides(copy.deepcopy(TINY), list(overrides)))


def variant_recipe(variant: str, *overrides: str) -> Recipe:
    """The tiny recipe turned into ``variant`` (no flow / no discriminator where the variant has none)."""
    extra = [f"model.variant={variant}"]
    if variant not in ("av-ade", "v-ade"):
        extra.append("model.flow.name=none")
    if variant not in ("av-ade", "av-gde", "gan"):
        extra.append("model.discriminator.name=none")
    return tiny_recipe(*extra, *overrides)


def make_trainer(recipe: Recipe, tmp_path: Path, sub: str = "run") -> Trainer:
    return Trainer(recipe, tmp_path / sub, progress=False)


def first_batch(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    return next(trainer.stream.batches(0))


def snapshot(module: nn.Module | None) -> dict[str, torch.Tensor]:
    return {} if module is None else {k: v.detach().clone() for k, v in module.named_parameters()}


def seeded(seed: int) -> torch.Generator:
    """A generator for the decoder noise; the prior latents come from the global RNG, so seed it too."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(before[k], v.detach()) for k, v in module.named_parameters())


# -- one step of Algorithm 1 per variant --------------------------------------------------------------

# variant -> (keys that must be logged, keys that must not, sub-modules whose parameters must move)
VARIANTS = {
    "av-ade": (MLE_KEYS | ADV_KEYS, set(), ("flow", "encoder", "posterior", "decoder", "discriminator")),
    "av-gde": (MLE_KEYS | ADV_KEYS, set(), ("encoder", "posterior", "decoder", "discriminator")),
    "gan": (ADV_KEYS, MLE_KEYS, ("decoder", "discriminator")),
    "v-ade": (MLE_KEYS, ADV_KEYS, ("flow", "encoder", "posterior", "decoder")),
    "vae": (MLE_KEYS, ADV_KEYS, ("encoder", "posterior", "decoder")),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_step_per_variant(variant: str, tmp_path: Path) -> None:
    present, absent, moving = VARIANTS[variant]
    trainer = make_trainer(variant_recipe(variant), tmp_path)
    model = trainer.model
    assert (model.flow is not None) == (variant in ("av-ade", "v-ade"))
    assert (model.discriminator is not None) == (variant in ("av-ade", "av-gde", "gan"))
    before = {name: snapshot(getattr(model, name)) for name in moving}
    x, y = first_batch(trainer)
    logs = trainer.train_step(x, y)
    assert logs["finite"] == 1.0
    assert present <= set(logs), f"{variant}: missing {present - set(logs)}"
    assert not (absent & set(logs)), f"{variant}: unexpected {absent & set(logs)}"
    for key in present | {"loss"}:
        assert torch.isfinite(torch.tensor(logs[key])), f"{variant}: {key} = {logs[key]}"
    if "gp" in logs:
        assert logs["gp"] >= 0.0
    if variant == "gan":  # L_Q only: the generator loss is the quality loss alone
        assert logs["loss"] == pytest.approx(logs["l_q"])
    elif "l_q" in logs:  # L_C + adv_weight * L_Q
        assert logs["loss"] == pytest.approx(logs["l_c"] + 100.0 * logs["l_q"], rel=1e-4, abs=1e-3)
    else:
        assert logs["loss"] == pytest.approx(logs["l_c"])
    for name in moving:
        assert changed(before[name], getattr(model, name)), f"{variant}: {name} did not change"


# -- L_Q does not train the flow f unless asked to (train.flow_adv_grad) -------------------------------


def _generator_lq_grads(model: Any, flow_grad: bool) -> dict[str, torch.Tensor | None]:
    """Backpropagate the generator's L_Q alone (Algorithm 1's sample path) and return all grads."""
    model.zero_grad(set_to_none=True)
    fake = to_unit(model.generate(6, None, seeded(3), flow_grad=flow_grad))
    generator_loss("paper", model.discriminator(fake)).backward()
    return {k: (None if p.grad is None else p.grad.clone()) for k, p in model.named_parameters()}


def _nonzero(grad: torch.Tensor | None) -> bool:
    return grad is not None and bool(grad.abs().sum() > 0)


def test_generate_flow_grad_false_keeps_lq_out_of_flow(tmp_path: Path) -> None:
    trainer = make_trainer(tiny_recipe(), tmp_path)
    model = trainer.model
    model.train()
    flow_keys = [f"flow.{k}" for k, _ in model.flow.named_parameters()]
    decoder_keys = [f"decoder.{k}" for k, _ in model.decoder.named_parameters()]

    cut = _generator_lq_grads(model, flow_grad=False)
    assert not any(_nonzero(cut[k]) for k in flow_keys), "L_Q reached f with flow_grad=False"
    assert any(_nonzero(cut[k]) for k in decoder_keys), "L_Q must still train the decoder through f^-1"
    assert _nonzero(cut["log_sigma"]), "sample noise scale sigma gets L_Q's gradient"

    full = _generator_lq_grads(model, flow_grad=True)
    assert any(_nonzero(full[k]) for k in flow_keys), "flow_grad=True must let L_Q reach f"
    # The gradient into the decoder is the same whether or not f's parameters are in the graph.
    for k in decoder_keys:
        if cut[k] is not None:
            torch.testing.assert_close(cut[k], full[k], rtol=1e-5, atol=1e-7)


def _grads_of_one_step(recipe: Recipe, tmp_path: Path, sub: str) -> dict[str, dict[str, torch.Tensor]]:
    """The gradients right after each backward of one ``train_step``: ``{"d": ..., "g": ...}``."""
    trainer = make_trainer(recipe, tmp_path, sub)
    captured: dict[str, dict[str, torch.Tensor]] = {}
    original = trainer._finite_update

    def spy(opt: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor) -> bool:
        ok = original(opt, params, loss)
        which = "g" if opt is trainer.opt_g else "d"
        captured[which] = {k: p.grad.clone() for k, p in trainer.model.named_parameters() if p.grad is not None}
        return ok

    trainer._finite_update = spy  # type: ignore[method-assign]
    logs = trainer.train_step(*first_batch(trainer))
    assert "l_q" in logs and logs["finite"] == 1.0
    return captured


@pytest.mark.parametrize("flow_adv_grad", [False, True])
def test_trainer_flow_gets_lq_gradient_only_when_enabled(flow_adv_grad: bool, tmp_path: Path) -> None:
    """Same seed, same batch; only the adversarial weight differs (0 vs 1000). f's gradient must not
    depend on it with ``flow_adv_grad = false`` (the paper) and must with ``true``; the decoder's must."""
    switch = f"train.flow_adv_grad={str(flow_adv_grad).lower()}"
    steps = {w: _grads_of_one_step(tiny_recipe(switch, f"train.adv_weight={w}"), tmp_path, f"w{w:g}")
             for w in (0.0, 1000.0)}
    without, heavy = steps[0.0]["g"], steps[1000.0]["g"]
    flow_keys = [k for k in without if k.startswith("flow.")]
    assert flow_keys, "the flow gets L_C's gradient in every case"
    flow_same = all(torch.allclose(without[k], heavy[k], rtol=0.0, atol=1e-6) for k in flow_keys)
    assert flow_same is (not flow_adv_grad), f"flow_adv_grad={flow_adv_grad}: L_Q reached f: {not flow_same}"
    decoder_keys = [k for k in without if k.startswith("decoder.")]
    assert not all(torch.allclose(without[k], heavy[k]) for k in decoder_keys), "L_Q must train the decoder"
    # The generator step leaves D's gradients (from its own step) untouched: L_Q does not train D.
    d_keys = [k for k in steps[1000.0]["d"] if k.startswith("discriminator.")]
    assert d_keys
    for k in d_keys:
        assert torch.equal(steps[1000.0]["d"][k], heavy[k]), f"the generator step changed D's gradient {k}"


# -- MLE warm-up (appendix F) ----------------------------------------------------------------------------


def test_mle_warmup_then_joint_training(tmp_path: Path) -> None:
    recipe = tiny_recipe("train.warmup_steps=2", "train.steps=3")
    trainer = make_trainer(recipe, tmp_path)
    summary = trainer.fit()
    assert summary["steps"] == 3
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    by_step = {row["step"]: row for row in lines if "l_c" in row}
    assert sorted(by_step) == [1, 2, 3]  # logged after steps 0, 1, 2 (log_every = 1)
    for s in (1, 2):  # steps 0 and 1: maximum likelihood only
        assert "l_c" in by_step[s]
        assert not (ADV_KEYS & set(by_step[s])), f"warm-up step {s - 1} ran L_Q"
    assert set(by_step[3]) >= ADV_KEYS, "step 2 (after warm-up) must train with L_Q"


@pytest.mark.parametrize(("warmup", "warned"), [(2, True), (1, False)])
def test_a_run_that_is_all_warmup_says_so(tmp_path: Path, warmup: int, warned: bool) -> None:
    """warmup_steps >= steps is valid (a short smoke run of a paper recipe) but trains no L_Q: a warning says so."""
    from rich.console import Console

    console = Console(record=True, width=200)
    Trainer(tiny_recipe(f"train.warmup_steps={warmup}", "train.steps=2"), tmp_path / "run", console=console,
            progress=False).fit()
    text = console.export_text()
    assert ("train.warmup_steps = 2 >= train.steps = 2" in text and "L_Q" in text) == warned, text


def test_the_critic_warms_up_in_the_last_warmup_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """critic_warmup_steps: the critic trains in the warm-up's last steps while the generator gets L_C only
    (no L_Q computed, the samples drawn without a graph); L_Q from warmup_steps on."""
    import avade.train.trainer as trainer_module

    trainer = make_trainer(tiny_recipe("train.warmup_steps=3", "train.critic_warmup_steps=2", "train.steps=4"),
                           tmp_path)
    batch = first_batch(trainer)
    real_generator_loss = trainer_module.generator_loss

    def no_l_q(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError(f"L_Q computed at step {trainer.step}, inside the MLE warm-up")

    monkeypatch.setattr(trainer_module, "generator_loss", no_l_q)
    disc_before = snapshot(trainer.model.discriminator)
    logs = trainer.train_step(*batch)  # step 0: MLE only, critic untouched
    assert not (ADV_KEYS & set(logs)) and set(logs) >= MLE_KEYS
    assert all(torch.equal(v, disc_before[k]) for k, v in snapshot(trainer.model.discriminator).items())
    for step in (1, 2):  # the critic's warm-up
        disc_before, gen_before = snapshot(trainer.model.discriminator), snapshot(trainer.model.decoder)
        trainer.step = step
        logs = trainer.train_step(*batch)
        assert set(logs) >= {"d_loss", "gp", "d_real", "d_fake", *MLE_KEYS} and "l_q" not in logs
        assert any(not torch.equal(v, disc_before[k]) for k, v in snapshot(trainer.model.discriminator).items())
        assert any(not torch.equal(v, gen_before[k]) for k, v in snapshot(trainer.model.decoder).items())
    monkeypatch.setattr(trainer_module, "generator_loss", real_generator_loss)
    trainer.step = 3
    assert set(trainer.train_step(*batch)) >= ADV_KEYS


def test_the_critic_warmup_lies_within_the_warmup() -> None:
    with pytest.raises(ConfigError, match=r"critic_warmup_steps = 5 exceeds warmup_steps = 2"):
        tiny_recipe("train.warmup_steps=2", "train.critic_warmup_steps=5")


def test_gan_ignores_warmup(tmp_path: Path) -> None:
    """A GAN has no likelihood to warm up with: it is adversarial from step 0."""
    trainer = make_trainer(variant_recipe("gan", "train.warmup_steps=5"), tmp_path)
    logs = trainer.train_step(*first_batch(trainer))
    assert set(logs) >= ADV_KEYS


# -- class conditioning (appendix E.1): CWN generator, projection discriminator --------------------------


def _cwn_layers(module: nn.Module) -> list[ConditionalWeightNorm]:
    return [m for m in module.modules() if isinstance(m, ConditionalWeightNorm)]


def test_conditional_av_ade_step_and_label_dependent_samples(tmp_path: Path) -> None:
    recipe = tiny_recipe("model.conditional=true", "model.decoder.norm=cwn")
    trainer = make_trainer(recipe, tmp_path)
    model = trainer.model
    assert model.num_classes == 4
    assert model.discriminator.num_classes == 4  # projection head
    layers = _cwn_layers(model.decoder)
    assert layers and all(layer.num_classes == 4 for layer in layers)

    x, y = first_batch(trainer)
    a, b = (int(v) for v in y.unique()[:2])  # two labels present in the batch (trained this step)
    logs = trainer.train_step(x, y)
    assert logs["finite"] == 1.0 and set(logs) >= ADV_KEYS

    # CWN: the labels now select different effective weights in the generator.
    label_a, label_b = torch.tensor([a]), torch.tensor([b])
    assert any(not torch.allclose(layer.effective_weight(label_a), layer.effective_weight(label_b))
               for layer in layers)
    # Same latent noise, different labels -> different samples.
    model.eval()
    with torch.no_grad():
        sa = model.generate(4, label_a.repeat(4), seeded(0))
        sb = model.generate(4, label_b.repeat(4), seeded(0))
        sa2 = model.generate(4, label_a.repeat(4), seeded(0))
    torch.testing.assert_close(sa, sa2)  # deterministic given the noise
    assert (sa - sb).abs().max() > 1e-4, "samples do not depend on the label"
    # The projection discriminator scores the same image differently under different labels.
    img = to_unit(sa)
    assert not torch.allclose(model.discriminator(img, label_a.repeat(4)), model.discriminator(img, label_b.repeat(4)))


def test_cwn_effective_weight_is_per_label_and_matches_forward() -> None:
    torch.manual_seed(0)
    layer = normed(nn.Conv2d(3, 5, 3, padding=1), "cwn", num_classes=3)
    assert isinstance(layer, ConditionalWeightNorm)
    with torch.no_grad():  # stand-in for trained per-class gains and biases
        layer.class_gain.weight.uniform_(0.5, 1.5)
        layer.class_bias.weight.normal_()
    y = torch.tensor([0, 1, 2, 1])
    w = layer.effective_weight(y)
    assert w.shape == (4, 5, 3, 3, 3)
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])
    torch.testing.assert_close(w[1], w[3])
    # w = g(y) v / ||v||: each output row has norm g * g_class(y).
    expected = layer.gain.detach() * layer.class_gain.weight.detach()[y]
    torch.testing.assert_close(w.flatten(2).norm(dim=2), expected, rtol=1e-5, atol=1e-6)
    # forward(x, y) is the convolution with the label's effective weight plus its class bias.
    x = torch.randn(4, 3, 6, 6)
    out = layer(x, y)
    for i in range(4):
        ref = nn.functional.conv2d(x[i : i + 1], w[i], layer.layer.bias, padding=1)
        ref = ref + layer.class_bias.weight[y[i]].view(1, -1, 1, 1)
        torch.testing.assert_close(out[i : i + 1], ref, rtol=1e-5, atol=1e-5)


def test_unconditional_model_ignores_labels(tmp_path: Path) -> None:
    """``conditional = false`` on labelled data: even a CWN decoder must not look at the labels."""
    recipe = tiny_recipe("model.conditional=false", "model.decoder.norm=cwn")
    trainer = make_trainer(recipe, tmp_path)
    model = trainer.model
    assert model.num_classes == 0
    assert all(layer.num_classes == 0 for layer in _cwn_layers(model.decoder))
    x, y = first_batch(trainer)
    trainer.train_step(x, y)  # the trainer's labels must not matter either
    model.eval()
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        s0 = model.generate(4, zeros, seeded(0))
        s1 = model.generate(4, ones, seeded(0))
        sn = model.generate(4, None, seeded(0))
        l0 = model.log_likelihood(x[:4], zeros, seeded(1))["bpd"]
        l1 = model.log_likelihood(x[:4], ones, seeded(1))["bpd"]
    torch.testing.assert_close(s0, s1)
    torch.testing.assert_close(s0, sn)
    torch.testing.assert_close(l0, l1)
    layer = normed(nn.Linear(3, 2), "cwn")  # no num_classes: one shared gain and bias
    v = torch.randn(2, 3)
    torch.testing.assert_close(layer(v, torch.tensor([0, 1])), layer(v, None))


def test_trainer_warns_when_a_conditional_generator_collapses_per_class(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The trainer feeds the mode-collapse watch its real batch, the samples made for those labels, and the
    labels; a generator giving one image per class (diverse across classes) is flagged, and the watch's
    window travels in the checkpoint."""
    trainer = make_trainer(variant_recipe("gan", "model.conditional=true", "model.decoder.norm=cwn"), tmp_path)
    assert isinstance(trainer.mode_collapse, ModeCollapseDetector)
    trainer.mode_collapse = ModeCollapseDetector(window=2, min_count=2)
    generate = trainer.generate
    images = torch.linspace(20.0, 230.0, 4).view(4, 1, 1, 1)  # one image per class, u in [0, 256)

    def collapsed(n, labels, *args, **kwargs):  # keeps the graph (L_Q backpropagates), ignores the latents
        out = generate(n, labels, *args, **kwargs)
        return out * 0 + images[labels].expand_as(out)

    trainer.generate = collapsed
    x, y = first_batch(trainer)
    y = torch.arange(x.shape[0]) % 4  # every class at least twice in the batch
    for _ in range(2):
        trainer.train_step(x, y)
    assert trainer.mode_collapse.collapsed_classes == [0, 1, 2, 3, -1]
    assert "warning: generator collapse at step 1: the generated images of classes 0, 1, 2, 3" \
        in " ".join(capsys.readouterr().err.split())  # (stderr; trainer.step stays 0: each call trains step 1)
    trainer.step = 1
    path = trainer.save()
    state = json.loads((path / "state.json").read_text())
    assert state["mode_collapse"]["steps"] == 2 and state["mode_collapse"]["collapsed_classes"] == [0, 1, 2, 3, -1]
