"""Recipes: round trip, ``extends`` deep merge, error locations, ``--set`` overrides, sweeps."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from tiny_recipes import tiny_dict, tiny_recipe

from avade.errors import ConfigError
from avade.recipe import (
    Recipe,
    expand_sweep,
    load_recipe,
    parse_override,
    recipe_from_dict,
    recipe_to_dict,
    recipe_to_toml,
)
from avade.recipe.load import apply_overrides

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("**/*.toml"))
Write = Callable[[str, str], Path]

BASE = """
description = "base"
[model]
variant = "av-ade"
[model.flow]
name = "realnvp"
scales = 2
blocks = 1
hidden = 8
[model.encoder]
name = "resnet"
channels = [8, 16]
[model.discriminator]
name = "dcgan"
channels = [8, 16, 32]
[data]
name = "natural-patches"
resolution = 16
batch_size = 8
[train]
steps = 10
lr = 0.002
betas = [0.5, 0.9]
[eval]
metrics = ["bpd"]
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the recipes' folder, so that messages show short relative file names."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def base(write: Write) -> Path:
    return write("base.toml", BASE)


def config_error(path: Path, overrides: tuple[str, ...] = ()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_recipe(path, overrides)
    assert "\n" not in str(info.value)
    return info.value


# -- round trip --------------------------------------------------------------------------------------


def test_recipes_folder_is_not_empty() -> None:
    assert RECIPES, "recipes/*.toml: nothing to test"


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_round_trip(path: Path, write: Write) -> None:
    recipe = load_recipe(path)
    text = recipe_to_toml(recipe)
    tomllib.loads(text)
    again = load_recipe(write(f"{path.stem}.toml", text))
    assert again == recipe
    assert recipe_to_toml(again) == text
    assert expand_sweep(recipe)  # every variant validates


def test_round_trip_keeps_overrides_and_sweep(base: Path, write: Write) -> None:
    child = write("child.toml", 'extends = "base.toml"\n[sweep]\ngrid = {"model.flow.scales" = [1, 2]}\n')
    recipe = load_recipe(child, ["train.seed=7", "model.posterior.name=diagonal"])
    again = load_recipe(write("again.toml", recipe_to_toml(recipe)))
    assert again == recipe and again.train.seed == 7 and again.model.posterior.name == "diagonal"
    assert again.sweep is not None and again.sweep.grid == {"model.flow.scales": [1, 2]}
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe


def test_name_defaults_to_file_stem_and_is_not_inherited(base: Path, write: Write) -> None:
    write("named.toml", 'name = "parent-name"\n' + BASE)
    assert load_recipe(base).name == "base"
    assert load_recipe(write("kid.toml", 'extends = "named.toml"\n')).name == "kid"


# -- extends ----------------------------------------------------------------------------------------


def test_extends_deep_merge(base: Path, write: Write) -> None:
    child = write("child.toml", """
extends = "base.toml"
[model.flow]
blocks = 3
[train]
lr = 0.001
betas = [0.0]
""")
    with pytest.raises(ConfigError, match=r"child.toml: train.betas: expected a list of 2 items"):
        load_recipe(child)  # arrays are replaced, not merged element by element
    child.write_text(child.read_text().replace("[0.0]", "[0.0, 0.99]"))
    recipe = load_recipe(child)
    flow = recipe.model.flow
    assert flow is not None and flow.name == "realnvp"
    assert (flow.config.scales, flow.config.blocks, flow.config.hidden) == (2, 3, 8)  # tables merge
    assert recipe.train.lr == 0.001 and recipe.train.steps == 10  # child overrides, the rest inherited
    assert recipe.train.betas == (0.0, 0.99)
    assert recipe.description == "base"
    assert recipe.model.encoder.config.channels == (8, 16)


def test_changing_a_component_name_replaces_the_table(base: Path, write: Write) -> None:
    child = write("child.toml", 'extends = "base.toml"\n[model.discriminator]\nname = "resnet"\n')
    disc = load_recipe(child).model.discriminator
    assert disc is not None and disc.name == "resnet"
    # dcgan's channels were not carried over into resnet's config: resnet's defaults apply.
    default = load_recipe(child, ["model.discriminator.name=resnet"]).model.discriminator
    assert disc.config.channels != (8, 16, 32) and disc.config == default.config


def test_name_none_removes_an_inherited_component(base: Path, write: Write) -> None:
    child = write("gan.toml", """
extends = "base.toml"
[model]
variant = "gan"
[model.flow]
name = "none"
""")
    recipe = load_recipe(child)
    assert recipe.variant == "gan" and recipe.model.flow is None
    assert recipe.model.discriminator is not None and recipe.model.discriminator.name == "dcgan"
    # Without removing it, the inherited flow is an error that says how to fix it.
    child.write_text('extends = "base.toml"\n[model]\nvariant = "gan"\n')
    err = config_error(child)
    assert err.path == "model.flow" and 'model.flow.name = "none"' in str(err)


def test_options_of_a_component_named_none_are_refused(base: Path) -> None:
    """``name = "none"`` is no component: options next to it (a mistyped table, or options set after
    ``--set ...name=none``) would be dropped without a word."""
    off = ("model.variant=v-ade", "model.discriminator.name=none")
    assert load_recipe(base, off).model.discriminator is None
    err = config_error(base, (*off, "model.discriminator.chanels=[8]"))
    assert err.source == "--set" and err.path == "model.discriminator.chanels"
    assert 'model.discriminator.name is "none" (no discriminator), so its chanels would do nothing' in str(err)


def test_a_component_named_alone_takes_options_from_set_and_extends(base: Path, write: Write) -> None:
    """``flow = "glow"`` (a component by its name alone) is the table ``{name = "glow"}``: --set and a child
    recipe set its options as theirs (they said "model.flow is not a table", or lost the name)."""
    short = write("short.toml", 'extends = "base.toml"\n[model]\nflow = "glow"\n')
    flow = load_recipe(short, ["model.flow.scales=2"]).model.flow
    assert flow is not None and (flow.name, flow.config.scales) == ("glow", 2)
    flow = load_recipe(short, ["model.flow.name=realnvp", "model.flow.hidden=4"]).model.flow
    assert flow is not None and (flow.name, flow.config.hidden) == ("realnvp", 4)
    child = write("child.toml", 'extends = "short.toml"\n[model.flow]\nscales = 2\n')
    assert load_recipe(child) == load_recipe(short, ["model.flow.scales=2", "name='child'"])
    # and a child that names the parent's component alone keeps the parent's options, as its table would
    write("glow.toml", 'extends = "base.toml"\n[model.flow]\nname = "glow"\nscales = 3\n')
    again = write("again.toml", 'extends = "glow.toml"\n[model]\nflow = "glow"\n')
    assert load_recipe(again).model.flow.config.scales == 3


def test_extends_expands_a_home_folder(base: Path, write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    """``~`` expands in extends as in every other path of a recipe (README): it was taken as a folder named ~."""
    monkeypatch.setenv("HOME", str(base.parent))
    child = write("sub/child.toml", 'extends = "~/base.toml"\n[train]\nsteps = 3\n')
    recipe = load_recipe(child)
    assert (recipe.train.steps, recipe.model.flow.config.hidden) == (3, 8)


def test_extends_chain_of_three(base: Path, write: Write) -> None:
    write("mid.toml", 'extends = "base.toml"\n[train]\nsteps = 20\nseed = 3\n')
    leaf = write("sub/leaf.toml", 'extends = "../mid.toml"\n[train]\nseed = 4\n')
    recipe = load_recipe(leaf)
    assert (recipe.train.steps, recipe.train.seed, recipe.train.lr) == (20, 4, 0.002)


def test_extends_list_merges_in_order(base: Path, write: Write) -> None:
    write("fast.toml", "[train]\nsteps = 5\nseed = 1\n")
    child = write("child.toml", 'extends = ["base.toml", "fast.toml"]\n[train]\nseed = 2\n')
    recipe = load_recipe(child)
    assert (recipe.train.steps, recipe.train.seed, recipe.train.lr) == (5, 2, 0.002)


def test_extends_cycle_is_named(write: Write) -> None:
    write("a.toml", 'extends = "b.toml"\n')
    write("b.toml", 'extends = "c.toml"\n')
    c = write("c.toml", 'extends = "a.toml"\n')
    err = config_error(c)
    assert "cycle" in str(err)
    assert "c.toml -> a.toml -> b.toml -> c.toml" in str(err)
    assert err.path == "extends"


def test_extends_self_is_a_cycle(write: Write) -> None:
    me = write("me.toml", 'extends = "me.toml"\n')
    assert "me.toml -> me.toml" in str(config_error(me))


def test_missing_parent_is_named(write: Write) -> None:
    child = write("child.toml", 'extends = "nowhere.toml"\n')
    err = config_error(child)
    assert "extended recipe not found" in str(err) and "nowhere.toml" in str(err)
    assert err.source is not None and err.source.endswith("child.toml")


@pytest.mark.parametrize("value", ["3", "[1, 2]", "{a = 1}", '["base.toml", 5]'])
def test_extends_must_be_paths(value: str, write: Write) -> None:
    err = config_error(write("x.toml", f"extends = {value}\n"))
    assert err.path == "extends"


def test_error_names_the_file_that_set_the_key(write: Write) -> None:
    write("parent.toml", BASE.replace("scales = 2", "scalse = 2"))
    child = write("child.toml", 'extends = "parent.toml"\n[train]\nsteps = 5\n')
    err = config_error(child)
    assert err.source is not None and err.source.endswith("parent.toml")
    assert "model.flow.scalse" in str(err) and "did you mean 'scales'" in str(err)
    assert str(err).startswith("parent.toml: model.flow.scalse: ")
    # A bad value the child sets is blamed on the child, even for a key the parent also sets.
    write("good.toml", BASE)
    child.write_text('extends = "good.toml"\n[train]\nsteps = "many"\n')
    err = config_error(child)
    assert str(err).startswith('child.toml: train.steps: expected int, got "many"')
    # ... and a bad value inherited untouched is blamed on the parent, also inside a list.
    write("good.toml", BASE.replace("betas = [0.5, 0.9]", 'betas = [0.5, "x"]'))
    err = config_error(child, ("train.steps=3",))
    assert str(err).startswith('good.toml: train.betas[1]: expected float, got "x"')


def test_invalid_toml_names_the_file(write: Write) -> None:
    err = config_error(write("broken.toml", "[model\nvariant = 1\n"))
    assert "invalid TOML" in str(err) and err.source is not None and err.source.endswith("broken.toml")


def test_missing_file(tmp_path: Path) -> None:
    assert "recipe file not found" in str(config_error(tmp_path / "absent.toml"))


# -- key errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path, hint",
    [
        ('[model.flow]\nname = "realnvp"\nscalse = 2\n', "model.flow.scalse", "did you mean 'scales'"),
        ('[trian]\nsteps = 2\n', "trian", "did you mean 'train'"),
        ('[train]\nstesp = 2\n', "train.stesp", "did you mean 'steps'"),
        ('[model]\nvarient = "vae"\n', "model.varient", "did you mean 'variant'"),
        ('[model]\nvariant = "av_ade"\n', "model.variant", "did you mean 'av-ade'"),
        ('[model.flow]\nname = "realnvpp"\n', "model.flow.name", "did you mean 'realnvp'"),
        ('[data]\nname = "natural-patchs"\n', "data.name", "did you mean 'natural-patches'"),
        ('[data]\nbatchsize = 2\n', "data.batchsize", "did you mean 'batch_size'"),
        ('[eval]\nmetrics = ["bpd", "fdi"]\n', "eval.metrics[1]", "did you mean 'fid'"),
    ],
)
def test_typo_gives_full_path_and_suggestion(text: str, path: str, hint: str, write: Write) -> None:
    err = config_error(write("typo.toml", text))
    assert path in str(err)
    assert hint in str(err)
    assert str(err).startswith(f"{err.source}: ")


@pytest.mark.parametrize("key", ["extends", "name", "description"])
def test_a_top_level_key_written_below_a_table_says_to_move_it_up(base: Path, write: Write, key: str) -> None:
    """TOML reads `extends = ...` at the end of a file as a key of its last table: the message said only
    "eval.extends: unknown key", and listed eval's keys."""
    err = config_error(write("child.toml", f'[train]\nsteps = 3\n{key} = "base.toml"\n'))
    assert err.path == f"train.{key}" and "top-level key" in str(err) and "above the file's first [table]" in str(err)
    # a --set or a sweep axis has no table header to move it from
    assert "top-level" not in str(config_error(base, (f'train.{key}="x"',)))


@pytest.mark.parametrize(("override", "owner"), [("model.flow.steps=4", "flow 'glow'"),
                                               ('data.category="bedroom"', "dataset 'lsun'")])
def test_an_option_of_another_component_names_that_component(base: Path, override: str, owner: str) -> None:
    """Glow's options under a Real-NVP flow said only "unknown key" and listed Real-NVP's."""
    key = override.partition("=")[0]
    err = config_error(base, (override,))
    assert err.path == key and f"is an option of {owner}" in str(err)
    assert f"set {key.rsplit('.', 1)[0]}.name to that" in str(err)


def test_component_table_needs_a_name(write: Write) -> None:
    err = config_error(write("x.toml", "[model.flow]\nscales = 2\n"))
    assert err.path == "model.flow" and "missing `name`" in str(err) and "--kind flow" in str(err)


# -- --set overrides --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model.flow.scales=2", ("model.flow.scales", 2)),
        ("train.lr=1e-3", ("train.lr", 0.001)),
        ("train.betas=[0.5, 0.99]", ("train.betas", [0.5, 0.99])),
        ('data.name="digits"', ("data.name", "digits")),
        ("data.name=natural-patches", ("data.name", "natural-patches")),  # bare string
        ("train.compile=true", ("train.compile", True)),
        (" eval.metrics = [\"bpd\"] ", ("eval.metrics", ["bpd"])),
        ("name=a=b", ("name", "a=b")),
        ("data.name = natural-patches ", ("data.name", "natural-patches")),  # bare string, spaced
    ],
)
def test_parse_override(text: str, expected: tuple[str, object]) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["noequals", "=3", "a..b=1", ".a=1"])
def test_parse_override_rejects_malformed(text: str) -> None:
    with pytest.raises(ConfigError, match=r"dotted\.key=value"):
        parse_override(text)


