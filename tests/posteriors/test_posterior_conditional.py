"""Class-conditional latents: the labels of a conditional model reach every latent group's convolutions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_recipes import tiny_recipe
from torch import nn

import avade
from avade.models.generative import GenerativeModel, takes_labels
from avade.norms.cwn import ConditionalWeightNorm
from avade.train.trainer import Trainer

STAGES = [(4, 8, 8), (6, 4, 4), (8, 2, 2)]


def _randomize_class_terms(module: nn.Module) -> None:
    """Stand-in for trained per-class gains and biases (they start at 1 and 0: label-free)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, ConditionalWeightNorm):
                layer.class_gain.weight.uniform_(0.5, 1.5)
                layer.class_bias.weight.normal_()


@pytest.mark.parametrize("name", ["topdown", "iaf", "diagonal"])
def test_the_top_prior_and_every_group_depend_on_the_labels_with_cwn(name: str) -> None:
    torch.manual_seed(0)
    extra = {"iaf_hidden": 6} if name != "diagonal" else {}
    post = avade.create("posterior", name, stage_shapes=STAGES, latent_channels=3, norm="cwn", num_classes=4,
                        **extra)
    _randomize_class_terms(post)
    for group in post.groups.values():  # the prior starts at N(0, I) (zero scale): open it
        nn.init.normal_(group.prior.scale)
    top = max(post.stage_ids)
    d = torch.randn(1, *STAGES[top]).expand(2, -1, -1, -1)  # the same state (the decoder's constant) twice
    y = torch.tensor([0, 1])
    post.eval()
    with torch.no_grad():
        mode, _, _ = post.forward_stage(top, d, None, 0.0, y=y)  # the prior's mode, merged into d
    assert (mode[0] - mode[1]).abs().max() > 1e-3, "p(z_top | y) does not depend on y"
    with torch.no_grad():
        same, _, _ = post.forward_stage(top, d, None, 0.0, y=torch.tensor([1, 1]))
    torch.testing.assert_close(same[0], same[1])


def test_every_class_term_of_a_cwn_posterior_trains() -> None:
    """Before labels reached posteriors, their per-class gains and biases never got a gradient."""
    torch.manual_seed(0)
    post = avade.create("posterior", "topdown", stage_shapes=STAGES, latent_channels=3, norm="cwn",
                        num_classes=4, iaf_steps=1, iaf_hidden=6)
    for group in post.groups.values():
        nn.init.normal_(group.prior.scale)
    y = torch.tensor([0, 1, 3])
    loss = torch.zeros(())
    for i in post.stage_ids:
        d_new, log_q, log_p = post.forward_stage(i, torch.randn(3, *STAGES[i]), torch.randn(3, *STAGES[i]), 1.0, y)
        loss = loss + d_new.square().mean() + (log_q - log_p).mean()
    loss.backward()
    class_terms = {n: p for n, p in post.named_parameters() if "class_" in n}
    assert class_terms
    dead = [n for n, p in class_terms.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


def test_a_conditional_model_trains_the_class_terms_of_its_posterior(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe("model.conditional=true", "model.posterior.norm=cwn", "model.decoder.norm=cwn"),
                      tmp_path, progress=False)
    model = trainer.model
    x, y = next(trainer.stream.batches(0))
    model.train()
    out = model.log_likelihood(x, y)
    out["bpd"].mean().backward()
    terms = {n: p for n, p in model.posterior.named_parameters() if "class_" in n}
    assert terms and all(p.grad is not None for p in terms.values()), "class terms outside the graph"
    # (the priors' start behind a zero scale, so at step 0 only the posteriors' and merges' are nonzero)
    assert all(p.grad.abs().sum() > 0 for n, p in terms.items() if ".prior." not in n)


class FourArgumentPosterior(nn.Module):
    """A plugin posterior written before labels reached posteriors: ``forward_stage(i, d, h, T)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stage_ids = [1]
        self.merge = nn.Conv2d(channels, channels, 1)

    def forward_stage(self, i: int, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.merge(d), d.new_zeros(d.shape[0]), d.new_zeros(d.shape[0])


def test_which_posteriors_take_labels() -> None:
    assert not takes_labels(FourArgumentPosterior(2).forward_stage)
    assert takes_labels(avade.create("posterior", "topdown", stage_shapes=STAGES, latent_channels=3).forward_stage)
    assert takes_labels(lambda i, d, h, t, y=None: None)
    assert takes_labels(lambda i, d, h, t=1.0, *, y=None: None)  # passed by keyword
    assert not takes_labels(lambda i, d, h, t=1.0, noise=None: None)  # a fifth parameter of another name
    assert not takes_labels(lambda *args, **kwargs: None)  # nothing says what it would do with them


def test_a_conditional_model_runs_a_four_argument_posterior_without_labels(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe("model.conditional=true"), tmp_path, progress=False)
    built = trainer.model
    model = GenerativeModel(variant=built.variant, data_shape=built.data_shape, preprocess=built.preprocess,
                            flow=built.flow, encoder=built.encoder,
                            posterior=FourArgumentPosterior(built.encoder.stage_shapes[1][0]),
                            decoder=built.decoder, num_classes=built.num_classes)
    x, y = next(trainer.stream.batches(0))
    with torch.no_grad():
        assert torch.isfinite(model.log_likelihood(x, y)["bpd"]).all()
