"""``avade runs``: where each run stands and what it scored, one row per run (or sweep variant).

Read from the files a run keeps (``recipe.toml``, ``checkpoints/``, ``metrics.jsonl``, ``summary.json``,
``eval.json``; README, Run directory): no model is loaded and torch is not imported, so it answers at once,
also over a cluster's shared folder of hundreds of runs while they train.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
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
    read_file_checked,
    read_json_checked,
    state_digest_problem,
    sweep_layout,
)

#: summary.json keys that describe the run rather than score it
_SUMMARY_META = frozenset({"recipe", "variant", "steps", "train_images_per_s", "first_step_s", "device", "weights",
                           "bpd_untrained", "error", "checkpoint", "settings"})
#: eval.json keys that say which checkpoint was scored, with what
_EVAL_META = frozenset({"checkpoint", "step", "weights", "settings", "data_read"})
#: the metric columns a table shows by default, those some run has (``--metrics`` picks others)
DEFAULT_COLUMNS = ("bpd", "fid", "kid_mean", "is_mean")
#: folders of a run that hold no runs: not searched
_NOT_RUNS = frozenset({"checkpoints", "samples", "tb"})
_DEPTH = 4  # how deep below a given folder runs are looked for (runs/<recipe>/<time>, a sweep's variants)


def is_run(path: Path) -> bool:
    """Whether ``path`` is a run directory (its resolved recipe is written first, before any checkpoint): one
    whose recipe.toml is damaged (a folder, unreadable) too, listed with what is wrong with it."""
    recipe = path / "recipe.toml"
    # (one whose recipe.toml was deleted or moved, but that holds checkpoints, too: it was listed as no run at all)
    return recipe.exists() or recipe.is_symlink() or bool(list_checkpoints(RunDir(path).checkpoints))


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
    if not os.access(path, os.R_OK | os.X_OK):  # (a folder we may not read: its runs are not ours to list)
        return
    if is_run(path):
        yield path, None
        return
    variants, axes, problems = sweep_layout(path)
    if problems:  # (a row of its own, for what is wrong with the sweep's files: run_record says what)
        yield path, None
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
    ``error`` (a failed run's), a sweep variant's ``overrides``, and ``problems``: each run file that could not be
    read (``file``, and ``problem``: what is wrong and how to mend it), the rest of the record read from the others
    (``status`` "unreadable" when the file that says it cannot be read; a sweep's own files make a record of the
    sweep's folder)."""
    run = RunDir(path)
    record: dict[str, Any] = {"run": str(path)}
    problems: list[tuple[Path, str]] = []
    if axes is not None:
        record["overrides"] = axes
    if not is_run(path):
        if axes is None and (problems := sweep_layout(path)[2]):  # (the sweep's folder, as find_runs lists it)
            return _noted({**record, "status": "unreadable"}, problems)
        # a sweep variant not started yet, or one that failed before its folder was made
        sweep_summary = path.parent / "sweep_summary.json"
        rows, problem = read_json_checked(sweep_summary, list, "start the sweep again (avade recipe run RECIPE "
                                                               "--out SWEEP --resume) to rewrite it")
        row = next((r for r in rows or [] if isinstance(r, dict) and r.get("name") == path.name and r.get("error")),
                   None)
        problems += [(sweep_summary, problem)] if problem else []
        if row is not None:
            return _noted({**record, "status": "failed", "step": 0, "error": str(row["error"])}, problems)
        return _noted({**record, "status": "not started", "step": 0}, problems)
    recipe = _recipe_table(run.recipe, problems)
    model, train = recipe.get("model"), recipe.get("train")
    record["recipe"] = recipe.get("name")
    record["variant"] = model.get("variant") if isinstance(model, dict) else None
    steps = train.get("steps") if isinstance(train, dict) else None
    checkpoint_dirs = _checkpoints(run.checkpoints, problems)
    checkpoints = [checkpoint_step(p) for p in checkpoint_dirs]
    if checkpoint_dirs:
        _check_state(checkpoint_dirs, problems)
    summary, summary_problem = read_json_checked(run.summary, dict, "restore it from a copy, or delete it (the run "
                                                                    "is then shown unfinished)")
    if summary_problem:
        problems.append((run.summary, summary_problem))
    summary = summary or {}
    step = max([s for s in (*checkpoints[-1:], _last_logged_step(run.metrics, problems)) if s is not None],
               default=0)
    ended = summary.get("steps")
    # an earlier end's (the run resumed since with more train.steps, which recipe.toml says from the start of the
    # resume: before its first logged step, or killed before it): neither its state nor results
    behind = isinstance(ended, int) and (ended < step or (isinstance(steps, int) and ended < steps))
    if behind and not summary.get("error"):
        summary = {}
    if summary_problem or (not summary and any(f == run.checkpoints for f, _ in problems)):
        status = "unreadable"  # (finished, failed or not: the file that says cannot be read)
    elif summary.get("error"):
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
    results, weights = _results(run, summary, checkpoints[-1] if checkpoints else None, problems)
    if weights is not None:
        record["weights"] = weights
    record["results"] = results
    mtimes = []
    for p in (run.metrics, run.summary, run.eval, run.checkpoints, run.recipe):
        with contextlib.suppress(OSError):  # (missing, or gone since)
            mtimes.append(p.stat().st_mtime)
    record["updated_s"] = max(0.0, (time.time() if now is None else now) - max(mtimes)) if mtimes else None
    return _noted(record, problems)