@pytest.mark.parametrize("text", ["train.steps=5\ntrain.lr = 3", "train.steps=5\n[train]\nlr = 3"])
def test_parse_override_refuses_a_value_followed_by_more_toml(text: str) -> None:
    """What follows a line break was parsed as TOML of its own and dropped: train.lr stayed as it was."""
    with pytest.raises(ConfigError, match=r"--set train\.steps: .* is more than one value"):
        parse_override(text)
    assert parse_override("train.steps=5 # five") == ("train.steps", 5)


@pytest.mark.parametrize("text", ['data.root="~/my data', "model.encoder.channels=[8, 16", "model.flow={name = 'glow'",
                                  "description='it''s'"])
def test_parse_override_refuses_a_broken_quoted_or_bracketed_value(text: str) -> None:
    """It was taken as a bare word: `data.root="~/my data` set the root to a folder named with a quote."""
    key = text.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"^--set {re.escape(key)}: .* is not a valid TOML value .*close its quotes"):
        parse_override(text)


def test_set_overrides(base: Path) -> None:
    recipe = load_recipe(base, ["model.flow.scales=3", "train.lr=1e-3", "data.name=digits",
                                "train.betas=[0.1, 0.2]", "model.variant=v-ade", "model.discriminator.name=none"])
    assert recipe.model.flow.config.scales == 3 and recipe.model.flow.config.hidden == 8
    assert recipe.train.lr == 0.001 and recipe.train.betas == (0.1, 0.2)
    assert recipe.data.options.name == "digits" and recipe.data.options.batch_size == 8  # loader keys kept
    assert recipe.variant == "v-ade" and recipe.model.discriminator is None


