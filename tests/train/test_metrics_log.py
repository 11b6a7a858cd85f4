"""metrics.jsonl as a resume rewrites it (MetricsLogger.truncate)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from avade.train.logger import MetricsLogger
from avade.train.rundir import RunDir


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_truncate_keeps_the_steps_up_to_the_checkpoint_and_drops_what_avade_did_not_write(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    records = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)]
    text = "".join(json.dumps(r) + "\n" for r in records)
    # a line cut by a crash, a list, a step that is no number, bytes that are no UTF-8: none is avade's line;
    # the step a string was a TypeError, the bytes a UnicodeDecodeError, and the resume failed
    path.write_bytes(text.encode() + b'{"step": 2, "lo\n[1, 2]\n{"step": "3", "loss": 0}\n{"step": 1, "x": "\xff"}\n'
                     + json.dumps({"step": 5, "final/bpd": 4.2}).encode() + b"\n")
    MetricsLogger.truncate(path, 3)
    assert _lines(path) == [*records[:3], {"step": 1, "x": "\ufffd"}]
    MetricsLogger.truncate(path, -1)
    assert path.read_text() == ""
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left


def test_truncate_keeps_the_final_results_as_the_evaluation_of_a_run_that_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 4, "loss": 0.5}) + "\n" + json.dumps({"step": 4, "final/bpd": 4.2}) + "\n")
    MetricsLogger.truncate(path, 4, final_as_eval=True)
    assert _lines(path) == [{"step": 4, "loss": 0.5}, {"step": 4, "eval/bpd": 4.2}]
    MetricsLogger.truncate(path, 4)
    assert _lines(path) == [{"step": 4, "loss": 0.5}, {"step": 4, "eval/bpd": 4.2}]


def test_every_record_says_when_it_was_logged_and_keeps_it_as_an_evaluation(tmp_path: Path) -> None:
    # wall-clock time beside the step (the time an interval took, a run's images per hour), and the final
    # results kept as eval/ keep theirs
    run = RunDir(tmp_path)
    logger = MetricsLogger(run)
    before = time.time()
    logger.log(4, {"loss": 0.5})
    logger.log(4, {"final/bpd": 4.2})
    logger.close()
    records = _lines(run.metrics)
    assert [list(r) for r in records] == [["step", "time", "loss"], ["step", "time", "final/bpd"]]
    assert all(before - 1 <= r["time"] <= time.time() + 1 for r in records)
    MetricsLogger.truncate(run.metrics, 4, final_as_eval=True)
    assert _lines(run.metrics) == [records[0], {"step": 4, "time": records[1]["time"], "eval/bpd": 4.2}]


def test_a_full_disk_is_named_by_the_file_it_fills(tmp_path: Path) -> None:
    """A write that finds the disk full says only "No space left on device": the error names the run's file
    (metrics.jsonl appended to; summary.json, eval.json written through a temporary file)."""
    import errno

    import pytest

    from avade.atomic_files import replaced_atomically
    from avade.train.rundir import RunDir

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    run = RunDir(tmp_path)
    run.metrics.symlink_to("/dev/full")  # every write fails as on a full disk
    logger = MetricsLogger(run, enabled=False)
    logger.enabled = True  # (without a TensorBoard writer)
    with pytest.raises(OSError) as raised:
        logger.log(1, {"loss": 1.0})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(run.metrics)
    for filename in (None, "tmp"):
        target = tmp_path / "summary.json"
        target.write_text("{}", encoding="utf-8")
        with pytest.raises(OSError) as raised, replaced_atomically(target) as tmp:
            tmp.write_text("partial", encoding="utf-8")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp) if filename else None)
        assert raised.value.filename == str(target) and target.read_text(encoding="utf-8") == "{}"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "summary.json"]
    # a writer's own error, of no errno (Pillow's for a format it cannot write the image in), keeps its words
    with pytest.raises(OSError) as raised, replaced_atomically(target):
        raise OSError("cannot write mode RGB as XBM")
    assert str(raised.value) == "cannot write mode RGB as XBM" and target.read_text(encoding="utf-8") == "{}"



def test_a_read_only_folder_is_named_by_the_file_written_not_its_temporary(tmp_path: Path, monkeypatch) -> None:
    """On a read-only file system the temporary file cannot be made, and even its (missing) file's clean-up
    fails (unlink says EROFS before it looks): the error is the one of the file written."""
    import errno

    import pytest

    from avade.atomic_files import replaced_atomically

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    target = tmp_path / "samples_final.png"
    with pytest.raises(OSError) as raised, replaced_atomically(target) as tmp:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))
    assert raised.value.filename == str(target)


def _recording_syncs(monkeypatch) -> list[tuple[str, str]]:
    """Patch os.fsync / os.replace to record ("fsync", path) and ("replace", target) in order."""
    import os

    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(src, dst) -> None:
        events.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    return events


def test_a_file_replaced_atomically_is_on_disk_before_and_after_its_rename(tmp_path: Path, monkeypatch) -> None:
    """summary.json, eval.json, sample grids: the new data synced before the rename and the folder after it,
    so that a power loss leaves the old file or the new one, never an empty one."""
    import pytest

    from avade.atomic_files import replaced_atomically

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("no /proc/self/fd to name the synced descriptors")
    events = _recording_syncs(monkeypatch)
    target = tmp_path / "summary.json"
    with replaced_atomically(target) as tmp:
        tmp.write_text('{"bpd": 1.0}', encoding="utf-8")
    assert events == [("fsync", str(tmp)), ("replace", str(target)), ("fsync", str(tmp_path))]
    assert target.read_text(encoding="utf-8") == '{"bpd": 1.0}'


def test_a_checkpoint_is_on_disk_with_its_folder_entries(tmp_path: Path, monkeypatch) -> None:
    import pytest
    import torch

    from avade.train.checkpoint import rng_bundle, save_checkpoint

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("no /proc/self/fd to name the synced descriptors")
    events = _recording_syncs(monkeypatch)
    final = save_checkpoint(tmp_path / "checkpoints", 5, torch.nn.Linear(2, 2), {}, [rng_bundle({})], {})
    (replaced,) = [i for i, e in enumerate(events) if e == ("replace", str(final))]
    before, after = events[:replaced], events[replaced + 1:]
    synced = {Path(p).name for kind, p in before if kind == "fsync"}
    assert synced >= {"model.safetensors", "state.json", "rng.safetensors", "optimizer.safetensors"}
    assert Path(before[-1][1]).name.startswith(".tmp-step_")  # the files' folder, then the rename
    assert after == [("fsync", str(tmp_path / "checkpoints"))]


def test_a_file_system_that_cannot_sync_still_saves(tmp_path: Path, monkeypatch) -> None:
    """Some FUSE mounts refuse fsync (EINVAL, ENOTSUP): the data were written, so the save goes on; a real write
    error found by the sync (EIO) still fails it, naming the file."""
    import errno
    import os

    import pytest

    from avade.atomic_files import replaced_atomically

    def refusing(code: int):
        def fsync(fd: int) -> None:
            raise OSError(code, os.strerror(code))
        return fsync

    target = tmp_path / "eval.json"
    monkeypatch.setattr(os, "fsync", refusing(errno.EINVAL))
    with replaced_atomically(target) as tmp:
        tmp.write_text("{}", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "{}"
    monkeypatch.setattr(os, "fsync", refusing(errno.EIO))
    with pytest.raises(OSError) as raised, replaced_atomically(target) as tmp:
        tmp.write_text('{"new": 1}', encoding="utf-8")
    assert raised.value.errno == errno.EIO and raised.value.filename == str(target)
    assert target.read_text(encoding="utf-8") == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


_TB_FULL = """
import errno, sys
from tensorboard.summary.writer import record_writer
def full(self, data):
    raise OSError(errno.ENOSPC, "No space left on device")
