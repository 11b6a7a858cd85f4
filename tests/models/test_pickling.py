"""A whole model, and each of its parts, pickles (``pickle``, ``torch.save(model)`` / ``torch.load(...,
weights_only=False)``) and deep-copies with weight norm in it, torch's parametrized layers included: the copy
gives the same outputs, has the same state dict, keeps which parameters are frozen, trains, and loads state dicts."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from tiny_recipes import tiny_recipe

import avade
from avade.models.build import build_model

CASES = {
    "realnvp-topdown-conv-dcgan": (),
    "glow-iaf-resnet": ("model.flow.name=glow", "model.posterior.name=iaf", "model.encoder.name=resnet",
                        "model.decoder.name=resnet", "model.discriminator.name=resnet"),
    "diagonal-cwn-conditional": ("model.posterior.name=diagonal", "model.conditional=true", "model.decoder.norm=cwn",
                                 "model.posterior.norm=cwn"),
    "weight-norm-init": ('model.norm_options={"weight-norm"={init_scale=0.1}}',),
}


def _torch_round_trip(obj: object) -> object:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [(n, p.requires_grad) for n, p in a.named_parameters()] == \
        [(n, p.requires_grad) for n, p in b.named_parameters()]


@pytest.mark.parametrize("overrides", list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize("copier", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m)), _torch_round_trip],
                         ids=["deepcopy", "pickle", "torch.save"])
def test_a_whole_model_copies_and_pickles(overrides: tuple[str, ...], copier) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_recipe(*overrides))
    x = torch.randint(0, 256, (4, *model.data_shape), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1]) if model.num_classes else None
    model.train()
    model.log_likelihood(x, labels)  # the data-dependent inits (weight-norm init_scale) run on the first batch
    model.eval()
    loaded = copier(model)
    _same(model, loaded)
    with torch.no_grad():
        torch.manual_seed(1)
        expected = model.log_likelihood(x, labels)["bpd"]
        torch.manual_seed(1)
        assert torch.equal(loaded.log_likelihood(x, labels)["bpd"], expected)
        torch.manual_seed(2)
        drawn = model.sample(2, labels=labels[:2] if labels is not None else None)
        torch.manual_seed(2)
        assert torch.equal(loaded.sample(2, labels=labels[:2] if labels is not None else None), drawn)
    for part in model.children():  # each part alone, as avade.create builds it
        _same(part, copier(part))
    # the copy trains, every parameter the original trains getting its gradient, and loads state dicts
    loaded.train()
    loaded.log_likelihood(x, labels)["bpd"].mean().backward()
    model.log_likelihood(x, labels)["bpd"].mean().backward()
    assert [n for n, p in loaded.named_parameters() if p.grad is not None] == \
        [n for n, p in model.named_parameters() if p.grad is not None]
    loaded.load_state_dict(build_model(tiny_recipe(*overrides)).state_dict())


@pytest.mark.parametrize("copier", [lambda m: pickle.loads(pickle.dumps(m)), _torch_round_trip],
                         ids=["pickle", "torch.save"])
def test_a_created_flow_with_fixed_weight_norm_gains_pickles(copier) -> None:
    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), blocks=1, layers=1, hidden=4, net="reference")
    assert any(not p.requires_grad for p in flow.parameters())  # the reference's fixed g = 1
    loaded = copier(flow)
    _same(flow, loaded)
    u = torch.randn(2, 3, 8, 8)
    y, logdet = flow(u)
    y2, logdet2 = loaded(u)
    assert torch.equal(y, y2) and torch.equal(logdet, logdet2)
    assert torch.allclose(loaded.inverse(y2), u, atol=1e-5)


def test_weight_normed_parts_copy_shallowly_as_before():
    # copy.copy hands __getstate__'s state on unpickled: the weight-normed layer stood there as its pickling
    # stand-in ('_WeightNormed' object is not callable)
    from avade.norms.weight_norm import WeightNorm, WeightNormConfig
    from avade.posteriors.flow import IAFStep

    wn = WeightNorm(WeightNormConfig(), layer=torch.nn.Conv2d(3, 4, 3))
    shallow = copy.copy(wn)
    x = torch.randn(2, 3, 5, 5)
    assert shallow.layer is wn.layer and torch.equal(shallow(x), wn(x))
    step = IAFStep(4, 8, context=3)
    assert copy.copy(step).ctx is step.ctx