def _noted(record: dict[str, Any], problems: list[tuple[Path, str]]) -> dict[str, Any]:
    if problems:
        record["problems"] = [{"file": str(file), "problem": problem} for file, problem in problems]
    return record


#: how a damaged recipe.toml is mended
_RESTORE_RECIPE = ("restore it (each checkpoint's state.json holds the recipe as run); avade eval, sample and "
                   "--resume need it")


def _recipe_table(path: Path, problems: list[tuple[Path, str]]) -> dict[str, Any]:
    """recipe.toml's tables; ``{}`` (shown as unknown, not a failed listing) and a problem when it cannot be read."""
    data, problem = read_file_checked(path, _RESTORE_RECIPE)
    if data is not None:
        try:
            return tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            problem = f"is not text (binary data: damaged?); {_RESTORE_RECIPE}"
        except tomllib.TOMLDecodeError as exc:
            problem = (f"is not valid TOML ({' '.join(str(exc).split())[:80]}: cut short or edited?); "
                       f"{_RESTORE_RECIPE}")
    gone = "is a link to nothing" if path.is_symlink() else "is missing (deleted or moved?)"
    problems.append((path, problem or f"{gone}; {_RESTORE_RECIPE}"))
    return {}


def _checkpoints(folder: Path, problems: list[tuple[Path, str]]) -> list[Path]:
    """The run's checkpoints (:func:`list_checkpoints`); none, and a problem, when its folder cannot be read."""
    if folder.exists() and not folder.is_dir():
        problems.append((folder, "is a file, not the run's folder of checkpoints; move it away (a run still "
                                 "training fails at its next checkpoint)"))
        return []
    try:
        return list_checkpoints(folder)
    except OSError as exc:
        problems.append((folder, f"cannot be read ({exc.strerror or exc}); give yourself read access to it"))
        return []


def _check_state(checkpoints: list[Path], problems: list[tuple[Path, str]]) -> None:
    """The newest checkpoint's state.json, read as avade eval and --resume read it first (its tensors are not read:
    ``avade eval`` says what is wrong with those). A missing one is damage too: checkpoints are renamed into place
    whole, so the folder was copied in part or had files deleted."""
    newest = checkpoints[-1]
    if len(checkpoints) > 1:
        fix = (f"avade eval and --resume refuse this checkpoint: delete {newest.name} to fall back to "
               f"{checkpoints[-2].name}")
    else:
        fix = f"avade eval and --resume refuse this checkpoint, the run's only one: delete {newest.name} to start over"
    path = newest / "state.json"
    if not path.exists() and not path.is_symlink():
        problems.append((path, f"is missing (the checkpoint folder is incomplete: copied in part, or files deleted); "
                               f"{fix}"))
        return
    state, problem = read_json_checked(path, dict, fix)
    step = state.get("step") if state else None
    if state is not None and (not isinstance(step, int) or isinstance(step, bool) or step != checkpoint_step(newest)):
        problem = f"says step {step!r:.40}, not {checkpoint_step(newest)}; {fix}"
    elif state is not None and (damaged := state_digest_problem(state)):  # (as they check it)
        problem = f"{damaged}; {fix}"
    if problem:
        problems.append((path, problem))


