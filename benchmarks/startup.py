"""Benchmark 5: start-up of the command line, and what ``avade list-components`` imports.

Each command runs as a fresh subprocess (the installed ``avade`` console script next to this Python,
else ``python -m avade``), best and median of N wall times. Then one more ``list-components`` run
under ``python -X importtime`` records which heavy modules it imports (from ``sys.modules`` at exit)
and the slowest top-level imports.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Settings, table

HEAVY = ("torch", "torchvision", "sklearn", "skimage", "scipy", "numpy", "PIL", "matplotlib", "safetensors",
         "normflows", "torchmetrics")
PROBE = """
import json, sys
try:
    from avade.cli import main
    main(["list-components"])
except SystemExit:
    pass
finally:
    with open(sys.argv[1], "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def avade_command() -> list[str]:
    script = Path(sys.executable).parent / "avade"
    return [str(script)] if script.exists() else [sys.executable, "-m", "avade"]


def wall_times(cmd: list[str], n: int) -> dict[str, Any]:
    """Wall time of ``cmd`` (stdout discarded), ``n`` runs; a failing command raises with its stderr."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=os.environ.copy())
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return {"cmd": cmd, "best_s": min(times), "median_s": statistics.median(times), "runs": n, "times_s": times}


def import_report(top: int = 12) -> dict[str, Any]:
    """Heavy modules imported by ``list-components`` and its slowest top-level imports (-X importtime)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modules.json"
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", PROBE, str(out)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        modules = set(json.loads(out.read_text())) if out.exists() else set()
    cumulative: dict[str, int] = {}
    top_level: list[tuple[str, int]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        _, cum, name = line.removeprefix("import time:").split("|", 2)
        us = int(cum.strip())
        cumulative[name.strip()] = us
        if name.startswith(" ") and not name.startswith("  "):  # one space: imported at top level
            top_level.append((name.strip(), us))
    top_level.sort(key=lambda t: t[1], reverse=True)
    return {
        "heavy_imported": {m: m in modules for m in HEAVY},
        "heavy_import_ms": {m: cumulative[m] / 1e3 for m in HEAVY if m in cumulative},
        "modules_imported": len(modules),
        "slowest_top_level_imports_ms": [{"module": m, "cumulative_ms": us / 1e3} for m, us in top_level[:top]],
    }


def run(settings: Settings, n: int | None = None) -> dict[str, Any]:
    n = n or (1 if settings.quick else 5)
    avade = avade_command()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "avade list-components": [*avade, "list-components"],
        # (resolves the recipe against the torch-free config classes alone: no torch)
        "avade recipe show recipes/av_ade_wg_rd.toml": [*avade, "recipe", "show", "recipes/av_ade_wg_rd.toml"],
        "avade recipe check recipes/quickstart.toml": [*avade, "recipe", "check", "recipes/quickstart.toml"],
    }
    result: dict[str, Any] = {"commands": {}}
    for name, cmd in commands.items():
        runs = n if "recipe check" not in name else max(1, (n + 1) // 2)  # the slow one: fewer runs
        result["commands"][name] = wall_times(cmd, runs)
    result["imports"] = import_report()
    return result


def render(result: dict[str, Any]) -> list[Any]:
    t1 = table("startup: wall time of fresh processes", ["command", "best s", "median s", "runs"],
               [[k, v["best_s"], v["median_s"], v["runs"]] for k, v in result["commands"].items()])
    imp = result["imports"]
    ms = imp["heavy_import_ms"]
    heavy = ", ".join(f"{m} ({ms[m]:.0f} ms)" if m in ms else m
                      for m, yes in imp["heavy_imported"].items() if yes) or "none"
    t2 = table(f"startup: `avade list-components` imports {imp['modules_imported']} modules; heavy: {heavy}",
               ["slowest top-level import", "cumulative ms"],
               [[r["module"], r["cumulative_ms"]] for r in imp["slowest_top_level_imports_ms"]])
    return [t1, t2]
