"""The command line: ``python -m benchmarks [--only ...] [--quick] [--device ...] [--out ...]``.

Runs the selected benchmarks in this one process, prints each one's tables as it finishes, writes
one JSON file (rewritten after every benchmark, so a crash keeps what was measured), and ends with
the targets table. A benchmark that fails is recorded under ``errors`` and the exit code is 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

BENCHMARKS = {
    "flows": "benchmarks.flows",
    "train": "benchmarks.train",
    "eval": "benchmarks.evaluation",
    "scaling": "benchmarks.scaling",
    "startup": "benchmarks.startup",
}
RESULTS = Path(__file__).resolve().parent / "results"

# The targets the lead optimizes against (reported, never enforced).
FLOW_SPEEDUP_TARGET = 1.5  # avade / normflows fwd+bwd images/s, CPU
TRAIN_PEAK_TARGET = 0.40  # train step FLOP/s as a fraction of the measured GEMM peak, CPU
STARTUP_TARGET_S = 1.5  # `avade list-components` wall time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of: {', '.join(BENCHMARKS)} (default: all)")
    p.add_argument("--cases", default=None,
                   help="flows: comma-separated subset of its cases, e.g. 'glow,glow compiled' (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few iterations: a smoke test, not numbers")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available (default)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16 = autocast to bfloat16, as train.precision = \"bf16\" (on CUDA and on CPU; "
                        "emulated on a CPU without native bf16)")
    p.add_argument("--profile", action="store_true",
                   help="also record torch.profiler top ops (flows, train) and a train-step breakdown")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls before timing (default 2, quick 1)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls, median reported (default 5, quick 2)")
    p.add_argument("--timing", choices=("isolated", "same-process"), default="isolated",
                   help="flows: time each side in fresh processes of its own (default), or both interleaved "
                        "in this process")
    p.add_argument("--malloc", choices=("tuned", "system"), default="tuned",
                   help="glibc malloc settings of the isolated flow processes: tuned (default: freed memory "
                        "is kept, no page faults once warm) or system (glibc's adaptive defaults)")
    p.add_argument("--set", dest="recipe_set", action="append", default=[], metavar="KEY=VALUE",
                   help="train, scaling: a recipe setting of the benchmarked recipes, as `avade recipe run --set` "
                        "takes it, e.g. train.tf32=true (repeatable)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON output (default: benchmarks/results/<time>-<device>[-quick].json)")
    args = p.parse_args(argv)
    for option, value, least in (("--threads", args.threads, 1), ("--warmup", args.warmup, 0),
                                 ("--repeats", args.repeats, 1)):
        if value is not None and value < least:  # else a traceback (threads) or a silent change of the count
            p.error(f"{option}: expected a whole number >= {least}, got {value}")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in BENCHMARKS]
    if unknown or not only:
        p.error(f"--only: unknown benchmark(s) {', '.join(unknown) or '(none given)'}; choose from "
                f"{', '.join(BENCHMARKS)}")
    args.only = only
    if args.cases is not None:
        if "flows" not in only:
            p.error("--cases selects flow cases: add flows to --only")
        from benchmarks.flows import CASE_NAMES

        args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in args.cases if c not in CASE_NAMES]
        if unknown or not args.cases:
            p.error(f"--cases: unknown flow case(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from "
                    f"{', '.join(map(repr, CASE_NAMES))}")
    return args


def targets(results: dict[str, Any], device: str, quick: bool = False, precision: str = "fp32"
            ) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (None: the targets are for fp32 CPU runs,
    or this is a --quick run, whose tiny shapes say nothing about them)."""
    cpu = device == "cpu" and not quick and precision == "fp32"
    out: list[dict[str, Any]] = []
    bench = results["benchmarks"]
    for name, case in bench.get("flows", {}).get("cases", {}).items():
        if case.get("speedup") is None:
            continue
        if case.get("case", {}).get("nets", "fp32") != "fp32":  # avade's nets in bf16: not equal configuration
            out.append({"target": f"flows {name}: informational (coupling networks in {case['case']['nets']}, "
                                  f"normflows {precision}), not judged", "value": case["speedup"], "met": None})
        else:
            out.append({"target": f"flows {name}: fwd+bwd images/s >= {FLOW_SPEEDUP_TARGET}x normflows (CPU)",
                        "value": case["speedup"], "met": case["speedup"] >= FLOW_SPEEDUP_TARGET if cpu else None})
    for name, r in bench.get("train", {}).get("recipes", {}).items():
        frac = r.get("fraction_of_peak")
        if frac is not None:
            out.append({"target": f"train {name}: step FLOP/s >= {TRAIN_PEAK_TARGET:.0%} of GEMM peak (CPU)",
                        "value": frac, "met": frac >= TRAIN_PEAK_TARGET if cpu else None})
    lc = bench.get("startup", {}).get("commands", {}).get("avade list-components")
    if lc:
        out.append({"target": f"`avade list-components` best wall < {STARTUP_TARGET_S} s", "value": lc["best_s"],
                    "met": lc["best_s"] < STARTUP_TARGET_S if not quick else None})
    return out


