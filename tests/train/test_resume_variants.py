"""A run stopped at a checkpoint and resumed ends bit-identical to the uninterrupted run, for every variant and
the training features a resume must carry over (CPU, fixed seed): weights, optimizer and random states, the weight
average, the collapse watches, metrics.jsonl and the final bpd."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.errors import StoppedError
from avade.train import checkpoint as ckpt
from avade.train.trainer import Trainer

CASES = {
    "v-ade": ["model.variant=v-ade", "model.discriminator.name=none"],
    "av-gde": ["model.variant=av-gde", "model.flow.name=none"],
    "vae": ["model.variant=vae", "model.flow.name=none", "model.discriminator.name=none"],
    "gan": ["model.variant=gan", "model.flow.name=none", "train.d_steps=2"],
    "flow": ["model.variant=flow", "model.encoder.name=none", "model.posterior.name=none", "model.decoder.name=none",
             "model.discriminator.name=none", "train.ema_decay=0.8"],
    # cut at the MLE warm-up's end, the critic warming up before it; every schedule and watch carried over
    "warm-up boundary": ["train.warmup_steps=4", "train.critic_warmup_steps=2", "train.lr_schedule=cosine",
                         "train.lr_warmup_steps=2", "train.ema_decay=0.8", "train.ema_start=2", "train.grad_clip=0.5",
                         "train.kl_warmup_steps=6", "model.posterior.free_bits=0.05"],
    "bf16, conditional, 2 workers": ["train.precision=bf16", "model.conditional=true", "model.posterior.norm=cwn",
                                     "model.decoder.norm=cwn", "data.num_workers=2", "data.size=20"],
    "bf16 coupling networks, glow": ["train.precision=bf16", "train.bf16_coupling_nets=true", "model.flow.name=glow",
                                     "model.flow.scales=2", "model.flow.steps=1", "model.flow.hidden=8"],
}


def _records(run):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in lines]


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_a_run_stopped_and_resumed_is_bit_identical(tmp_path, monkeypatch, overrides):
    recipe = tiny_recipe("train.steps=7", "train.checkpoint_every=1000", "train.log_every=1", *overrides)
    Trainer(recipe, tmp_path / "a", progress=False).fit()
    with monkeypatch.context() as m:  # a stop signal after step 4 (a checkpoint of that step, as SIGTERM's)
        m.setattr(Trainer, "_stop_requested", lambda self, stop: self.step == 4)
        with pytest.raises(StoppedError):
            Trainer(recipe, tmp_path / "b", progress=False).fit()
    torch.manual_seed(1234)  # the resumed process's own draws before it resumes do not matter
    resumed = Trainer(recipe, tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 4
    summary = resumed.fit()
    a, b = (ckpt.read_checkpoint(tmp_path / run / "checkpoints" / "step_00000007") for run in ("a", "b"))
    for part in ("model", "optimizer", "rng", "ema"):
        assert (part in a) == (part in b) and a.get(part, {}).keys() == b.get(part, {}).keys(), part
        for key in a.get(part, {}):
            assert torch.equal(a[part][key], b[part][key]), f"{part}:{key}"
    for key in ("collapse", "mode_collapse", "bpd_untrained", "train_bpd"):
        assert a["state"].get(key) == b["state"].get(key), key
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
    assert summary.get("bpd") == json.loads((tmp_path / "a" / "summary.json").read_text()).get("bpd")
