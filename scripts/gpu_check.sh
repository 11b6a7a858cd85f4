#!/usr/bin/env bash
# One-command check of avade's CUDA paths on a machine with one NVIDIA GPU (~5-8 min on an H100/H200):
#   bash scripts/gpu_check.sh               # set up .venv (scripts/setup.sh, needs a package index), then check
#   bash scripts/gpu_check.sh --offline     # no package index: a venv over $PYTHON's torch (default python3),
#                                           # avade installed from this tree, missing wheels from $WHEELS (.whl/)
#   bash scripts/gpu_check.sh --dry-run     # print the plan and exit (no GPU needed)
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_STEPS=30 bash scripts/gpu_check.sh   # rehearsal on a CPU: CUDA tests
#                                           # and the GPU check left out, quick benchmarks (the script itself)
# Steps: CUDA-marked tests; quickstart trained on cuda (fp32, bf16) with an interrupted+resumed fp32 run that
# must end bit-identical to the uninterrupted one; eval (bpd); seeded sampling twice (must be identical);
# train-step and flow benchmarks on cuda. Results (<= 8 files): $OUT if set, else benchmarks/results/gpu.
# Any failure stops it with a non-zero exit status and names the step.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0 OFFLINE=0 STEPS=${GPU_CHECK_STEPS:-300} DEVICE=${GPU_CHECK_DEVICE:-cuda}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --offline) OFFLINE=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option '$arg'; use --dry-run, --offline or --help" >&2; exit 2 ;;
  esac
done
if ! [[ "$STEPS" =~ ^[0-9]+$ ]] || [ "$STEPS" -lt 30 ]; then
  echo "gpu_check: GPU_CHECK_STEPS must be a whole number >= 30, got '$STEPS'" >&2; exit 2
fi
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: GPU_CHECK_DEVICE must be cuda (default) or cpu (a rehearsal), got '$DEVICE'" >&2; exit 2 ;; esac
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
  "setup: $([ -n "${GPU_CHECK_PYTHON:-}" ] && echo "none: $GPU_CHECK_PYTHON as it is" && exit; [ $OFFLINE = 1 ] && echo "venv over ${PYTHON:-python3}'s torch, no index, wheels from ${WHEELS:-.whl}" || echo "bash scripts/setup.sh")"
  "check: torch sees a CUDA GPU; nvidia-smi and avade doctor into gpu_check.log"
  "tests: pytest -m cuda (tests/flows/test_cuda.py, tests/models/test_entry_devices.py, tests/train/test_cuda_training.py); none may skip"
  "train: $RECIPE on $DEVICE, $STEPS steps, fp32 and bf16; fp32 again for $CUT steps, then --resume to $STEPS; fp32 once more (determinism reference)"
  "resume: the resumed run's step-$STEPS weights and optimizer state must equal the uninterrupted run's, bit for bit"
  "eval: avade eval --device $DEVICE (bpd) of the fp32 and bf16 runs; finite"
  "sample: avade sample --device $DEVICE --seed 3, twice to .npz (must be identical) and a PNG grid"
  "bench: python -m benchmarks --device $DEVICE ${QUICK[*]} --only train,flows (fp32), then --only train --precision bf16"
  "results: $RESULTS (gpu_check.log, pytest_cuda.xml, smoke.json, samples.png, bench_fp32.json, bench_bf16.json); runs in $WORK"
)
if [ $DRY = 1 ]; then
  echo "gpu_check plan (dry run: nothing executed):"
  for i in "${!PLAN[@]}"; do echo "  $((i + 1)). ${PLAN[$i]}"; done
  [ -z "${GPU_CHECK_WORK:-}" ] && rmdir "$WORK"
  exit 0
fi

mkdir -p "$RESULTS"
exec > >(tee "$RESULTS/gpu_check.log") 2>&1
START=$SECONDS
CURRENT=setup
trap 'echo "gpu_check: FAILED in step \"$CURRENT\" after $((SECONDS - START)) s (exit $?); see $RESULTS/gpu_check.log" >&2' ERR
step() { CURRENT=$1; echo; echo "== [$((SECONDS - START)) s] $1"; }

step setup
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then  # an interpreter with avade installed already: used as it is
  PY=$GPU_CHECK_PYTHON
