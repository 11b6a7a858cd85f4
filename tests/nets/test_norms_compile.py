"""Every registered norm traces into one graph under ``torch.compile`` once its data-dependent init has run.

``train.compile`` compiles the encoder and decoder, whose every layer is wrapped in a norm: a graph break
per layer (as ``bool()`` of the init flag was, 66 breaks in ``av_ade_wg_rd``, and then dynamo's recompile
limit) made the compiled step slower than the eager one on the H200. The ``eager`` backend runs dynamo's
tracing alone, which is where graph breaks happen.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import avade
from avade.nn.layers import norm_options
from avade.posteriors.made import MaskedConv2d
from avade.testing import component_ids

NORMS = [name for _, name in component_ids("norm")]


def _one_graph(module: nn.Module, *args: torch.Tensor | None) -> None:
    """``module`` (in training mode) after one eager call, its data-dependent init, as the trainer runs it before
    compiling: compiled with ``fullgraph=True``, which fails at a graph break, it gives the eager output."""
    torch._dynamo.reset()
    module.train()
    module(*args)
    want = module(*args)
    got = torch.compile(module, backend="eager", fullgraph=True)(*args)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", NORMS)
@pytest.mark.parametrize("conditional", [False, True])
def test_norm_compiles_as_one_graph_after_its_init(name: str, conditional: bool) -> None:
    torch.manual_seed(0)
    layer = avade.create("norm", name, layer=nn.Conv2d(3, 5, 3, padding=1), num_classes=4)
    x = torch.randn(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 0, 1]) if conditional else None
    _one_graph(layer, x, y)


def test_weight_norm_with_its_data_dependent_init_compiles_as_one_graph() -> None:
    torch.manual_seed(0)
    layer = avade.create("norm", "weight-norm", layer=nn.Conv2d(3, 5, 3, padding=1), init_scale=0.1)
    _one_graph(layer, torch.randn(6, 3, 8, 8))
    assert layer.initialized.is_set()


def test_iaf_masked_conv_with_its_data_dependent_init_compiles_as_one_graph() -> None:
    torch.manual_seed(0)
    with norm_options({"weight-norm": {"init_scale": 0.1}}):
        conv = MaskedConv2d(4, 6, 3, torch.arange(4) % 2, torch.arange(6) % 2, strict=True)
    _one_graph(conv, torch.randn(6, 4, 8, 8))
    assert conv.initialized is not None and conv.initialized.is_set()


def _loaded(make) -> tuple[nn.Module, nn.Module]:
    """An initialised module and a fresh one given its state dict, as ``--resume`` restores a checkpoint (and
    skips the eager data-dependent init that precedes compiling a new run)."""
    done = make()
    done.train()
    done(torch.randn(6, 3, 8, 8))
    again = make()
    again.load_state_dict(done.state_dict())
    return done, again.train()


@pytest.mark.parametrize("what", ["actnorm", "weight-norm", "flow-actnorm"])
def test_a_loaded_initialised_layer_compiles_as_one_graph(what: str) -> None:
    # A resumed train.compile run compiles layers loaded from a checkpoint: with the flag unknown until a
    # forward read its buffer, its first step broke the graph at every such layer.
    from avade.flows.actnorm import ActNorm

    def make() -> nn.Module:
        torch.manual_seed(0)
        if what == "flow-actnorm":
            return ActNorm(in_shape=(3, 8, 8))
        options = {"init_scale": 0.1} if what == "weight-norm" else {}
        return avade.create("norm", what, layer=nn.Conv2d(3, 5, 3, padding=1), **options)

    done, again = _loaded(make)
    torch._dynamo.reset()
    x = torch.randn(6, 3, 8, 8)
    got = torch.compile(again, backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(got, done(x))
