"""Checkpoint digests: damage that still parses (one flipped bit in a weight, finite) is refused in one line
naming the file and the fix, by ``--resume`` before anything in the run is rewritten and by evaluation, for the
files each of them uses; checkpoints from before digests were recorded still load."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from checkpoint_files import write_state
from tiny_recipes import tiny_recipe

import avade
from avade.errors import CheckpointError
from avade.train import checkpoint as ckpt
from avade.train.trainer import Trainer

SETTINGS = ("train.steps=2", "train.checkpoint_every=2", "train.ema_decay=0.5")


def _trained(tmp_path: Path) -> Path:
    Trainer(tiny_recipe(*SETTINGS), tmp_path, progress=False).fit()
    return ckpt.list_checkpoints(tmp_path / "checkpoints")[-1]


def _flip_a_data_bit(file: Path) -> None:
    """The lowest bit of the first byte after the header: a float's lowest mantissa bit, still a valid file."""
    data = bytearray(file.read_bytes())
    (header,) = struct.unpack("<Q", data[:8])
    data[8 + header] ^= 1
    file.write_bytes(bytes(data))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_tensor_file_s_digest_is_recorded(tmp_path: Path) -> None:
    path = _trained(tmp_path)
    digests = json.loads((path / "state.json").read_text())["digests"]
    assert set(digests) == {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "ema.safetensors"}
    assert all(digests[name] == ckpt.file_digest(path / name) for name in digests)


@pytest.mark.parametrize("file", ["model", "optimizer", "rng", "ema"])
def test_a_flipped_bit_is_refused_on_resume_before_anything_is_rewritten(tmp_path: Path, file: str) -> None:
    path = _trained(tmp_path)
    _flip_a_data_bit(path / f"{file}.safetensors")
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError) as info:
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path, resume=True,
                progress=False)
    message = str(info.value)
    assert f"is corrupt: {file}.safetensors is not the file that was saved" in message and "\n" not in message
    assert "delete step_00000002" in message
    assert _snapshot(tmp_path) == before


def test_evaluation_checks_the_files_it_uses(tmp_path: Path) -> None:
    path = _trained(tmp_path)
    _flip_a_data_bit(path / "optimizer.safetensors")  # not read by evaluation
    avade.load_model(tmp_path, device="cpu")
    _flip_a_data_bit(path / "ema.safetensors")
    with pytest.raises(CheckpointError, match=r"ema.safetensors is not the file that was saved"):
        avade.load_model(tmp_path, device="cpu")
    avade.load_model(tmp_path, device="cpu", ema=False)  # the last iterate is sound
    _flip_a_data_bit(path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors is not the file that was saved"):
        avade.load_model(tmp_path, device="cpu", ema=False)


def test_a_checkpoint_without_digests_still_loads_and_bad_digests_are_named(tmp_path: Path) -> None:
    path = _trained(tmp_path)
    state = json.loads((path / "state.json").read_text())
    older = {k: v for k, v in state.items() if k not in ("digests", ckpt.STATE_DIGEST)}
    write_state(path, older, digest=False)
    avade.load_model(tmp_path, device="cpu")
    Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path, resume=True,
            progress=False)
    write_state(path, {**older, "digests": ["model.safetensors"]})
    with pytest.raises(CheckpointError, match=r"state.json's digests is \['model.safetensors'\], not a table of file "
                                              r"digests; delete step_00000002"):
        avade.load_model(tmp_path, device="cpu")


def _digested(tmp_path: Path) -> tuple[dict, Path]:
    """A checkpoint as read_checkpoint gives it, of one model file, and its folder: digests without a run."""
    path = tmp_path / "checkpoints" / "step_00000002"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    state = {"digests": {"model.safetensors": ckpt.file_digest(path / "model.safetensors")}}
    return {"state": state, "model": {}}, path


def test_digests_of_the_wrong_type_are_named_as_such(tmp_path: Path) -> None:
    read, path = _digested(tmp_path)
    ckpt.verify_digests(read, path)
    read["state"]["digests"]["model.safetensors"] = 7
    with pytest.raises(CheckpointError, match=r"state.json's digests is \{'model.safetensors': 7\}, not a table"):
        ckpt.verify_digests(read, path)


