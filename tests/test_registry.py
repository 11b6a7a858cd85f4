"""The registry: register/create, helpful lookups, duplicates, and isolated plugin loading."""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import json
import sys
import types
import warnings
from collections.abc import Callable
from typing import Any, Literal

import attrs
import pytest
import torch
from torch import nn

import avade
from avade import hookimpl
from avade.errors import ConfigError, RegistryError
from avade.registry import (
    BUILTIN_DIST,
    DISABLE_ENV,
    KINDS,
    NAME_PATTERN,
    PLUGIN_FIX_HINT,
    PluginFailure,
    PluginWarning,
    Registry,
    get_registry,
    is_valid_name,
    list_components,
)
from avade.schema import describe, ge


@attrs.define
class ToyConfig:
    """A config schema with the usual field types."""

    scales: int = attrs.field(default=1, validator=ge(1))
    width: float = 1.0
    mode: Literal["fast", "exact"] = "fast"


class Toy(nn.Module):
    """A factory taking the validated config plus one context keyword (an identity flow: the registry holds
    what it builds to the flow contract)."""

    def __init__(self, cfg: ToyConfig, *, in_shape: tuple[int, int, int] = (3, 8, 8)) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_shape = in_shape

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y


def toy_registry() -> Registry:
    registry = Registry()
    registry.register("flow", "toy", factory=Toy, config=ToyConfig, summary="A toy.\nSecond line ignored.")
    registry.register("flow", "toy-two", factory=Toy, config=ToyConfig)
    return registry


def plugin(name: str, register: Callable[[Any], None]) -> types.ModuleType:
    """A module object that looks like an installed plugin."""
    module = types.ModuleType(name)

    @hookimpl
    def avade_register(registry: Any) -> None:
        register(registry)

    module.avade_register = avade_register  # type: ignore[attr-defined]
    return module


def registering(*names: str, kind: str = "flow", fail: BaseException | None = None) -> Callable[[Any], None]:
    def register(registry: Any) -> None:
        for name in names:
            registry.register(kind, name, factory=Toy, config=ToyConfig)
        if fail is not None:
            raise fail

    return register


def plugin_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, PluginWarning)]


# -- register / create / lookup ---------------------------------------------------------------------


def test_register_and_create_validates_config_and_passes_context() -> None:
    registry = toy_registry()
    obj = registry.create("flow", "toy", scales=3, width=2, in_shape=(1, 4, 4))
    assert isinstance(obj, Toy)
    assert obj.cfg == ToyConfig(scales=3, width=2.0, mode="fast")
    assert isinstance(obj.cfg.width, float)
    assert obj.in_shape == (1, 4, 4)
    assert registry.get("flow", "toy").summary == "A toy."


def test_create_builds_builtin_flows() -> None:
    from avade.flows.realnvp import RealNVP

    flow = avade.create("flow", "realnvp", in_shape=(3, 8, 8), hidden=8, blocks=1)
    assert type(flow) is RealNVP, type(flow)  # (a class's name is never empty: that checked nothing)
    torch.manual_seed(0)
    with torch.no_grad():  # off its identity start (zero-initialised couplings), so the round trip means something
        for parameter in flow.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    x = torch.rand(2, 3, 8, 8)
    y, logdet = flow(x)
    assert not torch.allclose(y, x, atol=1e-3)
    assert logdet.shape == (2,) and torch.allclose(flow.inverse(y), x, atol=1e-4)


def test_unknown_name_suggests_close_matches_and_the_list_command() -> None:
    with pytest.raises(RegistryError) as info:
        toy_registry().get("flow", "toyy")
    message = str(info.value)
    assert "unknown flow 'toyy'" in message
    assert "did you mean 'toy'" in message
    assert "`avade list-components --kind flow`" in message


def test_unknown_builtin_name_via_create() -> None:
    with pytest.raises(RegistryError, match=r"did you mean 'realnvp'.*list-components --kind flow"):
        avade.create("flow", "realnvpp", in_shape=(3, 8, 8))


def test_unknown_kind_suggests_and_lists_kinds() -> None:
    with pytest.raises(RegistryError) as info:
        toy_registry().get("flw", "toy")
    assert "unknown component kind 'flw'" in str(info.value)
    assert "did you mean 'flow'" in str(info.value)
    assert "posterior" in str(info.value)  # the valid kinds are listed
    with pytest.raises(RegistryError, match="unknown component kind"):
        toy_registry().list(kind="flw")


@pytest.mark.parametrize("kind, name", [("Flow", "x"), ("flow", "My_Flow"), ("flow", "a b"), ("flow", ""),
                                        ("flows", "x"), ("sampler", "x")])
def test_invalid_kind_or_name_is_refused(kind: str, name: str) -> None:
    with pytest.raises(RegistryError, match="invalid component"):
        Registry().register(kind, name, factory=Toy)


@pytest.mark.parametrize("name", ["pw,two", "a.b", "a/b", "-a", "a-", "a--b", "a_b", "A-b", "a b", "a*", "a\n",
                                  "\u00e9t\u00e9", "[a]", 3])
def test_a_name_outside_the_rule_is_refused_naming_the_rule(name: Any) -> None:
    with pytest.raises(RegistryError) as info:
        Registry().register("metric", name, factory=Toy)
    message = str(info.value)
    assert f"invalid component name {name!r}" in message and NAME_PATTERN in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("kind", ["metric", "flow", "dataset"])