def test_set_component_name_drops_old_options(base: Path) -> None:
    recipe = load_recipe(base, ["model.flow.name=glow"])
    flow = recipe.model.flow
    assert flow is not None and flow.name == "glow"
    assert flow.config == load_recipe(base, ["model.flow.name=glow", "model.flow.name=glow"]).model.flow.config
    assert not hasattr(flow.config, "blocks")
    # Options given after the switch apply to the new component.
    assert load_recipe(base, ["model.flow.name=glow", "model.flow.steps=2"]).model.flow.config.steps == 2


@pytest.mark.parametrize(("override", "words"), [
    ("model.flwo=glow", "model.flwo: unknown key (did you mean 'flow'?)"),  # a component named alone
    ("model.flwo.scales=2", "model.flwo: unknown table (did you mean 'flow'?)"),
    ("model.varient=vae", "model.varient: unknown key (did you mean 'variant'?)"),
])
def test_a_mistyped_model_key_is_matched_against_options_and_component_tables(base: Path, override: str,
                                                                               words: str) -> None:
    """A component named alone under a mistyped key (`flwo = "glow"`) was matched against the options only:
    no suggestion, and a list of valid keys without the component tables."""
    err = str(config_error(base, (override,)))
    assert words in err and "flow, encoder, posterior, decoder, discriminator" in err


