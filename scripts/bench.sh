#!/usr/bin/env bash
# Set up .venv, install the benchmark extra (normflows, the baseline of the flow benchmark), then run
# the benchmark suite. Arguments go to the runner, e.g.
#   bash scripts/bench.sh --only flows,startup --quick
#   bash scripts/bench.sh --device cuda --precision bf16 --profile
# See benchmarks/README.md. Results: benchmarks/results/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# without normflows the flow benchmark times avade alone (the JSON says so): a warning, not the end
.venv/bin/python -m pip install -q -e ".[bench]" 2>&1 | { grep -v "is ignored" || true; } \
  || echo "warning: the benchmark extra (normflows) could not be installed; flows are timed without it" >&2
exec .venv/bin/python -m benchmarks "$@"
