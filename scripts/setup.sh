#!/usr/bin/env bash
# Create .venv (if needed) and install avade with its dev extras and the example plugin.
# Idempotent: re-running only installs what changed. Works offline from a local wheel cache as well.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
# (Re)create .venv when there is none, when its interpreter no longer runs (the Python it was made from
# was removed or upgraded: `venv` without --clear would keep the dead links), or when $PYTHON asks for
# another Python version than the one it holds.
if ! VENV_VERSION=$(version .venv/bin/python) \
   || { [ -n "${PYTHON:-}" ] && [ "$(version "$PY")" != "$VENV_VERSION" ]; }; then
  "$PY" -m venv --clear .venv
fi
VPY=.venv/bin/python
# pip's output minus the noisy "is ignored" lines; a failing install still fails the script (pipefail:
# only grep's "no line left" status is forgiven, never pip's).
pip_install() { "$VPY" -m pip install -q "$@" 2>&1 | { grep -v "is ignored" || true; }; }
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch/torchvision are pinned to the newest releases these machines carry (see README); where a package
# index lacks them, the install below takes a torch that pyproject.toml accepts, with a warning here.
pip_install "torch==2.14.1" "torchvision==0.29.1" \
  || echo "warning: torch==2.14.1 / torchvision==0.29.1 could not be installed; installing the torch pyproject.toml accepts" >&2
pip_install -e ".[dev]" -e plugins/avade-nice
"$VPY" -P -c "import avade, torch; print(f'avade {avade.__version__} ready (torch {torch.__version__})')"
