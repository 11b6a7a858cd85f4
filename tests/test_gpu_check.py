"""scripts/gpu_check.sh, the one-command check of the CUDA paths: what can be checked without a GPU (its syntax,
its plan, its refusals, and that the tests it runs are the CUDA-marked ones)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, cwd=ROOT)


def test_the_script_parses_and_its_dry_run_prints_the_plan_without_running_anything(tmp_path) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    done = _run("--dry-run", OUT=str(tmp_path / "results"), GPU_CHECK_STEPS="90")
    assert done.returncode == 0, done.stderr
    plan = done.stdout
    for step in ("setup: bash scripts/setup.sh", "pytest -m cuda", "90 steps, fp32 and bf16", "60 steps, then --resume",
                 "bit for bit", "avade eval --device cuda", "avade sample --device cuda",
                 "python -m benchmarks --device cuda", "--set train.compile=true", str(tmp_path / "results")):
        assert step in plan, (step, plan)
    assert not (tmp_path / "results").exists()  # a dry run writes nothing
    assert "a venv seeing python3's packages (torch)" in _run("--dry-run", "--offline").stdout


@pytest.mark.parametrize("args, env, message", [
    (("--bogus",), {}, "unknown option '--bogus'"),
    (("--dry-run",), {"GPU_CHECK_STEPS": "5"}, "GPU_CHECK_STEPS must be a whole number >= 30"),
    (("--dry-run",), {"GPU_CHECK_DEVICE": "mps"}, "GPU_CHECK_DEVICE must be cuda"),
    (("--dry-run",), {"GPU_CHECK_LIMIT_SCALE": "0.5"}, "GPU_CHECK_LIMIT_SCALE must be a whole number >= 1"),
])
def test_bad_options_are_refused_in_one_line(args, env, message) -> None:
    done = _run(*args, **env)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_the_tests_it_names_are_the_cuda_marked_ones() -> None:
    plan = _run("--dry-run").stdout
    named = re.findall(r"tests/[\w/]+\.py", plan)
    assert len(named) >= 3
    for path in named:
        text = (ROOT / path).read_text()
        assert "pytest.mark.cuda" in text and "torch.cuda.is_available()" in text, path


def _skip_check() -> str:
    """The Python the script runs on pytest's JUnit XML to decide whether a CUDA test was skipped."""
    text = SCRIPT.read_text()
    start = text.index('"$RESULTS/pytest_cuda.xml" <<\'EOF\'\n') + len('"$RESULTS/pytest_cuda.xml" <<\'EOF\'\n')
    return text[start:text.index("\nEOF\n", start)]


@pytest.mark.parametrize("cases, ok", [
    # a module skipped at collection for a missing optional package is listed whatever -m selects: not a CUDA skip
    ('<testcase classname="tests.flows.test_cuda" name="a"/>'
     '<testcase classname="" name="tests.data.test_data_lsun_lmdb"><skipped message="no lmdb"/></testcase>', True),
    ('<testcase classname="tests.flows.test_cuda" name="a"><skipped message="needs a CUDA GPU"/></testcase>', False),
    ('<testcase classname="" name="tests.train.test_cuda_training"><skipped message="x"/></testcase>', False),
    ("", False),  # nothing ran
])
def test_only_skipped_cuda_tests_fail_the_tests_step(tmp_path, cases, ok) -> None:
    total, skipped = cases.count("<testcase"), cases.count("<skipped")
    xml = tmp_path / "pytest_cuda.xml"
    xml.write_text(f'<testsuites><testsuite tests="{total}" skipped="{skipped}">{cases}</testsuite></testsuites>')
    done = subprocess.run([sys.executable, "-c", _skip_check(), str(xml)], capture_output=True, text=True, cwd=ROOT)
    assert (done.returncode == 0) == ok, done.stdout + done.stderr


def test_only_names_the_steps_that_run() -> None:
    plan = _run("--dry-run", "--only=tests,bench").stdout
    steps = [line.split(". ", 1)[1].split(":")[0] for line in plan.splitlines()[1:]]
    assert steps == ["setup", "check", "tests", "bench", "results"], plan
    done = _run("--dry-run", "--only=tests,bogus")
    assert done.returncode == 2 and "unknown step 'bogus'; choose from: tests bench" in done.stderr, done.stderr


