"""train.kl_warmup_steps: the objective weighs the KL by (step + 1) / N up to 1; the logged bound is the
true one; a variant without a KL term refuses it."""

from __future__ import annotations

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.errors import ConfigError
from avade.train.trainer import Trainer

V_ADE = ("model.variant=v-ade", "model.discriminator.name=none")


def _step(tmp_path, warmup: int, at_step: int = 0) -> tuple[Trainer, dict[str, float]]:
    torch.manual_seed(0)
    trainer = Trainer(tiny_recipe(*V_ADE, f"train.kl_warmup_steps={warmup}"), tmp_path / f"run{warmup}_{at_step}",
                      progress=False)
    trainer.step = at_step
    x, y = next(trainer.stream.batches(0))
    return trainer, trainer.train_step(x, y)


def test_the_objective_weighs_the_kl_while_the_logged_bound_stays_true(tmp_path) -> None:
    trainer, logs = _step(tmp_path, warmup=4)
    assert trainer.kl_weight() == pytest.approx(0.25) and logs["kl_weight"] == pytest.approx(0.25)
    assert logs["kl"] > 0
    # `loss` is the tensor that was backpropagated; l_c (and bpd) are -ELBO itself
    assert logs["loss"] == pytest.approx(logs["l_c"] - 0.75 * logs["kl"], rel=1e-5)
    assert logs["loss"] < logs["l_c"]


def test_after_the_warm_up_the_objective_is_the_bound(tmp_path) -> None:
    trainer, logs = _step(tmp_path, warmup=4, at_step=3)
    assert trainer.kl_weight() == 1.0 and "kl_weight" not in logs
    assert logs["loss"] == pytest.approx(logs["l_c"], rel=1e-6)


def test_warm_up_changes_the_update(tmp_path) -> None:
    plain, _ = _step(tmp_path, warmup=0)
    warm, _ = _step(tmp_path, warmup=10)
    a, b = dict(plain.model.named_parameters()), dict(warm.model.named_parameters())
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_a_variant_without_a_kl_term_refuses_it() -> None:
    with pytest.raises(ConfigError, match=r"train\.kl_warmup_steps") as err:
        tiny_recipe("model.variant=gan", "model.flow.name=none", "train.kl_warmup_steps=100")
    assert "no KL term" in str(err.value)
    with pytest.raises(ConfigError, match="kl_warmup_steps"):
        tiny_recipe(*V_ADE, "train.kl_warmup_steps=-1")


@pytest.mark.parametrize("setting", ["model.posterior.free_bits=0.5", "model.posterior.kl='analytic'"])
def test_a_gan_refuses_kl_options_of_its_posterior(setting: str) -> None:
    """A GAN samples through the posterior's prior but trains no KL: free bits or an analytic KL would do
    nothing, so they are refused by name (as train.kl_warmup_steps)."""
    key = setting.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: variant 'gan' trains no KL term") as err:
        tiny_recipe("model.variant=gan", "model.flow.name=none", "model.posterior.name='diagonal'", setting)
    assert f"remove {key}" in str(err.value)
    tiny_recipe(*V_ADE, "model.posterior.name='diagonal'", setting)  # fine where there is a KL