def test_set_errors_name_set_and_path(base: Path) -> None:
    err = config_error(base, ("model.flow.scalse=2",))
    assert err.source == "--set"
    assert "model.flow.scalse" in str(err) and "did you mean 'scales'" in str(err)
    err = config_error(base, ("train.betas=[0.5, \"x\"]",))
    assert err.path == "train.betas[1]" and err.source == "--set"
    err = config_error(base, ("train.lr.x=1",))
    assert "cannot set train.lr.x: train.lr is not a table" in str(err)


# -- sweeps -----------------------------------------------------------------------------------------


def sweep(write: Write, body: str, name: str = "x") -> Recipe:
    return load_recipe(write(f"{name}.toml", f'extends = "base.toml"\n[sweep]\n{body}\n'))


def test_grid_is_the_cartesian_product(base: Path, write: Write) -> None:
    recipe = sweep(write, 'grid = {"model.flow.scales" = [1, 2], "model.flow.blocks" = [2, 4, 6]}')
    variants = expand_sweep(recipe)
    assert [v.name for v in variants] == [
        f"x-scales{s}-blocks{b}" for s in (1, 2) for b in (2, 4, 6)
    ]
    for v in variants:
        cfg = v.recipe.model.flow.config
        assert (cfg.scales, cfg.blocks) == (v.overrides["model.flow.scales"], v.overrides["model.flow.blocks"])
        assert cfg.hidden == 8 and v.recipe.sweep is None and v.recipe.name == v.name


def test_explicit_combos_table9(base: Path, write: Write) -> None:
    pairs = [(1, 2), (2, 2), (2, 4), (3, 3)]
    combos = ", ".join(f'{{"model.flow.scales" = {s}, "model.flow.blocks" = {b}}}' for s, b in pairs)
    variants = expand_sweep(sweep(write, f"combos = [{combos}]", name="t9"))
    assert [v.name for v in variants] == [f"t9-scales{s}-blocks{b}" for s, b in pairs]
    assert [(v.recipe.model.flow.config.scales, v.recipe.model.flow.config.blocks) for v in variants] == pairs


def test_combos_and_grid_combined(base: Path, write: Write) -> None:
    recipe = sweep(write, 'combos = [{"model.flow.scales" = 1}, {"model.flow.scales" = 3}]\n'
                          'grid = {"train.seed" = [0, 1]}')
    variants = expand_sweep(recipe)
    assert [v.name for v in variants] == ["x-scales1-seed0", "x-scales1-seed1", "x-scales3-seed0", "x-scales3-seed1"]
    assert [v.recipe.train.seed for v in variants] == [0, 1, 0, 1]


