#!/usr/bin/env bash
# Set up, then train the quickstart AV-ADE on embedded data and evaluate it (no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/quickstart/latest}
if [ -d "$OUT/checkpoints" ] && [ -n "$(ls -A "$OUT/checkpoints" 2>/dev/null)" ]; then
  echo "$OUT already holds a run; continuing it (delete it to start over)"
  .venv/bin/avade recipe run recipes/quickstart.toml --out "$OUT" --resume "$@"
else
  .venv/bin/avade recipe run recipes/quickstart.toml --out "$OUT" "$@"
fi
.venv/bin/avade sample "$OUT" -n 64 -o "$OUT/samples/grid.png"
echo "summary: $(cat "$OUT/summary.json" | tr -d '\n ')"
