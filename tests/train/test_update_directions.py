"""The updates of Algorithm 1: which loss each one minimises and how (fresh gradients, clipping, skipping a
non-finite step)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.errors import TrainingError
from avade.losses.adversarial import discriminator_loss
from avade.train.trainer import Trainer


@pytest.mark.parametrize("kind", ["wgan", "nonsaturating", "hinge"])
def test_the_critic_step_lowers_the_critic_loss_on_its_batch(tmp_path: Path, kind: str) -> None:
    recipe = tiny_recipe(f"train.adv_loss={kind}", "train.gp_weight=0", "train.lr=0.01")
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    disc = trainer.model.discriminator
    assert disc is not None
    before = copy.deepcopy(disc)
    seen: list[torch.Tensor] = []  # the inputs of every critic call: real, samples (its step), samples (L_Q)
    disc.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x, y = next(trainer.stream.batches(0))
    trainer.train_step(x, y)
    real, fake = seen[0], seen[1]
    with torch.no_grad():
        start = float(discriminator_loss(kind, before(real), before(fake)))
        end = float(discriminator_loss(kind, disc(real), disc(fake)))
    assert end < start - 1e-6


def test_an_update_steps_with_this_losss_gradient_alone(tmp_path: Path) -> None:
    """Gradients left on the parameters (by the previous step's update) must not add to this step's."""
    trainer = Trainer(tiny_recipe(), tmp_path / "run", progress=False)
    params = trainer.g_params[:3]
    for p in params:
        p.grad = torch.full_like(p, 1000.0)  # what an earlier backward left behind
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=1.0)
    assert trainer._finite_update(opt, params, sum(p.sum() for p in params))  # gradient 1 everywhere
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b - 1.0)


@pytest.mark.parametrize("d_steps", [1, 3])
def test_each_update_minimises_its_terms_of_algorithm_1(tmp_path: Path, monkeypatch, d_steps: int) -> None:
    """The critic steps ``d_steps`` times on ``d_loss + gp``; the generator once on ``L_C + adv_weight * L_Q``
    (the logged terms)."""
    recipe = tiny_recipe("train.adv_weight=3.0", "train.gp_weight=5.0", f"train.d_steps={d_steps}")
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    updates: list[tuple[str, float]] = []
    update = trainer._finite_update

    def recording(opt, params, loss):
        updates.append(("critic" if opt is trainer.opt_d else "generator", float(loss)))
        return update(opt, params, loss)

    monkeypatch.setattr(trainer, "_finite_update", recording)
    logs = trainer.train_step(*next(trainer.stream.batches(0)))
    assert [who for who, _ in updates] == ["critic"] * d_steps + ["generator"]
    assert logs["gp"] > 0
    assert updates[-2][1] == pytest.approx(logs["d_loss"] + logs["gp"], rel=1e-5)  # the last critic step's
    assert updates[-1][1] == pytest.approx(logs["l_c"] + 3.0 * logs["l_q"], rel=1e-5)


def test_extra_critic_steps_draw_fresh_samples_and_the_generator_uses_the_first(tmp_path: Path) -> None:
    """``d_steps`` > 1: each extra critic step sees new samples (against the same real batch); the generator's
    L_Q goes through the samples of the first critic step, as in Algorithm 1."""
    trainer = Trainer(tiny_recipe("train.d_steps=3", "train.gp_weight=0"), tmp_path / "run", progress=False)
    disc = trainer.model.discriminator
    assert disc is not None
    seen: list[torch.Tensor] = []  # every critic call's input: (real, samples) per critic step, then L_Q's
    disc.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    trainer.train_step(*next(trainer.stream.batches(0)))
    assert len(seen) == 2 * 3 + 1
    reals, fakes, for_lq = seen[0:6:2], seen[1:6:2], seen[6]
    assert all(torch.equal(r, reals[0]) for r in reals)
    assert not torch.equal(fakes[1], fakes[0]) and not torch.equal(fakes[2], fakes[1])
    assert torch.equal(for_lq, fakes[0])


def test_the_critic_step_weighs_the_penalty_by_the_recipes_gp_weight(tmp_path: Path) -> None:
    """Same seed, same batch, same noise: the first step's logged penalty scales with ``train.gp_weight``
    (a trainer that used another weight, e.g. the paper's 100, would still log a positive ``gp``)."""
    logs = {}
    for weight in (2.0, 6.0):
        trainer = Trainer(tiny_recipe(f"train.gp_weight={weight}"), tmp_path / f"w{weight:g}", progress=False)
        logs[weight] = trainer.train_step(*next(trainer.stream.batches(0)))
    assert logs[2.0]["gp"] > 0
    assert logs[2.0]["d_loss"] == pytest.approx(logs[6.0]["d_loss"], rel=1e-6)
    assert logs[6.0]["gp"] == pytest.approx(3.0 * logs[2.0]["gp"], rel=1e-5)


def _sgd_step(trainer: Trainer, gradient: float) -> tuple[list[torch.Tensor], list[torch.Tensor], bool]:
    """One ``_finite_update`` with plain SGD (lr 1) on a loss whose gradient is ``gradient`` everywhere."""
    params = trainer.g_params[:3]
    before = [p.detach().clone() for p in params]
    done = trainer._finite_update(torch.optim.SGD(params, lr=1.0), params,
                                  sum((p * gradient).sum() for p in params))
    return before, [p.detach() for p in params], done


def test_grad_clip_rescales_the_whole_gradient_to_its_norm(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe("train.grad_clip=0.5"), tmp_path / "run", progress=False)
    before, after, done = _sgd_step(trainer, 2.0)
    n = sum(b.numel() for b in before)  # gradient norm 2 sqrt(n), clipped to 0.5
    assert done
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b - 0.5 / n**0.5)


def test_an_infinite_gradient_skips_the_update(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe(), tmp_path / "run", progress=False)
    before, after, done = _sgd_step(trainer, float("inf"))  # inf, no NaN: isnan alone would let it through
    assert not done
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_only_consecutive_non_finite_steps_stop_training(tmp_path: Path, monkeypatch) -> None:
    recipe = tiny_recipe("model.variant=v-ade", "model.discriminator.name=none", "train.steps=6",
                         "train.checkpoint_every=100", "train.max_bad_steps=2")
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    original, calls = trainer.log_likelihood, [0]

    def every_other_step_nan(*args, **kwargs):
        out = original(*args, **kwargs)
        if trainer.model.training:
            calls[0] += 1
            if calls[0] % 2:  # steps 1, 3, 5: never two in a row, and the last step is finite
                out = {**out, "log_px": out["log_px"] * float("nan")}
        return out

    monkeypatch.setattr(trainer, "log_likelihood", every_other_step_nan)
    try:
        summary = trainer.fit()
    except TrainingError as exc:
        pytest.fail(f"three separate non-finite steps stopped training: {exc}")
    assert calls[0] == 6 and summary["steps"] == 6