def test_the_wheel_script_parses_and_names_what_the_offline_setup_needs() -> None:
    wheels = ROOT / "scripts" / "gpu_wheels.sh"
    assert subprocess.run(["bash", "-n", str(wheels)], capture_output=True).returncode == 0
    text = wheels.read_text()
    for needed in ("cattrs", "tomli-w", "setuptools>=77", "normflows"):  # avade's build needs setuptools >= 77
        assert needed in text, needed


def test_a_failed_step_does_not_stop_the_others_and_the_output_ends_with_the_script(tmp_path) -> None:
    """(each step's watchdog once kept a sleep holding the log's pipe: a caller reading the output waited for every
    step's whole limit, minutes of a lent GPU, after the script had ended)"""
    stub = tmp_path / "python"
    stub.write_text('#!/usr/bin/env bash\n[[ " $* " == *" eval "* ]] && { echo "stub: eval fails" >&2; exit 3; }\n'
                    "exit 0\n")
    stub.chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPT), "--only=eval,sample"], capture_output=True, text=True, timeout=30,
                          cwd=ROOT, env={**os.environ, "GPU_CHECK_PYTHON": str(stub), "GPU_CHECK_DEVICE": "cpu",
                                         "GPU_CHECK_STEPS": "30", "OUT": str(tmp_path / "results"),
                                         "GPU_CHECK_WORK": str(tmp_path / "work")})
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "-- eval: FAILED (exit 3)" in output and "-- sample: ok" in output, output
    assert "FAILED in step(s): eval after" in output, output


def test_the_compile_step_benchmarks_the_train_step_with_train_compile(tmp_path) -> None:
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path / "calls.txt"}\nexit 0\n')
    stub.chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPT), "--only=compile"], capture_output=True, text=True, timeout=30,
                          cwd=ROOT, env={**os.environ, "GPU_CHECK_PYTHON": str(stub), "GPU_CHECK_DEVICE": "cpu",
                                         "GPU_CHECK_STEPS": "30", "OUT": str(tmp_path / "results"),
                                         "GPU_CHECK_WORK": str(tmp_path / "work")})
    assert done.returncode == 0 and "-- compile: ok" in done.stdout + done.stderr, done.stdout + done.stderr
    calls = [line for line in (tmp_path / "calls.txt").read_text().splitlines() if "benchmarks" in line]
    assert calls == [f"-m benchmarks --device cpu --quick --only train --set train.compile=true "
                     f"--out {tmp_path / 'results' / 'bench_compile.json'}"], calls


def test_the_determinism_step_runs_only_on_demand_and_is_in_the_plan_and_help() -> None:
    whole = _run("--dry-run").stdout
    assert "  -. determinism: (only with --only=determinism)" in whole, whole  # listed, not numbered: not run
    assert "determinism.txt" not in whole.split("results:")[1], whole
    plan = _run("--dry-run", "--only=determinism").stdout
    steps = [line.split(". ", 1)[1].split(":")[0] for line in plan.splitlines()[1:]]
    assert steps == ["setup", "check", "determinism", "results"], plan
    for variant in ("TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT=1000000", "TORCH_CUDNN_V8_API_DISABLED=1",
                    "AVADE_TEST_EMPTY_CACHE=1", "after tests/test_conformance.py", "determinism.txt"):
        assert variant in plan, (variant, plan)
    assert "--only=determinism" in _run("--help").stdout


FP32 = "tests/train/test_cuda_training.py::test_a_resumed_run_on_cuda_is_bit_identical[fp32]"


def _determinism(tmp_path, conformance_fails: bool, prefix_fails: bool, device: str = "cuda"):
    """The determinism step with a stub Python for pytest: the fp32 test fails (as the CUDA test words it)
    after the conformance tests and/or in the full run's prefix, and passes alone and with AVADE_TEST_EMPTY_CACHE."""
    from tiny_recipes import parting_report
    from torch import nn

    critic = nn.Module()
    critic.convs, critic.head = nn.ModuleList([nn.Conv2d(3, 4, 4)]), nn.Linear(4, 1)
    where = parting_report(2, ["model/convs.0.weight", "model/head.weight"], critic, {})
    message = (f"Failed: the resumed run differs from the uninterrupted one in ['model/convs.0.weight']; two "
               f"uninterrupted runs differ too (['model/convs.0.weight'], {where}): a nondeterministic CUDA kernel")
    case = '<testsuites><testsuite><testcase classname="tests.train.test_cuda_training" name="{}">{}</testcase>' \
           '</testsuite></testsuites>'
    (tmp_path / "fail.xml").write_text(case.format(FP32.split("::")[1], f'<failure message="{message}"/>'))
    (tmp_path / "pass.xml").write_text(case.format(FP32.split("::")[1], ""))
    (tmp_path / "skip.xml").write_text(case.format(FP32.split("::")[1], '<skipped message="needs a CUDA GPU"/>'))
    stub = tmp_path / "python"
    stub.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {tmp_path / 'calls.txt'}
