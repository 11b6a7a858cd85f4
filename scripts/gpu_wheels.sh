#!/usr/bin/env bash
# Wheels that a GPU machine's python lacks, for `bash scripts/gpu_check.sh --offline` there (no package index):
#   bash scripts/gpu_wheels.sh [DIR]     # default .whl/ (git-ignored); then carry DIR to the GPU machine
# Pure-Python wheels only (any Python 3.11+): avade's dependencies that the lent H200's image lacks or has too old
# (cattrs, tomli-w; attrs and typing-extensions at cattrs' minimum; setuptools >= 77 to install avade from
# source), and normflows, the flow benchmark's baseline (an sdist on PyPI: built into a wheel here).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DIR" \
  "cattrs>=23.2" "tomli-w>=1.0" "attrs>=25.4" "typing-extensions>=4.14" "setuptools>=77"
"$PY" -m pip wheel -q --no-deps -w "$DIR" "normflows>=1.7"
ls "$DIR"