def _last_logged_step(path: Path, problems: list[tuple[Path, str]], tail: int = 1 << 16) -> int | None:
    """The step of metrics.jsonl's last record, read from its end (a long run's file can be hundreds of MB)."""
    fix = "move it away (the run's step is then its newest checkpoint's; training starts a new one)"
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            start = max(0, size - tail)
            fh.seek(start)
            lines = fh.read().decode("utf-8", "replace").split("\n")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        problems.append((path, f"is a folder, not a file; {fix}"))
        return None
    except OSError as exc:
        problems.append((path, f"cannot be read ({exc.strerror or exc}); give yourself read access to it"))
        return None
    whole = lines[1 if start else 0:-1]  # (not the cut first line, nor the last: one being written)
    parsed = False
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:  # (the cut first line, or one being written)
            continue
        parsed = True
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and not isinstance(entry["step"], bool):
            return entry["step"]
    if not parsed and any(line.strip() for line in whole):
        problems.append((path, f"holds no JSON record in its last {tail >> 10} KiB (damaged?); {fix}"))
    return None


def _results(run: RunDir, summary: dict[str, Any], newest: int | None,
             problems: list[tuple[Path, str]]) -> tuple[dict[str, Any], str | None]:
    """The newest checkpoint's results: a finished run's final evaluation (summary.json) and ``avade eval``'s of the
    same checkpoint and weights (eval.json, or its record in eval_checkpoints.json when an older checkpoint was
    evaluated since) over it; ``avade eval``'s alone for an unfinished run's newest checkpoint."""
    results: dict[str, Any] = {}
    # (a failed run's summary.json has no results, nor says which weights: a divergence by train.max_bad_steps
    # records only its step and error)
    finished = bool(summary) and not summary.get("error")
    weights = summary.get("weights", "last") if finished else None
    if finished:
        results = {k: v for k, v in summary.items() if k not in _SUMMARY_META}
    scored, problem = read_json_checked(run.eval, dict, "run avade eval RUN again to rewrite it, or delete it")
    if problem:
        problems.append((run.eval, problem))
    # eval.json is the checkpoint evaluated last; eval_checkpoints.json keeps every one evaluated, so the newest
    # checkpoint's scores survive an evaluation of an older one (`avade eval RUN --checkpoint STEP`) there
    candidates = [scored] if isinstance(scored, dict) else []
    history, problem = read_json_checked(run.eval_checkpoints, dict, "run avade eval RUN again to rewrite it, or "
                                         "delete it")
    if problem:
        problems.append((run.eval_checkpoints, problem))
    records = (history or {}).get("records")
    candidates += [r for r in reversed(records) if isinstance(r, dict)] if isinstance(records, list) else []
    for record in candidates:
        step = record.get("step")
        # (a record from before train.ema_decay says no weights: of the last iterate, as avade eval reads it)
        same_weights = weights is None or record.get("weights", "last") == weights
        if same_weights and (step == newest or (summary and step == summary.get("steps"))):
            results.update({k: v for k, v in record.items() if k not in _EVAL_META})
            weights = record.get("weights", weights)
            break
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
    table.add_column("variant", overflow="fold")
    table.add_column("step", justify="right", overflow="fold")
    table.add_column("status", overflow="fold")
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
    for r in records:  # why each failed, and each file that could not be read (--json has them too)
        if r["status"] == "failed" and r.get("error"):
            console.print(f"[red]{escape(r['run'])}:[/] {escape(str(r['error']))}", soft_wrap=True)
        for p in r.get("problems", []):
            console.print(f"[yellow]{escape(p['file'])}[/] {escape(p['problem'])}", soft_wrap=True)


def _status(record: dict[str, Any]) -> str:
    colour = {"finished": "green", "failed": "red", "unfinished": "yellow", "unreadable": "red"}.get(record["status"])
    text = escape(record["status"]) + (" !" if record.get("problems") and record["status"] != "unreadable" else "")
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