def write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    import torch

    from benchmarks.common import environment, gemm_peak, make_settings, table

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}-{device}{'-quick' if args.quick else ''}.json"
    results: dict[str, Any] = {"schema": 1, "argv": sys.argv[1:] if argv is None else argv, "benchmarks": {},
                               "errors": {}}
    if device == "cuda" and not torch.cuda.is_available():
        reason = "--device cuda but no CUDA GPU is available: nothing benchmarked (use --device cpu)"
        console.print(f"[yellow]skipped:[/] {reason}")
        results["skipped"] = reason
        write(out, results)
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = make_settings(device, quick=args.quick, precision=args.precision, profile=args.profile,
                             warmup=args.warmup, repeats=args.repeats, isolate=args.timing == "isolated",
                             malloc=args.malloc, recipe_set=args.recipe_set)
    results["meta"] = environment(settings)
    results["meta"].update(timing=args.timing, malloc=args.malloc, recipe_set=list(args.recipe_set))
    if args.precision == "bf16" and not settings.cuda:
        from avade.train.device import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            console.print("[yellow]note:[/] this CPU has no native bfloat16 (AVX512-BF16 or AMX): bf16 is emulated")
    meta = results["meta"]
    console.print(f"[bold]avade benchmarks[/] on {meta.get('device_name', device)}: torch {meta['torch']}, "
                  f"{meta['torch_threads']} threads / {meta['cpu_count']} CPUs ({meta['cpu_capability']}), "
                  f"load {meta['loadavg_start']}, "
                  f"{'quick' if args.quick else 'full'} -> {out}")
    if "train" in args.only:
        results["gemm_peak"] = gemm_peak(settings)
        g = results["gemm_peak"]
        console.print(f"GEMM peak ({g['dtype']}): {g['peak_flop_s'] / 1e9:.1f} GFLOP/s by "
                      f"{g['peak_source']} (torch.mm: {g['mm_peak_flop_s'] / 1e9:.1f} GFLOP/s)")
    for name in args.only:
        console.rule(name)
        module = importlib.import_module(BENCHMARKS[name])
        kwargs = {"gemm": results["gemm_peak"]} if name == "train" else {}
        if name == "flows" and args.cases:
            kwargs["names"] = args.cases
        t0 = time.perf_counter()
        try:
            result = module.run(settings, **kwargs)
        except Exception as exc:  # one broken benchmark must not cost the others' numbers
            results["errors"][name] = "".join(traceback.format_exception(exc))
            console.print(f"[red]error in {name}:[/] {type(exc).__name__}: {exc}")
            write(out, results)
            continue
        result["wall_s"] = time.perf_counter() - t0
        results["benchmarks"][name] = result
        for part, error in result.get("errors", {}).items():  # a failed part (e.g. one flow case) fails the run
            results["errors"][f"{name}: {part}"] = error
        for t in module.render(result):
            console.print(t)
        write(out, results)
    results["targets"] = targets(results, device, args.quick, args.precision)
    meta["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    meta["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if results["targets"]:
        console.rule("targets")
        console.print(table("targets (measured in this run; met = n/a for --quick runs and for targets of another "
                            "device or precision: they are for fp32 on CPU)",
                            ["target", "value", "met"],
                            [[t["target"], t["value"], "n/a" if t["met"] is None else t["met"]]
                             for t in results["targets"]]))
    write(out, results)
    console.print(f"results: {out}")
    return 1 if results["errors"] else 0