def test_a_file_removed_before_its_digest_is_taken_is_said_to_be_removed(tmp_path: Path) -> None:
    """(a run still training prunes the checkpoint between read_checkpoint and the digests)"""
    read, path = _digested(tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="was removed while it was read"):
        ckpt.verify_digests(read, path)


@pytest.mark.parametrize("file", ["model", "ema"])
def test_an_intact_checkpoint_that_does_not_fit_changed_model_code_is_not_to_be_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str) -> None:
    """Its files are those saved (their digests match): the model's code changed since (a plugin upgraded), which
    deleting the checkpoint, as a damaged one's message advises, would not mend: the run's newest (or only)
    checkpoint would be lost, and every older one fail alike."""
    import torch

    import avade.models.generative as generative
    import avade.train.ema as ema

    _trained(tmp_path)
    if file == "model":
        init = generative.GenerativeModel.__init__

        def grown(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            init(self, *args, **kwargs)
            self.added = torch.nn.Parameter(torch.zeros(1))  # a parameter the trained code did not have

        monkeypatch.setattr(generative.GenerativeModel, "__init__", grown)
    else:  # one parameter fewer in the average (the generator's parameters chosen otherwise)
        names = ema.averaged_names
        monkeypatch.setattr(ema, "averaged_names", lambda *a: dict(list(names(*a).items())[1:]))
    with pytest.raises(CheckpointError) as info:
        avade.load_model(tmp_path, device="cpu")
    message = str(info.value)
    assert "does not fit this model" in message and "\n" not in message, message
    assert f"{file}.safetensors is the file that was saved" in message and "delete" not in message, message


def test_an_intact_optimizer_state_of_other_fields_is_not_to_be_deleted(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """(the state fields torch keeps, checked on resume, as another torch version might keep them)"""
    _trained(tmp_path)
    monkeypatch.setattr(ckpt, "_state_fields", lambda opt, groups: {"step", "exp_avg", "exp_inf", "other"})
    with pytest.raises(CheckpointError) as info:
        Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path, resume=True,
                progress=False)
    message = str(info.value)
    assert "state does not fit" in message and "optimizer.safetensors is the file that was saved" in message, message
    assert "delete" not in message


def _flip_a_digit(text: str, after: str) -> str:
    """One digit of the first number after ``after`` in state.json's text changed: still valid JSON."""
    at = text.index(after) + len(after)
    at += next(i for i, c in enumerate(text[at:]) if c in "123456789")
    return text[:at] + str(int(text[at]) % 9 + 1) + text[at + 1:]


@pytest.mark.parametrize("after", ['"lr": ', '"python": [3, [', '"collapse": {'])
def test_a_flipped_digit_in_state_json_is_refused_on_resume_and_evaluation_before_anything_is_rewritten(
        tmp_path: Path, after: str) -> None:
    """(a learning rate, a random state, a watch's window: each was accepted as it read, silently)"""
    import tomli_w
    from tiny_recipes import tiny_dict
    from typer.testing import CliRunner

    from avade.cli.app import app

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict(*SETTINGS)))
    run = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["recipe", "run", str(recipe), "--out", str(run), "--device", "cpu"]).exit_code == 0
    path = ckpt.list_checkpoints(run / "checkpoints")[-1]
    text = (path / "state.json").read_text()
    (path / "state.json").write_text(_flip_a_digit(text, after))
    assert json.loads((path / "state.json").read_text()) != json.loads(text)
    before = _snapshot(run)
    for args in (["recipe", "run", str(recipe), "--out", str(run), "--resume", "--set", "train.steps=4"],
                 ["eval", str(run), "--metrics", "bpd", "--device", "cpu"]):
        result = runner.invoke(app, args)
        said = result.output.strip()
        assert result.exit_code != 0 and "\n" not in said, said
        assert "is corrupt: state.json is not the one that was saved" in said and "delete step_00000002" in said, said
        assert _snapshot(run) == before


