"""What a plugin author meets: the kit and the model builder agree, and factory mistakes are said as such."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import torch
from tiny_recipes import tiny_recipe
from torch import nn

from avade.errors import ConfigError, RegistryError
from avade.models.build import build_model
from avade.nets.conv import ConvEncoder, ConvEncoderConfig
from avade.registry import get_registry, reset_registry
from avade.testing import check_module


@pytest.fixture
def registry() -> Iterator[Any]:
    reset_registry()
    yield get_registry()
    reset_registry()


class ClasslessEncoder(ConvEncoder):
    """An encoder without a conditional form: its factory takes no ``num_classes``."""

    def __init__(self, cfg: ConvEncoderConfig, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__(cfg, in_shape=in_shape)


def test_an_encoder_the_kit_passes_without_num_classes_builds_unconditional(registry: Any) -> None:
    check_module("encoder", ClasslessEncoder, ConvEncoderConfig(channels=[4, 8]))  # the kit accepts it
    registry.register("encoder", "classless", factory=ClasslessEncoder, config=ConvEncoderConfig)
    model = build_model(tiny_recipe('model.encoder.name="classless"'))
    assert isinstance(model.encoder, ClasslessEncoder)
    with pytest.raises(ConfigError, match=r"encoder 'classless' has no class-conditional form .*"
                                          r"model.conditional = false"):
        build_model(tiny_recipe('model.encoder.name="classless"', "model.conditional=true"))


@attrs.define
class GainConfig:
    init: float = 1.0


class GainWithoutClasses(nn.Module):
    def __init__(self, cfg: GainConfig, *, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        return self.layer(x)


def test_a_factory_missing_a_context_keyword_is_told_its_signature(registry: Any) -> None:
    registry.register("norm", "gain", factory=GainWithoutClasses, config=GainConfig)
    signature = r"factory\(cfg, \*, layer, num_classes=None\)"
    with pytest.raises(RegistryError, match=r"norm 'gain': its factory takes no keyword argument 'num_classes'; "
                                            r"norm factories are called as " + signature):
        registry.create("norm", "gain", layer=nn.Linear(2, 2), num_classes=None)
    with pytest.raises(ConfigError, match="unknown option"):  # a caller's typo is still an option
        registry.create("norm", "gain", layer=nn.Linear(2, 2), inti=2.0)


class ShapelessCritic(nn.Module):
    """A discriminator whose factory names its shape argument otherwise than avade passes it."""

    def __init__(self, cfg: GainConfig, shape: tuple[int, int, int] = (3, 8, 8)) -> None:
        super().__init__()
        self.head = nn.Linear(shape[0], 1)

    def forward(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        return self.head(x.mean((2, 3))).squeeze(1)


def test_a_recipe_using_a_factory_missing_a_context_keyword_is_told_its_signature(registry: Any) -> None:
    # the model builder, as `recipe check` / `recipe run` build it, says what avade.create says
    registry.register("discriminator", "shapeless", factory=ShapelessCritic, config=GainConfig)
    with pytest.raises(RegistryError, match=r"discriminator 'shapeless': its factory takes no keyword argument "
                                            r"'in_shape'; discriminator factories are called as "
                                            r"factory\(cfg, \*, in_shape, num_classes=None\)"):
        build_model(tiny_recipe('model.discriminator.name="shapeless"'))


class WrappedEncoder(ConvEncoder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


def test_a_factory_taking_kwargs_gets_its_context(registry: Any) -> None:
    check_module("encoder", WrappedEncoder, ConvEncoderConfig(channels=[4, 8]))
    registry.register("encoder", "wrapped", factory=WrappedEncoder, config=ConvEncoderConfig)
    assert isinstance(build_model(tiny_recipe('model.encoder.name="wrapped"')).encoder, WrappedEncoder)


@attrs.define
class BrightnessConfig:
    samples: int = 8


class Brightness:
    name = "mean-brightness"

    def __init__(self, cfg: BrightnessConfig) -> None:
        self.cfg = cfg

    def compute(self, ctx: Any) -> dict[str, float]:
        return {"mean_brightness": float(torch.cat(list(ctx.sample_batches(self.cfg.samples))).double().mean())}


def test_check_module_checks_a_metric_under_its_own_name() -> None:
    check_module("metric", Brightness, BrightnessConfig())


def test_check_module_refuses_a_config_that_is_not_attrs_in_one_line() -> None:
    class Plain:
        samples = 8

    with pytest.raises(AssertionError, match=r"^metric config must be an instance of an attrs class "
                                             r"\(@attrs.define\), got Plain$"):
        check_module("metric", Brightness, Plain())


def test_the_factory_context_is_the_one_contributing_documents() -> None:
    """The keywords the registry serves a `**kwargs` factory, and names in a signature error, are CONTRIBUTING's."""
    import re
    from pathlib import Path

    from avade.registry import FACTORY_CONTEXT, KINDS

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    documented = {kind: tuple(re.findall(r"(\w+)(?:=None)?(?:,|$)", signature.partition("*")[2]))
                  for kind, signature in re.findall(r"^\| (\w+) \| `\(cfg(?:, )?([^)]*)\)` \|", text, flags=re.M)}
    assert set(documented) == set(KINDS) == set(FACTORY_CONTEXT)
    assert documented == FACTORY_CONTEXT


class Broken(Brightness):
    def compute(self, ctx: Any) -> dict[str, float]:
        raise ValueError("no features")


class Unnamed(Brightness):
    def compute(self, ctx: Any) -> dict[str, float]:
        return {"other_name": 1.0}


@pytest.mark.parametrize("metric", [Broken, Unnamed])
def test_a_failing_metric_is_one_failed_check_without_the_exception_chained(metric: type) -> None:
    """As the kit's other checks (_call): the verdict is raised outside the except, so the report shows no
    "During handling of the above exception, another exception occurred" with the plugin's traceback first."""
    with pytest.raises(AssertionError, match=r"^metric 'mean-brightness': ") as info:
        check_module("metric", metric, BrightnessConfig())
    assert info.value.__context__ is None