record_writer.RecordWriter.write = full
from avade.cli.app import main
main(sys.argv[1:])
"""


def test_a_full_disk_under_tensorboard_is_one_line_naming_its_folder(tmp_path: Path) -> None:
    """TensorBoard's writer thread fails on a full disk, and the training thread raises its error at the next
    scalar: one line that names the run's tb/ folder (not a bare "No space left on device"), and no traceback
    of the writer thread on stderr."""
    import os
    import subprocess
    import sys

    import pytest
    import tomli_w
    from tiny_recipes import tiny_dict

    pytest.importorskip("tensorboard")
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict("train.steps=30", "train.checkpoint_every=1000")))
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", _TB_FULL, "recipe", "run", str(recipe), "--out", str(run),
                           "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {run / 'tb'}: No space left on device (free space there"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_a_tensorboard_failure_on_the_way_out_leaves_the_error_that_stopped_training(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """A checkpoint that finds the disk full stops training with the checkpoint's own error (what --resume goes
    on from), not with the error TensorBoard's writer raises as it is closed on the same full disk."""
    import errno
    import threading

    import pytest
    from tiny_recipes import tiny_recipe

    from avade.errors import CheckpointError
    from avade.train import checkpoint as ckpt
    from avade.train.trainer import Trainer

    record_writer = pytest.importorskip("tensorboard.summary.writer.record_writer")

    filled: list[bool] = []

    def full(*args, **kwargs):
        filled.append(True)  # (from the first checkpoint on)
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_at_close(self):  # a flush of TensorBoard's writer on the training thread: as it is closed
        if filled and threading.current_thread() is threading.main_thread():
            full()

    monkeypatch.setattr(ckpt, "save_tensors", full)
    monkeypatch.setattr(record_writer.RecordWriter, "flush", full_at_close)
    hook = threading.excepthook
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*step_00000002: No space left on device"):
        Trainer(tiny_recipe("train.steps=4"), tmp_path, progress=False).fit()
    assert threading.excepthook is hook  # (the process's own, as training found it)
