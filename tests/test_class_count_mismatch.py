"""A class-conditional run evaluated, sampled (reconstructions) or resumed on data with another number of
classes (an image folder with a class folder added or removed since, or data.root pointing elsewhere) is
refused with one line naming both counts: its labels would mean other classes to the model. Before, a class
more crashed bpd with an internal IndexError and GAN-test/-train with "labels must lie in [0, 3)"; a class
fewer was scored silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tomli_w
from PIL import Image
from tiny_recipes import TINY
from typer.testing import CliRunner

from avade.cli.app import app

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _folder(root: Path, classes: int) -> None:
    rng = np.random.default_rng(classes)
    for c in range(classes):
        for i in range(8):
            path = root / "imgs" / f"c{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def _recipe(tmp_path: Path, root: Path, steps: int) -> Path:
    recipe = dict(TINY, model={**TINY["model"], "conditional": True},
                  data={"name": "image-folder", "root": str(root), "folder": "imgs", "resolution": 8,
                        "test_fraction": 0.25, "batch_size": 4, "eval_batch_size": 4},
                  train={**TINY["train"], "steps": steps})
    path = tmp_path / "r.toml"
    path.write_text(tomli_w.dumps(recipe))
    return path


def test_a_conditional_run_on_data_with_another_class_count_is_refused(tmp_path: Path) -> None:
    for name, classes in (("three", 3), ("four", 4), ("two", 2)):
        _folder(tmp_path / name, classes)
    code, out = _invoke("recipe", "run", str(_recipe(tmp_path, tmp_path / "three", 2)), "--out",
                        str(tmp_path / "run"), "--device", "cpu")
    assert code == 0, out
    run = str(tmp_path / "run")
    for name, classes in (("four", 4), ("two", 2)):
        root = f"data.root={json.dumps(str(tmp_path / name))}"
        for args in (["eval", run, "--metrics", "bpd"], ["eval", run, "--metrics", "gan-test"],
                     ["sample", run, "-n", "2", "--reconstructions", "-o", str(tmp_path / "r.png")]):
            code, out = _invoke(*args, "--device", "cpu", "--set", root)
            assert code != 0 and len(out.strip().splitlines()) == 1, out
            assert "trained on 3 classes" in out and f"has {classes}" in out and "internal error" not in out, out
    code, out = _invoke("eval", run, "--metrics", "bpd", "--device", "cpu", "--set",
                        f"data.root={json.dumps(str(tmp_path / 'three'))}")
    assert code == 0, out
    # resumed on the folder with a class more: named, not a list of tensor shapes that do not fit
    code, out = _invoke("recipe", "run", str(_recipe(tmp_path, tmp_path / "four", 4)), "--out", run, "--resume",
                        "--device", "cpu")
    assert code != 0 and "trained on 3 classes" in out and "have 4" in out and "size mismatch" not in out, out