case "$1" in -c) exit 0 ;; -m) [ "$2" = pytest ] || exit 0 ;; *) exec {sys.executable} "$@" ;; esac
args=" $* "
if [[ $args == *" --collect-only "* ]]; then printf '%s\\n' tests/flows/test_cuda.py::a '{FP32}' \\
  tests/train/test_cuda_training.py::after "" "3/9 tests collected"; exit 0; fi
while [ $# -gt 0 ]; do [ "$1" = --junitxml ] && xml=$2; shift; done
result=pass
if [ "{device}" = cpu ]; then result=skip
elif [ "${{AVADE_TEST_EMPTY_CACHE:-}}" = 1 ] || [[ $args != *" -m cuda "* ]]; then result=pass
elif [[ $args == *" plugins "* ]]; then result={'fail' if prefix_fails else 'pass'}
else result={'fail' if conformance_fails else 'pass'}; fi
cp {tmp_path}/$result.xml "$xml"; [ $result = fail ] && exit 1; exit 0
""")
    stub.chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPT), "--only=determinism"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "GPU_CHECK_PYTHON": str(stub), "GPU_CHECK_DEVICE": device,
                                         "GPU_CHECK_STEPS": "30", "OUT": str(tmp_path / "results"),
                                         "GPU_CHECK_WORK": str(tmp_path / "work")})
    table = (tmp_path / "results" / "determinism.txt").read_text()
    rows = {line.split(" | ")[0].strip(): line.split(" | ")[1:] for line in table.splitlines()[2:] if " | " in line}
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    return done, rows, calls


def test_the_determinism_step_runs_the_variants_as_the_first_run_that_reproduces_the_failure(tmp_path) -> None:
    done, rows, calls = _determinism(tmp_path, conformance_fails=False, prefix_fails=True)
    assert done.returncode == 0 and "-- determinism: ok" in done.stdout, done.stdout + done.stderr
    assert rows["alone"][0].strip() == "pass" and rows["conformance"][0].strip() == "pass", rows
    for failing in ("full-prefix", "lru-large", "v7", "no-plan-cache"):
        assert [c.strip() for c in rows[failing][:3]] == ["FAIL", "2", "conv+linear"], rows
        assert rows[failing][4] == "model/convs.0.weight (Conv2d), model/head.weight (Linear)", rows
    assert rows["empty-cache"][0].strip() == "pass" and rows["empty-cache"][3] == "AVADE_TEST_EMPTY_CACHE=1", rows
    assert rows["v7"][3] == "TORCH_CUDNN_V8_API_DISABLED=1 TORCH_CUDNN_V8_API_DEBUG=1", rows
    runs = [c for c in calls if "--junitxml" in c]
    assert len(runs) == 7, runs
    # the full run's prefix: every test module collected, the CUDA tests after the fp32 one left out
    assert all("--deselect tests/train/test_cuda_training.py::after" in c and c.endswith("tests plugins")
               for c in runs[2:]), runs
    assert runs[0].endswith(f"det_alone.xml {FP32}") and runs[1].endswith(f"tests/test_conformance.py {FP32}")


def test_the_determinism_step_leaves_out_the_variants_when_nothing_reproduces_the_failure(tmp_path) -> None:
    done, rows, calls = _determinism(tmp_path, conformance_fails=False, prefix_fails=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(rows) == ["alone", "conformance", "full-prefix", "variants"], rows
    assert rows["variants"][0].startswith("not run: neither conformance nor full-prefix reproduced"), rows
    assert len([c for c in calls if "--junitxml" in c]) == 3


def test_a_cpu_rehearsal_of_the_determinism_step_reports_skipped_no_gpu_and_passes(tmp_path) -> None:
    done, rows, calls = _determinism(tmp_path, conformance_fails=True, prefix_fails=True, device="cpu")
    assert done.returncode == 0 and "-- determinism: ok" in done.stdout, done.stdout + done.stderr
    assert len(rows) == 7 and {r[0].strip() for r in rows.values()} == {"skipped: no GPU"}, rows
    assert not [c for c in calls if c.startswith("-c") and "cuda.is_available" in c]  # no GPU check on the CPU
