"""``avade eval SWEEP_OUT``: every variant of a sweep (or those of ``--only``), one row each in
sweep_eval.{json,csv}."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from avade.atomic_files import locked
from avade.errors import AvadeError, CheckpointError
from avade.evaluate.compute import RECORD_KEYS, owns
from avade.evaluate.loading import not_a_run
from avade.evaluate.runs import eval_row, evaluate_and_record
from avade.train.rundir import read_json_list, read_json_object, sweep_runs


def evaluate_sweep(root: str | Path, metrics: Sequence[str] | None = None, samples: int | None = None,
                   device: str = "auto", console: Console | None = None, ema: bool = True,
                   importance_samples: int | None = None, overrides: Sequence[str] = (),
                   only: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``avade eval SWEEP_OUT``: :func:`evaluate_run` on every variant's newest checkpoint (each run records
    its own eval.json), one row each (``name``, the variant's overrides, then as :func:`eval_row`: ``checkpoint``,
    ``step``, ``weights``, the metrics, with those evaluated earlier on the same checkpoint and weights, and their
    ``settings``, which sweep_eval.csv leaves out;
    ``error`` for a variant that could not be evaluated, the others go on), written to the sweep's
    ``sweep_eval.{json,csv}`` and shown as sweep_summary is (a two-axis sweep also as a grid of the first
    metric): e.g. FID of the whole scales x blocks ablation after training it with bpd alone. A sweep's
    --out is a folder with its sweep_summary.json. ``only``: just these variants (names or 0-based indices, as
    ``recipe run --only``: one variant per cluster array job); the rows of the others already in
    sweep_eval.json stay, so the table fills up as the jobs finish. Returns the rows of the variants evaluated."""
    from avade.train.run import select_variants, write_sweep_summary

    root = Path(root)
    every, axes = sweep_runs(root)
    if not every:
        raise not_a_run(root)
    runs = select_variants(every, only) if only else every
    # a variant that could not start (a batch larger than its data, say) has an error row and no directory
    failed = {row["name"]: row["error"] for row in read_json_list(root / "sweep_summary.json")
              if isinstance(row, dict) and isinstance(row.get("name"), str) and isinstance(row.get("error"), str)}
    rows = []
    for run in runs:
        row: dict[str, Any] = {"name": run.name, **axes.get(run.name, {})}
        if console is not None:
            console.print(f"[bold]{run.name}[/]")
        try:
            if not (run / "recipe.toml").is_file() and run.name in failed:
                raise CheckpointError(f"{run.name} could not start training ({failed[run.name]}, as "
                                      f"{root / 'sweep_summary.json'} records): nothing to evaluate")
            if not (run / "recipe.toml").is_file():
                raise CheckpointError(f"{run.name} has not started training yet (no {run}); train it with "
                                      f"`avade recipe run ... --out {root} --resume` (or --only {run.name})")
            results, _, record = evaluate_and_record(run, metrics, samples, device, console, None, ema,
                                                     importance_samples, overrides)
        except AvadeError as exc:
            row["error"] = str(exc)
        except Exception as exc:  # e.g. out of memory on one variant's model: the others are still evaluated
            row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        else:
            # with the metrics evaluated earlier on the same checkpoint and weights (bpd, then fid: both), as
            # recorded: not eval.json read back, which another `avade eval` of the run may have replaced since
            # (not the record's own keys: which checkpoint, settings, data_read)
            earlier = {k: v for k, v in record.items() if k not in RECORD_KEYS}
            # which checkpoint, and the settings of those values (as eval.json's): in sweep_eval.json and --json,
            # not sweep_eval.csv (write_sweep_summary leaves a table out: one column of JSON text)
            row.update(eval_row(record, {**earlier, **results}))
        rows.append(row)
    with locked(root / ".sweep_eval.lock"):  # --only jobs of one sweep, run in parallel, all add their rows
        table = _with_earlier_eval_rows(root, rows, every) if only else rows
        keys = list(dict.fromkeys(k for row in table for k in axes.get(row["name"], {})))
        results_keys = list(dict.fromkeys(k for row in table for k in row))
        main = [k for m in metrics or [] for k in results_keys if owns(m, k)]  # the grid shows the first metric's
        write_sweep_summary(root, table, console or Console(stderr=True), axes=keys, stem="sweep_eval", main=main)
    return rows


def _with_earlier_eval_rows(root: Path, rows: list[dict[str, Any]], every: Sequence[Path]) -> list[dict[str, Any]]:
    """``rows`` and, for the sweep's other variants, their rows in the earlier sweep_eval.json (an
    unreadable one counts as none), in the sweep's order."""
    fresh = {row["name"] for row in rows}
    rank = {run.name: i for i, run in enumerate(every)}
    earlier = read_json_list(root / "sweep_eval.json")
    kept = [row for row in earlier if isinstance(row, dict) and row.get("name") in rank and row["name"] not in fresh]
    return sorted([*kept, *rows], key=lambda row: rank[row["name"]])


def sweep_eval_warnings(root: Path, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What ``avade eval SWEEP_OUT`` warns about per variant, as it does for one run: results that are not finite
    (null in sweep_eval.json), and a variant whose training failed (its summary.json's error: a diverged one is
    scored at its last good checkpoint, before train.steps)."""
    said = []
    for row in rows:
        if "error" in row:  # (said by the failures' error)
            continue
        name = str(row.get("name"))
        odd = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        if odd:
            said.append(f"{name}: {', '.join(odd)} not finite (null in sweep_eval.json and --json)")
        failed = read_json_object(Path(root) / name / "summary.json").get("error")
        if isinstance(failed, str):
            said.append(f"{name}: its training failed ({textwrap.shorten(failed, 160, placeholder=' ...')}); scored "
                        f"at step {row.get('step')}")
    return said


def sweep_eval_failures(root: Path, rows: Sequence[Mapping[str, Any]]) -> AvadeError | None:
    """The error to end ``avade eval SWEEP_OUT`` with when some variants could not be evaluated (after their
    rows were written and shown), or None."""
    failed = [str(row.get("name")) for row in rows if "error" in row]
    if not failed:
        return None
    return AvadeError(f"{len(failed)} of {len(rows)} sweep variants could not be evaluated ({', '.join(failed)}); "
                      f"their errors are in {Path(root) / 'sweep_eval.json'}, with the other rows")
