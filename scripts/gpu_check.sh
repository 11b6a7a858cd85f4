#!/usr/bin/env bash
# One-command check of avade's CUDA paths on a machine with one NVIDIA GPU (~4 min on an H200, setup included):
#   bash scripts/gpu_check.sh               # set up .venv (scripts/setup.sh, needs a package index), then check
#   bash scripts/gpu_check.sh --offline     # no package index: a venv seeing $PYTHON's packages (python3: torch),
#                                           # avade installed from this tree, missing wheels from $WHEELS (.whl/:
#                                           # scripts/gpu_wheels.sh fetches them where an index is reachable)
#   bash scripts/gpu_check.sh --dry-run     # print the plan and exit (no GPU needed)
#   bash scripts/gpu_check.sh --only=tests,bench   # setup, the GPU check and these steps alone (a rerun)
#   bash scripts/gpu_check.sh --only=determinism   # (never by default) bisects why two fp32 runs in one process can
#                                           # differ (benchmarks/README.md): a table in determinism.txt (minutes)
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_STEPS=30 GPU_CHECK_LIMIT_SCALE=5 bash scripts/gpu_check.sh  # CPU rehearsal: CUDA tests
#                                           # and the GPU check left out, quick benchmarks (the script itself)
# Steps: CUDA-marked tests; quickstart trained on cuda (fp32, bf16) with an interrupted+resumed fp32 run that
# must end bit-identical to the uninterrupted one; eval (bpd); seeded sampling twice (must be identical);
# train-step and flow benchmarks on cuda; last, the train step with train.compile. Results (<= 8 files): $OUT if set, else benchmarks/results/gpu.
# A lent GPU is scarce, so a failing or overrunning step (each has a time limit) does not stop the others: every
# step runs, the summary names each failure, and the exit status is non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0 OFFLINE=0 ONLY= STEPS=${GPU_CHECK_STEPS:-240} DEVICE=${GPU_CHECK_DEVICE:-cuda}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --offline) OFFLINE=1 ;;
    --only=*) ONLY=${arg#--only=} ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option '$arg'; use --dry-run, --offline, --only=STEP,... or --help" >&2; exit 2 ;;
  esac
done
if ! [[ "$STEPS" =~ ^[0-9]+$ ]] || [ "$STEPS" -lt 30 ]; then
  echo "gpu_check: GPU_CHECK_STEPS must be a whole number >= 30, got '$STEPS'" >&2; exit 2
fi
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: GPU_CHECK_DEVICE must be cuda (default) or cpu (a rehearsal), got '$DEVICE'" >&2; exit 2 ;; esac
STEP_NAMES=(tests bench train eval sample resume compile determinism)  # setup and the GPU check always run
OPT_IN=" determinism "  # steps that run only where --only names them
for name in ${ONLY//,/ }; do
  [[ " ${STEP_NAMES[*]} " == *" $name "* ]] || {
    echo "gpu_check: --only: unknown step '$name'; choose from: ${STEP_NAMES[*]}" >&2; exit 2; }
done
want() { if [ -z "$ONLY" ]; then [[ "$OPT_IN" != *" $1 "* ]]; else [[ ",$ONLY," == *",$1,"* ]]; fi; }
SCALE=${GPU_CHECK_LIMIT_SCALE:-1}  # multiplies every step's time limit (the seconds below suit an H100/H200)
if ! [[ "$SCALE" =~ ^[1-9][0-9]*$ ]]; then
  echo "gpu_check: GPU_CHECK_LIMIT_SCALE must be a whole number >= 1, got '$SCALE'" >&2; exit 2
fi
RESULTS=${OUT:-benchmarks/results/gpu}
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/avade-gpu-check.XXXXXX")}
CUT=$((STEPS * 2 / 3))  # where the interrupted run stops (after the quickstart's 100 warm-up steps)
RECIPE=recipes/quickstart.toml
SET=(--device "$DEVICE" --set "train.steps=$STEPS" --set "train.checkpoint_every=$((STEPS / 3))"
     --set "train.sample_every=$STEPS")
QUICK=(); [ "$DEVICE" = cpu ] && QUICK=(--quick)
DET_LIMIT=$((150 * SCALE))  # each of the determinism step's pytest runs
export CUBLAS_WORKSPACE_CONFIG=:4096:8 PYTHONUNBUFFERED=1
# training through the CLI with deterministic kernels, so that runs can be compared bit for bit
DET='import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); torch.backends.cudnn.benchmark = False
from avade.cli import main; main(sys.argv[1:])'

PLAN=(
  "setup: $([ -n "${GPU_CHECK_PYTHON:-}" ] && echo "none: $GPU_CHECK_PYTHON as it is" && exit; [ $OFFLINE = 1 ] && echo "a venv seeing ${PYTHON:-python3}'s packages (torch), no index, wheels from ${WHEELS:-.whl}" || echo "bash scripts/setup.sh")"
  "check: torch sees a CUDA GPU; nvidia-smi and avade doctor into gpu_check.log"
  "tests: pytest -m cuda (tests/train/test_cuda_training.py: every shipped recipe, resume; tests/test_conformance.py: every registered module; tests/flows/test_cuda.py, tests/models/test_entry_devices.py, ...); none may skip"
  "bench: python -m benchmarks --device $DEVICE ${QUICK[*]} --only train,flows,scaling (fp32; flows: eager Glow and Real-NVP in one process), then --only train --precision bf16 (and with train.bf16_coupling_nets=true)"
  "train: $RECIPE on $DEVICE, $STEPS steps, fp32 and bf16; fp32 again for $CUT steps, then --resume to $STEPS; fp32 once more (determinism reference)"
  "eval: avade eval --device $DEVICE (bpd) of the fp32 and bf16 runs; finite"
  "sample: avade sample --device $DEVICE --seed 3, twice to .npz (must be identical) and a PNG grid"
  "resume: (with the eval and sample checks) the resumed run's step-$STEPS weights and optimizer state must equal the uninterrupted run's, bit for bit"
  "compile: python -m benchmarks --device $DEVICE ${QUICK[*]} --only train --set train.compile=true (does compiling the networks cut the step's fixed per-step cost?)"
  "determinism: (only with --only=determinism) tests/train/test_cuda_training.py's fp32 resume test, each variant in a fresh pytest process under ${DET_LIMIT} s: alone; after tests/test_conformance.py; after every CUDA test a full pytest -m cuda runs before it; then, on the first of these two that fails: TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT=1000000, TORCH_CUDNN_V8_API_DISABLED=1 (cuDNN's v7 API), AVADE_TEST_EMPTY_CACHE=1 (allocator emptied before each run), TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT=-1 (no plan cache); a table (pass/fail, first differing step, keys, conv or linear) in $RESULTS/determinism.txt"
  "results: $RESULTS (gpu_check.log, pytest_cuda.xml, smoke.json, samples.png, bench_fp32.json, bench_bf16.json, bench_bf16_nets.json, bench_compile.json$(want determinism && echo ", determinism.txt" || :)); runs in $WORK"
)
if [ $DRY = 1 ]; then
  echo "gpu_check plan (dry run: nothing executed):"
  i=0
  for line in "${PLAN[@]}"; do
    case "${line%%:*}" in
      setup|check|results) ;;
      *) want "${line%%:*}" || {  # (a step run only on demand is listed, unnumbered, in the whole plan)
           [ -z "$ONLY" ] && [[ "$OPT_IN" == *" ${line%%:*} "* ]] && echo "  -. $line"; continue; } ;;
    esac
    i=$((i + 1)); echo "  $i. $line"
  done
  [ -z "${GPU_CHECK_WORK:-}" ] && rmdir "$WORK"
  exit 0