def test_a_grid_over_the_variant_leaves_out_components_the_base_only_got_by_default(write: Write) -> None:
    """As ``--set model.variant=vae`` does: the av-ade base writes no [model.flow] or [model.discriminator],
    so its vae variant has neither (the resolved base would carry realnvp and resnet into it, refused)."""
    recipe = load_recipe(write("v.toml", '[data]\nname = "synthetic"\nresolution = 8\n[train]\nsteps = 4\n'
                                         '[sweep]\ngrid = {"model.variant" = ["av-ade", "vae"]}\n'))
    ade, vae = (v.recipe for v in expand_sweep(recipe))
    assert ade.model.flow is not None and ade.model.discriminator is not None
    assert vae.variant == "vae" and vae.model.flow is None and vae.model.discriminator is None
    # the variant is the recipe as written with its override, as --set makes it
    assert vae == load_recipe(write("plain.toml", '[data]\nname = "synthetic"\nresolution = 8\n[train]\nsteps = 4\n'),
                              ["name='v-variantvae'", "model.variant='vae'"])
    # a table the base writes is still the variant's: refused there, as in a recipe of its own
    written = load_recipe(write("w.toml", 'extends = "v.toml"\n[model.flow]\nname = "realnvp"\n'))
    with pytest.raises(ConfigError, match=r"sweep variant 1 .*variant 'vae' has no flow f"):
        expand_sweep(written)


def test_the_variants_of_a_recipe_changed_after_loading_are_of_what_it_holds(write: Write) -> None:
    """(attrs.evolve, from Python): the recipe no longer says what its file wrote, so its variants are
    its resolved form with their overrides, not the file's."""
    recipe = load_recipe(write("v.toml", '[data]\nname = "synthetic"\nresolution = 8\n[train]\nsteps = 4\n'
                                         '[sweep]\ngrid = {"train.seed" = [0, 1]}\n'))
    assert [v.recipe.train.steps for v in expand_sweep(recipe)] == [4, 4]
    changed = attrs.evolve(recipe, train=attrs.evolve(recipe.train, steps=7))
    assert [(v.recipe.train.steps, v.recipe.train.seed) for v in expand_sweep(changed)] == [(7, 0), (7, 1)]


def test_a_variants_new_component_takes_the_options_swept_with_it(base: Path, write: Write) -> None:
    """An axis over a component's options written before the axis that names the component: the switch
    came second and dropped them, so every variant was the new component's defaults (two alike runs)."""
    variants = expand_sweep(sweep(write, 'grid = {"model.flow.scales" = [1, 2], "model.flow.name" = ["glow"]}'))
    assert [v.name for v in variants] == ["x-scales1-nameglow", "x-scales2-nameglow"]  # (named as written)
    assert [(v.recipe.model.flow.name, v.recipe.model.flow.config.scales) for v in variants] == [("glow", 1),
                                                                                               ("glow", 2)]


@pytest.mark.parametrize(("body", "where", "dotted"), [
    ("combos = [{train.seed = 1}, {train.seed = 2}]", "sweep.combos[0].train", "train.seed"),
    ("grid = {model.flow.scales = [1, 2]}", "sweep.grid.model", "model.flow.scales"),
])
def test_an_unquoted_dotted_sweep_key_says_to_quote_it(base: Path, write: Write, body: str, where: str,
                                                       dotted: str) -> None:
    """TOML nests ``{train.seed = 1}`` as ``{train = {seed = 1}}``: a combo so replaced the variant's whole
    [train] (train.steps back to 100000, without a word); a grid said only "expected a list"."""
    with pytest.raises(ConfigError) as info:
        sweep(write, body)
    assert info.value.path == where and f'quote it: "{dotted}" = ...' in str(info.value)
    # quoted, it is one axis; a quoted key may still set a whole table
    variants = expand_sweep(sweep(write, 'combos = [{"train.seed" = 1}, {"model.flow" = {name = "glow"}}]'))
    assert [v.recipe.train.steps for v in variants] == [10, 10] and variants[1].recipe.model.flow.name == "glow"


def test_no_sweep_is_one_variant(base: Path) -> None:
    recipe = load_recipe(base)
    (variant,) = expand_sweep(recipe)
    assert variant.name == "base" and variant.overrides == {} and variant.recipe == recipe


def test_duplicate_variant_names_are_rejected(base: Path, write: Write) -> None:
    recipe = sweep(write, 'combos = [{"model.flow.scales" = 2}, {"model.flow.scales" = 2}]')
    with pytest.raises(ConfigError, match="two sweep variants are both named 'x-scales2'"):
        expand_sweep(recipe)
    # a grid's values can meet in a name too: the fix is not only the combos'
    recipe = sweep(write, 'grid = {"train.lr" = [0.001, 0.0010000001]}', name="g")
    with pytest.raises(ConfigError, match=r"both named 'g-lr0\.001': .*\(sweep\.grid or sweep\.combos\)"):
        expand_sweep(recipe)