elif [ $OFFLINE = 1 ]; then
  "${PYTHON:-python3}" -m venv --system-site-packages .venv-gpu
  PY=.venv-gpu/bin/python
  WHEELS=${WHEELS:-.whl}
  if [ -d "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . -e plugins/avade-nice
else
  bash scripts/setup.sh
  PY=.venv/bin/python
fi
"$PY" -P -c "import avade, torch; print(f'avade {avade.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda})')"
AVADE=("$PY" -m avade)

if [ "$DEVICE" = cpu ]; then
  echo "gpu_check: GPU_CHECK_DEVICE=cpu: a rehearsal of this script; the CUDA tests and checks are left out"
else
step check
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('cuda available:', ok); sys.exit(0 if ok else 1)" \
  || { echo "gpu_check: torch sees no CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine" >&2; exit 1; }
nvidia-smi || true
"${AVADE[@]}" doctor || true

step tests
"$PY" -m pytest -q -p no:cacheprovider -m cuda -rs --junitxml "$RESULTS/pytest_cuda.xml" tests plugins
"$PY" - "$RESULTS/pytest_cuda.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
n, skipped = int(suite.get("tests")), int(suite.get("skipped"))
print(f"cuda tests: {n} run, {skipped} skipped")
if n == 0 or skipped:
    sys.exit(f"gpu_check: {skipped} of {n} CUDA tests were skipped on a GPU machine; each must run here")
EOF
fi

step train
"$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/fp32" "${SET[@]}" --set train.precision=fp32
"$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/bf16" "${SET[@]}" --set train.precision=bf16
"$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/resumed" "${SET[@]}" --set train.precision=fp32 --set "train.steps=$CUT"
"$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/resumed" "${SET[@]}" --set train.precision=fp32 --resume
"$PY" -c "$DET" recipe run "$RECIPE" --out "$WORK/repeat" "${SET[@]}" --set train.precision=fp32

step eval
"${AVADE[@]}" eval "$WORK/fp32" --device "$DEVICE" --json > "$WORK/eval_fp32.json"
"${AVADE[@]}" eval "$WORK/bf16" --device "$DEVICE" --json > "$WORK/eval_bf16.json"

step sample
"${AVADE[@]}" sample "$WORK/fp32" --device "$DEVICE" --seed 3 -n 64 -o "$WORK/a.npz"
"${AVADE[@]}" sample "$WORK/fp32" --device "$DEVICE" --seed 3 -n 64 -o "$WORK/b.npz"
"${AVADE[@]}" sample "$WORK/fp32" --device "$DEVICE" --seed 3 -n 64 -o "$RESULTS/samples.png"

step resume
"$PY" - "$WORK" "$STEPS" "$RESULTS/smoke.json" <<'EOF'
import json, math, sys
from pathlib import Path
import numpy as np, torch
from avade.train.checkpoint import read_checkpoint
work, steps, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
ck = {n: read_checkpoint(work / n / "checkpoints" / f"step_{steps:08d}") for n in ("fp32", "resumed", "repeat")}
def differ(a, b):
    return [f"{p}/{k}" for p in ("model", "optimizer") for k in ck[a][p] if not torch.equal(ck[a][p][k], ck[b][p][k])]
resume, repeat = differ("fp32", "resumed"), differ("fp32", "repeat")
evals = {p: json.loads((work / f"eval_{p}.json").read_text()) for p in ("fp32", "bf16")}
summaries = {p: json.loads((work / p / "summary.json").read_text()) for p in ("fp32", "bf16", "resumed")}
a, b = np.load(work / "a.npz")["arr_0"], np.load(work / "b.npz")["arr_0"]
report = {"steps": steps, "resume_differs_in": resume, "repeat_differs_in": repeat, "eval": evals,
          "summaries": summaries, "samples_identical": bool(np.array_equal(a, b)), "samples_shape": list(a.shape)}
out.write_text(json.dumps(report, indent=1, default=str))
print(json.dumps({k: v for k, v in report.items() if k != "summaries"}, default=str)[:2000])
problems = []
if resume:
    why = "a nondeterministic kernel (two uninterrupted runs differ too)" if repeat else "the resume lost state"
    problems.append(f"the resumed run differs from the uninterrupted one in {resume[:4]}: {why}")
if not report["samples_identical"]:
    problems.append("two samplings with --seed 3 differ on cuda")
for p, s in summaries.items():
    if not (isinstance(s.get("bpd"), (int, float)) and math.isfinite(s["bpd"])):
        problems.append(f"the {p} run's summary bpd is not finite: {s.get('bpd')!r}")
for p, e in evals.items():
    if not (isinstance(e.get("bpd"), (int, float)) and math.isfinite(e["bpd"])):
        problems.append(f"avade eval of the {p} run gave bpd {e.get('bpd')!r}, not a finite number")
if problems:
    sys.exit("gpu_check: " + "; ".join(problems))
print("resume bit-identical, samples repeat, bpd finite")
EOF

step bench
"$PY" -m benchmarks --device "$DEVICE" "${QUICK[@]}" --only train,flows --out "$RESULTS/bench_fp32.json"
"$PY" -m benchmarks --device "$DEVICE" "${QUICK[@]}" --only train --precision bf16 --out "$RESULTS/bench_bf16.json"

CURRENT=done
echo
echo "gpu_check: all steps passed in $((SECONDS - START)) s; results in $RESULTS"