fi

mkdir -p "$RESULTS" "$WORK"  # (a GPU_CHECK_WORK given may not exist yet)
exec > >(tee "$RESULTS/gpu_check.log") 2>&1
START=$SECONDS
FAILED=()
# step NAME FUNCTION LIMIT_S: runs FUNCTION (with set -e) under a time limit; a failure or an overrun is
# recorded, and the caller decides whether the next step runs.
step() {
  local name=$1 fn=$2 limit=$(( $3 * SCALE )) began=$SECONDS rc
  echo; echo "== [$((SECONDS - START)) s] $name (limit ${limit} s)"
  setsid bash -c 'set -euo pipefail; '"$(declare -f "$fn")"'; '"$fn" &
  local pid=$!
  # (its sleep ended with it, and holding no copy of the log's pipe: a caller reading this script's output would
  # otherwise wait for every step's whole limit after the script ended)
  ( trap 'kill "$nap" 2>/dev/null; exit 0' TERM; sleep "$limit" >/dev/null 2>&1 & nap=$!; wait "$nap"
    echo "gpu_check: step '$name' ran past its ${limit} s limit; stopped"
    kill -TERM -- "-$pid"; sleep 5; kill -KILL -- "-$pid" ) 2>/dev/null &
  local watchdog=$!
  wait "$pid" && rc=0 || rc=$?
  kill "$watchdog" 2>/dev/null || true; wait "$watchdog" 2>/dev/null || true
  if [ "$rc" = 0 ]; then echo "-- $name: ok in $((SECONDS - began)) s"; return 0; fi
  echo "-- $name: FAILED (exit $rc) after $((SECONDS - began)) s"; FAILED+=("$name"); return 1
}

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then PY=$GPU_CHECK_PYTHON  # an interpreter with avade installed: as it is
elif [ $OFFLINE = 1 ]; then PY=.venv-gpu/bin/python
else PY=.venv/bin/python; fi
export PY DEVICE RESULTS WORK STEPS CUT RECIPE DET OFFLINE DET_LIMIT
export PYTHON=${PYTHON:-python3} WHEELS=${WHEELS:-.whl} SETS="${SET[*]}" QUICKS="${QUICK[*]}"