def test_variants_of_keys_that_end_alike_are_told_apart(base: Path, write: Write) -> None:
    """Combos of model.encoder.channels and model.discriminator.channels were both named x-channels16-32 and
    refused as a clash of values, which no value could fix; they are named by the keys' differing parts instead."""
    recipe = sweep(write, 'combos = [{"model.encoder.channels" = [16, 32]}, '
                          '{"model.discriminator.channels" = [16, 32]}]')
    variants = expand_sweep(recipe)
    assert [v.name for v in variants] == ["x-encoder.channels16-32", "x-discriminator.channels16-32"]
    assert tuple(variants[1].recipe.model.encoder.config.channels) == (8, 16)
    # a sweep whose names did not meet keeps them (--resume finds its directories)
    recipe = sweep(write, 'grid = {"model.encoder.channels" = [[4, 8]], "model.discriminator.channels" = '
                          '[[4, 8], [8, 8]]}', name="g")
    assert [v.name for v in expand_sweep(recipe)] == ["g-channels4-8-channels4-8", "g-channels4-8-channels8-8"]


def test_invalid_variant_names_its_index(base: Path, write: Write) -> None:
    recipe = sweep(write, 'combos = [{"model.flow.scales" = 1}, {"model.flow.scales" = 0}]')
    with pytest.raises(ConfigError) as info:
        expand_sweep(recipe)
    assert "sweep variant 1 (x-scales0)" in str(info.value)
    assert info.value.path == "model.flow.scales" and "expected a number >= 1" in str(info.value)
    recipe = sweep(write, 'grid = {"model.flow.scalse" = [1]}', name="y")
    with pytest.raises(ConfigError, match=r"sweep variant 0 .*did you mean 'scales'"):
        expand_sweep(recipe)


@pytest.mark.parametrize(
    "body, match",
    [
        ("grid = {}", "needs `grid` and/or `combos`"),
        ('grid = {"train.seed" = []}', "at least one value"),
        ('grid = {"train.seed" = 3}', "expected a list"),
        ("combos = [1]", "expected a table"),
        ("grdi = {}", "did you mean 'grid'"),
        # keys no variant can set (they were ignored, or said "--set" in a sweep)
        ('grid = {name = ["a", "b"]}', r"sweep\.grid\.name: name cannot be a sweep axis"),
        ('combos = [{extends = "base.toml"}]', r"sweep\.combos\[0\]\.extends: extends cannot be a sweep axis"),
        ('grid = {"sweep.grid" = [{"train.seed" = [1, 2]}]}', "sweep cannot be a sweep axis"),
        ("""grid = {'model."flow' = [1]}""", r"model\.\"flow is not a dotted key"),
        # the grid's value won in every variant: the combos' seeds were never used
        ('grid = {"train.seed" = [1, 2]}\ncombos = [{"train.seed" = 7}, {"train.lr" = 0.001}]',
         r"sweep\.combos\[0\]\.train\.seed: sweep\.grid sets train\.seed in every variant too"),
    ],
)
def test_malformed_sweep(base: Path, write: Write, body: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        sweep(write, body)


@pytest.mark.parametrize(("override", "where", "words"), [
    ("train.lr=inf", "train.lr", "finite"),
    ("train.adv_weight=inf", "train.adv_weight", "finite"),
    ("train.betas=[0.9, 1.5]", "train.betas[1]", "[0, 1)"),
])
def test_values_no_run_can_use_are_refused(override: str, where: str, words: str) -> None:
    from tiny_recipes import tiny_recipe

    with pytest.raises(ConfigError) as info:
        tiny_recipe(override)
    assert where in str(info.value) and words in str(info.value)


def test_a_file_stem_that_is_no_plain_name_becomes_one(tmp_path: Path) -> None:
    import tomli_w
    from tiny_recipes import tiny_dict

    recipe = tiny_dict()
    del recipe["name"]
    path = tmp_path / "my recipe (v2).toml"
    path.write_text(tomli_w.dumps(recipe))
    assert load_recipe(path).name == "my-recipe-v2"


@pytest.mark.parametrize(("override", "words"), [
    ("model.flw.scales=2", "did you mean 'flow'"),
    ("TRAIN.steps=3", "unknown top-level key"),
    ('extends="other.toml"', "extends cannot be set with --set"),
])
def test_override_mistakes_are_blamed_on_the_override(override: str, words: str) -> None:
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    with pytest.raises(ConfigError) as info:
        load_recipe(quickstart, [override])
    assert str(info.value).startswith("--set") and words in str(info.value) and "quickstart.toml" not in str(info.value)


def test_a_name_that_is_no_plain_name_still_runs_under_runs() -> None:
    from avade.train.rundir import default_run_dir, latest_run_dir

    for name in ("../../escaped", "/abs/path", ".."):
        path = default_run_dir(name)
        assert path.parts[0] == "runs" and ".." not in path.parts and len(path.parts) == 3
    assert latest_run_dir("../nothing-here") is None


def test_resume_without_out_takes_the_newest_run_by_its_stamp_and_number(tmp_path: Path) -> None:
    # runs started in the same second are <stamp>-2 .. -10: by name, -9 came last; a folder of one's own is no run
    from avade.train.rundir import latest_run_dir

    for name in ("20261130-074500", *(f"20261130-074500-{n}" for n in range(2, 11)), "20261129-235959-12", "best"):
        (tmp_path / "r" / name).mkdir(parents=True)
    assert latest_run_dir("r", base=tmp_path).name == "20261130-074500-10"
    assert latest_run_dir("s", base=tmp_path) is None
    (tmp_path / "s" / "mine").mkdir(parents=True)
    assert latest_run_dir("s", base=tmp_path).name == "mine"


def test_resume_without_out_finds_the_run_directory_a_run_without_out_made(tmp_path: Path) -> None:
    # the names make_run_dir gives are the ones latest_run_dir takes for runs (not for a folder of one's own)
    from avade.train.rundir import latest_run_dir, make_run_dir

    (tmp_path / "r" / "zz-mine").mkdir(parents=True)
    first = make_run_dir("r", base=tmp_path)
    assert latest_run_dir("r", base=tmp_path) == first
    second = make_run_dir("r", base=tmp_path)  # (the same second, or a later one)
    assert second != first and latest_run_dir("r", base=tmp_path) == second


def test_realnvp_net_is_a_recipe_key() -> None:
    """The paper recipes use the Real-NVP reference code's s/t networks (``net = "reference"``, appendix C:
    "we use the reference implementations"); ``--set model.flow.net=resnet`` switches to avade's."""
    from typer.testing import CliRunner

    from avade.cli.app import app
    from avade.flows.st_nets import ReferenceST, ResNetST
    from avade.models.build import build_model

    main = Path(__file__).resolve().parents[1] / "recipes" / "av_ade_wg_rd.toml"
    nets = [m for m in build_model(load_recipe(main, ["data.name=natural-patches"]), (3, 32, 32)).modules()
            if isinstance(m, ReferenceST | ResNetST)]
    assert len(nets) == 3 and all(isinstance(m, ReferenceST) for m in nets)
    override = ["model.flow.net=resnet", "data.name=natural-patches"]
    recipe = load_recipe(main, override)
    assert recipe.model.flow.config.net == "resnet"
    nets = [m for m in build_model(recipe, (3, 32, 32)).modules() if isinstance(m, ReferenceST | ResNetST)]
    assert len(nets) == 3 and all(isinstance(m, ResNetST) for m in nets)
    result = CliRunner().invoke(app, ["recipe", "check", str(main), *(a for o in override for a in ("--set", o))])
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match="did you mean 'reference'"):
        load_recipe(main, ["model.flow.net=referenc"])


