"""``avade runs``: where each run stands and what it scored, one row per run (or sweep variant).

Read from the files a run keeps (``recipe.toml``, ``checkpoints/``, ``metrics.jsonl``, ``summary.json``,
``eval.json``; README, Run directory): no model is loaded and torch is not imported, so it answers at once,
also over a cluster's shared folder of hundreds of runs while they train.
"""

from __future__ import annotations

import fnmatch
import json
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from avade.errors import AvadeError
from avade.train.rundir import (
    RunDir,
    checkpoint_step,
    list_checkpoints,
    read_json_list,
    read_json_object,
    sweep_runs,
)

#: summary.json keys that describe the run rather than score it
_SUMMARY_META = frozenset({"recipe", "variant", "steps", "train_images_per_s", "device", "weights", "bpd_untrained",
                           "error"})
#: eval.json keys that say which checkpoint was scored, with what
_EVAL_META = frozenset({"checkpoint", "step", "weights", "settings"})
#: the metric columns a table shows by default, those some run has (``--metrics`` picks others)
DEFAULT_COLUMNS = ("bpd", "fid", "kid_mean", "is_mean")
#: folders of a run that hold no runs: not searched
_NOT_RUNS = frozenset({"checkpoints", "samples", "tb"})
_DEPTH = 4  # how deep below a given folder runs are looked for (runs/<recipe>/<time>, a sweep's variants)


def is_run(path: Path) -> bool:
    """Whether ``path`` is a run directory (its resolved recipe is written first, before any checkpoint)."""
    return (path / "recipe.toml").is_file()


def find_runs(paths: Sequence[Path]) -> list[tuple[Path, dict[str, Any] | None]]:
    """The runs at or below ``paths``, in order (a sweep's in its plan's order, its variants not started yet
    included), each with its sweep overrides (None outside a sweep); a path that does not exist is an error."""
    found: list[tuple[Path, dict[str, Any] | None]] = []
    seen: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise AvadeError(f"{path}: no such folder; give a run directory, a sweep's --out, or a folder of runs "
                             "(default: runs)")
        if not path.is_dir():
            raise AvadeError(f"{path} is a file; give a run directory, a sweep's --out, or a folder of runs")
        for run, axes in _walk(path, _DEPTH):
            key = run.resolve()
            if key not in seen:
                seen.add(key)
                found.append((run, axes))
    return found


def _walk(path: Path, depth: int) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    if is_run(path):
        yield path, None
        return
    variants, axes = sweep_runs(path)
    if variants:
        for run in variants:
            yield run, axes.get(run.name, {})
        return
    if depth == 0:
        return
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")
                          and p.name not in _NOT_RUNS)
    except OSError:  # (a folder we may not read: its runs are not ours to list)
        return
    for child in children:
        yield from _walk(child, depth - 1)


def run_record(path: Path, axes: dict[str, Any] | None = None, now: float | None = None) -> dict[str, Any]:
    """What ``avade runs`` says of one run: ``run``, ``recipe``, ``variant``, ``status`` (finished, failed, unfinished,
    no checkpoint, not started), ``step`` (the last one done: logged or checkpointed), ``steps`` (train.steps),
    ``checkpoints`` (how many), ``updated_s`` (seconds since it last wrote anything), ``weights`` and ``results`` of
    the newest checkpoint (summary.json's final evaluation, with eval.json's of that checkpoint and weights over it),
    ``error`` (a failed run's), and a sweep variant's ``overrides``."""
    run = RunDir(path)
    record: dict[str, Any] = {"run": str(path)}
    if axes is not None:
        record["overrides"] = axes
    if not is_run(path):  # a sweep variant not started yet, or one that failed before its folder was made
        row = next((r for r in read_json_list(path.parent / "sweep_summary.json")
                    if isinstance(r, dict) and r.get("name") == path.name and r.get("error")), None)
        if row is not None:
            return {**record, "status": "failed", "step": 0, "error": str(row["error"])}
        return {**record, "status": "not started", "step": 0}
    recipe = _recipe_table(run.recipe)
    model, train = recipe.get("model"), recipe.get("train")
    record["recipe"] = recipe.get("name")
    record["variant"] = model.get("variant") if isinstance(model, dict) else None
    steps = train.get("steps") if isinstance(train, dict) else None
    checkpoints = [checkpoint_step(p) for p in list_checkpoints(run.checkpoints)]
    summary = read_json_object(run.summary)
    step = max([s for s in (*checkpoints[-1:], _last_logged_step(run.metrics)) if s is not None], default=0)
    ended = summary.get("steps")
    # an earlier end's (the run resumed since with more train.steps, which recipe.toml says from the start of the
    # resume: before its first logged step, or killed before it): neither its state nor results
    behind = isinstance(ended, int) and (ended < step or (isinstance(steps, int) and ended < steps))
    if behind and not summary.get("error"):
        summary = {}
    if summary.get("error"):
        status = "failed"
        record["error"] = str(summary["error"])
    elif summary:
        status = "finished"
    else:
        status = "unfinished" if checkpoints else "no checkpoint"
    if isinstance(summary.get("steps"), int):
        step = max(step, summary["steps"])
    record.update(status=status, step=step, steps=steps if isinstance(steps, int) else None,
                  checkpoints=len(checkpoints))
    results, weights = _results(run, summary, checkpoints[-1] if checkpoints else None)
    if weights is not None:
        record["weights"] = weights
    record["results"] = results
    mtimes = [p.stat().st_mtime for p in (run.metrics, run.summary, run.eval, run.checkpoints, run.recipe)
              if p.exists()]
    record["updated_s"] = max(0.0, (time.time() if now is None else now) - max(mtimes)) if mtimes else None
    return record


