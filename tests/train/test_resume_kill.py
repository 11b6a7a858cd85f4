"""A run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run (CPU, fixed seed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import tomli_w
import torch
from tiny_recipes import tiny_dict

from avade.train import checkpoint as ckpt

STEPS = 40


def _cmd(recipe, out, *extra):
    return [sys.executable, "-m", "avade", "recipe", "run", str(recipe), "--out", str(out), "--device", "cpu",
            *extra]


def _env():
    # Same thread count in every process: float reductions may differ across thread counts.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict(f"train.steps={STEPS}", "train.checkpoint_every=10",
                                              "train.log_every=10")))
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cmd(recipe, ref), check=True, env=_env(), capture_output=True, timeout=300)

    proc = subprocess.Popen(_cmd(recipe, killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    first = killed / "checkpoints" / "step_00000010"
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = ckpt.list_checkpoints(killed / "checkpoints")
    assert done and done[-1].name != f"step_{STEPS:08d}"

    subprocess.run(_cmd(recipe, killed, "--resume"), check=True, env=_env(), capture_output=True, timeout=300)
    a = ckpt.read_checkpoint(ref / "checkpoints" / f"step_{STEPS:08d}")
    b = ckpt.read_checkpoint(killed / "checkpoints" / f"step_{STEPS:08d}")
    for part in ("model", "optimizer"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}:{key}"
    # The collapse detector's window too (not restored, the resumed run's would hold only its own steps).
    assert a["state"]["collapse"]["steps"] == STEPS
    assert a["state"]["collapse"] == b["state"]["collapse"]
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in
             (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metrics.jsonl must not repeat the replayed steps"
