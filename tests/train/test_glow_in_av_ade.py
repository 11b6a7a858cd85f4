"""Glow as AV-ADE's f at its defaults trains through the likelihood warm-up into the adversarial phase:
with Glow's reference actnorm inside the coupling networks (norm = "actnorm") the quickstart's samples
went non-finite as soon as L_Q started (bits/dim 7.2 against 4.9 after the warm-up)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from avade.recipe.load import load_recipe
from avade.train.trainer import Trainer

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.toml"


@pytest.mark.slow
@pytest.mark.onednn  # (the default Glow's wide convolutions, over and over: oneDNN's kernels, see conftest)
def test_default_glow_trains_av_ade_into_the_adversarial_phase(tmp_path) -> None:
    # Batch 16, not the quickstart's 32 (Glow's default 3 x 8 steps of 128 channels is most of the time):
    # with norm = "actnorm" this run still diverges once L_Q starts (TrainingError by step 110), whereas a
    # warm-up shortened to 30 steps would not catch it (bits/dim 5.7, finite).
    recipe = load_recipe(QUICKSTART, ['model.flow={name="glow"}', "train.steps=110", "train.log_every=5",
                                      "train.eval_batches=1", "train.checkpoint_every=1000", "data.batch_size=16"])
    assert recipe.train.warmup_steps == 100  # ten steps with L_Q
    summary = Trainer(recipe, tmp_path / "run", progress=False, console=Console(file=io.StringIO())).fit()
    assert summary["steps"] == 110 and math.isfinite(summary["bpd"]) and summary["bpd"] < 6.0
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    adversarial = [row for row in logs if "d_fake" in row]
    assert adversarial and all(row["finite"] == 1.0 and row["d_fake"] is not None for row in adversarial)
