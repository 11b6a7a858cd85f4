"""Errors name the argument as the caller gave it: from Python the argument (``device='cuda:9'``, ``n``), from the
CLI its flag (``--device``, ``-n``) -- :func:`avade.errors.argument` inside :func:`avade.errors.cli_flags`, which
the CLI enters once around every command. Python callers were told about flags they never typed."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import tomli_w
import torch
from tiny_recipes import tiny_dict, tiny_recipe
from typer.testing import CliRunner

import avade
from avade.cli.app import CLI_FLAGS, app
from avade.errors import AvadeError, CheckpointError, ConfigError, DataError, argument, cli_flags
from avade.evaluate import sample_run
from avade.train import checkpoint as ckpt
from avade.train.trainer import Trainer

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny class-conditional run (4 classes) trained with a weight average."""
    root = tmp_path_factory.mktemp("api-names") / "run"
    recipe = tiny_recipe("train.steps=2", "train.checkpoint_every=2", "train.ema_decay=0.5",
                         "model.conditional=true", "model.decoder.norm=cwn", "data.num_classes=4")
    Trainer(recipe, root, progress=False).fit()
    return root


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return result.output


def test_argument_is_python_by_default_and_the_flag_inside_cli_flags() -> None:
    assert argument("device", "cuda:9") == "device='cuda:9'"
    assert argument("device") == "device"
    with cli_flags({"device": "--device", "ema": "--ema/--no-ema", "label": "--class"}):
        assert argument("device", "cuda:9") == "--device cuda:9"
        assert argument("device") == "--device"
        assert argument("ema", False) == "--no-ema" and argument("ema", True) == "--ema"
        assert argument("label", 3) == "--class 3"
        assert argument("labels") == "labels"  # no flag for it: its Python name
        with cli_flags({}):  # nested: the inner mapping, the outer one back after
            assert argument("device") == "device"
        assert argument("device") == "--device"
    assert argument("ema", False) == "ema=False"  # reset on leaving


def test_the_cli_mapping_is_left_behind_when_a_command_ends(run_dir: Path, tmp_path: Path) -> None:
    _cli("sample", str(run_dir), "-n", "0", "-o", str(tmp_path / "s.png"))
    assert argument("n", 0) == "n=0"
    assert CLI_FLAGS["label"] == "--class" and all(f.startswith("-") for k, f in CLI_FLAGS.items() if k != "run_dir")


def test_load_model_names_its_python_arguments(run_dir: Path) -> None:
    if torch.cuda.device_count() > 9:
        pytest.skip("cuda:9 exists here")
    with pytest.raises(ConfigError, match=r"^device: device 'cuda:9' requested but") as info:
        avade.load_model(run_dir, device="cuda:9")
    assert "--" not in str(info.value) and "\n" not in str(info.value)
    if not torch.cuda.is_available():
        assert str(info.value).endswith("use device='cpu'")
    with pytest.raises(CheckpointError, match=r"^checkpoint=99: .* has no such checkpoint; its steps are 2$"):
        avade.load_model(run_dir, device="cpu", checkpoint=99)
    for kwargs, said in (({"device": 3}, r"^device=3: expected 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, "
                                         r"got int$"),
                         ({"ema": "no"}, r"^ema='no': expected True \(the averaged weights\) or False"),
                         ({"run_dir": None}, r"^run_dir=None: expected a run directory \(a str or Path")):
        with pytest.raises(TypeError, match=said) as type_error:
            avade.load_model(**{"run_dir": run_dir, **kwargs})
        assert "--" not in str(type_error.value)


def test_load_model_takes_a_torch_device(run_dir: Path) -> None:
    model, _, chosen = avade.load_model(run_dir, device=torch.device("cpu"))
    assert next(model.parameters()).device == torch.device("cpu") and chosen.name == "step_00000002"


