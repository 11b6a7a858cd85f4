#!/usr/bin/env bash
# Create .venv (if needed) and install avade with its dev extras and the example plugin.
# Idempotent: re-running only installs what changed. Works offline from a local wheel cache as well.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
# pip's output minus the noisy "is ignored" lines; a failing install still fails the script (pipefail:
# only grep's "no line left" status is forgiven, never pip's).
pip_install() { "$VPY" -m pip install -q "$@" 2>&1 | { grep -v "is ignored" || true; }; }
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch/torchvision are pinned to the newest releases these machines carry (see README).
pip_install "torch==2.14.1" "torchvision==0.29.1"
pip_install -e ".[dev]" -e plugins/avade-nice
"$VPY" -c "import avade, torch; print(f'avade {avade.__version__} ready (torch {torch.__version__})')"
