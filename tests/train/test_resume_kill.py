"""A run killed with SIGKILL, or stopped by SIGTERM or Ctrl-C, and resumed ends bit-identical to an
uninterrupted run (CPU, fixed seed)."""

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

pytestmark = pytest.mark.xdist_group("resume_kill")  # (one worker: the signal tests share their reference run)

STEPS = 40


def _cmd(recipe, out, *extra):
    return [sys.executable, "-m", "avade", "recipe", "run", str(recipe), "--out", str(out), "--device", "cpu",
            *extra]


def _env():
    # Same thread count in every process: float reductions may differ across thread counts.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _reference_run(tmp_path, *overrides):
    """A tiny recipe of ``STEPS`` steps and its uninterrupted run (``tmp_path/ref``)."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict(f"train.steps={STEPS}", *overrides)))
    subprocess.run(_cmd(recipe, tmp_path / "ref"), check=True, env=_env(), capture_output=True, timeout=300)
    return recipe, tmp_path / "ref"


def _final_checkpoints(ref, other):
    """The last checkpoints of two runs, read."""
    return (ckpt.read_checkpoint(ref / "checkpoints" / f"step_{STEPS:08d}"),
            ckpt.read_checkpoint(other / "checkpoints" / f"step_{STEPS:08d}"))


def _assert_same_weights(a, b):
    for part in ("model", "optimizer"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}:{key}"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    recipe, ref = _reference_run(tmp_path, "train.checkpoint_every=10", "train.log_every=10")
    killed = tmp_path / "killed"
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
    a, b = _final_checkpoints(ref, killed)
    _assert_same_weights(a, b)
    # The collapse detector's window too (not restored, the resumed run's would hold only its own steps).
    assert a["state"]["collapse"]["steps"] == STEPS
    assert a["state"]["collapse"] == b["state"]["collapse"]
    assert a["state"]["mode_collapse"]["steps"] == STEPS
    assert a["state"]["mode_collapse"] == b["state"]["mode_collapse"]
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in
             (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metrics.jsonl must not repeat the replayed steps"


@pytest.fixture(scope="module")
def signal_reference(tmp_path_factory):
    """The signal tests' recipe and its uninterrupted run, made once for all three (each a process of its own)."""
    return _reference_run(tmp_path_factory.mktemp("signal-reference"), "train.checkpoint_every=1000",
                          "train.log_every=1")


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background test runner may have it ignored


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM and SIGINT are POSIX")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)],
                         ids=["SIGTERM", "Ctrl-C", "SIGUSR1 (SLURM's early warning)"])
def test_a_stop_signal_stops_at_a_step_with_a_checkpoint_and_resume_is_bit_identical(tmp_path, signum,
                                                                                      signal_reference):
    recipe, ref = signal_reference
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(_cmd(recipe, stopped), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + 240
    metrics = stopped / "metrics.jsonl"  # a line per step: training has started
    while not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, out
    kept = ckpt.list_checkpoints(stopped / "checkpoints")
    assert len(kept) == 1 and 0 < ckpt.checkpoint_step(kept[0]) < STEPS, out  # saved at the stop, not at 1000
    name = signal.Signals(signum).name
    assert f"stopped by {name} at step {ckpt.checkpoint_step(kept[0])} of {STEPS}" in out and "--resume" in out
    assert ("press Ctrl-C again" in out) == (signum == signal.SIGINT), out

    subprocess.run(_cmd(recipe, stopped, "--resume"), check=True, env=_env(), capture_output=True, timeout=300)
    _assert_same_weights(*_final_checkpoints(ref, stopped))