def test_a_set_key_that_a_sweep_axis_sets_again_is_said_whatever_iterable_gives_it(base: Path, write: Write) -> None:
    """load_recipe takes any iterable of overrides: a generator was used up by applying it, so the
    warning that the sweep overrides the --set key never came."""
    recipe = write("s.toml", 'extends = "base.toml"\n[sweep]\ngrid = {"train.seed" = [1, 2]}\n')
    for overrides in (["train.seed=5"], (o for o in ["train.seed=5"])):
        with pytest.warns(UserWarning, match=r"--set train\.seed: the sweep sets it in every variant"):
            assert load_recipe(recipe, overrides).train.seed == 5


def test_variant_names_tell_numbers_apart(base: Path, write: Write) -> None:
    recipe = sweep(write, 'grid = {"train.lr" = [1e30, 1e-30], "train.seed" = [-1, 1], '
                          '"model.logit_alpha" = [0.25, 0.025]}')
    names = [v.name for v in expand_sweep(recipe)]
    assert names[:4] == ["x-lr1e30-seedm1-logit_alpha0.25", "x-lr1e30-seedm1-logit_alpha0.025",
                         "x-lr1e30-seed1-logit_alpha0.25", "x-lr1e30-seed1-logit_alpha0.025"]
    assert len(set(names)) == 8 and "x-lr1e-30-seedm1-logit_alpha0.25" in names


def test_a_metric_listed_twice_is_refused_but_a_saved_run_listing_it_twice_still_loads(write: Write) -> None:
    """Listed twice, a metric was computed twice at the end of training, then refused as a clash of its
    own results; a run saved so (bpd twice trained without a word) still loads, with it once."""
    with pytest.raises(ConfigError, match=r"eval\.metrics\[2\]: 'bpd' is listed twice; list each metric once"):
        tiny_recipe('eval.metrics=["bpd", "fid", "bpd"]')
    import tomli_w

    saved = write("recipe.toml", tomli_w.dumps(tiny_dict('eval.metrics=["bpd", "bpd"]')))
    assert load_recipe(saved, saved=True).eval.metrics == ["bpd"]


def test_the_two_importance_sample_settings_must_agree() -> None:
    from tiny_recipes import tiny_recipe

    with pytest.raises(ConfigError, match=r"eval.importance_samples = 4 and eval.bpd.importance_samples = 3 "
                                          r"disagree; set one of them"):
        tiny_recipe("eval.importance_samples=4", "eval.bpd={importance_samples=3}")
    tiny_recipe("eval.importance_samples=4", "eval.bpd={importance_samples=4}")
    tiny_recipe("eval.importance_samples=4")