def test_the_name_none_is_reserved_for_removing_a_table(kind: str) -> None:
    # `name = "none"` removes a recipe's component table; a metric so named reached an assert in `[eval]`
    with pytest.raises(RegistryError) as info:
        Registry().register(kind, "none", factory=Toy)
    message = str(info.value)
    assert f"{kind} name 'none' is reserved" in message and "another name" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("name", ["bpd", "gan-test", "3d", "a1-b2-c3"])
def test_a_name_inside_the_rule_registers(name: str) -> None:
    registry = Registry()
    registry.register("metric", name, factory=Toy)
    assert (("metric", name) in registry) and is_valid_name(name)


def test_a_plugin_with_a_comma_in_a_name_is_skipped_with_one_warning() -> None:
    # `--metrics bpd,pw,two` would read it as `pw` and `two`: the plugin fails to load, the CLI keeps working
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert not registry.add_plugin(plugin("p", registering("pw-one", "pw,two", kind="metric")), dist="pw-dist")
    (message,) = plugin_warnings(record)
    assert message.startswith("plugin 'pw-dist' failed to load and is skipped: invalid component name 'pw,two'")
    assert NAME_PATTERN in message and "\n" not in message
    assert message.endswith(PLUGIN_FIX_HINT), message  # how to get past it: a user may not be able to fix it
    assert message.count("pw-dist") == 1, message
    assert ("metric", "pw-one") not in registry and registry.list() == []
    assert [f.dist for f in registry.failures] == ["pw-dist"]


def test_every_installed_component_name_follows_the_rule(fresh_registry: None) -> None:
    # the rule must not cost any built-in (or the example plugin, when installed) its place
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        registry = get_registry()
    assert registry.failures == []
    names = [(i.kind, i.name) for i in registry.list()]
    assert ("metric", "gan-test") in names and ("dataset", "natural-patches") in names
    assert [n for n in names if not is_valid_name(n[1])] == []
    try:
        metadata.distribution("avade-nice")
    except metadata.PackageNotFoundError:
        return
    assert {("flow", "nice"), ("discriminator", "sngan")} <= set(names)


# the built-ins, and the example plugin when installed (what plugin authors copy)
DOCUMENTED = [i for i in get_registry().list() if i.dist in (BUILTIN_DIST, "avade-nice")]


@pytest.mark.parametrize("kind, name", [(i.kind, i.name) for i in DOCUMENTED],
                         ids=[f"{i.kind}/{i.name}" for i in DOCUMENTED])
def test_every_config_field_of_a_built_in_component_has_a_help_text(kind: str, name: str) -> None:
    """`list-components --json --schema` and `recipe keys` show each option's help: a built-in option added
    without ``metadata={"help": ...}`` would show a bare name and type."""
    config = get_registry().get(kind, name).load_config()
    rows = describe(config) if config is not None else []
    assert [r["name"] for r in rows if not r["help"].strip()] == [], \
        f"{kind} '{name}': give these fields metadata={{'help': ...}} in {getattr(config, '__module__', '')}"


def test_a_failed_plugin_keeps_its_exception_and_traceback() -> None:
    registry = Registry()
    error = ValueError("boom in hook")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert not registry.add_plugin(plugin("bad", registering("partial", fail=error)), dist="bad-dist")
        assert not registry.add_plugin(plugin("bad_name", registering("a.b")), dist="dotted-dist")
    failure, dotted = registry.failures
    assert failure.exception is error and failure.reason == "ValueError: boom in hook"
    text = failure.format_traceback()
    assert text.startswith("Traceback (most recent call last):") and text.rstrip().endswith("ValueError: boom in hook")
    assert f'File "{__file__}"' in text and "in register" in text  # the plugin's own frame: file and line
    assert isinstance(dotted.exception, RegistryError)
    assert "registry.register(kind, name" in dotted.format_traceback()  # the plugin's line that registers it
    # the warning carries its failure (what `avade --debug` prints the traceback of); equality ignores it
    assert [w.message.failure for w in record if issubclass(w.category, PluginWarning)] == [failure, dotted]
    assert failure == attrs.evolve(failure, exception=None)
    assert PluginFailure("d", "e", "r").format_traceback() == ""


def test_a_typo_in_the_kind_fails_the_plugin_with_a_suggestion() -> None:
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert not registry.add_plugin(plugin("p", registering("my-flow", kind="flows")), dist="p-dist")
    (message,) = plugin_warnings(record)
    assert "invalid component kind 'flows' (did you mean 'flow'?)" in message
    assert message.count("p-dist") == 1, message  # named by the warning, not again by the error inside it
    assert registry.kinds() == sorted(KINDS)


def test_direct_duplicate_registration_names_both_distributions() -> None:
    registry = Registry()
    assert registry.add_plugin(plugin("first", registering("dup")), dist="first-dist", version="1.0")
    with pytest.raises(RegistryError) as info:
        registry.register("flow", "dup", factory=Toy, config=ToyConfig)
    assert str(info.value) == ("flow 'dup' is plugin first-dist 1.0's flow; register yours under another name, or "
                               f"disable that plugin ({DISABLE_ENV}=first-dist)")
    # The first registration is untouched.
    assert registry.get("flow", "dup").dist == "first-dist"


