"""A run records what a reviewer needs to reproduce it beside its recipe: versions, command line, commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest
import torch
from tiny_recipes import tiny_recipe

import avade
from avade.train.provenance import _git_state
from avade.train.trainer import Trainer


def _state_after_one_step(recipe: Any, run: Path) -> tuple[dict[str, Any], Trainer]:
    """The state.json of a checkpoint saved after one training step of ``recipe`` in ``run``, and the trainer."""
    trainer = Trainer(recipe, run, progress=False)
    try:
        trainer.step_once()
        path = trainer.save()
    finally:
        trainer.close()
    assert path is not None
    return json.loads((path / "state.json").read_text()), trainer


def test_each_checkpoint_records_the_environment_it_was_trained_in(tmp_path: Path) -> None:
    env = _state_after_one_step(tiny_recipe("train.steps=2"), tmp_path / "run")[0]["environment"]
    assert env["torch"] == torch.__version__ and env["numpy"] == numpy.__version__
    assert env["avade"] == avade.__version__ and env["python"].count(".") == 2
    assert env["command"] == sys.argv and env["platform"]
    # run from a checkout, its commit is named (a wheel's install says nothing, see below); not from an sdist's
    # tree nor where git refuses the checkout (another user's): asked here as provenance asks it
    source = Path(avade.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False) if shutil.which("git") else None
    if head is not None and head.returncode == 0:
        assert env["git_commit"] == head.stdout.strip() and isinstance(env["git_dirty"], bool), env
    else:
        assert "git_commit" not in env, env


def test_no_commit_for_a_package_that_no_repository_tracks(tmp_path: Path) -> None:
    # (as avade installed into a .venv inside some repository: that repository's commit would be a wrong one)
    package = tmp_path / "site-packages" / "avade"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert _git_state(package) == {}


def _checkout(root: Path) -> Path:
    """A git checkout at ``root`` tracking ``pkg/__init__.py``, committed; returns ``pkg``."""
    package = root / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "i"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)
    return package


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_asking_git_leaves_the_checkouts_index_alone(tmp_path: Path) -> None:
    # (a plain git status refreshes the index of a file touched since: it took index.lock and rewrote the index
    # as training started, in every process under torchrun, and a user's own git command could fail on the lock)
    package = _checkout(tmp_path)
    index = tmp_path / ".git" / "index"
    before = index.stat().st_mtime_ns
    later = before + 5_000_000_000  # (the file's stat data no longer the index's: what a refresh rewrites)
    os.utime(package / "__init__.py", ns=(later, later))
    state = _git_state.__wrapped__(package)
    assert state["git_dirty"] is False and len(state["git_commit"]) == 40, state
    assert index.stat().st_mtime_ns == before
    assert not (tmp_path / ".git" / "index.lock").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_git_status_that_times_out_keeps_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (a huge or slow checkout: its commit is known, whether it was dirty is not; it dropped both)
    package = _checkout(tmp_path)
    run = subprocess.run

    def slow_status(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if "status" in args:
            raise subprocess.TimeoutExpired(args, 10)
        return run(args, **kwargs)

    monkeypatch.setattr(subprocess, "run", slow_status)
    state = _git_state.__wrapped__(package)
    assert len(state["git_commit"]) == 40 and state["git_dirty"] is None, state


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_dirty_is_about_avade_s_own_files(tmp_path: Path) -> None:
    # (an editable install inside a monorepo: the rest of it was scanned, and its changes called avade's)
    package = _checkout(tmp_path)
    (tmp_path / "elsewhere.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "elsewhere.txt"], check=True, capture_output=True)
    assert _git_state.__wrapped__(package)["git_dirty"] is False
    (package / "__init__.py").write_text("x = 2\n")
    assert _git_state.__wrapped__(package)["git_dirty"] is True


def test_each_checkpoint_records_the_data_each_split_read(tmp_path: Path) -> None:
    from fake_datasets import FAKE_DATASETS

    FAKE_DATASETS["image-folder"](tmp_path / "data")
    recipe = tiny_recipe("data.name='image-folder'", f"data.root='{tmp_path / 'data'}'", "data.folder='images/train'",
                         "data.labels=false", "data.resolution=8", "data.test_fraction=0.3", "data.batch_size=2",
                         "data.eval_batch_size=2")
    state, trainer = _state_after_one_step(recipe, tmp_path / "run")
    read = state["data_read"]
    folder = str(tmp_path / "data" / "images" / "train")
    assert read["train"]["dataset"] == read["test"]["dataset"] == "image-folder", read
    assert read["train"]["paths"] == read["test"]["paths"] == [folder], read
    assert read["train"]["split_by"] == "hash" and read["train"]["test_fraction"] == 0.3, read
    assert read["train"]["images"] + read["test"]["images"] == 4, read
    assert read["train"]["images"] == len(trainer.train_set) and read["test"]["images"] == len(trainer.test_set)


def test_a_resume_on_other_data_says_so_and_keeps_it_in_resumes_jsonl(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Data moved to another disk, with images added: resumed (not refused), the difference said once at the start
    and kept in resumes.jsonl's line; a checkpoint from before data_read was recorded differs in nothing."""
    from checkpoint_files import edit_state, read_state
    from fake_datasets import FAKE_DATASETS, _pngs

    FAKE_DATASETS["image-folder"](tmp_path / "data")

    def recipe(root: Path, steps: int) -> Any:
        return tiny_recipe(f"train.steps={steps}", "train.checkpoint_every=1", "data.name='image-folder'",
                           f"data.root='{root}'", "data.folder='images'", "data.labels=false",
                           "data.resolution=8", "data.batch_size=2", "data.eval_batch_size=2")

    Trainer(recipe(tmp_path / "data", 1), tmp_path / "run", progress=False).fit()
    capsys.readouterr()
    shutil.copytree(tmp_path / "data", tmp_path / "moved")
    _pngs(tmp_path / "moved" / "images" / "train" / "bird", 2, 12, 10, seed=40)
    Trainer(recipe(tmp_path / "moved", 2), tmp_path / "run", resume=True, progress=False).fit()
    said = "".join(capsys.readouterr().err.split())  # (the console wraps long paths anywhere)
    old, new = (str(tmp_path / d / "images" / "train") for d in ("data", "moved"))
    assert said.count("thedatareaddifferfromthecheckpoint's") == 1, said
    assert f'train.images4->6,train.paths["{old}"]->["{new}"],test.paths' in said, said
    # the new data.root is said once, with what it changed, not again among the settings changed
    assert said.count("data.root") == 1 and "settingschangedsincethecheckpoint" not in said, said
    root_change = f'data.root"{tmp_path / "data"}"->"{tmp_path / "moved"}"'
    assert f"(data_read)after{root_change}:train.images4->6" in said, said
    line = json.loads((tmp_path / "run" / "resumes.jsonl").read_text())
    assert line["changed"]["data.root"] == [str(tmp_path / "data"), str(tmp_path / "moved")], line
    assert line["step"] == 1 and line["data_read"]["train.images"] == [4, 6], line
    assert line["data_read"]["train.paths"] == [[old], [new]] and "test.images" not in line["data_read"], line
    # a checkpoint written before data_read was recorded: nothing to compare, nothing said nor kept
    newest = tmp_path / "run" / "checkpoints" / "step_00000002"
    edit_state(newest, data_read=None)
    assert "data_read" in read_state(newest)
    Trainer(recipe(tmp_path / "data", 3), tmp_path / "run", resume=True, progress=False).fit()
    assert "data read differ" not in capsys.readouterr().err
    lines = (tmp_path / "run" / "resumes.jsonl").read_text().splitlines()
    assert all("data_read" not in json.loads(text) for text in lines[1:]), lines