do_setup() {
  if [ -n "${GPU_CHECK_PYTHON:-}" ]; then :
  elif [ "$OFFLINE" = 1 ]; then
    "$PYTHON" -m venv .venv-gpu
    # $PYTHON's packages (torch) seen from the venv by a .pth file: --system-site-packages alone would skip
    # them where $PYTHON is itself a venv's interpreter (as on the lent H200), seeing only its base's.
    "$PYTHON" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
      > "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_gpu_check_python.pth"
    if [ -d "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
      "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . -e plugins/avade-nice
  else
    bash scripts/setup.sh
  fi
  "$PY" -P -c "import avade, torch; print(f'avade {avade.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda})')"
}

do_check() {
  "$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('cuda available:', ok); sys.exit(0 if ok else 1)" \
    || { echo "gpu_check: torch sees no CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine" >&2; exit 1; }
  nvidia-smi || true
  "$PY" -m avade doctor || true
}

do_tests() {
  "$PY" -m pytest -q -p no:cacheprovider -m cuda -rs --junitxml "$RESULTS/pytest_cuda.xml" tests plugins
  "$PY" - "$RESULTS/pytest_cuda.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
from pathlib import Path
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
def module(case):  # "tests.train.test_x[.TestClass]" (a module skipped at collection: its name) -> its file
    parts = (case.get("classname") or case.get("name", "")).split(".")
    for k in range(len(parts), 0, -1):
        if (path := Path(*parts[:k]).with_suffix(".py")).is_file():
            return path
skips = [case for case in suite.iter("testcase") if case.find("skipped") is not None]
# A module skipped while it is collected (a missing optional package) shows up whatever -m selects: only
# the skips of CUDA-marked modules count.
cuda_skips = [c for c in skips if (m := module(c)) is None or "pytest.mark.cuda" in m.read_text()]
n = int(suite.get("tests")) - (len(skips) - len(cuda_skips))
print(f"cuda tests: {n} run, {len(cuda_skips)} skipped ({len(skips) - len(cuda_skips)} modules of other tests skipped)")
if n == 0 or cuda_skips:
    sys.exit(f"gpu_check: {len(cuda_skips)} of {n} CUDA tests were skipped on a GPU machine; each must run here")
EOF
}

do_bench() {
  # Flows eager, both libraries in one process: on a GPU the peak memory is per device, not per process heap.
  local flows=(--cases glow,realnvp --timing same-process) quick=()
  [ -n "$QUICKS" ] && quick=("$QUICKS")
  "$PY" -m benchmarks --device "$DEVICE" "${quick[@]}" --only train,flows,scaling "${flows[@]}" --out "$RESULTS/bench_fp32.json"
  "$PY" -m benchmarks --device "$DEVICE" "${quick[@]}" --only train --precision bf16 --out "$RESULTS/bench_bf16.json"
  "$PY" -m benchmarks --device "$DEVICE" "${quick[@]}" --only train --precision bf16 \
    --set train.bf16_coupling_nets=true --out "$RESULTS/bench_bf16_nets.json"
}

do_compile() {
  # Last: the slowest step (compiling every network) and the least essential one when a lease runs short.
  local quick=(); [ -n "$QUICKS" ] && quick=("$QUICKS")
  "$PY" -m benchmarks --device "$DEVICE" "${quick[@]}" --only train --set train.compile=true --out "$RESULTS/bench_compile.json"
}

do_train() {
  local set; read -r -a set <<<"$SETS"
  "$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/fp32" "${set[@]}" --set train.precision=fp32
  "$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/resumed" "${set[@]}" --set train.precision=fp32 --set "train.steps=$CUT"
  "$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/resumed" "${set[@]}" --set train.precision=fp32 --resume
  "$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/repeat" "${set[@]}" --set train.precision=fp32
  "$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/bf16" "${set[@]}" --set train.precision=bf16
}

do_eval() {
  "$PY" -m avade eval "$WORK/fp32" --device "$DEVICE" --json > "$WORK/eval_fp32.json"
  "$PY" -m avade eval "$WORK/bf16" --device "$DEVICE" --json > "$WORK/eval_bf16.json"
}

do_sample() {
  "$PY" -m avade sample "$WORK/fp32" --device "$DEVICE" --seed 3 -n 64 -o "$WORK/a.npz"
  "$PY" -m avade sample "$WORK/fp32" --device "$DEVICE" --seed 3 -n 64 -o "$WORK/b.npz"
  "$PY" -m avade sample "$WORK/fp32" --device "$DEVICE" --seed 3 -n 64 -o "$RESULTS/samples.png"
}

do_resume() {
  "$PY" - "$WORK" "$STEPS" "$RESULTS/smoke.json" <<'EOF'
import json, math, sys
from pathlib import Path
import numpy as np, torch
from avade.train.checkpoint import read_checkpoint
work, steps, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
def load(path, read):  # what a failed earlier step left out is reported, not a traceback
    try:
        return read(path)
    except Exception as error:  # noqa: BLE001
        return {"missing": f"{path}: {type(error).__name__}: {error}"[:300]}
ck = {n: load(work / n / "checkpoints" / f"step_{steps:08d}", read_checkpoint) for n in ("fp32", "resumed", "repeat")}
def differ(a, b):
    if "missing" in ck[a] or "missing" in ck[b]:
        return ["(checkpoint missing)"]
    return [f"{p}/{k}" for p in ("model", "optimizer") for k in ck[a][p] if not torch.equal(ck[a][p][k], ck[b][p][k])]
resume, repeat = differ("fp32", "resumed"), differ("fp32", "repeat")
read_json = lambda path: json.loads(path.read_text())
evals = {p: load(work / f"eval_{p}.json", read_json) for p in ("fp32", "bf16")}
summaries = {p: load(work / p / "summary.json", read_json) for p in ("fp32", "bf16", "resumed")}
a, b = (load(work / n, lambda path: np.load(path)["arr_0"]) for n in ("a.npz", "b.npz"))
same = isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and bool(np.array_equal(a, b))
report = {"steps": steps, "resume_differs_in": resume, "repeat_differs_in": repeat, "eval": evals,
          "summaries": summaries, "samples_identical": same, "samples_shape": list(getattr(a, "shape", []))}
out.write_text(json.dumps(report, indent=1, default=str))
print(json.dumps({k: v for k, v in report.items() if k != "summaries"}, default=str)[:2000])
problems = []
if resume == ["(checkpoint missing)"]:
    problems.append(f"the step-{steps} checkpoints of the fp32, resumed and repeat runs are not all there (see the train step)")
elif resume:
    why = "a nondeterministic kernel (two uninterrupted runs differ too)" if repeat else "the resume lost state"
    problems.append(f"the resumed run differs from the uninterrupted one in {resume[:4]}: {why}")
if not same:
    problems.append("two samplings with --seed 3 differ (or are missing)")
for p, s in summaries.items():
    if not (isinstance(s.get("bpd"), (int, float)) and math.isfinite(s["bpd"])):
        problems.append(f"the {p} run's summary bpd is not finite: {s.get('bpd', s.get('missing'))!r}")
for p, e in evals.items():
    if not (isinstance(e.get("bpd"), (int, float)) and math.isfinite(e["bpd"])):
        problems.append(f"avade eval of the {p} run gave bpd {e.get('bpd', e.get('missing'))!r}, not a finite number")
if problems:
    sys.exit("gpu_check: " + "; ".join(problems))
print("resume bit-identical, samples repeat, bpd finite")
EOF
}

do_determinism() {
  # Bisects benchmarks/README.md's finding "two runs in one process can differ on CUDA": the fp32 resume test
  # (whose failure message names the first step where two uninterrupted runs part, the tensors that differ and
  # whether their layers are convolutions or dense layers: cuDNN or cuBLAS), each variant in a fresh pytest
  # process under DET_LIMIT seconds; the table in determinism.txt is rewritten after every run (a lease that
  # ends early keeps what ran). Variants: alone; after tests/test_conformance.py's CUDA tests; after every CUDA
  # test that a full `pytest -m cuda` runs before it, in that run's process (the failing configuration: the
  # test passed after the conformance tests alone); then, on the first of these two that fails (on the CPU, a
  # rehearsal where every run skips: on the conformance one):
  #   lru-large      TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT=1000000: H1, the v8 plan cache (an LRU of 10000 plans
  #                  by default, per thread, keyed on the convolution's parameters and its pointers' alignment)
  #                  evicting plans
  #   v7             TORCH_CUDNN_V8_API_DISABLED=1: H2, the v8 API path (the convolutions take the v7 API;
  #                  TORCH_CUDNN_V8_API_DEBUG=1 warns "V8 ON: 0" in that run's log to confirm)
  #   empty-cache    AVADE_TEST_EMPTY_CACHE=1: H3, the caching allocator's state (the test empties it before
  #                  each of its runs)
  #   no-plan-cache  TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT=-1: every convolution planned anew (0 is unlimited)
  # H4 (cuBLAS: the critic's Linear head) reads from the failing runs' "layers" column.
  # These variables are read by torch 2.11 to 2.14 (aten/src/ATen/native/ConvUtils.h cudnnv8_enabled_check_debug
  # and cudnn/Conv_v8.cpp getLRUCacheLimit, each read once per process; their names are in 2.14.1's
  # libtorch_cuda.so): a torch without one runs that variant as the baseline again, which shows as no change.
  local fp32='tests/train/test_cuda_training.py::test_a_resumed_run_on_cuda_is_bit_identical[fp32]'
  local pytest=("$PY" -m pytest -q -p no:cacheprovider -p no:randomly -rfEs) base="" after=() node
  cat > "$WORK/det_summary.py" <<'EOF'
"""The determinism step's table: each variant's run of the fp32 resume test, from its JUnit XML."""
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

work, out, device, limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
TEST = "test_a_resumed_run_on_cuda_is_bit_identical[fp32]"
PARTED = re.compile(r"first at step (\w+) in \[(.*?)\]; layers: ([\w+?]+)")


def result(name: str, rc: str) -> tuple[str, str, str, str]:
    """(result, first differing step, layers, differing keys) of one variant's run."""
    if not rc.isdigit():  # a variant not run: why
        return rc, "", "", ""
    if rc in ("124", "137"):
        return f"error: ran past its {limit} s limit", "", "", ""
    try:
        root = ET.parse(work / f"det_{name}.xml").getroot()
    except (OSError, ET.ParseError):
        return f"error: no JUnit report (pytest exit {rc}; see det_{name}.log)", "", "", ""
    cases = list(root.iter("testcase"))
    others = sum(1 for c in cases if c.get("name") != TEST and c.find("failure") is not None)
    note = f" (+{others} other failed)" if others else ""
    case = next((c for c in cases if c.get("name") == TEST), None)
    if case is None:
        return f"error: the fp32 test did not run (pytest exit {rc}){note}", "", "", ""
    if (skip := case.find("skipped")) is not None:
        why = skip.get("message", "")
        return ("skipped: no GPU" if "CUDA GPU" in why else f"skipped: {why[:80]}"), "", "", ""
    for tag in ("failure", "error"):
        if (bad := case.find(tag)) is not None:
            message = " ".join((bad.get("message") or bad.text or "").split())
            if tag == "failure" and (m := PARTED.search(message)):
                return "FAIL" + note, m.group(1), m.group(3), m.group(2)
            if "the resume lost state" in message:
                return "FAIL: the resume lost state (two uninterrupted runs identical)" + note, "", "", ""
            return f"{'FAIL' if tag == 'failure' else 'error'}: {message[:160]}{note}", "", "", ""
    return "pass" + note, "", "", ""


runs = [line.split("\t") for line in (work / "det_runs.txt").read_text().splitlines() if line.strip()]
rows = [(name, envs or "-", *result(name, rc)) for name, envs, rc in runs]
v7 = work / "det_v7.log"
confirm = ""
if v7.is_file() and not any(n == "v7" and r.startswith("skipped") for n, _, r, *_ in rows):
    text = v7.read_text(errors="replace")
    confirm = ("v7: the v8 API was off (V8 ON: 0)" if "V8 ON: 0" in text else
               "v7: TORCH_CUDNN_V8_API_DEBUG said the v8 API stayed on" if "V8 ON: 1" in text else
               "v7: no TORCH_CUDNN_V8_API_DEBUG warning in its log (torch no longer reads it, or no convolution ran)")
versions = work / "det_versions.txt"
versions = (versions.read_text().strip() if versions.is_file() else "") or "torch ?"
head = [f"determinism ({device}; {versions}): the fp32 resume test per variant, each in a fresh pytest process",
        f"{'variant':<13} | {'result':<15} | step | {'layers':<11} | environment | differing tensors at that step"]
lines = [f"{n:<13} | {r:<15} | {s:<4} | {k:<11} | {e} | {keys}" for n, e, r, s, k, keys in rows]
tail = [confirm] if confirm else []
tail.append("reading: alone passes and conformance or full-prefix fails = reproduced; a variant that then passes "
            "names its cause (lru-large, no-plan-cache: H1 plan cache; v7: H2 v8 API; empty-cache: H3 allocator); "
            "layers linear = H4 cuBLAS")
out.write_text("\n".join(head + lines + tail) + "\n")
for name, _, r, *_ in rows:  # (for the shell: which variants failed)
    (work / f"det_{name}.result").write_text(r + "\n")
if "--final" in sys.argv:
    print("\n".join(head + lines + tail))
    broken = [n for n, _, r, *_ in rows if r.startswith("error") or (device == "cuda" and r.startswith("skipped"))]
    if broken:
        sys.exit(f"gpu_check: determinism: variant(s) {', '.join(broken)} did not run the fp32 test to a result; "
                 f"see {out}")
EOF
  "$PY" -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')" \
    > "$WORK/det_versions.txt" 2>/dev/null || echo "torch ?" > "$WORK/det_versions.txt"
  : > "$WORK/det_runs.txt"
  det_run() {  # det_run NAME "VAR=VALUE ..." PYTEST-ARGS...: one variant in a fresh process, then the table anew
    local name=$1 envs=$2 rc; shift 2
    echo "--- determinism: $name${envs:+ ($envs)}"
    # shellcheck disable=SC2086  # (envs: words on purpose)
    env $envs timeout -k 10 "$DET_LIMIT" "${pytest[@]}" --junitxml "$WORK/det_$name.xml" "$@" > "$WORK/det_$name.log" 2>&1 \
      && rc=0 || rc=$?
    tail -n 25 "$WORK/det_$name.log"
    printf '%s\t%s\t%s\n' "$name" "$envs" "$rc" >> "$WORK/det_runs.txt"
    "$PY" "$WORK/det_summary.py" "$WORK" "$RESULTS/determinism.txt" "$DEVICE" "$DET_LIMIT" || true
  }
  failed() { grep -q '^FAIL' "$WORK/det_$1.result" 2>/dev/null; }
  det_run alone "" "$fp32"
  det_run conformance "" -m cuda tests/test_conformance.py "$fp32"
  # the full run's own process (every test module imported), less the CUDA tests after the fp32 test
  timeout -k 10 "$DET_LIMIT" "${pytest[@]}" -m cuda --collect-only tests plugins > "$WORK/det_collect.txt" 2>&1 || true
  if grep -qxF "$fp32" "$WORK/det_collect.txt"; then
    while IFS= read -r node; do after+=(--deselect "$node"); done \
      < <(awk -v t="$fp32" 'found && index($0, "::") {print} $0 == t {found = 1}' "$WORK/det_collect.txt")
    det_run full-prefix "" -m cuda "${after[@]}" tests plugins
  else
    printf 'full-prefix\t\tnot run: a full run does not collect the fp32 test (det_collect.txt)\n' >> "$WORK/det_runs.txt"
  fi
  if [ "$DEVICE" = cpu ]; then base=conformance
  elif failed conformance; then base=conformance
  elif failed full-prefix; then base=full-prefix; fi
  if [ -z "$base" ]; then
    printf 'variants\t\tnot run: neither conformance nor full-prefix reproduced the failure\n' >> "$WORK/det_runs.txt"
  else
    local args=(-m cuda tests/test_conformance.py "$fp32")
    [ "$base" = full-prefix ] && args=(-m cuda "${after[@]}" tests plugins)
    echo "--- determinism: the variants below run as $base does"
    det_run lru-large "TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT=1000000" "${args[@]}"
    det_run v7 "TORCH_CUDNN_V8_API_DISABLED=1 TORCH_CUDNN_V8_API_DEBUG=1" "${args[@]}"
    det_run empty-cache "AVADE_TEST_EMPTY_CACHE=1" "${args[@]}"
    det_run no-plan-cache "TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT=-1" "${args[@]}"
  fi
  echo
  "$PY" "$WORK/det_summary.py" "$WORK" "$RESULTS/determinism.txt" "$DEVICE" "$DET_LIMIT" --final
}

# Time limits in seconds (times GPU_CHECK_LIMIT_SCALE). Without setup or a GPU nothing else can run.
step setup do_setup 240 || { echo "gpu_check: FAILED in step \"setup\"; nothing else can run" >&2; exit 1; }
if [ "$DEVICE" = cpu ]; then
  echo "gpu_check: GPU_CHECK_DEVICE=cpu: a rehearsal of this script; the CUDA tests and checks are left out"
else
  step check do_check 60 || { echo "gpu_check: FAILED in step \"check\"; nothing else can run" >&2; exit 1; }
  want tests && { step tests do_tests 240 || true; }
fi
want bench && { step bench do_bench 260 || true; }
want train && { step train do_train 300 || true; }
want eval && { step eval do_eval 60 || true; }
want sample && { step sample do_sample 60 || true; }
want resume && { step resume do_resume 60 || true; }
want compile && { step compile do_compile 300 || true; }
want determinism && { step determinism do_determinism 1200 || true; }  # (only on demand: --only=determinism)

echo
if [ ${#FAILED[@]} = 0 ]; then
  echo "gpu_check: all steps passed in $((SECONDS - START)) s; results in $RESULTS"
else
  echo "gpu_check: FAILED in step(s): ${FAILED[*]} after $((SECONDS - START)) s; see $RESULTS/gpu_check.log" >&2
  exit 1
fi