def test_registering_in_process_again_replaces_and_a_built_in_s_name_is_refused() -> None:
    # a notebook cell run again (maybe edited) registers its name again: the new one is taken, not refused as
    # "registered twice: by __main__ and by __main__; disable __main__"; a built-in's name is named as such
    import avade.builtin

    registry = Registry()
    registry.add_plugin(avade.builtin, dist="avade", version="0.1.0", entry_point="avade")
    registry.register("flow", "mine", factory=Toy, config=ToyConfig)

    class Edited(Toy):
        pass

    registry.register("flow", "mine", factory=Edited, config=ToyConfig)
    assert registry.get("flow", "mine").factory is Edited
    # ... but two modules registering one name outside any plugin hook: neither silently wins
    with pytest.raises(RegistryError, match=r"^flow 'mine' is registered twice in this process, by "
                                            rf"{__name__} and by other_module; register each name once$"):
        registry.register("flow", "mine", factory="other_module:Flow")
    assert registry.get("flow", "mine").factory is Edited
    with pytest.raises(RegistryError, match=r"^flow 'glow' is the built-in flow; register yours under another name$"):
        registry.register("flow", "glow", factory=Toy, config=ToyConfig)
    assert registry.get("flow", "glow").dist == "avade"


def test_create_rejects_unknown_option_with_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        toy_registry().create("flow", "toy", scals=2)
    assert info.value.path == "flow.toy.scals"
    assert "did you mean 'scales'" in str(info.value)
    assert "in_shape" in str(info.value)  # context keywords are listed as valid options too


