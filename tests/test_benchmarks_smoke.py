"""Smoke tests of the benchmark suite (benchmarks/): it runs and writes the JSON it documents.

Never asserts on timing values -- only on structure, and on numbers that do not depend on the
machine (parameter counts, FLOPs, finite likelihoods).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ lives at the repository root, next to tests/
    sys.path.insert(0, str(ROOT))

from benchmarks import flows, runner  # noqa: E402
from benchmarks.common import make_settings  # noqa: E402

SIDE_KEYS = {"params", "bpd_init", "timing", "images_per_s", "flops_per_image", "flop_s", "memory"}


def tiny_cases() -> list[flows.FlowCase]:
    return [
        flows.FlowCase("glow", "glow", levels=2, steps=1, hidden=4, size=8, batch=2),
        flows.FlowCase("realnvp", "realnvp", levels=1, steps=2, hidden=4, blocks=1, size=8, batch=2,
                       norm="weight-norm"),
        # aot_eager traces forward and backward as inductor would, without compiling C++ (seconds, not minutes).
        flows.FlowCase("glow compiled", "glow", levels=2, steps=1, hidden=4, size=8, batch=2, compile="aot_eager"),
    ]


def render_text(tables: list) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=200)
    for t in tables:
        console.print(t)
    return buf.getvalue()


def test_runner_startup_quick_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "startup", "--quick", "--device", "cpu",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "startup" in proc.stdout and "targets" in proc.stdout  # the tables were printed
    data = json.loads(out.read_text())
    assert data["schema"] == 1 and data["errors"] == {}
    assert {"torch_threads", "cpu_count", "device", "torch", "quick", "loadavg_start", "cpu_capability",
            "cpu_model"} <= set(data["meta"])
    assert data["meta"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert data["meta"]["quick"] is True and data["meta"]["device"] == "cpu"
    startup = data["benchmarks"]["startup"]
    commands = startup["commands"]
    assert {"avade list-components", "avade recipe show recipes/av_ade_wg_rd.toml",
            "avade recipe check recipes/quickstart.toml"} <= set(commands)
    for c in commands.values():
        assert {"cmd", "best_s", "median_s", "runs", "times_s"} <= set(c) and len(c["times_s"]) == c["runs"]
    heavy = startup["imports"]["heavy_imported"]
    assert {"torch", "torchvision", "sklearn"} <= set(heavy) and all(isinstance(v, bool) for v in heavy.values())
    assert startup["imports"]["modules_imported"] > 0
    assert startup["imports"]["slowest_top_level_imports_ms"]
    names = [t["target"] for t in data["targets"]]
    assert any("list-components" in n for n in names)
    assert all(t["met"] is None for t in data["targets"])  # --quick numbers are never judged against targets


def test_flows_avade_alone_on_tiny_shapes() -> None:
    settings = make_settings("cpu", quick=True, warmup=0, repeats=1)
    result = flows.run(settings, cases=tiny_cases(), baseline=False)
    assert result["baseline"] is None and "note" in result
    assert set(result["cases"]) == {"glow", "realnvp", "glow compiled"}
    for name, case in result["cases"].items():
        assert set(case["sides"]) == {"avade"} and "speedup" not in case
        side = case["sides"]["avade"]
        assert set(side) >= SIDE_KEYS
        assert side["mode"] == ("compiled" if name.endswith("compiled") else "eager")
        assert side["params"] > 0 and side["flops_per_image"] > 0 and math.isfinite(side["bpd_init"])
        assert {"peak_mb", "method"} <= set(side["memory"])
        assert {"median_s", "times_s", "repeats"} <= set(side["timing"])
    assert result["cases"]["glow compiled"]["sides"]["avade"]["memory"]["measured_in"] == "timing worker"
    assert "glow" in render_text(flows.render(result))


def test_quick_cases_trace_compiled_flows_without_inductor() -> None:
    assert {c.compile for c in flows.default_cases(quick=True)} == {"", "aot_eager"}
    assert {c.compile for c in flows.default_cases(quick=False)} == {"", "inductor"}


def test_a_failing_case_is_reported_and_the_others_kept() -> None:
    # isolate=False: the eager case is timed in this process (a compiled case is always isolated).
    settings = make_settings("cpu", quick=True, warmup=0, repeats=1, isolate=False)
    broken = flows.FlowCase("glow broken", "glow", levels=2, steps=1, hidden=4, size=8, batch=2,
                            compile="no_such_backend")
    result = flows.run(settings, cases=[tiny_cases()[0], broken], baseline=False)
    assert set(result["cases"]) == {"glow"}
    assert "no_such_backend" in result["errors"]["glow broken"]
    assert "glow broken failed" in render_text(flows.render(result))


def test_normflows_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("normflows", reason="normflows not installed (pip install -e '.[bench]')")
    real_run = subprocess.run

    def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if '"side": "normflows compiled"' in args[-1]:  # as if normflows could not be compiled here
            return subprocess.CompletedProcess(args, 1, "", "Traceback ...\nRuntimeError: cannot compile")
        return real_run(args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(flows.subprocess, "run", run)
    settings = make_settings("cpu", quick=True, warmup=0, repeats=1)
    result = flows.run(settings, cases=[tiny_cases()[2]])
    case = result["cases"]["glow compiled"]
    assert case["baseline_mode"] == "eager" and case["sides"]["normflows"]["mode"] == "eager"
    assert case["normflows_modes"]["normflows compiled"] == {"error": "RuntimeError: cannot compile"}
    assert "failed (RuntimeError: cannot compile)" in render_text(flows.render(result))


def test_malloc_system_drops_exported_malloc_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The README suggests exporting the tuned MALLOC_* variables: --malloc system must still time glibc's defaults.
    from benchmarks.common import TUNED_MALLOC_ENV

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123")
    assert not set(TUNED_MALLOC_ENV) & set(flows.worker_env("system"))
    assert {k: flows.worker_env("tuned")[k] for k in TUNED_MALLOC_ENV} == TUNED_MALLOC_ENV


def test_timing_worker_initialises_actnorm_before_any_timed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # With --warmup 0 the first timed call must not be the data-dependent init (run_case does it first too).
    from avade.flows.actnorm import ActNorm

    built: list[torch.nn.Module] = []
    build, log_prob = flows.SIDES["avade"]
    monkeypatch.setitem(flows.SIDES, "avade", (lambda case: built.append(build(case)) or built[-1], log_prob))
    flows.prepare_side("avade", tiny_cases()[0], make_settings("cpu", quick=True, warmup=0, repeats=1))
    actnorms = [m for m in built[0].modules() if isinstance(m, ActNorm)]
    assert actnorms and all(bool(m.initialized) for m in actnorms)


def test_flows_against_normflows_on_tiny_shapes() -> None:
    pytest.importorskip("normflows", reason="normflows not installed (pip install -e '.[bench]')")
    # isolate=False: the eager cases are timed in this process, which saves four worker processes; the
    # compiled case still runs its three sides in workers (test_flows_avade_alone_... isolates eager ones).
    settings = make_settings("cpu", quick=True, warmup=0, repeats=1, isolate=False)
    result = flows.run(settings, cases=tiny_cases())
    assert result["baseline"] == "normflows"
    for case in result["cases"].values():
        assert set(case["sides"]) == {"avade", "normflows"}
        assert set(case["sides"]["normflows"]) >= SIDE_KEYS
        assert {"speedup", "speedup_best", "memory_ratio", "flops_ratio", "check"} <= set(case)
        check = case["check"]
        assert set(check) == {"param_rel_diff", "params_match", "bpd_ratio", "ll_same_order"}
        assert math.isfinite(case["sides"]["normflows"]["bpd_init"])
        assert isinstance(check["params_match"], bool) and isinstance(check["ll_same_order"], bool)
    compiled = result["cases"]["glow compiled"]
    # normflows timed in both modes; the faster is the baseline, and the table says which it was.
    assert set(compiled["normflows_modes"]) == {"normflows", "normflows compiled"}
    fastest = min(compiled["normflows_modes"].values(), key=lambda m: m["timing"]["median_s"])
    assert compiled["sides"]["normflows"]["timing"] == fastest["timing"]
    assert compiled["sides"]["avade"]["mode"] == "compiled"
    assert compiled["sides"]["normflows"]["mode"] == compiled["baseline_mode"]
    assert compiled["sides"]["avade"]["memory"]["measured_in"] == "timing worker"  # the compiled model's own
    text = render_text(flows.render(result))
    assert "same function class" in text and "normflows" in text
    assert "avade compiled (aot_eager) vs normflows eager" in text and "is the baseline" in text


def test_cuda_request_without_cuda_skips_cleanly(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: nothing to skip")
    out = tmp_path / "cuda.json"
    assert runner.main(["--device", "cuda", "--only", "flows", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "skipped" in data and data["benchmarks"] == {}


def test_unknown_benchmark_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        runner.parse_args(["--only", "flows,nope"])
    assert exc.value.code == 2 and "nope" in capsys.readouterr().err


def test_cases_selects_flow_cases_by_name() -> None:
    args = runner.parse_args(["--only", "flows", "--cases", "glow, glow compiled"])
    assert args.cases == ["glow", "glow compiled"]
    settings = make_settings("cpu", quick=True, warmup=0, repeats=1, isolate=False)  # no worker process
    result = flows.run(settings, cases=tiny_cases(), baseline=False, names=["realnvp"])
    assert set(result["cases"]) == {"realnvp"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--only", "flows", "--cases", "glow,nope"], "'nope'"),
    (["--only", "train", "--cases", "glow"], "add flows to --only"),
])
def test_bad_cases_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        runner.parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--threads", "0"], "--threads"),
    (["--threads", "-1"], "--threads"),
    (["--warmup", "-1"], "--warmup"),
    (["--repeats", "0"], "--repeats"),
])
def test_counts_out_of_range_are_usage_errors(argv: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        runner.parse_args(["--only", "startup", *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and ">=" in err
    assert runner.parse_args(["--warmup", "0", "--repeats", "1", "--threads", "1"]).warmup == 0


def test_targets_judge_fp32_cpu_runs_only() -> None:
    """The targets are stated for fp32 on CPU: a bf16 run's fraction of its (bf16) peak is reported, not judged."""
    results = {"benchmarks": {"train": {"recipes": {"r": {"fraction_of_peak": 0.5}}}}}
    assert [t["met"] for t in runner.targets(results, "cpu")] == [True]
    assert [t["met"] for t in runner.targets(results, "cpu", precision="bf16")] == [None]
    assert [t["met"] for t in runner.targets(results, "cuda")] == [None]