def test_a_missing_average_names_ema_false_from_python_and_no_ema_from_the_cli(run_dir: Path,
                                                                               tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (ckpt.list_checkpoints(copy / "checkpoints")[-1] / "ema.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"evaluate or sample the last iterate with ema=False, or ") as info:
        avade.load_model(copy, device="cpu")
    assert "--" not in str(info.value)
    assert "evaluate or sample the last iterate with --no-ema, or " in _cli("sample", str(copy), "-o",
                                                                             str(tmp_path / "s.png"))


@pytest.mark.parametrize(("kwargs", "said"), [
    ({"n": -1}, r"^n must be an int >= 1, got -1$"),
    ({"n": 2.5}, r"^n must be an int >= 1, got 2.5$"),
    ({"batch_size": 0}, r"^batch_size must be at least 1, got 0$"),
    ({"temperature": math.nan}, r"^temperature=nan: expected a finite number >= 0"),
    ({"temperature": -1.0}, r"^temperature=-1.0: expected a finite number >= 0"),
    ({"temperature": 0.5, "reconstructions": True}, r"^temperature sets the prior's temperature, and "
                                                     r"reconstructions draws from the posterior"),
    ({"steps": 1, "interpolations": True}, r"^steps must be at least 2"),
    ({"label": 1.5}, r"^label=1.5: expected an int class id, got float$"),
    ({"label": 9}, r"^label=9: the model has classes 0..3$"),
    ({"output": "s.npz", "reconstructions": True}, r"^reconstructions writes an image grid; give output a .png"),
], ids=["n", "n-float", "batch_size", "temperature-nan", "temperature-negative", "temperature-reconstructions",
        "steps", "label-float", "label-range", "output"])
def test_sample_run_names_its_python_arguments(run_dir: Path, tmp_path: Path, kwargs: dict, said: str) -> None:
    kwargs = {"output": tmp_path / "s.png", **kwargs}
    if isinstance(kwargs["output"], str):
        kwargs["output"] = tmp_path / kwargs["output"]
    with pytest.raises(ConfigError, match=said) as info:
        sample_run(run_dir, device="cpu", **kwargs)
    assert "--" not in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("args", "said"), [
    (["-n", "0"], "error: -n must be an int >= 1, got 0"),
    (["--batch-size", "0"], "error: --batch-size must be at least 1, got 0"),
    (["--class", "9"], "error: --class 9: the model has classes 0..3"),
    (["--reconstructions", "-o", "s.npz"], "error: --reconstructions writes an image grid; give -o a .png"),
    (["--device", "cuda:9"], "error: --device: device 'cuda:9' requested but"),
    (["--checkpoint", "99"], "error: --checkpoint 99: "),
], ids=["n", "batch-size", "class", "output", "device", "checkpoint"])
def test_the_cli_still_names_its_flags(run_dir: Path, tmp_path: Path, args: list[str], said: str) -> None:
    if "cuda:9" in args and torch.cuda.device_count() > 9:
        pytest.skip("cuda:9 exists here")
    args = [str(tmp_path / a) if a == "s.npz" else a for a in args]
    out = _cli("sample", str(run_dir), *(["-o", str(tmp_path / "s.png")] if "-o" not in args else []), *args)
    assert out.startswith(said), out
    assert "=" not in out.split(":")[0], out  # (no Python argument form)


def test_generate_refuses_bad_arguments_naming_them(run_dir: Path) -> None:
    model, _, _ = avade.load_model(run_dir, device="cpu")
    labels = torch.zeros(2, dtype=torch.int64)
    for call, said in (
            (lambda: model.generate(-1, labels), r"^generate: n=-1: expected an int >= 0$"),
            (lambda: model.generate(2.0, labels), r"^generate: n=2.0: expected an int >= 0$"),
            (lambda: model.generate(2, labels, temperature=-0.5), r"^generate: temperature=-0.5: expected a finite"),
            (lambda: model.generate(2, labels, temperature=math.nan), r"^generate: temperature=nan: expected a finite"),
            (lambda: model.generate(2, None), r"^generate: the model is class-conditional \(4 classes\): pass "
                                              r"labels, int64 \[2\] in \[0, 4\)$"),
            (lambda: model.generate(2, torch.zeros(3, dtype=torch.int64)),
             r"^generate: labels must be integer class ids \[2\], got torch.int64 \[3\]$"),
            (lambda: model.generate(2, torch.zeros(2)), r"^generate: labels must be integer class ids \[2\], got "
                                                        r"torch.float32 \[2\]$"),
            (lambda: model.generate(2, [0, 1]), r"^generate: labels must be integer class ids \[2\], got list$")):
        with pytest.raises(DataError, match=said) as info:
            call()
        assert "--" not in str(info.value)
    with torch.no_grad():
        assert model.generate(2, labels, temperature=0.0).shape == (2, *model.data_shape)
        assert model.generate(0, labels[:0]).shape == (0, *model.data_shape)


def test_errors_stay_avade_errors_or_type_errors(run_dir: Path) -> None:
    """A wrong value is an AvadeError (the CLI's one line, exit 2); a wrong kind of argument, which only Python can
    pass, a TypeError as the rest of the Python API's (tests/test_api_arguments.py)."""
    with pytest.raises(AvadeError):
        sample_run(run_dir, n=0, device="cpu")
    with pytest.raises(TypeError):
        avade.load_model(run_dir, device=object())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_training_names_the_device_where_it_came_from(tmp_path: Path) -> None:
    # (was: "train.device: device 'cuda' requested ..." for Trainer(..., device="cuda") and --device cuda)
    with pytest.raises(ConfigError, match=r"^device: device 'cuda' requested but no CUDA GPU is available; use "
                                          r"device='cpu'$"):
        Trainer(tiny_recipe(), tmp_path / "a", progress=False, device="cuda")
    with pytest.raises(ConfigError, match=r"^train.device: device 'cuda' requested but"):
        Trainer(tiny_recipe("train.device=cuda"), tmp_path / "b", progress=False)
    recipe = tmp_path / "r.toml"
    recipe.write_text(tomli_w.dumps(tiny_dict()))
    assert _cli("recipe", "run", str(recipe), "--out", str(tmp_path / "c"), "--device", "cuda").startswith(
        "error: --device: device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    assert not any(tmp_path.glob("[abc]"))