def test_a_symlinked_data_folder_re_pointed_is_said_on_resume(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The same data.root, a symlink to the data re-pointed to another copy since: each checkpoint records where its
    paths really led (``resolved``), and the resume says the path now leads elsewhere (a warning, not refused) and
    keeps it in resumes.jsonl; a checkpoint from before ``resolved`` was recorded differs in nothing."""
    from checkpoint_files import edit_state, read_state
    from fake_datasets import FAKE_DATASETS

    FAKE_DATASETS["image-folder"](tmp_path / "disk1")
    shutil.copytree(tmp_path / "disk1", tmp_path / "disk2")
    link = tmp_path / "data"
    link.symlink_to(tmp_path / "disk1", target_is_directory=True)

    def recipe(steps: int) -> Any:
        return tiny_recipe(f"train.steps={steps}", "train.checkpoint_every=1", "data.name='image-folder'",
                           f"data.root='{link}'", "data.folder='images'", "data.labels=false",
                           "data.resolution=8", "data.batch_size=2", "data.eval_batch_size=2")

    Trainer(recipe(1), tmp_path / "run", progress=False).fit()
    path = str(link / "images" / "train")
    first, second = (os.path.realpath(tmp_path / d / "images" / "train") for d in ("disk1", "disk2"))
    read = read_state(tmp_path / "run" / "checkpoints" / "step_00000001")["data_read"]
    assert read["train"]["paths"] == [path] and read["train"]["resolved"] == {path: first}, read
    capsys.readouterr()
    link.unlink()
    link.symlink_to(tmp_path / "disk2", target_is_directory=True)
    Trainer(recipe(2), tmp_path / "run", resume=True, progress=False).fit()
    said = "".join(capsys.readouterr().err.split())  # (the console wraps long paths anywhere)
    assert said.count("thedatareaddifferfromthecheckpoint's") == 1, said
    assert f'train.paths"{path}"thesame,nowleadingto"{second}"(was"{first}")' in said, said
    line = json.loads((tmp_path / "run" / "resumes.jsonl").read_text())
    assert line["data_read"]["train.resolved"] == [{path: first}, {path: second}], line
    assert "train.paths" not in line["data_read"] and "data.root" not in line["changed"], line
    # a checkpoint from before resolved was recorded: its paths' targets are unknown, so nothing is said
    newest = tmp_path / "run" / "checkpoints" / "step_00000002"
    old = read_state(newest)["data_read"]
    edit_state(newest, data_read={split: {k: v for k, v in rec.items() if k != "resolved"}
                                  for split, rec in old.items()})
    link.unlink()
    link.symlink_to(tmp_path / "disk1", target_is_directory=True)
    Trainer(recipe(3), tmp_path / "run", resume=True, progress=False).fit()
    assert "data read differ" not in capsys.readouterr().err
    last = json.loads((tmp_path / "run" / "resumes.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and "data_read" not in last, last
