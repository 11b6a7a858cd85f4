"""What a metric returns reaches summary.json / eval.json only as named numbers: a plugin metric that
raises, returns something else, or reuses another result's name is stopped with one line naming it; a
NaN from a sample metric is that metric's value, not a diverged run."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import attrs
import pytest
import torch
from tiny_recipes import tiny_recipe

from avade import hookimpl
from avade.errors import AvadeError, TrainingError
from avade.evaluate import evaluate_run
from avade.registry import get_registry
from avade.train.run import run_recipe


@attrs.define
class Returns:
    what: str = "ok"


class OddMetric:
    def __init__(self, cfg: Returns) -> None:
        self.cfg, self.name = cfg, "odd"

    def compute(self, ctx: Any) -> Any:
        return {
            "ok": {"odd_value": 1.5, "odd_tensor": torch.tensor(2.5)},
            "raises": None,
            "string": {"odd_value": "high"},
            "list": [1.0],
            "bpd": {"bpd": 0.0},
            "steps": {"steps": 123.0},
            "nan": {"odd_value": math.nan},
            "empty": {},
        }[self.cfg.what] if self.cfg.what not in ("raises", "exits") else (
            1 / 0 if self.cfg.what == "raises" else sys.exit(3))


class _Plugin:
    @hookimpl
    def avade_register(self, registry: Any) -> None:
        registry.register("metric", "odd", factory=OddMetric, config=Returns, summary="test metric")


@pytest.fixture
def odd(fresh_registry: None) -> None:
    assert get_registry().add_plugin(_Plugin(), dist="avade-odd", version="0.1")


def run(tmp_path, what: str, name: str = "run") -> dict[str, Any]:
    recipe = tiny_recipe('eval.metrics=["bpd", "odd"]', f'eval.odd={{what="{what}"}}')
    return run_recipe(recipe, tmp_path / name, progress=False)


def test_numbers_are_recorded_as_floats(odd, tmp_path):
    summary = run(tmp_path, "ok")
    assert summary["odd_value"] == 1.5 and summary["odd_tensor"] == 2.5 and isinstance(summary["odd_tensor"], float)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["odd_tensor"] == 2.5 and saved["bpd"] == summary["bpd"]


@pytest.mark.parametrize("what, message", [
    ("raises", r"metric 'odd' \(from plugin avade-odd 0.1\) failed: ZeroDivisionError: division by zero; fix or "
               r"disable that plugin"),
    ("string", r"metric 'odd' \(from plugin avade-odd 0.1\) returned 'odd_value': str; compute\(ctx\) must return "
               r"a dict of result name \(str\) -> number"),
    ("list", r"returned list; compute\(ctx\) must return a dict"),
    ("bpd", r"returned 'bpd': its result names must be 'odd' or start with 'odd_' \(e.g. 'odd_bpd'\), so that "
            r"they overwrite no other result nor the run.s own record; fix or disable that plugin"),
    ("steps", r"returned 'steps': its result names must be 'odd' or start with 'odd_'"),
    ("empty", r"metric 'odd' \(from plugin avade-odd 0.1\) returned no results"),
    ("exits", r"metric 'odd' \(from plugin avade-odd 0.1\) failed: SystemExit: 3; fix or disable that plugin"),
])
def test_a_broken_plugin_metric_is_named(odd, tmp_path, what, message):
    with pytest.raises(AvadeError, match=message) as info:
        run(tmp_path, what)
    assert "\n" not in str(info.value)


def test_avade_eval_refuses_a_clobbering_metric_and_keeps_eval_json(odd, tmp_path):
    run(tmp_path, "ok")
    evaluate_run(tmp_path / "run", ["bpd"], device="cpu")
    before = (tmp_path / "run" / "eval.json").read_text()
    with pytest.raises(AvadeError, match=r"metric 'odd' .* returned 'bpd': its result names must be 'odd'"):
        # the recipe's own settings for odd are "ok"; a run's recipe.toml edited to clobber bpd
        recipe_file = tmp_path / "run" / "recipe.toml"
        recipe_file.write_text(recipe_file.read_text().replace('what = "ok"', 'what = "bpd"'))
        evaluate_run(tmp_path / "run", ["bpd", "odd"], device="cpu")
    assert (tmp_path / "run" / "eval.json").read_text() == before


def test_a_nan_sample_metric_is_not_a_diverged_run(odd, tmp_path, capsys):
    summary = run(tmp_path, "nan")
    assert math.isnan(summary["odd_value"]) and "error" not in summary
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["odd_value"] is None
    assert "odd_value not finite (recorded as null)" in capsys.readouterr().err


def test_a_nan_bits_per_dim_still_fails_the_run(tmp_path, monkeypatch):
    from avade.train.trainer import Trainer

    monkeypatch.setattr(Trainer, "test_bpd", lambda self, *a, **k: math.nan)
    with pytest.raises(TrainingError, match=r"the trained model's bpd is not finite"):
        run_recipe(tiny_recipe(), tmp_path / "run", progress=False)


def test_avade_eval_checks_the_inception_weights_before_any_metric_runs(tmp_path, monkeypatch):
    from avade.metrics import bpd, features
    from avade.metrics.random_features import RandomConvFeatures

    run_recipe(tiny_recipe(), tmp_path / "run", progress=False)
    monkeypatch.setattr(features, "get_extractor", lambda options, device="cpu": RandomConvFeatures(num_classes=0))
    ran = []
    monkeypatch.setattr(bpd.BPD, "compute", lambda self, ctx: ran.append("bpd") or {"bpd": 1.0})
    with pytest.raises(AvadeError, match="the Inception Score needs class probabilities"):
        evaluate_run(tmp_path / "run", ["bpd", "is"], device="cpu")
    assert ran == []  # bpd's work was not done (and lost) before the IS failure


def test_avade_eval_reports_bpd_as_training_did_with_one_importance_knob(tmp_path):
    from typer.testing import CliRunner

    from avade.cli.app import app

    summary = run_recipe(tiny_recipe("eval.importance_samples=3"), tmp_path / "run", progress=False)
    results = evaluate_run(tmp_path / "run", ["bpd"], device="cpu")  # the recipe's eval.importance_samples
    assert results == pytest.approx({"bpd": summary["bpd"], "bpd_iw3": summary["bpd_iw3"]})
    assert set(evaluate_run(tmp_path / "run", ["bpd"], device="cpu", importance_samples=1)) == {"bpd"}
    results = evaluate_run(tmp_path / "run", ["bpd"], device="cpu", importance_samples=2)
    assert set(results) == {"bpd", "bpd_iw2"} and results["bpd_iw2"] <= results["bpd"] + 1e-6
    cli = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu",
                                   "--importance-samples", "4", "--json"])
    assert cli.exit_code == 0, cli.output
    printed = json.loads(cli.stdout)
    assert set(printed) == {"checkpoint", "step", "weights", "bpd", "bpd_iw4", "settings"}
    assert printed["settings"]["bpd"]["importance_samples"] == 4  # (the k of bpd_iw4, as eval.json records it)
    evaluate_run(tmp_path / "run", ["bpd"], device="cpu", importance_samples=1)
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    # the bpd metric ran again with k = 1: its earlier bpd_iw4 goes, so values and settings agree
    assert "bpd_iw4" not in record and record["settings"]["bpd"]["importance_samples"] == 1


def test_training_reports_bpd_as_its_eval_bpd_table_asks(tmp_path):
    """[eval.bpd] (its k, its split) applies to the run's own evaluation as to avade eval's; ``bpd`` stays
    the test split's, the training split's is ``bpd_train``."""
    recipe = tiny_recipe('eval.bpd={importance_samples = 3, split = "train"}')
    summary = run_recipe(recipe, tmp_path / "run", progress=False)
    keys = {"bpd", "bpd_iw3", "bpd_train", "bpd_iw3_train"}
    assert keys <= set(summary)
    results = evaluate_run(tmp_path / "run", ["bpd"], device="cpu")
    assert results == pytest.approx({k: summary[k] for k in ("bpd_train", "bpd_iw3_train")})
    assert summary["bpd_train"] != summary["bpd"]
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["bpd_train"] == pytest.approx(summary["bpd_train"])
    # summary.json records [eval.bpd] as eval.json does, each split under its own results' name (bpd itself is
    # the test split's whatever its split)
    assert summary["settings"]["bpd_train"] == record["settings"]["bpd_train"]
    assert summary["settings"]["bpd_train"]["split"] == "train" and summary["settings"]["bpd"]["split"] == "test"
    # the test split evaluated after the training split's (or before): each keeps the other's values and settings
    evaluate_run(tmp_path / "run", ["bpd"], device="cpu", overrides=["eval.bpd.split=test"])
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {"bpd", "bpd_iw3", "bpd_train", "bpd_iw3_train"} <= set(record)
    assert record["bpd_iw3"] == pytest.approx(summary["bpd_iw3"])
    assert record["settings"]["bpd"]["split"] == "test" and record["settings"]["bpd_train"]["split"] == "train"
    assert {k: v for k, v in summary["settings"]["bpd"].items() if k != "overrides"} == {
        k: v for k, v in record["settings"]["bpd"].items() if k != "overrides"}


def test_a_run_whose_metric_plugin_is_gone_still_evaluates_and_samples(odd, tmp_path):
    from avade.evaluate import sample_run
    from avade.registry import PluginWarning, reset_registry

    run(tmp_path, "ok")
    reset_registry()  # the metric's plugin uninstalled; the model is all built-in
    with pytest.warns(PluginWarning, match=r"eval metric\(s\) odd not installed .*: left out"):
        assert evaluate_run(tmp_path / "run", ["bpd"], device="cpu")["bpd"] > 0
    with pytest.warns(PluginWarning):
        sample_run(tmp_path / "run", n=4, output=tmp_path / "s.png", device="cpu")


def test_avade_eval_says_when_bpd_is_over_part_of_the_test_split(tmp_path):
    import warnings

    run_recipe(tiny_recipe("train.eval_batches=1", "data.eval_batch_size=4"), tmp_path / "run", progress=False)
    with pytest.warns(UserWarning, match=r"bpd averaged over 4 of the 16 test images \(train.eval_batches = 1\)"):
        evaluate_run(tmp_path / "run", ["bpd"], device="cpu")
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["settings"]["bpd"]["images"] == 4 and record["settings"]["bpd"]["split_images"] == 16
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the whole split: nothing to say
        evaluate_run(tmp_path / "run", ["bpd"], device="cpu", overrides=["train.eval_batches=0"])
    assert "images" not in json.loads((tmp_path / "run" / "eval.json").read_text())["settings"]["bpd"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # batches that cover the split exactly: the whole split too
        evaluate_run(tmp_path / "run", ["bpd"], device="cpu", overrides=["train.eval_batches=4"])
    assert "images" not in json.loads((tmp_path / "run" / "eval.json").read_text())["settings"]["bpd"]


def test_eval_json_records_the_seed_of_the_samples_a_metric_scored(tmp_path, monkeypatch):
    """Sample metrics record ``sample_seed`` (train.seed + 1, or --set train.seed's): the seed was nowhere in
    eval.json, and a run resumed with another train.seed evaluates its old checkpoints on other samples.
    ``avade sample --seed <sample_seed>`` draws the samples that were scored."""
    import numpy as np

    from avade import evaluate as ev
    from avade.metrics import features, fid, kid, prdc
    from avade.metrics.random_features import RandomConvFeatures

    run_recipe(tiny_recipe("model.conditional=true"), tmp_path / "run", progress=False)
    for module in (features, kid, fid, prdc):
        monkeypatch.setattr(module, "get_extractor", lambda options, device="cpu": RandomConvFeatures(num_classes=0))
    scored = []
    drawn = ev.RunContext.sample_batches
    monkeypatch.setattr(ev.RunContext, "sample_batches",
                        lambda self, *a, **k: (scored.append(x) or x for x in drawn(self, *a, **k)))
    with pytest.warns(UserWarning):  # (test-only features, small KID subsets)
        evaluate_run(tmp_path / "run", ["bpd", "kid", "fid", "prdc"], samples=6, device="cpu",
                     overrides=["train.seed=4"])
    settings = json.loads((tmp_path / "run" / "eval.json").read_text())["settings"]
    assert settings["kid"]["sample_seed"] == 5 and "sample_seed" not in settings["bpd"]  # bpd draws no samples
    # what was asked (subset_size = 1000, the whole test split) and what it came to with 6 samples of 16 images
    assert settings["kid"]["subset_size"] == 1000 and settings["kid"]["used"] == {"real_images": 16, "subset_size": 6}
    assert settings["fid"]["used"] == {"real_images": 16} and "used" not in settings["bpd"]
    assert settings["prdc"]["used"] == {"real_images": 6, "samples": 6} and settings["prdc"]["nearest_k"] == 5
    ev.sample_run(tmp_path / "run", n=6, output=tmp_path / "again.npz", seed=5, device="cpu")
    again = np.load(tmp_path / "again.npz")["arr_0"]
    drawn_by = torch.cat(scored)
    assert len(drawn_by) == 6  # kid, fid and prdc scored the same samples, drawn once
    assert np.array_equal(again, drawn_by.permute(0, 2, 3, 1).numpy())


def test_sample_metrics_draw_from_the_model_in_eval_mode(tmp_path, monkeypatch):
    """During training the model is in train mode (a GAN runs no bpd pass, which would switch it): samples for
    FID & co. must still come from eval mode (batch-norm flows invert with their running statistics)."""
    from avade.evaluate import RunContext
    from avade.train.trainer import Trainer

    trainer = Trainer(tiny_recipe(), tmp_path / "run", progress=False)
    model = trainer.model.train()
    ctx = RunContext(model, trainer.recipe, trainer.train_set, trainer.test_set, trainer.device, tmp_path, tmp_path)
    modes, sample = [], model.sample
    monkeypatch.setattr(model, "sample", lambda *a, **k: (modes.append(model.training), sample(*a, **k))[1])
    assert len(list(ctx.sample_batches(4, batch_size=2))) == 2
    assert modes == [False, False]


def test_gan_test_records_its_sample_seed_with_samples_left_at_none(tmp_path):
    """gan-test and gan-train score model samples drawn with ``sample_seed`` even when ``samples`` is left at
    none (as many as the real split): eval.json records that seed for them too (their settings drop the none)."""
    run_recipe(tiny_recipe("model.conditional=true", "train.steps=2"), tmp_path / "run", progress=False)
    evaluate_run(tmp_path / "run", ["gan-test", "gan-train"], device="cpu",
                 overrides=["train.seed=4", "eval.gan-test.epochs=1", "eval.gan-train.epochs=1"])
    settings = json.loads((tmp_path / "run" / "eval.json").read_text())["settings"]
    assert "samples" not in settings["gan-test"]  # (none: the split's size)
    assert settings["gan-test"]["sample_seed"] == settings["gan-train"]["sample_seed"] == 5
