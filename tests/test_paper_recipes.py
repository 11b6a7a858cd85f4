"""The shipped recipes: every file validates and expands, the paper's settings are the ones the
appendix gives (C, E.1, F; Tables 5, 6, 8, 9), every recipe builds its model -- also when pointed at
the embedded data with ``--set data.name=natural-patches`` -- and a missing dataset is one clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_recipes import SHIPPED, shipped_id, shipped_recipe_step
from typer.testing import CliRunner

from avade.cli.app import app
from avade.errors import ConfigError
from avade.models.build import build_model
from avade.recipe.load import load_recipe
from avade.recipe.schema import Recipe
from avade.recipe.sweep import expand_sweep
from avade.recipe.write import recipe_to_dict
from avade.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ALL = sorted(RECIPES.rglob("*.toml"))
PAPER = sorted((RECIPES / "paper").glob("[!_]*.toml"))
MAIN = RECIPES / "av_ade_wg_rd.toml"
NATURAL = ["data.name=natural-patches"]
# Labelled embedded data for the class-conditional recipes (natural-patches has no labels).
DIGITS = ["data.name=digits", "data.channels=3", "data.resolution=32"]

TABLE5_CATEGORIES = {"bedroom", "tower", "bridge", "kitchen", "church_outdoor", "living_room", "dining_room",
                     "classroom", "conference_room", "restaurant"}


def rel(path: Path) -> str:
    return str(path.relative_to(RECIPES))


def data_sweep(recipe: Recipe) -> bool:
    """Whether a sweep varies dataset options (those do not carry over to another dataset)."""
    sweep = recipe.sweep
    keys = [] if sweep is None else [*sweep.grid, *(k for combo in sweep.combos for k in combo)]
    return any(k.startswith("data.") for k in keys)


def build(recipe: Recipe) -> torch.nn.Module:
    """The recipe's model for images of its configured resolution (no data needed)."""
    cfg = recipe.data.dataset.config
    channels = getattr(cfg, "channels", 3)
    classes = 10 if recipe.model.options.conditional else 0
    return build_model(recipe, (channels, cfg.resolution, cfg.resolution), classes)