@pytest.mark.parametrize(
    "options, path, expected",
    [
        ({"scales": "two"}, "flow.toy.scales", 'expected int, got "two"'),
        ({"scales": 2.5}, "flow.toy.scales", "expected int, got 2.5"),
        ({"scales": True}, "flow.toy.scales", "expected int, got true"),
        ({"scales": 0}, "flow.toy.scales", "expected a number >= 1"),
        ({"width": "1.0"}, "flow.toy.width", "expected float"),
        ({"mode": "exakt"}, "flow.toy.mode", "did you mean 'exact'"),
    ],
)
def test_create_validates_types_with_path(options: dict[str, Any], path: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        toy_registry().create("flow", "toy", **options)
    assert info.value.path == path
    assert expected in str(info.value)
    assert str(info.value).startswith(path + ":")


def test_builtin_create_reports_path_for_wrong_type() -> None:
    with pytest.raises(ConfigError) as info:
        avade.create("flow", "realnvp", in_shape=(3, 8, 8), scales="two")
    assert info.value.path == "flow.realnvp.scales"
    assert 'expected int, got "two"' in str(info.value)


def test_component_without_config_takes_no_options() -> None:
    registry = Registry()
    registry.register("metric", "plain", factory=lambda: "built")
    assert registry.create("metric", "plain") == "built"
    with pytest.raises(ConfigError, match="unknown option"):
        registry.create("metric", "plain", anything=1)


def test_broken_lazy_reference_is_a_registry_error() -> None:
    registry = Registry()
    registry.register("flow", "ghost", factory="avade_no_such_module:Flow", config="avade_no_such_module:Cfg")
    with pytest.raises(RegistryError, match="flow 'ghost': cannot import 'avade_no_such_module:Cfg'"):
        registry.create("flow", "ghost")


def test_broken_lazy_reference_of_a_plugin_names_the_plugin() -> None:
    registry = Registry()

    def register(reg: Any) -> None:
        reg.register("flow", "ghost", factory="avade_no_such_module:Flow", config="avade_no_such_module:Cfg")

    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # registering lazily is fine; using it is not
        assert registry.add_plugin(plugin("p", register), dist="ghost-dist", version="0.2")
    with pytest.raises(RegistryError) as info:
        registry.create("flow", "ghost")
    message = str(info.value)
    assert message.startswith("flow 'ghost' (from plugin ghost-dist 0.2): cannot import 'avade_no_such_module:Cfg'")
    assert DISABLE_ENV in message and "\n" not in message


def test_list_components_glob_and_kind_filter() -> None:
    assert list_components("*iaf*") == ["posterior/iaf"]
    flows = list_components(kind="flow")
    assert "flow/realnvp" in flows and all(n.startswith("flow/") for n in flows)
    assert list_components("real*", kind="flow") == ["flow/realnvp"]
    assert list_components("zzz-no-match*") == []
    everything = list_components()
    assert everything == sorted(everything, key=lambda s: tuple(s.split("/")))


def test_list_components_takes_back_the_names_it_gives() -> None:
    """It names components `flow/realnvp`: that name, or `flow/*`, matched nothing (the glob saw `realnvp` alone),
    nor did `*GLOW*`."""
    assert list_components("flow/realnvp") == ["flow/realnvp"]
    assert list_components("flow/*") == list_components(kind="flow")
    assert list_components("*/iaf") == ["posterior/iaf"]
    assert list_components("*GLOW*") == list_components("*glow*") == ["flow/glow"]
    assert list_components("flow*") == []  # (without a "/", the name alone, as before)


# -- plugin loading -----------------------------------------------------------------------------------


def test_add_plugin_records_dist_version_and_count() -> None:
    registry = Registry()
    assert registry.add_plugin(plugin("p", registering("a-flow", "b-flow")), dist="p-dist", version="0.3",
                               entry_point="p")
    assert registry.plugins[-1].dist == "p-dist" and registry.plugins[-1].count == 2
    info = registry.get("flow", "a-flow")
    assert (info.dist, info.version, info.provider) == ("p-dist", "0.3", "p-dist 0.3")


def test_conflicting_plugin_warns_and_the_name_errors_naming_both() -> None:
    registry = Registry()
    registry.add_plugin(plugin("a", registering("shared", "only-a")), dist="dist-a", version="1.0")
    with pytest.warns(PluginWarning) as record:
        ok = registry.add_plugin(plugin("b", registering("shared", "only-b")), dist="dist-b", version="2.0")
    assert ok
    messages = plugin_warnings(record.list)
    assert len(messages) == 1
    assert "dist-a 1.0" in messages[0] and "dist-b 2.0" in messages[0]
    with pytest.raises(RegistryError) as info:
        registry.get("flow", "shared")
    assert "dist-a 1.0" in str(info.value) and "dist-b 2.0" in str(info.value)
    # Everything else from both plugins still works.
    assert registry.create("flow", "only-a").cfg == ToyConfig()
    assert registry.create("flow", "only-b").cfg == ToyConfig()


def test_plugin_reusing_a_builtin_name_is_skipped_and_the_builtin_keeps_working() -> None:
    import avade.builtin

    registry = Registry()
    registry.add_plugin(avade.builtin, dist="avade", version="0.1.0", entry_point="avade")
    with pytest.warns(PluginWarning) as record:
        ok = registry.add_plugin(plugin("b", registering("realnvp", "only-b")), dist="dist-b", version="2.0")
    assert ok
    (message,) = plugin_warnings(record.list)
    assert "flow 'realnvp' from dist-b 2.0 is skipped" in message and "avade 0.1.0" in message
    assert registry.conflicts == {}
    assert registry.get("flow", "realnvp").dist == "avade"
    assert registry.create("flow", "realnvp", in_shape=(3, 8, 8), hidden=8, blocks=1) is not None
    assert registry.create("flow", "only-b").cfg == ToyConfig()
    assert registry.plugins[-1].count == 1


@pytest.mark.parametrize("cause", ["raise", "not-decorated", "no-hook", "bad-signature", "returns"])
def test_failing_plugin_is_one_warning_and_rolled_back(cause: str) -> None:
    registry = Registry()
    registry.add_plugin(plugin("good", registering("kept")), dist="good-dist", version="1.0")
    if cause == "raise":
        # Registers a new name, then conflicts, then fails: all of it must be undone.
        bad: Any = plugin("bad", registering("partial", "kept", fail=ValueError("boom in hook")))
        expected = "ValueError: boom in hook"
    elif cause == "not-decorated":
        bad = types.ModuleType("bad")
        bad.avade_register = registering("partial")  # type: ignore[attr-defined]
        expected = "not decorated with `@avade.hookimpl`"
    elif cause == "no-hook":
        bad = types.SimpleNamespace()
        expected = "defines no `avade_register(registry)` hook"
    elif cause == "returns":
        bad = types.ModuleType("bad")

        @hookimpl
        def avade_register(registry: Any) -> Any:  # returns its components instead of registering them all
            registering("partial")(registry)
            return [("flow", "other", Toy)]

        bad.avade_register = avade_register  # type: ignore[attr-defined]
        expected = "`avade_register` returned a list; it must call registry.register"
    else:
        bad = types.ModuleType("bad")

        @hookimpl
        def avade_register(reg: Any) -> None:  # wrong argument name: pluggy refuses it
            registering("partial")(reg)

        bad.avade_register = avade_register  # type: ignore[attr-defined]
        expected = "PluginValidationError"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert not registry.add_plugin(bad, dist="bad-dist", version="9.9", entry_point="bad")
    messages = plugin_warnings(record)
    assert len(messages) == 1, messages
    assert "plugin 'bad-dist' failed to load" in messages[0] and expected in messages[0]
    assert [f.dist for f in registry.failures] == ["bad-dist"]
    assert ("flow", "partial") not in registry
    assert registry.conflicts == {}
    assert registry.create("flow", "kept").cfg == ToyConfig()
    assert [p.dist for p in registry.plugins] == ["good-dist"]


class FakeDist:
    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version


def fake_entry_point(name: str, value: str, dist: str, version: str = "1.0") -> Any:
    ep = metadata.EntryPoint(name=name, value=value, group="avade")
    return types.SimpleNamespace(name=ep.name, value=ep.value, dist=FakeDist(dist, version), load=ep.load)


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Entry points: the real built-ins, a working plugin, one failing on import, one failing in its hook."""
    real = [ep for ep in metadata.entry_points(group="avade") if ep.value.startswith("avade.")]
    monkeypatch.setitem(sys.modules, "fake_good_plugin", plugin("fake_good_plugin", registering("fake-flow")))
    monkeypatch.setitem(sys.modules, "fake_hook_fails",
                        plugin("fake_hook_fails", registering("half-flow", fail=RuntimeError("hook exploded"))))
    eps = [
        *real,
        fake_entry_point("good", "fake_good_plugin", "fake-good"),
        fake_entry_point("broken", "fake_no_such_module_xyz", "fake-broken"),
        fake_entry_point("hook", "fake_hook_fails", "fake-hook"),
    ]

    def entry_points(**kwargs: Any) -> list[Any]:
        assert kwargs == {"group": "avade"}
        return eps

    monkeypatch.setattr("avade.registry.metadata.entry_points", entry_points)
    return eps


def test_entry_point_loading_isolates_failures(fake_plugins: list[Any]) -> None:
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry.load_entry_points()
    messages = plugin_warnings(record)
    assert len(messages) == 2, messages
    (import_msg,) = [m for m in messages if "fake-broken" in m]
    assert "import of 'fake_no_such_module_xyz' failed" in import_msg and "ModuleNotFoundError" in import_msg
    (hook_msg,) = [m for m in messages if "fake-hook" in m]
    assert "RuntimeError: hook exploded" in hook_msg
    assert {f.dist for f in registry.failures} == {"fake-broken", "fake-hook"}
    # each keeps its exception, whose traceback reaches into the plugin (--debug prints it)
    broken = {f.dist: f for f in registry.failures}
    assert isinstance(broken["fake-broken"].exception, ModuleNotFoundError)
    assert "fake_no_such_module_xyz" in broken["fake-broken"].format_traceback()
    assert isinstance(broken["fake-hook"].exception, RuntimeError)
    assert f'File "{__file__}"' in broken["fake-hook"].format_traceback()
    assert ("flow", "half-flow") not in registry
    assert registry.get("flow", "fake-flow").dist == "fake-good"
    # The built-ins still load and build.
    assert registry.get("flow", "realnvp").dist == "avade"
    assert registry.create("norm", "none", layer=__import__("torch").nn.Conv2d(1, 1, 1)) is not None
    assert "avade" in [p.dist for p in registry.plugins]
    # a component the recipe asks for and no loaded plugin has: the broken plugins are named with it
    with pytest.raises(RegistryError, match=r"unknown flow 'half-flow'.*; plugins that failed to load, which may "
                                            r"provide it: .*'fake-broken' \(import of 'fake_no_such_module_xyz'"):
        registry.get("flow", "half-flow")


def test_entry_points_can_be_disabled(fake_plugins: list[Any]) -> None:
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry.load_entry_points(disabled=["fake-broken", " HOOK ", "fake-good"])  # dist or entry-point name
    assert plugin_warnings(record) == []
    assert registry.failures == []
    assert ("flow", "fake-flow") not in registry



def test_disabling_a_plugin_that_is_not_installed_warns_with_a_suggestion(fake_plugins: list[Any]) -> None:
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry.load_entry_points(disabled=["fake-gooood", "fake-broken", "hook"])  # a typo, two right names
    messages = plugin_warnings(record)
    assert len(messages) == 1, messages
    assert "'fake-gooood'" in messages[0] and "did you mean 'fake-good'" in messages[0]
    assert "installed: " in messages[0] and "fake-broken" in messages[0]
    assert ("flow", "fake-flow") in registry  # the typo disabled nothing

def test_env_variable_disables_a_plugin(fake_plugins: list[Any], fresh_registry: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_ENV, "fake-good,fake-broken,fake-hook")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # nothing left to fail
        registry = get_registry()
    assert ("flow", "fake-flow") not in registry
    assert ("flow", "realnvp") in registry


def test_env_variable_disables_the_installed_example_plugin(fresh_registry: None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("avade_nice", reason="the example plugin plugins/avade-nice is not installed")
    assert ("flow", "nice") in get_registry()
    monkeypatch.setenv(DISABLE_ENV, "avade-nice")
    avade.registry.reset_registry()
    assert ("flow", "nice") not in get_registry()
    assert "flow/nice" not in list_components("nic*")
    with pytest.raises(RegistryError, match="unknown flow 'nice'"):
        avade.create("flow", "nice", in_shape=(3, 8, 8))


# -- the example plugin plugins/avade-nice -----------------------------------------------------------

NICE_RECIPE = """
[model]
variant = "av-ade"
[model.flow]
name = "nice"
couplings = 2
hidden = 8
[model.encoder]
name = "conv"
channels = [8, 16]
[model.posterior]
name = "diagonal"
latent_channels = 4
[model.decoder]
name = "conv"
[model.discriminator]
name = "sngan"
channels = [8, 8]
down = [true, true]
[data]
name = "natural-patches"
resolution = 16
"""


@pytest.fixture
def nice_plugin() -> None:
    try:
        metadata.distribution("avade-nice")
    except metadata.PackageNotFoundError:
        pytest.skip("the example plugin avade-nice is not installed (pip install -e plugins/avade-nice)")


def test_example_plugin_components_come_from_its_distribution(nice_plugin: None) -> None:
    registry = get_registry()
    assert registry.get("flow", "nice").dist == "avade-nice"
    assert registry.get("discriminator", "sngan").dist == "avade-nice"
    record = [p for p in registry.plugins if p.dist == "avade-nice"]
    assert record and record[0].count == 2 and record[0].version == metadata.version("avade-nice")


def test_recipe_with_plugin_flow_validates_and_builds(nice_plugin: None, tmp_path: Any) -> None:
    import torch

    from avade.models import build_model
    from avade.recipe import load_recipe

    path = tmp_path / "nice.toml"
    path.write_text(NICE_RECIPE, encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.model.flow is not None and recipe.model.flow.name == "nice"
    assert recipe.model.flow.config.couplings == 2
    with pytest.raises(ConfigError, match=r"model.flow.coupling.*did you mean 'couplings'"):
        load_recipe(path, ["model.flow.coupling=3"])
    torch.manual_seed(0)
    model = build_model(recipe, (3, 16, 16))
    assert type(model.flow).__module__.startswith("avade_nice")
    assert type(model.discriminator).__module__.startswith("avade_nice")
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = model.log_likelihood(x)
    assert out["bpd"].shape == (2,) and torch.isfinite(out["bpd"]).all()


def _exploding(cfg: ToyConfig) -> Any:
    raise ValueError("factory exploded")


def test_a_plugin_factory_that_raises_is_named_in_one_error() -> None:
    registry = Registry()
    registry.add_plugin(plugin("boom", lambda r: r.register("flow", "boom", factory=_exploding, config=ToyConfig)),
                        dist="boom-dist", version="0.1")
    with pytest.raises(RegistryError) as info:
        registry.create("flow", "boom")
    message = str(info.value)
    assert "flow 'boom'" in message and "boom-dist 0.1" in message and "factory exploded" in message
    assert DISABLE_ENV in message and isinstance(info.value.__cause__, ValueError)


def test_a_builtin_factory_bug_is_not_blamed_on_a_plugin() -> None:
    registry = Registry()
    registry.add_plugin(plugin("builtins", lambda r: r.register("flow", "own", factory=_exploding, config=ToyConfig)),
                        dist="avade", version="0.1")
    with pytest.raises(ValueError, match="factory exploded"):
        registry.create("flow", "own")


def test_create_without_a_required_context_names_it() -> None:
    with pytest.raises(ConfigError, match=r"needs the keyword argument\(s\) in_shape, e.g. in_shape="):
        avade.create("flow", "realnvp")


def test_list_components_names_each_failed_plugin_once(fake_plugins: list[Any], fresh_registry: None) -> None:
    from typer.testing import CliRunner

    from avade.cli.app import app

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, ["list-components", "*fake*"])
    assert result.exit_code == 0, result.output
    assert not [m for m in plugin_warnings(record) if "failed to load" in m]  # not also as a warning
    assert result.output.count("fake-broken") == 1 and result.output.count("fake-hook") == 1, result.output
    assert "warning: plugin 'fake-broken' failed to load and is skipped: " in result.output, result.output
    assert "fake-flow" in result.output


def test_built_ins_register_without_their_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    # avade run from a source tree that was never installed: no entry points at all
    monkeypatch.setattr("avade.registry.metadata.entry_points", lambda **kwargs: [])
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry.load_entry_points()
    assert plugin_warnings(record) == [] and registry.failures == []
    assert registry.get("flow", "realnvp").dist == "avade" and registry.get("metric", "fid").dist == "avade"


def test_a_plugin_calling_sys_exit_is_skipped_like_any_broken_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    # sys.exit() while importing, or in the hook, must not end avade (pluggy lets SystemExit through)
    monkeypatch.setattr("avade.registry.metadata.entry_points", lambda **kw: [
        types.SimpleNamespace(name="exits", value="fake_exit_on_import", dist=FakeDist("fake-exit", "1"),
                              load=lambda: (_ for _ in ()).throw(SystemExit(3))),
    ])
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry.load_entry_points()
        assert not registry.add_plugin(plugin("hook_exits", registering("x-flow", fail=SystemExit(2))),
                                       dist="fake-hook-exit")
    messages = plugin_warnings(record)
    assert any("fake-exit" in m and "SystemExit: 3" in m for m in messages), messages
    assert any("fake-hook-exit" in m and "SystemExit: 2" in m for m in messages), messages
    assert ("flow", "x-flow") not in registry
    from avade.registry import _resolve

    def exit_import(name: str, *a: Any, **k: Any) -> Any:
        raise SystemExit(1)

    monkeypatch.setattr("avade.registry.importlib.import_module", exit_import)
    with pytest.raises(RegistryError, match=r"cannot import 'fake_sysexit_mod:factory' \(SystemExit: 1\)"):
        _resolve("fake_sysexit_mod:factory", "flow 'x'")


def test_list_components_lists_both_providers_of_a_clashing_name(monkeypatch: pytest.MonkeyPatch,
                                                                   fresh_registry: None) -> None:
    from typer.testing import CliRunner

    from avade.cli.app import app

    real = [ep for ep in metadata.entry_points(group="avade") if ep.value.startswith("avade.")]
    monkeypatch.setitem(sys.modules, "fake_twin_a", plugin("fake_twin_a", registering("twin", "only-a")))
    monkeypatch.setitem(sys.modules, "fake_twin_b", plugin("fake_twin_b", registering("twin")))
    eps = [*real, fake_entry_point("a", "fake_twin_a", "twin-a"), fake_entry_point("b", "fake_twin_b", "twin-b")]
    monkeypatch.setattr("avade.registry.metadata.entry_points", lambda **kw: eps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(app, ["list-components", "twin*"])
        listed = json.loads(CliRunner().invoke(app, ["list-components", "*twin*", "--json"]).stdout)
    assert result.exit_code == 0, result.output
    assert "twin-a 1.0 (conflict)" in result.output and "twin-b 1.0 (conflict)" in result.output, result.output
    assert "flow 'twin' is provided by both twin-a 1.0 and twin-b 1.0" in result.output
    rows = [(r["dist"], r["conflict"]) for r in listed["components"] if r["name"] == "twin"]
    assert rows == [("twin-a", True), ("twin-b", True)]


def test_a_plugin_registering_a_name_twice_or_a_bad_summary_is_skipped() -> None:
    registry = Registry()
    for bad, expected in (
        (plugin("self_dup", registering("again", "again")), "it registers flow 'again' twice; register each name once"),
        (plugin("bad_summary", lambda reg: reg.register("flow", "s", factory=Toy, config=ToyConfig, summary=None)),
         "flow 's': summary must be a string (one line), got NoneType"),
    ):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert not registry.add_plugin(bad, dist="odd-dist", version="0.1")
        (message,) = plugin_warnings(record)
        assert expected in message, message


def test_disabling_takes_any_spelling_of_a_name_and_never_the_built_ins(fake_plugins: list[Any]) -> None:
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry.load_entry_points(disabled=["Fake_Good", "AVADE", "fake.hook"])  # PEP 503: fake-good, fake-hook
    messages = plugin_warnings(record)
    assert ("flow", "fake-flow") not in registry and ("flow", "half-flow") not in registry
    assert registry.get("flow", "realnvp").dist == "avade"  # the built-ins stay
    assert any("names 'avade', whose built-in components cannot be disabled; ignored" in m for m in messages)
    assert not any("which is no installed plugin" in m for m in messages), messages


@attrs.define
class _BadDefaults:
    layers: int = attrs.field(default=0, validator=attrs.validators.ge(1))
    mode: str = attrs.field(default="fast", validator=attrs.validators.in_(("fast", "exact")))
    width: int = "many"  # type: ignore[assignment]


def test_a_component_whose_own_defaults_are_invalid_is_blamed_not_the_recipe() -> None:
    registry = Registry()
    registry.add_plugin(plugin("bad_defaults", lambda reg: reg.register("flow", "bad-defaults", factory=Toy,
                                                                      config=_BadDefaults)), dist="bad-dist")
    with pytest.raises(RegistryError, match=r"flow 'bad-defaults' \(from plugin bad-dist\): the default of 'width' "
                                            r"is invalid \(expected int, got \"many\"\); fix or disable that plugin"):
        registry.validate("flow", "bad-defaults", {}, path="model.flow")
    with pytest.raises(RegistryError, match=r"the default of 'layers' is invalid \(.*>= 1.*\)"):
        registry.validate("flow", "bad-defaults", {"width": 2}, path="model.flow")
    with pytest.raises(ConfigError, match=r"'mode' must be in \('fast', 'exact'\) \(got 'slow'\)$") as info:
        registry.validate("flow", "bad-defaults", {"layers": 2, "width": 3, "mode": "slow"}, path="model.flow")
    assert "Attribute(" not in str(info.value)  # attrs' extra arguments are not shown
    assert registry.validate("flow", "bad-defaults", {"layers": 2, "width": 3}).width == 3


def test_a_factory_that_raises_is_blamed_on_its_plugin_or_not_on_a_plugin_at_all() -> None:
    def broken(cfg: Any, *, in_shape: Any) -> Any:
        raise ZeroDivisionError("boom")

    registry = Registry()
    registry.add_plugin(plugin("p", lambda reg: reg.register("flow", "from-plugin", factory=broken, config=ToyConfig)),
                        dist="p-dist", version="1.0")
    registry.register("flow", "in-process", factory=broken, config=ToyConfig)  # e.g. check_module's scratch registry
    with pytest.raises(RegistryError, match=r"^flow 'from-plugin' \(from plugin p-dist 1.0\) failed to build: "
                                            r"ZeroDivisionError: boom; fix or disable that plugin"):
        registry.create("flow", "from-plugin", in_shape=(1, 4, 4))
    with pytest.raises(RegistryError, match=r"^flow 'in-process' failed to build: ZeroDivisionError: boom$"):
        registry.create("flow", "in-process", in_shape=(1, 4, 4))


@attrs.define
class _Required:
    root: str
    layers: int = 2


def test_a_required_key_left_out_is_the_recipes_not_the_plugins() -> None:
    registry = Registry()
    registry.add_plugin(plugin("req", lambda reg: reg.register("flow", "req", factory=Toy, config=_Required)),
                        dist="req-dist")
    with pytest.raises(ConfigError, match=r"^model.flow.root: missing required key$"):
        registry.validate("flow", "req", {}, path="model.flow")


def test_a_glob_matches_anywhere_in_the_name_not_only_its_start() -> None:
    # '*nvp*' finds realnvp (the match is in the middle): a prefix-only match would find nothing
    assert list_components("*nvp*", kind="flow") == ["flow/realnvp"]
    assert list_components("*nvp") == ["flow/realnvp"]


def test_built_ins_load_before_a_plugin_whose_entry_point_sorts_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # A plugin module named "aaa..." sorts before "avade.builtin": it still loads after the built-ins, so
    # its clash with a built-in name is the one skipped, and the built-in stays usable (not a conflict).
    real = [ep for ep in metadata.entry_points(group="avade") if ep.value.startswith("avade.")]
    monkeypatch.setitem(sys.modules, "aaa_first_plugin", plugin("aaa_first_plugin", registering("realnvp")))
    eps = [fake_entry_point("first", "aaa_first_plugin", "aaa-first"), *real]
    monkeypatch.setattr("avade.registry.metadata.entry_points", lambda **kw: eps)
    registry = Registry()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry.load_entry_points()
    assert registry.conflicts == {}
    assert registry.get("flow", "realnvp").dist == "avade"
    assert any("flow 'realnvp' from aaa-first 1.0 is skipped" in m for m in plugin_warnings(record))


@attrs.define
class _Range:
    low: float = 0.0
    high: float = attrs.field(default=1.0)

    @high.validator
    def _above_low(self, attribute: attrs.Attribute, value: float) -> None:
        if value <= self.low:
            raise ConfigError(f"expected a number above low ({self.low}), got {value}", path=attribute.name)


def test_a_default_that_fails_only_against_the_recipes_value_is_the_recipes_error() -> None:
    registry = Registry()
    registry.add_plugin(plugin("rng", lambda reg: reg.register("flow", "rng", factory=Toy, config=_Range)),
                        dist="rng-dist")
    # low = 2 makes the default high = 1 fail its check: the recipe's doing, not a broken plugin default
    with pytest.raises(ConfigError, match=r"^model.flow.high: expected a number above low \(2.0\)"):
        registry.validate("flow", "rng", {"low": 2.0}, path="model.flow")
    assert registry.validate("flow", "rng", {"low": 2.0, "high": 3.0}).high == 3.0


@attrs.define
class _Block:
    width: int = 4
    clamp: float | None = 1.0


@attrs.define
class _Blocks:
    blocks: list[_Block] = attrs.Factory(lambda: [_Block(), _Block(width=8)])
    by_name: dict[str, _Block] = attrs.Factory(lambda: {"a": _Block(width=2)})
    first: _Block = attrs.Factory(lambda: _Block(clamp=None))


def test_defaults_holding_attrs_instances_in_lists_and_tables_are_valid() -> None:
    registry = Registry()
    registry.register("flow", "blocks", factory=Toy, config=_Blocks)
    cfg = registry.validate("flow", "blocks", {})
    assert cfg == _Blocks()  # refused before: "the default of 'blocks' is invalid (expected a table ...)"
    assert cfg.first.clamp is None  # a None inside a nested default stays None, not the field's default
    assert registry.validate("flow", "blocks", {"blocks": [{"width": 2}]}).blocks == [_Block(width=2)]


def test_a_factory_that_is_not_callable_is_a_registry_error() -> None:
    registry = Registry()
    with pytest.raises(RegistryError, match=r"flow 'nothing': factory must be callable or a \"module:attr\" string"):
        registry.register("flow", "nothing", factory=None)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match=r"flow 'cfg': config must be an attrs class"):
        registry.register("flow", "cfg", factory=Toy, config=ToyConfig())  # type: ignore[arg-type]
    # a lazy reference to a module (no ":attr") is no factory: said when it is built, not a TypeError
    registry.add_plugin(plugin("mod", lambda reg: reg.register("flow", "mod", factory="json")), dist="mod-dist")
    with pytest.raises(RegistryError, match=r"^flow 'mod' \(from plugin mod-dist\): factory must be callable .*module"
                                            r".*; fix or disable that plugin"):
        registry.create("flow", "mod", in_shape=(1, 4, 4))


def test_the_builtins_load_before_a_plugin_whose_module_sorts_first() -> None:
    from avade.registry import BUILTIN_MODULE, _builtin_first

    eps = [metadata.EntryPoint("addons", "avade.addons:plugin", "avade"),
           metadata.EntryPoint("avade", BUILTIN_MODULE, "avade"),
           metadata.EntryPoint("zz", "aaa_plugin", "avade")]
    assert next(ep.value for ep in sorted(eps, key=_builtin_first)) == BUILTIN_MODULE


def test_an_error_in_avades_own_code_is_not_blamed_on_a_plugin_that_reuses_it() -> None:
    from avade.blame import plugin_at_fault

    registry = Registry()
    registry.load_entry_points()
    # a plugin registering a variant of a built-in: avade's class under its own name and config
    registry.add_plugin(plugin("variants", lambda reg: reg.register(
        "flow", "a-realnvp", factory="avade.flows.realnvp:RealNVP", config="avade.flows.realnvp:RealNVPConfig")),
        dist="avade-variants", version="0.1")
    flow = registry.create("flow", "realnvp", in_shape=(3, 4, 4), hidden=4, blocks=1, layers=1)
    try:
        flow.inverse(torch.zeros(1, 2, 2, 2))  # fails inside avade.flows.realnvp, on no plugin's code
    except Exception as exc:  # (was: "plugin avade-variants 0.1")
        assert plugin_at_fault(exc, registry) == ""
    else:
        raise AssertionError("expected an error")


def test_a_broken_import_is_told_from_code_run_as_a_module_by_exec(tmp_path, monkeypatch) -> None:
    # torch.compile runs the module it generates with exec(), named like torch's own
    # (torch._inductor.runtime.compile_tasks.<hash>): a kernel failing to compile there is no broken torch to
    # reinstall. A package whose import raises (a missing shared library) is.
    from avade.blame import broken_import

    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("from . import _lib\n")
    (tmp_path / "brokenpkg" / "_lib.py").write_text("raise OSError('libfoo.so.1: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(OSError) as imported:
        importlib.import_module("brokenpkg")
    assert broken_import(imported.value) == ("brokenpkg", str(tmp_path / "brokenpkg" / "__init__.py"))
    # a package importing a broken one: the broken one is named (not "reinstall the package that imported it")
    (tmp_path / "userpkg.py").write_text("import os\nimport brokenpkg\n")
    with pytest.raises(OSError) as nested:
        importlib.import_module("userpkg")
    assert broken_import(nested.value)[0] == "brokenpkg"

    generated = types.ModuleType("torch._inductor.runtime.compile_tasks.cabc123")
    with pytest.raises(RuntimeError) as executed:
        exec(compile("raise RuntimeError('kernel compile failed')", "cabc123.py", "exec"), generated.__dict__)
    assert broken_import(executed.value) == ("", "")
