"""``avade runs``: each run's status, step and newest results, read from its files (torch not imported), over
run directories, sweeps (variants not started included) and folders of runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from tiny_recipes import tiny_dict
from typer.testing import CliRunner

from avade.cli.app import app
from avade.cli.runs import columns_for, find_runs, run_record


def _run(root: Path, steps: int = 4, checkpoints: tuple[int, ...] = (), logged: int | None = None,
         summary: dict | None = None, scored: dict | None = None, variant: str = "av-ade") -> Path:
    """A run directory written by hand, as the trainer and `avade eval` write theirs."""
    root.mkdir(parents=True)
    (root / "recipe.toml").write_text(tomli_w.dumps({"name": root.name, "model": {"variant": variant},
                                                    "train": {"steps": steps}}))
    for step in checkpoints:
        (root / "checkpoints" / f"step_{step:08d}").mkdir(parents=True)
        (root / "checkpoints" / f"step_{step:08d}" / "state.json").write_text(json.dumps({"step": step}))
    if logged is not None:
        lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(1, logged + 1)]
        (root / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": ')  # (a line being written)
    if summary is not None:
        (root / "summary.json").write_text(json.dumps(summary))
    if scored is not None:
        (root / "eval.json").write_text(json.dumps(scored))
    return root


def test_each_status_and_its_results(tmp_path: Path) -> None:
    finished = _run(tmp_path / "a", checkpoints=(2, 4), logged=4,
                    summary={"recipe": "a", "steps": 4, "weights": "ema", "bpd": 5.5, "bpd_untrained": 8.0},
                    scored={"checkpoint": "step_00000004", "step": 4, "weights": "ema", "fid": 40.0, "settings": {}})
    _run(tmp_path / "b", checkpoints=(2,), logged=3, scored={"step": 2, "weights": "last", "fid": 90.0})
    _run(tmp_path / "c", logged=1)
    _run(tmp_path / "d", checkpoints=(2,), summary={"steps": 2, "error": "training diverged: NaN"})
    _run(tmp_path / "e", checkpoints=(4,), summary={"steps": 4, "weights": "last", "bpd": 6.0},
         scored={"step": 2, "weights": "last", "fid": 70.0})  # an older checkpoint's: not the newest's results
    # finished at step 4, then resumed with train.steps = 8 (training now, or stopped at step 6)
    _run(tmp_path / "f", steps=8, checkpoints=(4, 6), logged=6, summary={"steps": 4, "bpd": 6.0})
    records = {Path(r["run"]).name: r for r in (run_record(p, a) for p, a in find_runs([tmp_path]))}
    assert (records["f"]["status"], records["f"]["step"], records["f"]["results"]) == ("unfinished", 6, {})
    assert records["a"] | {"updated_s": None} == {
        "run": str(finished), "recipe": "a", "variant": "av-ade", "status": "finished", "step": 4, "steps": 4,
        "checkpoints": 2, "weights": "ema", "results": {"bpd": 5.5, "fid": 40.0}, "updated_s": None}
    assert (records["b"]["status"], records["b"]["step"], records["b"]["results"]) == ("unfinished", 3, {"fid": 90.0})
    assert (records["c"]["status"], records["c"]["step"], records["c"]["checkpoints"]) == ("no checkpoint", 1, 0)
    assert records["d"]["status"] == "failed" and records["d"]["error"] == "training diverged: NaN"
    assert records["d"]["results"] == {}
    assert records["e"]["results"] == {"bpd": 6.0}
    assert 0 <= records["a"]["updated_s"] < 60


def test_an_eval_record_from_before_weights_were_recorded_is_of_the_last_iterate(tmp_path: Path) -> None:
    # eval.json as an avade from before train.ema_decay wrote it (checkpoint and step, no "weights"): of the last
    # iterate, as `avade eval` reads it too, so a finished run shows its results
    run = _run(tmp_path / "a", checkpoints=(4,), summary={"recipe": "a", "steps": 4, "bpd": 5.5},
               scored={"checkpoint": "step_00000004", "step": 4, "fid": 40.0})
    record = run_record(run, {})
    assert (record["weights"], record["results"]) == ("last", {"bpd": 5.5, "fid": 40.0})
    # ... but not when the run's results are of its averaged weights
    (run / "summary.json").write_text(json.dumps({"steps": 4, "weights": "ema", "bpd": 5.5}))
    assert run_record(run, {})["results"] == {"bpd": 5.5}


def test_a_sweep_lists_its_variants_in_plan_order_those_not_started_too(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep_plan.json").write_text(json.dumps({"variants": [
        {"name": "s-b2", "overrides": {"model.flow.blocks": 2}},
        {"name": "s-b1", "overrides": {"model.flow.blocks": 1}},
        {"name": "s-b4", "overrides": {"model.flow.blocks": 4}}]}))
    _run(sweep / "s-b1", checkpoints=(4,), summary={"steps": 4, "bpd": 5.0})
    _run(sweep / "s-b2", checkpoints=(2,), logged=2)
    records = [run_record(p, a) for p, a in find_runs([tmp_path])]
    assert [(Path(r["run"]).name, r["status"], r["overrides"]) for r in records] == [
        ("s-b2", "unfinished", {"model.flow.blocks": 2}), ("s-b1", "finished", {"model.flow.blocks": 1}),
        ("s-b4", "not started", {"model.flow.blocks": 4})]


def test_columns_default_to_the_common_metrics_and_take_patterns() -> None:
    records = [{"results": {"bpd": 1.0, "prdc_recall": 0.1, "kid_std": 0.0}}, {"results": {"fid": 2.0,
                                                                                           "prdc_precision": 0.2}}]
    assert columns_for(records, None) == ["bpd", "fid"]
    assert columns_for(records, ["prdc_*", "fid", "lpips"]) == ["prdc_recall", "prdc_precision", "fid", "lpips"]
    # metric names as avade eval --metrics takes them pick their keys
    named = [{"results": {"kid_mean": 0.1, "kid_std": 0.0, "gan_test": 50.0, "gan_test_real": 90.0, "kidney": 1.0}}]
    assert columns_for(named, ["kid", "gan-test"]) == ["kid_mean", "kid_std", "gan_test", "gan_test_real"]


def test_the_command_shows_a_table_or_json_and_refuses_a_missing_folder(tmp_path: Path) -> None:
    _run(tmp_path / "runs" / "x", checkpoints=(4,), summary={"steps": 4, "bpd": 5.25})
    runner = CliRunner()
    result = runner.invoke(app, ["runs", str(tmp_path / "runs")], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "finished" in result.output and "5.25" in result.output and "4/4" in result.output
    result = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)[0]["results"] == {"bpd": 5.25}
    _run(tmp_path / "runs" / "y", checkpoints=(2,), summary={"steps": 2, "error": "training diverged: lower train.lr"})
    result = runner.invoke(app, ["runs", str(tmp_path / "runs")], env={"COLUMNS": "120"})
    assert "/y: training diverged: lower train.lr" in result.output and "/x:" not in result.output, result.output
    result = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--metrics", "bpd,FID,prdc_*"], env={"COLUMNS": "160"})
    assert result.exit_code == 0 and "5.25" in result.output, result.output
    assert "warning: --metrics FID, prdc_*: no run has results of that name; theirs: bpd" in result.output
    result = runner.invoke(app, ["runs", str(tmp_path / "runs"), "--metrics", "bdp"], env={"COLUMNS": "160"})
    assert "warning: --metrics bdp: no run has results of that name (did you mean 'bpd'?); theirs: bpd" in \
        result.output, result.output
    result = runner.invoke(app, ["runs", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such folder" in result.output and len(result.output.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["runs", str(tmp_path / "empty")])
    assert result.exit_code == 0 and "no runs under" in result.output


def test_the_command_in_a_folder_where_nothing_was_trained_yet_says_so(tmp_path: Path, monkeypatch) -> None:
    # no runs/ here (a new user's first `avade runs`): not an error, as a PATH given that does not exist is
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0 and result.output.startswith("no runs yet: there is no runs/ folder here"), \
        result.output
    result = runner.invoke(app, ["runs", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == []
    result = runner.invoke(app, ["runs", "runs"])
    assert result.exit_code == 2 and "runs: no such folder" in result.output


def test_a_real_run_is_listed_without_importing_torch(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=2", "train.checkpoint_every=1")))
    runner = CliRunner()
    assert runner.invoke(app, ["recipe", "run", str(recipe), "--out", str(tmp_path / "run"), "--device",
                               "cpu"]).exit_code == 0
    code = ("import sys, json; from avade.cli.runs import find_runs, run_record; "
            f"r = [run_record(p, a) for p, a in find_runs([__import__('pathlib').Path({str(tmp_path)!r})])]; "
            "print(json.dumps(r)); assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    (record,) = json.loads(out)
    assert record["status"] == "finished" and record["step"] == 2 and record["checkpoints"] == 2
    assert record["variant"] == "av-ade" and record["results"]["bpd"] > 0


@pytest.mark.parametrize("damaged", ["recipe", "summary"])
def test_damaged_run_files_are_shown_as_unknown_not_a_failed_listing(tmp_path: Path, damaged: str) -> None:
    run = _run(tmp_path / "r", checkpoints=(2,), summary={"steps": 2, "bpd": 5.0})
    (run / ("recipe.toml" if damaged == "recipe" else "summary.json")).write_text("{not valid")
    (record,) = [run_record(p, a) for p, a in find_runs([tmp_path])]
    if damaged == "recipe":
        assert record["variant"] is None and record["steps"] is None and record["status"] == "finished"
    else:  # (finished or failed: the file that says cannot be read)
        assert record["status"] == "unreadable" and record["results"] == {}
    (problem,) = record["problems"]
    assert problem["file"].endswith("recipe.toml" if damaged == "recipe" else "summary.json")
    assert "is not valid" in problem["problem"], problem


def test_a_variant_that_failed_before_its_folder_was_made_shows_failed(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep_plan.json").write_text(json.dumps({"variants": [{"name": "s-a"}, {"name": "s-b"}]}))
    (sweep / "sweep_summary.json").write_text(json.dumps([{"name": "s-a", "error": "data: not found"}]))
    records = [run_record(p, a) for p, a in find_runs([sweep])]
    assert [(r["status"], r.get("error")) for r in records] == [("failed", "data: not found"), ("not started", None)]


def test_a_run_whose_recipe_toml_is_gone_is_listed_with_the_file_named(tmp_path: Path) -> None:
    # (was "no runs under ...": a run with checkpoints but no recipe.toml was no run at all to the listing)
    run = _run(tmp_path / "a", checkpoints=(2, 4), logged=4, summary={"steps": 4, "bpd": 5.5})
    (run / "recipe.toml").unlink()
    (tmp_path / "not-a-run" / "checkpoints").mkdir(parents=True)  # (a folder without checkpoints stays no run)
    found = find_runs([tmp_path])
    assert [p for p, _ in found] == [run]
    record = run_record(run)
    assert record["status"] == "finished" and record["step"] == 4 and record["checkpoints"] == 2
    assert record["problems"] == [{"file": str(run / "recipe.toml"),
                                   "problem": "is missing (deleted or moved?); restore it (each checkpoint's "
                                              "state.json holds the recipe as run); avade eval, sample and --resume "
                                              "need it"}]


def test_a_run_without_checkpoints_says_when_one_comes() -> None:
    from avade.evaluate.loading import no_checkpoint_yet
    from avade.train.rundir import RunDir

    message = str(no_checkpoint_yet(RunDir(Path("runs/x"))))
    assert "has no checkpoint yet" in message and "train.checkpoint_every" in message and "trainer.save()" in message


def test_a_failed_run_shows_the_evaluation_of_its_newest_checkpoint_whatever_its_weights(tmp_path: Path) -> None:
    # a divergence by train.max_bad_steps records {steps, error} alone: no weights, which are not "last" then
    _run(tmp_path / "r", checkpoints=(2,), logged=3, summary={"steps": 3, "error": "training stopped at step 3"},
         scored={"step": 2, "weights": "ema", "fid": 50.0})
    (record,) = [run_record(p, a) for p, a in find_runs([tmp_path])]
    assert (record["status"], record["weights"], record["results"]) == ("failed", "ema", {"fid": 50.0})


def test_a_finished_run_resumed_with_more_steps_is_unfinished_before_its_first_logged_step(tmp_path: Path) -> None:
    """(recipe.toml says the new train.steps from the resume's start; metrics.jsonl the next step only at its
    log_every: a resume killed before then was shown finished, 2/4, for good)"""
    from tiny_recipes import tiny_recipe

    from avade.train.trainer import Trainer

    Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=2"), tmp_path, progress=False).fit()
    assert run_record(tmp_path)["status"] == "finished"
    Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, resume=True, progress=False).close()
    record = run_record(tmp_path)
    assert (record["status"], record["step"], record["steps"], record["results"]) == ("unfinished", 2, 4, {})


# -- damaged run files: named, one line each, every other run listed ------------------------------------------

@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sweep of two variants, two steps each, a checkpoint at each step (copied by each test to damage)."""
    root = tmp_path_factory.mktemp("sweep")
    recipe = tiny_dict("train.steps=2", "train.checkpoint_every=1")
    recipe["sweep"] = {"grid": {"train.seed": [1, 2]}}
    (root / "sweep.toml").write_text(tomli_w.dumps(recipe))
    result = CliRunner().invoke(app, ["recipe", "run", str(root / "sweep.toml"), "--out", str(root / "out"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    first = sorted(p for p in (root / "out").iterdir() if (p / "recipe.toml").is_file())[0]
    (first / "eval.json").write_text(json.dumps({"checkpoint": "step_00000002", "step": 2, "weights": "last",
                                                 "settings": {}, "fid": 50.0}))
    return root / "out"


_DAMAGE = {
    # cut mid-entry, just after a key's "=" or ":" (a cut at a line's end can leave a valid TOML recipe that merely
    # lacks its last tables: another file, not a damaged one)
    "truncated": lambda text: text[: max(text.rfind(b"=", 0, len(text) // 2), text.rfind(b":", 0, len(text) // 2)) + 1],
    "wrong type": lambda text: b'{"step": "two"}' if text.startswith(b'{"format"') else b"[1, 2]",
    "binary": lambda text: bytes(range(256)) * 4,
    "empty": lambda text: b"",
}
#: each file `avade runs` reads, as found from a sweep's variant ("" the sweep's own)
_FILES = {"sweep_plan.json": "", "summary.json": "v", "eval.json": "v", "metrics.jsonl": "v",
          "recipe.toml": "v", "state.json": "v/checkpoints/step_00000002"}
#: damage that is no damage to a file, as the run writes it: a metrics.jsonl cut short (its last line being
#: written) or empty (no step logged yet) or of other records
_HARMLESS = {("metrics.jsonl", "truncated"), ("metrics.jsonl", "empty"), ("metrics.jsonl", "wrong type")}


@pytest.mark.parametrize("damage", [*_DAMAGE, "folder"])
@pytest.mark.parametrize("name", _FILES)
def test_each_damaged_run_file_is_named_and_every_other_run_listed(trained_sweep: Path, tmp_path: Path, name: str,
                                                                   damage: str) -> None:
    sweep = shutil.copytree(trained_sweep, tmp_path / "sweep")
    runs = sorted(p for p in sweep.iterdir() if (p / "recipe.toml").is_file())
    where = sweep / _FILES[name].replace("v", runs[0].name, 1) if _FILES[name] else sweep
    target = where / name
    if damage == "folder":
        target.unlink(missing_ok=True)
        target.mkdir()
    else:
        target.write_bytes(_DAMAGE[damage](target.read_bytes() if target.exists() else b"{}"))
    runner = CliRunner()
    result = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    records = {Path(r["run"]).name: r for r in json.loads(result.stdout)}
    # the undamaged variant, as ever
    assert records[runs[1].name]["status"] == "finished" and "problems" not in records[runs[1].name]
    assert records[runs[1].name]["results"]["bpd"] > 0
    noted = [(r["status"], p) for r in records.values() for p in r.get("problems", [])]
    if (name, damage) in _HARMLESS:  # (read as far as it goes)
        assert result.exit_code == 0 and not noted, noted
        return
    assert result.exit_code == 1, result.output
    ((_, problem),) = noted
    assert problem["file"] == str(target) and ";" in problem["problem"], problem
    damaged = records[sweep.name if name == "sweep_plan.json" else runs[0].name]
    assert damaged["status"] == ("unreadable" if name in ("summary.json", "sweep_plan.json") else "finished")
    if name == "sweep_plan.json":  # (its runs still listed, from the sweep's summary)
        assert records[runs[0].name]["status"] == "finished"
    table = runner.invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "200"})
    assert table.exit_code == 1 and "Traceback" not in table.output
    assert f"{target} {problem['problem']}" in " ".join(table.output.split()), table.output


def test_a_sweep_plan_naming_a_folder_outside_the_sweep_is_a_note_not_a_stopped_listing(tmp_path: Path) -> None:
    _run(tmp_path / "other", checkpoints=(4,), summary={"steps": 4, "bpd": 5.0})
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep_plan.json").write_text(json.dumps({"variants": [{"name": "a"}, {"name": "b", "dir": "../x"}]}))
    _run(sweep / "a", checkpoints=(4,), summary={"steps": 4, "bpd": 6.0})
    result = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 1, result.output
    records = {Path(r["run"]).name: r for r in json.loads(result.stdout)}
    assert records["other"]["status"] == records["a"]["status"] == "finished" and "x" not in records
    (problem,) = records["sweep"]["problems"]
    assert records["sweep"]["status"] == "unreadable" and "names a variant directory '../x'" in problem["problem"]


def test_a_run_file_that_cannot_be_read_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(tmp_path / "a", checkpoints=(4,), summary={"steps": 4, "bpd": 5.0})
    run = _run(tmp_path / "b", checkpoints=(4,), summary={"steps": 4, "bpd": 6.0})
    if os.geteuid() == 0:  # (root reads any file: the refusal is made up)
        read_bytes = Path.read_bytes

        def refuse(self: Path) -> bytes:
            if self == run / "summary.json":
                raise PermissionError(13, "Permission denied", str(self))
            return read_bytes(self)

        monkeypatch.setattr(Path, "read_bytes", refuse)
    else:
        (run / "summary.json").chmod(0)
    records = {Path(r["run"]).name: r for r in (run_record(p, a) for p, a in find_runs([tmp_path]))}
    assert records["a"]["status"] == "finished" and "problems" not in records["a"]
    assert records["b"]["status"] == "unreadable" and records["b"]["problems"] == [
        {"file": str(run / "summary.json"), "problem": "cannot be read (Permission denied); give yourself read "
                                                       "access to it"}]


def test_a_state_json_that_parses_but_is_not_the_one_saved_is_named_as_eval_and_resume_refuse_it(
        trained_sweep: Path, tmp_path: Path) -> None:
    """(a flipped digit in the newest checkpoint's state.json: avade eval and --resume refuse it by its digest, and
    avade runs listed the run as sound)"""
    sweep = shutil.copytree(trained_sweep, tmp_path / "sweep")
    run = sorted(p for p in sweep.iterdir() if (p / "recipe.toml").is_file())[0]
    state = run / "checkpoints" / "step_00000002" / "state.json"
    text = state.read_text()
    at = text.index('"lr": ') + len('"lr": ')
    at += next(i for i, c in enumerate(text[at:]) if c in "123456789")
    state.write_text(text[:at] + str(int(text[at]) % 9 + 1) + text[at + 1:])
    result = CliRunner().invoke(app, ["runs", str(sweep), "--json"])
    assert result.exit_code == 1, result.output
    (problem,) = [p for r in json.loads(result.stdout) for p in r.get("problems", [])]
    assert problem["file"] == str(state), problem
    assert problem["problem"].startswith("is not the one that was saved"), problem
    assert "delete step_00000002" in problem["problem"], problem


def test_the_newest_checkpoints_scores_survive_an_evaluation_of_an_older_one(tmp_path: Path) -> None:
    """README (Run directory): evaluating an older checkpoint loses nothing (eval_checkpoints.json keeps every
    one); `avade runs` still shows what the newest checkpoint scored, not only what eval.json (the last one) holds."""
    newest = {"checkpoint": "step_00000004", "step": 4, "weights": "ema", "fid": 40.0, "settings": {}}
    older = {"checkpoint": "step_00000002", "step": 2, "weights": "last", "bpd": 7.0, "settings": {}}
    root = _run(tmp_path / "r", checkpoints=(2, 4), logged=4, scored=older,
                summary={"steps": 4, "weights": "ema", "bpd": 5.5})
    (root / "eval_checkpoints.json").write_text(json.dumps({"records": [older, newest]}))
    (record,) = [run_record(p, a) for p, a in find_runs([tmp_path])]
    assert (record["weights"], record["results"]) == ("ema", {"bpd": 5.5, "fid": 40.0})
    (root / "eval_checkpoints.json").write_text("{")  # damaged: named, the rest listed as ever
    (record,) = [run_record(p, a) for p, a in find_runs([tmp_path])]
    assert record["results"] == {"bpd": 5.5} and "eval_checkpoints.json" in json.dumps(record["problems"])


def test_a_newest_checkpoint_without_its_state_json_is_named_as_eval_and_resume_refuse_it(
        trained_sweep: Path, tmp_path: Path) -> None:
    """(a checkpoint folder copied in part: avade runs showed the run at its step, sound, exit 0, while avade eval,
    sample and --resume refuse that checkpoint)"""
    sweep = shutil.copytree(trained_sweep, tmp_path / "sweep")
    run = sorted(p for p in sweep.iterdir() if (p / "recipe.toml").is_file())[0]
    partial = run / "checkpoints" / "step_00000003"
    shutil.copytree(run / "checkpoints" / "step_00000002", partial)
    (partial / "state.json").unlink()
    result = CliRunner().invoke(app, ["runs", str(run), "--json"])
    assert result.exit_code == 1, result.output
    (problem,) = json.loads(result.stdout)[0]["problems"]
    assert problem["file"] == str(partial / "state.json"), problem
    assert problem["problem"].startswith("is missing (the checkpoint folder is incomplete"), problem
    assert "delete step_00000003 to fall back to step_00000002" in problem["problem"], problem
    assert CliRunner().invoke(app, ["eval", str(run), "--metrics", "bpd", "--device", "cpu"]).exit_code == 2


def test_avade_runs_takes_for_results_exactly_what_a_metric_may_return() -> None:
    # (two lists, one in the light CLI module and one beside the metrics: a record key added to one and not the
    # other would show as a result in `avade runs`, or let a metric's result overwrite it)
    from avade.cli.runs import _EVAL_META, _SUMMARY_META
    from avade.evaluate.compute import RECORD_KEYS

    assert _SUMMARY_META | _EVAL_META == RECORD_KEYS