def test_state_json_s_digest_survives_a_save_resume_save_cycle_and_an_older_checkpoint_without_it_loads(
        tmp_path: Path) -> None:
    path = _trained(tmp_path)
    state = json.loads((path / "state.json").read_text())
    assert state[ckpt.STATE_DIGEST] == ckpt.state_digest(state)  # (real random states, floats, default=str values)
    Trainer(tiny_recipe("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path, resume=True,
            progress=False).fit()
    newest = ckpt.list_checkpoints(tmp_path / "checkpoints")[-1]
    assert newest.name == "step_00000004"
    resumed = json.loads((newest / "state.json").read_text())
    assert resumed[ckpt.STATE_DIGEST] == ckpt.state_digest(resumed) != state[ckpt.STATE_DIGEST]
    ckpt.verify_digests(ckpt.read_checkpoint(newest), newest)
    avade.load_model(tmp_path, device="cpu")
    # as an avade from before the digest of state.json wrote it: loaded and resumed as before
    write_state(newest, resumed, digest=False)
    assert ckpt.STATE_DIGEST not in json.loads((newest / "state.json").read_text())
    avade.load_model(tmp_path, device="cpu")
    Trainer(tiny_recipe("train.steps=6", "train.checkpoint_every=2", "train.ema_decay=0.5"), tmp_path, resume=True,
            progress=False).fit()
    assert ckpt.list_checkpoints(tmp_path / "checkpoints")[-1].name == "step_00000006"


def test_the_digest_of_state_json_reads_back_as_written(tmp_path: Path) -> None:
    """Written from what state.json reads back: keys that are no strings, tuples, floats (NaN, inf, -0.0, 0.1),
    default=str's values (a Path) give the digest that is computed from the file."""
    state = {"format": 1, "step": 0, "odd": {2: (1, 0.1), 10: float("nan"), "x": -0.0, "p": Path("/a"),
                                             "big": 1e400, "f": 1 / 3, "u": "é"}}
    body = json.loads(json.dumps(state, default=str))
    body[ckpt.STATE_DIGEST] = ckpt.state_digest(body)
    read = json.loads(json.dumps(body))
    ckpt.state_intact(read, tmp_path)
    read["odd"]["f"] = 0.3333333333333334
    with pytest.raises(CheckpointError, match=r"state\.json is not the one that was saved"):
        ckpt.state_intact(read, tmp_path)
    with pytest.raises(CheckpointError, match=r"state\.json has a state_digest of 7, not a digest"):
        ckpt.state_intact({**body, ckpt.STATE_DIGEST: 7}, tmp_path)


@pytest.mark.skipif(not hasattr(__import__("os"), "umask") or __import__("sys").platform == "win32",
                    reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_tensor_files_get_the_umasks_mode_as_every_other_file(tmp_path: Path, umask: int) -> None:
    """safetensors creates its files 0600: a group sharing runs could read state.json but not the weights."""
    import os
    import stat

    before = os.umask(umask)
    try:
        checkpoint = _trained(tmp_path)
    finally:
        os.umask(before)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in checkpoint.iterdir()}
    assert set(modes) >= {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "ema.safetensors"}
    assert set(modes.values()) == {0o666 & ~umask}, {name: oct(m) for name, m in modes.items()}


def test_a_second_save_at_one_step_that_fails_keeps_the_first(tmp_path: Path, monkeypatch) -> None:
    """Trainer.save called twice at one step: the first checkpoint was deleted before the second was renamed into
    its place, so a rename that failed left that step with none."""
    import os

    import torch

    model = torch.nn.Linear(2, 2)
    first = ckpt.save_checkpoint(tmp_path, 5, model, {}, [ckpt.rng_bundle({})], {})
    saved = (first / "model.safetensors").read_bytes()
    replace = os.replace

    def failing(src, dst):
        if Path(src).name.startswith(".tmp-step_"):  # the new checkpoint's rename into place
            raise OSError(5, "Input/output error")
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(CheckpointError, match=r"^cannot write checkpoint .*step_00000005: Input/output error; "):
        ckpt.save_checkpoint(tmp_path, 5, model, {}, [ckpt.rng_bundle({})], {})
    assert (first / "model.safetensors").read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000005"]  # (nothing left aside)
    monkeypatch.setattr(os, "replace", replace)
    ckpt.save_checkpoint(tmp_path, 5, model, {}, [ckpt.rng_bundle({})], {})  # and a save that works replaces it
    assert (first / "model.safetensors").read_bytes() != saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000005"]
