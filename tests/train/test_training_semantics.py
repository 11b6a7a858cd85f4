"""What a training step and a resume mean: hyper-parameters on resume, the prior L_Q samples from,
critics with data-dependent init, and conditional sampling for metrics."""

from __future__ import annotations

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.norms.actnorm_layer import ActNormed
from avade.train.trainer import Trainer


def test_resume_trains_with_the_recipes_learning_rates(tmp_path, capsys):
    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    trainer = Trainer(tiny_recipe("train.steps=4", "train.lr=0.0001", "train.d_lr=0.00005", "train.betas=[0.0, 0.9]"),
                      tmp_path, resume=True, progress=False)
    assert trainer.step == 2
    assert [g["lr"] for g in trainer.opt_g.param_groups] == [0.0001]
    assert [g["lr"] for g in trainer.opt_d.param_groups] == [0.00005]
    assert trainer.opt_g.param_groups[0]["betas"] == (0.0, 0.9)
    assert trainer.opt_g.state  # ... while the moments come from the checkpoint
    err = " ".join(capsys.readouterr().err.split())
    assert ("learning rate from this recipe, not the checkpoint's: lr 0.002 -> 0.0001, d_lr 0.002 -> 5e-05; "
            "step 3 trains with lr 0.0001") in err
    assert "generator optimizer: betas (0.0, 0.9) from the recipe (checkpoint had (0.9, 0.999))" in err


def test_unchanged_recipe_resumes_with_the_same_hyper_parameters(tmp_path):
    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    trainer = Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)
    assert trainer.opt_g.param_groups[0]["lr"] == tiny_recipe().train.lr


def test_adversarial_samples_come_from_the_untempered_prior(tmp_path, monkeypatch):
    trainer = Trainer(tiny_recipe("model.temperature=0.5"), tmp_path, progress=False)
    seen: list[float | None] = []
    generate = trainer.generate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("temperature"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(trainer, "generate", spy)
    trainer.train_step(*next(trainer.stream.batches(0)))
    assert seen == [1.0]


def test_a_critic_with_data_dependent_init_is_initialised_before_the_first_step(tmp_path):
    # Before any step, so data-parallel replicas are synchronised after it (rank 0's init everywhere).
    trainer = Trainer(tiny_recipe("model.discriminator.norm=actnorm"), tmp_path, progress=False)
    layers = [m for m in trainer.model.discriminator.modules() if isinstance(m, ActNormed)]
    assert layers and all(bool(m.initialized) for m in layers)
    assert trainer.step == 0


@pytest.mark.parametrize("variant", ["av-gde", "gan"])
def test_discretized_logistic_samples_carry_the_adversarial_gradient(tmp_path, variant):
    recipe = tiny_recipe(f"model.variant={variant!r}", "model.flow.name='none'",
                         "model.likelihood='discretized-logistic'")
    trainer = Trainer(recipe, tmp_path, progress=False)
    model = trainer.model
    u = model.generate(4, generator=torch.Generator().manual_seed(0))
    assert float((u - u.floor()).std()) > 0.1  # dequantized within their bins, as real images are
    u.sum().backward()
    grads = [p.grad for p in model.generator_parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_summaries_are_strict_json_whatever_the_number_type(tmp_path):
    import json

    import numpy as np

    from avade.train.rundir import write_json

    write_json(tmp_path / "s.json", {"a": np.float32("nan"), "b": torch.tensor(float("inf")), "c": [1.0, float("nan")],
                                     "d": np.float32(1.5)})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": None, "c": [1.0, None], "d": 1.5}


def test_the_likelihood_pass_decides_batch_statistics_for_the_job(tmp_path, monkeypatch):
    """train_step runs the likelihood inside replica_statistics (free bits then decide on the job's batch
    under data parallelism; tested with 2 processes in test_distributed.py)."""
    import contextlib

    import avade.train.trainer as trainer_module
    from avade.nn import replicas

    trainer = Trainer(tiny_recipe("model.posterior.free_bits=0.1"), tmp_path, progress=False)
    opened: list[bool] = []

    @contextlib.contextmanager
    def spy(enabled: bool = True):
        opened.append(enabled)
        with replicas.replica_statistics(enabled):
            yield

    seen: list[bool] = []
    log_likelihood = trainer.log_likelihood

    def inside(*args, **kwargs):
        seen.append(replicas._ACTIVE.get())
        return log_likelihood(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "replica_statistics", spy)
    monkeypatch.setattr(trainer, "log_likelihood", inside)
    trainer.train_step(*next(trainer.stream.batches(0)))
    assert opened == [False] and seen == [False]  # one process: nothing to decide together
    # as rank 0 of 2 (no process group here: the step's own collectives are left out)
    monkeypatch.setattr(trainer_module, "average_gradients", lambda *args: None)
    monkeypatch.setattr(trainer, "_sync_flow_statistics", lambda: None)
    trainer.dist = trainer.dist.__class__(0, 2, 0)
    trainer.train_step(*next(trainer.stream.batches(0)))
    assert opened == [False, True] and seen == [False, True]