def test_bf16_settings_autocast_on_cpu_too() -> None:
    settings = make_settings("cpu", precision="bf16")
    with settings.autocast():
        out = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
    assert settings.bf16 and out.dtype == torch.bfloat16


def test_readme_option_table_is_the_runners_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/README.md's option table lists exactly the runner's options, with the choices it takes."""
    import argparse
    import re

    parsers: list[argparse.ArgumentParser] = []
    parse = argparse.ArgumentParser.parse_args

    def keep(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> object:
        parsers.append(self)
        return parse(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", keep)
    runner.parse_args([])

    readme = (Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text(encoding="utf-8")
    cells = [re.split(r"(?<!\\)\|", line)[1] for line in readme.splitlines() if line.startswith("| `--")]
    shown = {opt for cell in cells for opt in re.findall(r"`(--[\w-]+)", cell)}
    actions = {a.option_strings[-1]: a for a in parsers[0]._actions if a.option_strings and a.dest != "help"}
    assert shown == set(actions)
    checked = 0
    for cell in cells:
        for opt, choices in re.findall(r"`(--[\w-]+) ([\w-]+(?:\\\|[\w-]+)+)`", cell):
            assert set(choices.split("\\|")) == set(actions[opt].choices), opt
            checked += 1
    assert checked == 4  # --device, --precision, --timing, --malloc


def test_set_reaches_the_benchmarked_trainer_and_its_cuda_flags_end_with_it() -> None:
    from benchmarks.train import RECIPES, trainer_for

    settings = make_settings("cpu", quick=True, recipe_set=["train.tf32=true", "train.cudnn_benchmark=true"])
    before = torch.backends.cudnn.benchmark
    with trainer_for(RECIPES["quickstart"], settings, 8, 4) as trainer:
        assert trainer.cfg.tf32 and trainer.cfg.cudnn_benchmark
        torch.backends.cudnn.benchmark = not before  # as the trainer sets it on a GPU
    assert torch.backends.cudnn.benchmark is before
    assert runner.parse_args(["--set", "train.tf32=true", "--set", "train.seed=3"]).recipe_set == \
        ["train.tf32=true", "train.seed=3"]


def test_the_bf16_nets_case_runs_avades_coupling_networks_in_bf16_and_is_not_judged() -> None:
    from avade.flows.coupling import AffineCoupling

    case = next(c for c in flows.default_cases(quick=True) if c.nets == "bf16")
    assert flows._bf16_nets("avade", case) and not flows._bf16_nets("normflows", case)
    model = flows.build_avade(case).train()
    seen: set[torch.dtype] = set()
    coupling = next(m for m in model.modules() if isinstance(m, AffineCoupling))
    conv = next(m for m in coupling.net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    settings = make_settings("cpu", quick=True, warmup=0, repeats=1)
    flows._step(model, flows.avade_log_prob, flows.flow_input(case, torch.device("cpu")), settings, True)()
    assert seen == {torch.bfloat16}
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    results = {"benchmarks": {"flows": {"cases": {"glow": {"speedup": 1.6, "case": {"nets": "fp32"}},
                                                  case.name: {"speedup": 1.9, "case": {"nets": "bf16"}}}}}}
    judged = runner.targets(results, "cpu")
    assert [t["met"] for t in judged] == [True, None]
    assert "not judged" in judged[1]["target"] and "1.5x" not in judged[1]["target"]
    assert "normflows fp32" in judged[1]["target"]
    assert "normflows bf16" in runner.targets(results, "cpu", precision="bf16")[1]["target"]  # (both autocast)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_bf16_nets_case_runs_end_to_end_and_its_caption_names_the_baselines_precision(precision: str) -> None:
    case = next(c for c in flows.default_cases(quick=True) if c.nets == "bf16")
    settings = make_settings("cpu", quick=True, precision=precision, warmup=0, repeats=1, isolate=False)
    result = flows.run(settings, cases=[case], baseline=False)
    assert set(result["cases"]) == {case.name} and result["precision"] == precision
    text = " ".join(render_text(flows.render(result)).split())
    expected = "normflows fp32: not the target's" if precision == "fp32" else "normflows bf16 autocast: not the"
    assert "coupling networks in bf16 (train.bf16_coupling_nets)" in text and expected in text, text


def test_scaling_sets_the_activation_estimate_beside_the_measured_peak() -> None:
    from benchmarks import scaling

    settings = make_settings("cpu", quick=True, warmup=0, repeats=1)
    result = scaling.run(settings, resolutions=[16], batch=4)
    row = result["rows"][0]
    assert row["estimated_activations_mb"] > 0, row
    # the estimate's stated accuracy (avade.models.activations): within 25 % of the measured peak, with slack for a
    # quick step's allocator noise
    assert 0.6 < row["measured_vs_estimated"] < 1.5, row
    rendered = scaling.render(result)
    assert rendered
