"""eval.json and eval_checkpoints.json as record_eval merges them, and --checkpoint all's skipping, without a run:
which records merge (same checkpoint and weights), a metric run again replaces its earlier keys, and a
checkpoint that is still there but broken is an error, not a skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import avade.evaluate.runs as runs
from avade.errors import CheckpointError
from avade.train.rundir import RunDir


def _records(root: Path) -> tuple[dict, list[dict]]:
    return (json.loads((root / "eval.json").read_text()),
            json.loads((root / "eval_checkpoints.json").read_text())["records"])


def test_averaged_and_last_weights_of_one_checkpoint_are_separate_records(tmp_path: Path) -> None:
    run, step = RunDir(tmp_path), tmp_path / "checkpoints" / "step_00000002"
    runs.record_eval(run, step, {"fid": 10.0}, "ema", {"fid": {"samples": 5}}, ran=["fid"])
    runs.record_eval(run, step, {"bpd": 3.0}, "last", {"bpd": {}}, ran=["bpd"])
    last, records = _records(tmp_path)
    assert last == {"checkpoint": "step_00000002", "step": 2, "weights": "last", "bpd": 3.0, "settings": {"bpd": {}}}
    assert [(r["weights"], "fid" in r, "bpd" in r) for r in records] == [("ema", True, False), ("last", False, True)]


def test_a_metric_run_again_replaces_its_earlier_keys_and_keeps_the_others(tmp_path: Path) -> None:
    run, step = RunDir(tmp_path), tmp_path / "checkpoints" / "step_00000002"
    runs.record_eval(run, step, {"bpd": 3.0, "bpd_iw4": 2.9}, "last", {"bpd": {"importance_samples": 4}}, ran=["bpd"])
    runs.record_eval(run, step, {"fid": 9.0}, "last", {"fid": {"samples": 5}}, ran=["fid"])
    runs.record_eval(run, step, {"bpd": 3.1}, "last", {"bpd": {"importance_samples": 1}}, ran=["bpd"])
    last, records = _records(tmp_path)
    assert {k: last[k] for k in ("bpd", "fid")} == {"bpd": 3.1, "fid": 9.0} and "bpd_iw4" not in last
    assert last["settings"] == {"bpd": {"importance_samples": 1}, "fid": {"samples": 5}}
    assert records == [last]


def test_every_checkpoint_stops_at_a_broken_one_that_is_still_there(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "checkpoints").mkdir()
    monkeypatch.setattr(runs, "checkpoint_steps", lambda run_dir: [2])
    monkeypatch.setattr(runs.ckpt, "list_checkpoints", lambda folder: [folder / "step_00000002"])

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise CheckpointError("checkpoint step_00000002 is corrupt")
    monkeypatch.setattr(runs, "evaluate_and_record", broken)
    with pytest.raises(CheckpointError, match="is corrupt"):
        runs.evaluate_checkpoints(tmp_path)
    monkeypatch.setattr(runs.ckpt, "list_checkpoints", lambda folder: [])  # pruned meanwhile: skipped
    assert runs.evaluate_checkpoints(tmp_path) == []


def test_the_data_read_merge_split_by_split(tmp_path: Path) -> None:
    run, step = RunDir(tmp_path), tmp_path / "checkpoints" / "step_00000002"
    test = {"dataset": "cifar10", "images": 10000, "paths": ["/data/cifar-10-batches-py"]}
    runs.record_eval(run, step, {"bpd": 3.0}, "last", {"bpd": {}}, ran=["bpd"], data={"test": test})
    train = {**test, "images": 50000}
    runs.record_eval(run, step, {"fid": 9.0}, "last", {"fid": {}}, ran=["fid"], data={"train": train})
    moved = {**test, "paths": ["/scratch/cifar-10-batches-py"]}
    runs.record_eval(run, step, {"bpd": 3.0}, "last", {"bpd": {}}, ran=["bpd"], data={"test": moved})
    last, records = _records(tmp_path)
    assert last["data_read"] == {"test": moved, "train": train} and records == [last]
    runs.record_eval(run, tmp_path / "checkpoints" / "step_00000004", {"bpd": 2.0}, "last", {"bpd": {}}, ran=["bpd"])
    assert "data_read" not in _records(tmp_path)[0]  # (another checkpoint: its record starts over)


def test_bpd_of_one_split_keeps_the_other_splits_results_and_settings(tmp_path: Path) -> None:
    """bits/dim of the training split (appendix F's overfitting check) dropped the test split's bpd and its
    settings, and bpd again the other's: each split is its own record (bpd, bpd_train), and bpd of a split again
    still drops that split's bpd_iw<k> of another k."""
    run, step = RunDir(tmp_path), tmp_path / "checkpoints" / "step_00000002"
    test, train = {"importance_samples": 4, "split": "test"}, {"importance_samples": 4, "split": "train"}
    runs.record_eval(run, step, {"bpd": 3.0, "bpd_iw4": 2.9}, "last", {"bpd": test}, ran=["bpd"])
    runs.record_eval(run, step, {"bpd_train": 2.5, "bpd_iw4_train": 2.4}, "last", {"bpd_train": train},
                     ran=["bpd_train"])
    last, _ = _records(tmp_path)
    assert {k: last.get(k) for k in ("bpd", "bpd_iw4", "bpd_train", "bpd_iw4_train")} == {
        "bpd": 3.0, "bpd_iw4": 2.9, "bpd_train": 2.5, "bpd_iw4_train": 2.4}
    assert last["settings"] == {"bpd": test, "bpd_train": train}
    again = {"importance_samples": 1, "split": "test"}
    runs.record_eval(run, step, {"bpd": 3.1}, "last", {"bpd": again}, ran=["bpd"])
    last, records = _records(tmp_path)
    assert "bpd_iw4" not in last and (last["bpd"], last["bpd_train"], last["bpd_iw4_train"]) == (3.1, 2.5, 2.4)
    assert last["settings"] == {"bpd": again, "bpd_train": train} and records == [last]
    # a row of one split's values shows that split's settings only
    assert runs.eval_row(last, {"bpd_train": 2.5})["settings"] == {"bpd_train": train}
    assert runs.eval_row(last, {"bpd": 3.1})["settings"] == {"bpd": again}


def test_an_older_eval_json_of_bpd_train_reads_as_its_split(tmp_path: Path) -> None:
    """eval.json written before each split had its own record kept bpd_train's settings under bpd (its split
    train): read as bpd_train's, they stay with bpd_train when the test split is evaluated."""
    run, step = RunDir(tmp_path), tmp_path / "checkpoints" / "step_00000002"
    train = {"importance_samples": 1, "split": "train"}
    older = {"checkpoint": "step_00000002", "step": 2, "weights": "last", "bpd_train": 2.5, "settings": {"bpd": train}}
    (tmp_path / "eval.json").write_text(json.dumps(older))
    assert runs.eval_row(older, {"bpd_train": 2.5})["settings"] == {"bpd_train": train}
    test = {"importance_samples": 1, "split": "test"}
    runs.record_eval(run, step, {"bpd": 3.0}, "last", {"bpd": test}, ran=["bpd"])
    last, _ = _records(tmp_path)
    assert (last["bpd"], last["bpd_train"]) == (3.0, 2.5) and last["settings"] == {"bpd": test, "bpd_train": train}