def test_the_recipe_set_is_complete() -> None:
    names = {rel(p) for p in ALL}
    expected = {
        "av_ade_wg_rd.toml", "v_ade.toml", "vae.toml", "quickstart.toml",
        "paper/v_ade_cifar10.toml", "paper/av_gde_cifar10.toml", "paper/gan_cifar10.toml",
        "paper/vae_cifar10.toml", "paper/av_ade_stl10.toml", "paper/av_ade_lsun_64.toml",
        "paper/av_ade_lsun_128.toml", "paper/av_ade_imagenet32.toml", "paper/av_ade_imagenet64.toml",
        "paper/av_ade_celeba64.toml", "paper/cond_av_ade_cifar10.toml", "paper/cond_gan_cifar10.toml",
        "paper/table9a_av_ade.toml", "paper/table9b_v_ade.toml", "paper/av_ade_iaf_rd.toml",
        "paper/baselines/glow_cifar10.toml", "paper/baselines/realnvp_cifar10.toml",
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"


# -- every file validates, expands and builds -------------------------------------------------------


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_recipe_checks_expands_and_builds(path: Path) -> None:
    result = CliRunner().invoke(app, ["recipe", "check", str(path)])
    assert result.exit_code == 0, result.output
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    if not path.name.startswith("_"):
        assert recipe.description.strip(), f"{rel(path)}: say what it reproduces in `description`"
    variants = expand_sweep(recipe)
    assert len({v.name for v in variants}) == len(variants)
    built = set()
    for variant in variants:  # full-size models at the recipe's own resolution (no training)
        key = json.dumps([recipe_to_dict(variant.recipe)["model"], variant.recipe.data.dataset.config.resolution])
        if key in built:  # e.g. the ten LSUN categories share one architecture
            continue
        built.add(key)
        model = build(variant.recipe)
        assert model.variant == recipe.variant
        assert model.data_shape[1] == variant.recipe.data.dataset.config.resolution


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_recipe_runs_on_embedded_data(path: Path) -> None:
    """``--set data.name=natural-patches`` swaps the dataset; only loader keys carry over."""
    recipe = load_recipe(path, NATURAL)
    assert recipe.data.options.name == "natural-patches"
    assert recipe.data.options.batch_size == load_recipe(path).data.options.batch_size
    variants = [recipe] if data_sweep(recipe) else [v.recipe for v in expand_sweep(recipe)]
    if recipe.model.options.conditional:
        with pytest.raises(ConfigError, match="labelled"):
            build_model(variants[0], (3, 32, 32), num_classes=0)
        recipe = load_recipe(path, DIGITS)
        variants = [v.recipe for v in expand_sweep(recipe)]
    model = build(variants[0])
    assert model.num_classes == (10 if recipe.model.options.conditional else 0)


@pytest.mark.parametrize("name", ["av_ade_lsun_64.toml", "av_ade_lsun_128.toml"])
def test_dataset_sweep_survives_a_dataset_switch(name: str) -> None:
    """Switching the dataset drops its options, and with them the sweep axes over them."""
    result = CliRunner().invoke(app, ["recipe", "check", str(RECIPES / "paper" / name), "--set", *NATURAL])
    assert result.exit_code == 0, result.output
    recipe = load_recipe(RECIPES / "paper" / name, NATURAL)
    assert recipe.sweep is None and len(expand_sweep(recipe)) == 1


def test_lsun_sweep_can_be_narrowed_on_the_command_line() -> None:
    recipe = load_recipe(RECIPES / "paper" / "av_ade_lsun_64.toml", ['sweep.grid={"data.category"=["tower"]}'])
    (variant,) = expand_sweep(recipe)
    assert variant.recipe.data.dataset.config.category == "tower"


# -- one real training step from the recipes, on embedded data -----------------------------------------


@pytest.mark.parametrize("path", [MAIN, RECIPES / "v_ade.toml", RECIPES / "vae.toml"], ids=rel)
def test_recipe_trains_a_step_on_natural_patches(path: Path, tmp_path: Path) -> None:
    recipe = load_recipe(path, [*NATURAL, "data.resolution=16", "data.batch_size=4", "train.device=cpu",
                                "train.warmup_steps=0"])
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    logs = trainer.train_step(*next(trainer.stream.batches(0)))
    assert logs["finite"] == 1.0
    assert torch.isfinite(torch.tensor(logs["bpd"]))
    assert ("l_q" in logs) == (recipe.variant == "av-ade")


@pytest.mark.filterwarnings("ignore:--set data.name")  # a sweep over the real dataset's options is dropped
@pytest.mark.parametrize("path", SHIPPED, ids=shipped_id)
@pytest.mark.onednn  # (the paper's widths: oneDNN's kernels, see conftest)
def test_every_shipped_recipe_takes_a_full_step(path: Path, tmp_path: Path) -> None:
    """At its own resolution, adversarial part included (tests/train/test_cuda_training.py takes the same step
    on CUDA). Batch 2, the least a data-dependent init takes: on a CPU the step's cost grows with it
    (paper/av_ade_lsun_128.toml: most of a minute at batch 4)."""
    logs = shipped_recipe_step(path, "cpu", tmp_path, batch_size=2)
    assert logs["finite"] == 1.0 and all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs


# -- the paper's settings -----------------------------------------------------------------------------


def test_main_recipe_has_the_appendix_c_settings() -> None:
    r = load_recipe(MAIN)
    assert r.name == "av_ade_wg_rd" and r.variant == "av-ade"
    flow, enc, post, dec, disc = (r.model.flow, r.model.encoder, r.model.posterior, r.model.decoder,
                                  r.model.discriminator)
    assert flow.name == "realnvp"
    assert (flow.config.scales, flow.config.blocks, flow.config.layers) == (1, 2, 3)
    assert flow.config.batch_norm and flow.config.norm == "weight-norm"  # "both batch and weight norm"
    assert flow.config.out_batch_norm == "transformed"  # ... as in the reference implementation (bn_out)
    assert enc.name == "resnet" and tuple(enc.config.channels) == (32, 64, 128, 256) and enc.config.stem == 16
    assert dec.name == "resnet"
    assert enc.config.residual_scale == dec.config.residual_scale == 0.1  # openai/iaf: input + 0.1 * h
    assert post.name == "topdown" and post.config.latent_channels == 32
    assert disc.name == "resnet" and tuple(disc.config.channels) == (32, 64, 128, 256) and disc.config.stem == 16
    t = r.train
    assert (t.optimizer, t.lr, tuple(t.betas)) == ("adamax", 0.002, (0.9, 0.999))
    assert (t.gp_weight, t.adv_weight, t.d_steps, t.flow_adv_grad) == (100.0, 100.0, 1, False)
    assert 0 < t.warmup_steps < t.steps  # appendix F: maximum likelihood first
    assert t.steps > t.checkpoint_every > 0 and t.sample_every <= t.steps
    d = r.data
    assert (d.options.name, d.dataset.config.resolution, d.options.batch_size) == ("cifar10", 32, 64)
    assert not d.dataset.config.download  # never fetch anything unless asked
    assert r.eval.metrics == ["bpd", "fid"]
    assert r.model.options.sigma == "scalar"  # N(f; mu, sigma I), as the reference IAF code's one dec_log_stdv
    fid = r.eval.settings["fid"].config  # Table 7's reference set: the training split (FID 0 at its 50k)
    assert (fid.split, fid.real_samples) == ("train", 50000)


@pytest.mark.parametrize("path", PAPER, ids=rel)
def test_paper_recipes_keep_the_shared_settings(path: Path) -> None:
    r = load_recipe(path)
    t = r.train
    assert (t.optimizer, t.lr, tuple(t.betas), t.gp_weight, t.adv_weight) == ("adamax", 0.002, (0.9, 0.999),
                                                                               100.0, 100.0)
    res = r.data.dataset.config.resolution
    assert r.data.options.batch_size == (64 if res <= 32 else 32), "appendix C: 64 at 32x32, 32 above"
    assert r.model.encoder.name == r.model.decoder.name == "resnet"
    assert r.model.posterior.config.latent_channels == 32
    if r.model.discriminator is not None:
        assert r.model.discriminator.name == "resnet"


@pytest.mark.parametrize("path", [p for p in ALL if p != MAIN and p not in PAPER], ids=rel)
def test_other_recipes_say_where_they_leave_the_papers_objective(path: Path) -> None:
    """A recipe outside the paper's set may be smaller, but each objective setting it takes other than appendix
    C's (L_Q and penalty weights 100, one decoder sigma) is named in its comments, with the reason."""
    r = load_recipe(path)
    comments = "\n".join(ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.lstrip().startswith("#"))
    differ = {"model.sigma": r.model.options.sigma != "scalar"}
    if r.model.discriminator is not None:
        differ["train.adv_weight"] = r.train.adv_weight != 100.0
        differ["train.gp_weight"] = r.train.gp_weight != 100.0
    for key, different in differ.items():
        if different:
            assert key.split(".")[1] in comments, f"{rel(path)}: {key} differs from the paper's, and no comment says so"


@pytest.mark.parametrize(("name", "variant", "has_flow", "has_disc"), [
    ("v_ade_cifar10", "v-ade", True, False),
    ("av_gde_cifar10", "av-gde", False, True),
    ("gan_cifar10", "gan", False, True),
    ("vae_cifar10", "vae", False, False),
])
def test_cifar10_variants(name: str, variant: str, has_flow: bool, has_disc: bool) -> None:
    r = load_recipe(RECIPES / "paper" / f"{name}.toml")
    assert r.variant == variant and r.data.options.name == "cifar10"
    assert (r.model.flow is not None, r.model.discriminator is not None) == (has_flow, has_disc)
    assert ("bpd" in r.eval.metrics) == (variant != "gan")


@pytest.mark.parametrize(("name", "flow", "published"), [
    ("glow_cifar10", "glow", {"scales": 3, "steps": 32, "hidden": 512, "lu": True, "norm": "actnorm"}),
    ("realnvp_cifar10", "realnvp", {"scales": 2, "blocks": 8, "hidden": 64, "final_layers": 4, "net": "reference",
                                    "batch_norm": True}),
])
def test_figure19_flow_baselines_are_the_published_flows_alone(name: str, flow: str, published: dict) -> None:
    """Appendix E.2 / Figure 19 compares AV-ADE with Glow and Real-NVP by precision and recall: each is the
    flow alone (variant ``flow``) at its CIFAR-10 architecture, trained by maximum likelihood on the same data."""
    r = load_recipe(RECIPES / "paper" / "baselines" / f"{name}.toml")
    assert r.variant == "flow" and r.model.flow.name == flow
    assert {key: getattr(r.model.flow.config, key) for key in published} == published
    assert r.model.encoder is r.model.posterior is r.model.decoder is r.model.discriminator is None
    assert (r.data.options.name, r.data.dataset.config.resolution, r.data.options.batch_size) == ("cifar10", 32, 64)
    assert r.eval.metrics == ["bpd", "fid"]  # and --metrics prd for the figure


@pytest.mark.parametrize(("name", "dataset", "resolution"), [
    ("av_ade_stl10", "stl10", 48), ("av_ade_imagenet32", "imagenet", 32), ("av_ade_imagenet64", "imagenet", 64),
    ("av_ade_celeba64", "celeba", 64),
])
def test_other_datasets(name: str, dataset: str, resolution: int) -> None:
    r = load_recipe(RECIPES / "paper" / f"{name}.toml")
    assert r.variant == "av-ade" and r.model.flow.config.scales == 1
    assert (r.data.options.name, r.data.dataset.config.resolution) == (dataset, resolution)


@pytest.mark.parametrize(("name", "resolution"), [("av_ade_lsun_64", 64), ("av_ade_lsun_128", 128)])
def test_lsun_sweep_covers_the_ten_table5_categories(name: str, resolution: int) -> None:
    variants = expand_sweep(load_recipe(RECIPES / "paper" / f"{name}.toml"))
    categories = [v.recipe.data.dataset.config.category for v in variants]
    assert len(categories) == 10 and set(categories) == TABLE5_CATEGORIES
    for v in variants:
        assert v.recipe.variant == "av-ade" and v.recipe.data.options.name == "lsun"
        assert v.recipe.data.dataset.config.resolution == resolution
        assert v.recipe.data.options.batch_size == 32
        assert v.recipe.data.dataset.config.category.replace("_", "-") in v.name


@pytest.mark.parametrize(("name", "variant", "metrics"), [
    ("cond_av_ade_cifar10", "av-ade", {"gan-test", "gan-train", "bpd"}),
    ("cond_gan_cifar10", "gan", {"gan-test", "gan-train"}),
])
def test_table8_class_conditional_pair(name: str, variant: str, metrics: set[str]) -> None:
    r = load_recipe(RECIPES / "paper" / f"{name}.toml")
    assert r.variant == variant and r.model.options.conditional
    assert r.model.decoder.config.norm == r.model.posterior.config.norm == "cwn"  # the whole generator
    assert r.model.discriminator.name == "resnet"
    assert set(r.eval.metrics) == metrics
    for metric in ("gan-test", "gan-train"):  # a CIFAR ResNet-32 classifier, trained as usual
        c = r.eval.settings[metric].config
        assert (c.classifier, c.depth, c.optimizer, c.lr_schedule, c.augment) == ("resnet", 32, "sgd", "cosine", True)
    model = build(r)  # CWN decoder with per-class gains, projection discriminator
    assert model.discriminator.head.embed is not None
    for part in (model.decoder, model.posterior):
        assert any(type(m).__name__ == "ConditionalWeightNorm" and m.num_classes == 10 for m in part.modules())


@pytest.mark.parametrize(("name", "variant", "pairs"), [
    ("table9a_av_ade", "av-ade", [(1, 2), (2, 2), (2, 4), (3, 3)]),
    ("table9b_v_ade", "v-ade", [(1, 2), (2, 2), (3, 2), (4, 1)]),
])
def test_table9_sweeps_are_the_papers_pairs(name: str, variant: str, pairs: list[tuple[int, int]]) -> None:
    variants = expand_sweep(load_recipe(RECIPES / "paper" / f"{name}.toml"))
    got = [(v.recipe.model.flow.config.scales, v.recipe.model.flow.config.blocks) for v in variants]
    assert got == pairs
    for v in variants:
        assert v.recipe.variant == variant and v.recipe.model.flow.name == "realnvp"
        assert v.recipe.model.flow.config.layers == 3
        assert v.recipe.data.options.name == "cifar10" and v.recipe.data.dataset.config.resolution == 32
        assert (v.recipe.model.discriminator is not None) == (variant == "av-ade")
    assert all(v.recipe.model.flow.config.hidden_growth == 2 for v in variants)  # the reference's widths
    if variant == "av-ade":  # appendix F: MLE first, then coverage and quality
        assert variants[0].recipe.train.warmup_steps > 0


def test_small_embedded_recipes() -> None:
    v_ade, vae = load_recipe(RECIPES / "v_ade.toml"), load_recipe(RECIPES / "vae.toml")
    assert v_ade.variant == "v-ade" and v_ade.model.flow.name == "realnvp" and v_ade.model.discriminator is None
    assert vae.variant == "vae" and vae.model.flow is None and vae.model.discriminator is None
    for r in (v_ade, vae):
        assert r.data.options.name == "natural-patches" and r.data.dataset.config.resolution in (16, 32)


# -- a missing dataset is one clear line ----------------------------------------------------------------


def test_missing_dataset_is_one_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "data"
    empty.mkdir()
    result = CliRunner().invoke(app, ["recipe", "run", str(MAIN), "--set", f"data.root={empty}",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error:")
    assert str(empty) in text  # the path searched
    assert "data.root" in text and "data.download" in text  # how to fix
    assert not isinstance(result.exception, ConfigError | KeyError)  # handled, not raised


@pytest.mark.parametrize("sweep", [False, True])
def test_missing_dataset_suggests_offline_data_the_model_can_train_on(tmp_path: Path, sweep: bool) -> None:
    """A class-conditional recipe is pointed at the labelled digits, not at natural-patches (no labels:
    following that hint failed with "needs a labelled dataset"); an unconditional one at natural-patches."""
    empty = tmp_path / "data"
    empty.mkdir()
    grid = ["--set", 'sweep.grid={"train.lr" = [0.001, 0.002]}'] if sweep else []
    for recipe, fallback in ((RECIPES / "paper" / "cond_av_ade_cifar10.toml", "digits"), (MAIN, "natural-patches")):
        result = CliRunner().invoke(app, ["recipe", "run", str(recipe), "--set", f"data.root={empty}", *grid,
                                          "--out", str(tmp_path / "run")])
        assert result.exit_code != 0
        assert result.output.strip().endswith(f"use the built-in offline data with --set data.name={fallback}"), \
            result.output
    # and the hint works: the conditional recipe builds on it
    assert check_recipe(RECIPES / "paper" / "cond_av_ade_cifar10.toml", ["data.name=digits"])


def check_recipe(path: Path, overrides: list[str]) -> bool:
    result = CliRunner().invoke(app, ["recipe", "check", str(path), *(a for o in overrides for a in ("--set", o))])
    return result.exit_code == 0 and result.output.startswith("ok:")


def test_iaf_variant_has_one_weight_normalized_iaf_step_per_group() -> None:
    r = load_recipe(RECIPES / "paper" / "av_ade_iaf_rd.toml")
    post = r.model.posterior
    assert r.variant == "av-ade" and post.name == "topdown"
    assert post.config.iaf_steps == 1 and post.config.norm == "weight-norm"  # appendix B.2 and C
    model = build(r)
    groups = list(model.posterior.groups.values())
    assert len(groups) > 0 and all(len(g.flow.steps) == 1 for g in groups)