def test_set_takes_toml_quoted_keys_such_as_one_sweep_axis() -> None:
    from avade.recipe.load import key_parts

    assert key_parts('sweep.grid."model.flow.scales"') == ["sweep", "grid", "model.flow.scales"]
    assert key_parts("model.flow.scales") == ["model", "flow", "scales"]
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    recipe = load_recipe(quickstart, ['sweep.grid."model.flow.scales"=[1, 2]'])
    assert recipe.sweep is not None and recipe.sweep.grid == {"model.flow.scales": [1, 2]}
    with pytest.raises(ConfigError, match="is not a TOML key"):
        load_recipe(quickstart, ['sweep.grid."model.flow=[1]'])


@pytest.mark.parametrize("key", ["train.lr", "train.d_lr", "train.adv_weight", "train.gp_weight"])
def test_a_setting_beyond_float32s_range_is_refused_before_training(key: str) -> None:
    # train.lr = 1e39 used to pass `recipe check` and crash the first optimizer step with an internal error
    # ("value cannot be converted to type float without overflow"); a weight that large made every loss infinite
    from tiny_recipes import tiny_recipe

    with pytest.raises(ConfigError, match=r"within float32's range \(at most 3.403e\+38\), got 1e\+39") as info:
        tiny_recipe(f"{key}=1e39")
    assert info.value.path == key
    tiny_recipe(f"{key}=1e30")  # large, but a float32


@pytest.mark.parametrize("key", ["train.lr", "train.d_lr"])
def test_a_learning_rate_whose_first_adam_step_overflows_float32_is_refused(key: str) -> None:
    # train.lr = 3e38 is a float32, but Adam(ax)'s first step is lr / (1 - beta1) = 3e39: it crashed the first
    # optimizer step with an internal error ("value cannot be converted to type float without overflow")
    from tiny_recipes import tiny_recipe

    with pytest.raises(ConfigError, match=r"3e\+38 is too large: .*use at most 3.403e\+37") as info:
        tiny_recipe(f"{key}=3e38")
    assert info.value.path == key
    with pytest.raises(ConfigError, match=r"use at most 3.403e\+35"):
        tiny_recipe(f"{key}=1e36", "train.betas=[0.999, 0.999]")
    tiny_recipe(f"{key}=3e37")  # absurd, but the optimizer can take it


def test_a_run_saved_with_a_key_keeps_its_value_the_former_default_fills_only_a_missing_one() -> None:
    from avade.recipe.load import with_saved_defaults

    saved = {"model": {"flow": {"name": "glow", "logscale_factor": 3.0}}}
    assert with_saved_defaults(saved)["model"]["flow"] == {"name": "glow", "logscale_factor": 3.0,
                                                           "edge_bias": False}


def test_switching_the_dataset_keeps_sweep_axes_over_loader_keys() -> None:
    # data.batch_size is the loader's, not the former dataset's: its axis survives --set data.name=...
    raw = tiny_dict()
    raw["sweep"] = {"grid": {"data.batch_size": [8, 16], "data.size": [32, 64]}}
    with pytest.warns(UserWarning, match="axes data.size"):
        switched = apply_overrides(raw, ["data.name=digits"])
    assert switched["sweep"]["grid"] == {"data.batch_size": [8, 16]}


def test_switching_from_the_default_dataset_drops_its_options_as_from_a_named_one() -> None:
    """[data] without a name is natural-patches': --set data.name=synthetic kept its options (refused by
    synthetic as unknown keys), where the same table with name = "natural-patches" dropped them."""
    raw = {"data": {"resolution": 8, "patches_per_image": 8, "batch_size": 4}}
    for table in (raw, {"data": {**raw["data"], "name": "natural-patches"}}):
        assert apply_overrides(table, ["data.name=synthetic"])["data"] == {"batch_size": 4, "name": "synthetic"}
    assert apply_overrides(raw, ["data.name=natural-patches"])["data"] == {**raw["data"], "name": "natural-patches"}


def test_select_variants_takes_every_named_one_in_sweep_order_and_refuses_an_index_past_the_end() -> None:
    from types import SimpleNamespace

    from avade.train.run import select_variants

    variants = [SimpleNamespace(name=n) for n in ("a", "b", "c")]
    assert [v.name for v in select_variants(variants, ["2,a"])] == ["a", "c"]
    assert [v.name for v in select_variants(variants, ["b", "0"])] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"--only 3: the sweep has 3 variants \(indices 0\.\.2\)"):
        select_variants(variants, ["3"])
    # an index is ASCII digits (as checkpoint steps are): other scripts' digits are names, not an internal error
    for other in ("\u00b2", "\u0663"):
        with pytest.raises(ConfigError, match=rf"--only: no sweep variant is named '{other}'"):
            select_variants(variants, [other])


def test_a_discretized_logistic_likelihood_with_a_flow_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model\.likelihood: discretized-logistic needs pixel space"):
        tiny_recipe("model.likelihood=discretized-logistic")
