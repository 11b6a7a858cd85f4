#!/usr/bin/env bash
# One-command check of avade's CUDA paths on a machine with one NVIDIA GPU (~4 min on an H200, setup included):
#   bash scripts/gpu_check.sh               # set up .venv (scripts/setup.sh, needs a package index), then check
#   bash scripts/gpu_check.sh --offline     # no package index: a venv seeing $PYTHON's packages (python3: torch),
#                                           # avade installed from this tree, missing wheels from $WHEELS (.whl/:
#                                           # scripts/gpu_wheels.sh fetches them where an index is reachable)
#   bash scripts/gpu_check.sh --dry-run     # print the plan and exit (no GPU needed)
#   bash scripts/gpu_check.sh --only=tests,bench   # setup, the GPU check and these steps alone (a rerun)
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
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option '$arg'; use --dry-run, --offline, --only=STEP,... or --help" >&2; exit 2 ;;
  esac
done
if ! [[ "$STEPS" =~ ^[0-9]+$ ]] || [ "$STEPS" -lt 30 ]; then
  echo "gpu_check: GPU_CHECK_STEPS must be a whole number >= 30, got '$STEPS'" >&2; exit 2
fi
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: GPU_CHECK_DEVICE must be cuda (default) or cpu (a rehearsal), got '$DEVICE'" >&2; exit 2 ;; esac
STEP_NAMES=(tests bench train eval sample resume compile)  # setup and the GPU check always run
for name in ${ONLY//,/ }; do
  [[ " ${STEP_NAMES[*]} " == *" $name "* ]] || {
    echo "gpu_check: --only: unknown step '$name'; choose from: ${STEP_NAMES[*]}" >&2; exit 2; }
done
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
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
export CUBLAS_WORKSPACE_CONFIG=:4096:8 PYTHONUNBUFFERED=1
# training through the CLI with deterministic kernels, so that runs can be compared bit for bit
DET='import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); torch.backends.cudnn.benchmark = False
from avade.cli import main; main(sys.argv[1:])'

PLAN=(
  "setup: $([ -n "${GPU_CHECK_PYTHON:-}" ] && echo "none: $GPU_CHECK_PYTHON as it is" && exit; [ $OFFLINE = 1 ] && echo "a venv seeing ${PYTHON:-python3}'s packages (torch), no index, wheels from ${WHEELS:-.whl}" || echo "bash scripts/setup.sh")"
  "check: torch sees a CUDA GPU; nvidia-smi and avade doctor into gpu_check.log"
  "tests: pytest -m cuda (tests/train/test_cuda_training.py: every shipped recipe, resume; tests/test_conformance.py: every registered module; tests/flows/test_cuda.py, tests/models/test_entry_devices.py, ...); none may skip"
  "bench: python -m benchmarks --device $DEVICE ${QUICK[*]} --only train,flows,scaling (fp32; flows: eager Glow and Real-NVP in one process), then --only train --precision bf16"
  "train: $RECIPE on $DEVICE, $STEPS steps, fp32 and bf16; fp32 again for $CUT steps, then --resume to $STEPS; fp32 once more (determinism reference)"
  "eval: avade eval --device $DEVICE (bpd) of the fp32 and bf16 runs; finite"
  "sample: avade sample --device $DEVICE --seed 3, twice to .npz (must be identical) and a PNG grid"
  "resume: (with the eval and sample checks) the resumed run's step-$STEPS weights and optimizer state must equal the uninterrupted run's, bit for bit"
  "compile: python -m benchmarks --device $DEVICE ${QUICK[*]} --only train --set train.compile=true (does compiling the networks cut the step's fixed per-step cost?)"
  "results: $RESULTS (gpu_check.log, pytest_cuda.xml, smoke.json, samples.png, bench_fp32.json, bench_bf16.json, bench_compile.json); runs in $WORK"
)
if [ $DRY = 1 ]; then
  echo "gpu_check plan (dry run: nothing executed):"
  i=0
  for line in "${PLAN[@]}"; do
    case "${line%%:*}" in setup|check|results) ;; *) want "${line%%:*}" || continue ;; esac
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
export PY DEVICE RESULTS WORK STEPS CUT RECIPE DET OFFLINE
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

# Time limits in seconds (times GPU_CHECK_LIMIT_SCALE). Without setup or a GPU nothing else can run.
step setup do_setup 240 || { echo "gpu_check: FAILED in step \"setup\"; nothing else can run" >&2; exit 1; }
if [ "$DEVICE" = cpu ]; then
  echo "gpu_check: GPU_CHECK_DEVICE=cpu: a rehearsal of this script; the CUDA tests and checks are left out"
else
  step check do_check 60 || { echo "gpu_check: FAILED in step \"check\"; nothing else can run" >&2; exit 1; }
  want tests && { step tests do_tests 240 || true; }
fi
want bench && { step bench do_bench 200 || true; }
want train && { step train do_train 300 || true; }
want eval && { step eval do_eval 60 || true; }
want sample && { step sample do_sample 60 || true; }
want resume && { step resume do_resume 60 || true; }
want compile && { step compile do_compile 300 || true; }

echo
if [ ${#FAILED[@]} = 0 ]; then
  echo "gpu_check: all steps passed in $((SECONDS - START)) s; results in $RESULTS"
else
  echo "gpu_check: FAILED in step(s): ${FAILED[*]} after $((SECONDS - START)) s; see $RESULTS/gpu_check.log" >&2
  exit 1
fi