def _recipe_table(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):  # (shown as unknown, not a failed listing)
        return {}


def _last_logged_step(path: Path, tail: int = 1 << 16) -> int | None:
    """The step of metrics.jsonl's last record, read from its end (a long run's file can be hundreds of MB)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - tail))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:  # (the cut first line, or one being written)
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and not isinstance(entry["step"], bool):
            return entry["step"]
    return None


def _results(run: RunDir, summary: dict[str, Any], newest: int | None) -> tuple[dict[str, Any], str | None]:
    """The newest checkpoint's results: a finished run's final evaluation (summary.json) and ``avade eval``'s of the
    same checkpoint and weights (eval.json) over it; eval.json alone for an unfinished run's newest checkpoint."""
    results: dict[str, Any] = {}
    # (a failed run's summary.json has no results, nor says which weights: a divergence by train.max_bad_steps
    # records only its step and error)
    finished = bool(summary) and not summary.get("error")
    weights = summary.get("weights", "last") if finished else None
    if finished:
        results = {k: v for k, v in summary.items() if k not in _SUMMARY_META}
    scored = read_json_object(run.eval)
    step = scored.get("step")
    same_weights = weights is None or scored.get("weights") == weights
    if scored and same_weights and (step == newest or (summary and step == summary.get("steps"))):
        results.update({k: v for k, v in scored.items() if k not in _EVAL_META})
        weights = scored.get("weights", weights)
    return results, weights


def columns_for(records: Sequence[dict[str, Any]], chosen: Sequence[str] | None) -> list[str]:
    """The metric columns of the table: ``chosen`` (:func:`matching_keys`: result keys, patterns such as ``prdc_*``, or
    metric names such as ``kid``) as found in the runs' results, else those of :data:`DEFAULT_COLUMNS` some run
    has."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in record.get("results", {}) if k not in keys]
    if not chosen:
        return [k for k in DEFAULT_COLUMNS if k in keys]
    picked: list[str] = []
    for pattern in chosen:
        matches = matching_keys(pattern, keys) or [pattern]  # (absent: an empty column)
        picked += [k for k in matches if k not in picked]
    return picked


def matching_keys(pattern: str, keys: Sequence[str]) -> list[str]:
    """The result keys ``pattern`` picks: those it matches (a key, or an ``fnmatch`` pattern such as ``prdc_*``), else
    a metric's as ``avade eval --metrics`` names it (``kid``: ``kid_mean``, ``kid_std``; ``gan-test``: ``gan_test``,
    ``gan_test_real``)."""
    found = [k for k in keys if fnmatch.fnmatchcase(k, pattern)]
    if found:
        return found
    metric = pattern.replace("-", "_")
    return [k for k in keys if k == metric or k.startswith(metric + "_")]


def render(records: Sequence[dict[str, Any]], columns: Sequence[str], console: Console) -> None:
    """The records as one table: run, variant, step of steps, status, the metric columns, last update."""
    table = Table(title_justify="left")
    table.add_column("run", overflow="fold", min_width=12)  # (what a reader looks for: folded, never cut)
    table.add_column("variant")
    table.add_column("step", justify="right")
    table.add_column("status")
    for name in columns:
        table.add_column(escape(name), justify="right", overflow="fold")
    table.add_column("updated", justify="right", no_wrap=True)
    for r in records:
        steps = f"{r['step']}/{r['steps']}" if r.get("steps") is not None else str(r.get("step", ""))
        results = r.get("results", {})
        cells = [_number(results.get(c)) for c in columns]
        table.add_row(escape(r["run"]), escape(str(r.get("variant") or "")), steps, _status(r), *cells,
                      _ago(r.get("updated_s")))
    console.print(table)
    for r in records:  # why each failed (--json has it too)
        if r["status"] == "failed" and r.get("error"):
            console.print(f"[red]{escape(r['run'])}:[/] {escape(str(r['error']))}", soft_wrap=True)


def _status(record: dict[str, Any]) -> str:
    colour = {"finished": "green", "failed": "red", "unfinished": "yellow"}.get(record["status"])
    text = escape(record["status"])
    return f"[{colour}]{text}[/]" if colour else text


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int | float):
        return f"{value:.4g}"
    return escape(str(value))


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"
