"""A run records what a reviewer needs to reproduce it beside its recipe: versions, command line, commit."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy
import torch
from tiny_recipes import tiny_recipe

import avade
from avade.train.provenance import _git_state
from avade.train.trainer import Trainer


def test_each_checkpoint_records_the_environment_it_was_trained_in(tmp_path: Path) -> None:
    trainer = Trainer(tiny_recipe("train.steps=2"), tmp_path / "run", progress=False)
    try:
        trainer.step_once()
        path = trainer.save()
    finally:
        trainer.close()
    assert path is not None
    env = json.loads((path / "state.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["numpy"] == numpy.__version__
    assert env["avade"] == avade.__version__ and env["python"].count(".") == 2
    assert env["command"] == sys.argv and env["platform"]
    # this test runs from a checkout: its commit is named (a wheel's install says nothing, see below)
    assert "git_commit" in env or shutil.which("git") is None, env
    if "git_commit" in env:
        assert len(env["git_commit"]) == 40 and isinstance(env["git_dirty"], bool)


def test_no_commit_for_a_package_that_no_repository_tracks(tmp_path: Path) -> None:
    # (as avade installed into a .venv inside some repository: that repository's commit would be a wrong one)
    package = tmp_path / "site-packages" / "avade"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert _git_state(package) == {}
