"""The component contracts (avade.contracts): what the registry refuses to hand the model, and that the
Protocols type checkers read say the same as the run-time check."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import torch
import typing_extensions
from tiny_recipes import tiny_recipe
from torch import nn

from avade.contracts import CONTRACTS, ModuleLike, contract_problem
from avade.errors import RegistryError
from avade.models import build_model
from avade.registry import Registry, get_registry


def test_each_protocol_names_the_members_the_run_time_check_requires() -> None:
    for kind, (protocol, members, _) in CONTRACTS.items():
        own = typing_extensions.get_protocol_members(protocol) - typing_extensions.get_protocol_members(ModuleLike)
        # (a module's __call__ runs its forward)
        assert {"forward" if m == "__call__" else m for m in own} == set(members), kind


def test_torch_modules_satisfy_the_module_part_of_every_contract() -> None:
    assert isinstance(nn.Conv2d(1, 1, 1), ModuleLike)


class _Encoder(nn.Module):
    def __init__(self, *, stages: bool = True, forward: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        if stages:
            self.stage_shapes = [(4, 8, 8)]
        if forward:
            self.forward = lambda x, y=None: [self.conv(x)]  # type: ignore[method-assign]


class _Flow(nn.Module):
    inverse: Any = None  # an attribute in the place of the method

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_zeros(x.shape[0])


class _Posterior(nn.Module):  # a module with a forward, but not the stage methods the model drives
    stage_ids = (0,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("kind, component, expected", [
    ("encoder", _Encoder(stages=False), "_Encoder, which has no stage_shapes (encoder components are torch modules"),
    ("encoder", _Encoder(stages=False, forward=False), "_Encoder, which has no forward and no stage_shapes"),
    ("flow", _Flow(), "_Flow, which has no inverse (flow components are torch modules with forward(x) ->"),
    ("posterior", _Posterior(), "_Posterior, which has no forward_stage (posterior components"),
    ("decoder", nn.Identity(), "Identity, which has no initial_state and no forward_stage and no head"),
    ("discriminator", [nn.Linear(2, 1)], "list, which is not a torch.nn.Module (discriminator components are torch"),
])
def test_what_a_component_lacks_is_named(kind: str, component: Any, expected: str) -> None:
    problem = contract_problem(kind, component)
    assert problem is not None and problem.startswith(expected.split(" (")[0]) and expected in problem


def test_complete_components_and_kinds_without_a_module_contract_pass() -> None:
    assert contract_problem("encoder", _Encoder()) is None
    assert contract_problem("discriminator", nn.Linear(2, 1)) is None
    assert contract_problem("metric", object()) is None  # (checked where used, by their own contracts)


@attrs.define
class _Config:
    pass


def test_a_plugin_component_without_its_contract_is_refused_when_built_naming_the_plugin() -> None:
    from test_registry import plugin  # (the fake-plugin helper)

    registry = Registry()
    registry.add_plugin(plugin("shapeless", lambda reg: reg.register(
        "encoder", "shapeless", factory=lambda cfg, *, in_shape, num_classes=None: _Encoder(stages=False),
        config=_Config)), dist="shapeless-dist", version="0.1")
    with pytest.raises(RegistryError, match=r"^encoder 'shapeless' \(from plugin shapeless-dist 0.1\) built _Encoder, "
                                            r"which has no stage_shapes \(.*\); fix or disable that plugin"):
        registry.create("encoder", "shapeless", in_shape=(3, 8, 8))


def test_the_model_builder_refuses_it_before_any_step(fresh_registry: None) -> None:
    """Through a recipe: one RegistryError while the model is built, not an AttributeError mid-step."""
    get_registry().register("posterior", "forward-only", config=_Config,
                            factory=lambda cfg, *, stage_shapes, num_classes=None: _Posterior())
    with pytest.raises(RegistryError, match=r"^posterior 'forward-only' built _Posterior, which has no forward_stage"):
        build_model(tiny_recipe("model.posterior.name=forward-only"), (3, 8, 8))
