"""``avade recipe run``: one recipe, or every variant of its sweep, each in its own run directory."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from avade.atomic_files import held_alone, locked, locked_for
from avade.data.base import data_of_model, data_of_trained_model
from avade.errors import (
    BusyError,
    CheckpointError,
    ConfigError,
    DataError,
    StoppedError,
    TrainingError,
    did_you_mean,
    refuse_a_string,
)
from avade.memory import OutOfMemory
from avade.recipe import expand_sweep, load_recipe
from avade.recipe.schema import Recipe, refuse_a_non_recipe, refuse_a_sweep
from avade.recipe.write import recipe_to_dict
from avade.train.checkpoint import list_checkpoints
from avade.train.data import refuse_while_a_worker_starts
from avade.train.device import global_state_kept
from avade.train.distributed import shutdown_distributed
from avade.train.preemption import UNRESUMED_STOP, UNSTARTED_STOP, stop_on_signals
from avade.train.ranks import PEER_LOST, alike_on_this_node, is_main_process, job_failure, said_by_another_process
from avade.train.rundir import (
    RunDir,
    atomic_write_text,
    latest_run_dir,
    make_run_dir,
    read_json_checked,
    read_json_object,
    write_json,
)

if TYPE_CHECKING:
    from avade.recipe.sweep import Variant

class _HasName(Protocol):
    @property
    def name(self) -> str: ...


_Named = TypeVar("_Named", bound=_HasName)  # anything with a ``.name``: a sweep Variant, a variant's run folder


def _refuse_a_file(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder; give a run directory that is new (or an "
                          "earlier run's, with --resume)")
    for link in (out_dir, *out_dir.parents):
        if link.is_symlink() and not link.exists():  # (mkdir would say "File exists")
            raise ConfigError(f"--out {out_dir}: {link} is a symbolic link to {os.readlink(link)}, which does not "
                              "exist (a disk not mounted?); mount it or fix the link, or give another --out")
        if link.exists():
            break


def _refuse_mixing_run_and_sweep(out_dir: Path, sweep: bool) -> None:
    """A ConfigError when ``out_dir`` holds a run and a sweep is to train there, or the other way round: `avade runs`
    and `avade eval` take a folder with a recipe.toml for one run, so the sweep's variants (or the run) would be
    hidden from them, and the run's own files mixed with the sweep's."""
    if sweep and RunDir(out_dir).recipe.is_file():
        raise ConfigError(f"--out {out_dir} holds a single run (its recipe.toml), not a sweep's variants; give the "
                          "sweep another --out (a sweep there would be hidden from `avade runs` and `avade eval`)")
    sweep_file = next((name for name in (SWEEP_PLAN, "sweep_summary.json") if (out_dir / name).is_file()), None)
    if not sweep and sweep_file is not None:
        raise ConfigError(f"--out {out_dir} is a sweep's --out (it holds {sweep_file}), not a run directory; give "
                          "this run another --out (a run there would hide the sweep's variants from `avade runs` and "
                          "`avade eval`)")


def _refuse_a_foreign_recipe(out_dir: Path, source: str | None) -> None:
    """A folder with a recipe.toml that is no avade run's (no checkpoints/, metrics.jsonl or summary.json
    beside it) and not the recipe being run: someone's own file, which the run's recipe.toml would replace."""
    run = RunDir(out_dir)
    if not run.recipe.is_file() or any(p.exists() for p in (run.checkpoints, run.metrics, run.summary)):
        return
    if source is not None and _same_file(Path(source), run.recipe):
        return
    raise ConfigError(f"--out {out_dir} holds a recipe.toml but no avade run (no checkpoints/, metrics.jsonl or "
                      "summary.json): the run would replace that file with its own; give another --out, or "
                      f"move {run.recipe} away")


def run_recipe(recipe: Recipe, out_dir: str | Path, *, resume: bool = False, device: str | None = None,
               console: Console | None = None, progress: bool = True) -> dict[str, Any]:
    """Train one (non-sweep) recipe into ``out_dir``; returns its summary. The global random states and CUDA
    TF32 and cuDNN flags training sets (``train.seed``, ``train.tf32``, ``train.cudnn_benchmark``) are put back
    afterwards."""
    refuse_a_non_recipe(recipe, "run_recipe")
    refuse_a_sweep(recipe, "run_recipe")
    refuse_while_a_worker_starts("train")  # (before the run's lock, which the running parent holds)
    console = console or Console(stderr=True)
    out_dir = Path(out_dir)  # (a str from a notebook too)
    _refuse_a_file(out_dir)
    _refuse_mixing_run_and_sweep(out_dir, sweep=False)  # (from Python too: a sweep's variant dirs hold no plan)
    _refuse_a_foreign_recipe(out_dir, recipe.source)
    fresh = not out_dir.exists() or out_dir in _MADE

    # one process trains a run directory at a time (a requeued job overlapping the running one, an array
    # index given twice): checked before anything in it is touched
    with contextlib.ExitStack() as held:
        if is_main_process():
            try:
                held.enter_context(held_alone(out_dir / LOCK, f"another process is training {out_dir}"))
            except RuntimeError as exc:
                raise BusyError(f"{exc} (it holds {out_dir / LOCK}); wait for it to end, or give this "
                                "run another --out") from None
        try:
            with global_state_kept():  # (the random states and TF32 flags training sets: a notebook's own)
                return _train_in(recipe, out_dir, fresh, resume, device, console, progress)
        finally:
            # A run that could not start leaves no directory, lock file included: removed while the lock is still
            # held (released before, another process could take it and train on in a directory removed under it,
            # its lock file gone, so that a third would find none to respect).
            if fresh and is_main_process() and [p.name for p in _children(out_dir)] == [LOCK]:
                shutil.rmtree(out_dir, ignore_errors=True)


LOCK = ".train.lock"


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _train_in(recipe: Recipe, out_dir: Path, fresh: bool, resume: bool, device: str | None, console: Console,
              progress: bool) -> dict[str, Any]:
    """:func:`run_recipe`'s work, with the run directory held."""
    from avade.train.trainer import Trainer

    def drop_unstarted_run() -> None:
        # A run that could not start (unreadable images, a batch larger than the split, Ctrl-C while the
        # untrained model is evaluated, ...) leaves no half-made run directory behind -- unless it was
        # there before or already holds a checkpoint.
        if fresh and is_main_process() and out_dir.is_dir() and not list_checkpoints(RunDir(out_dir).checkpoints):
            for child in _children(out_dir):  # all but the lock file, still held (run_recipe removes the rest)
                if child.name != LOCK:
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)

    # loading data and building the model: nothing (new) to save yet, so a stop signal stops at once
    resuming = resume and bool(list_checkpoints(RunDir(out_dir).checkpoints))
    try:
        with stop_on_signals(announce=False, immediate=UNRESUMED_STOP if resuming else UNSTARTED_STOP):
            trainer = Trainer(recipe, out_dir, resume=resume, device=device, console=console, progress=progress)
            if trainer.dist.is_main:
                # (one command for a job's first start and its requeues: the trainer said which this is, "resumed
                # from ..." or "no checkpoint in ...: starting from step 0")
                console.print(f"[bold]{escape(recipe.name)}[/] ({recipe.variant}) -> {escape(str(out_dir))} "
                              f"on {trainer.device}")
    except BaseException:
        drop_unstarted_run()
        raise
    try:
        summary = trainer.fit()
    except (KeyboardInterrupt, StoppedError):
        if trainer.step == 0:  # before any step (the untrained model's evaluation): nothing worth keeping
            drop_unstarted_run()
        raise
    if trainer.dist.is_main:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float))
        weights = " (averaged weights)" if summary.get("weights") == "ema" else ""
        console.print(f"[green]done[/]: {escape(recipe.name)}: {shown}{weights}")
    return summary


def run_recipe_file(file: str | Path, overrides: Sequence[str] = (), *, out_dir: str | Path | None = None,
                    resume: bool = False, device: str | None = None, console: Console | None = None,
                    progress: bool = True, only: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Load, expand and train; a sweep also writes ``sweep_summary.{csv,json}`` and prints a table.
    ``only``: the sweep variants to train, by name or 0-based index (e.g. one per job of a cluster array)."""
    refuse_a_string(overrides, "run_recipe_file: overrides", '["train.steps=100"]')
    refuse_a_string(only, "run_recipe_file: only", '["0"]')
    refuse_while_a_worker_starts("train")
    console = console or Console(stderr=True)
    file, out_dir = Path(file), (Path(out_dir) if out_dir is not None else None)  # (str from a notebook too)
    # Up to training, everything follows from the recipe, the files and the environment: under torchrun every
    # process (on a node) fails alike, and one says it.
    with alike_on_this_node():
        # A run's own recipe.toml, resumed: read as the avade that wrote it meant it (keys added since then
        # take the values that rebuild its model, see recipe.load.SAVED_BEFORE).
        own = resume and out_dir is not None and _same_file(file, RunDir(out_dir).recipe)
        from avade.train.provenance import naming_missing_plugins

        # resuming a run whose plugin is gone: name the plugin it was trained with
        trained_with = RunDir(out_dir).checkpoints if resume and out_dir is not None else None
        with naming_missing_plugins(trained_with):
            recipe = load_recipe(file, overrides, saved=own)
        if only and recipe.sweep is None:
            raise ConfigError(f"--only picks sweep variants, but {file} has no [sweep]")
        if only and out_dir is None:  # each job would get a directory of its own: their rows would never meet
            raise ConfigError("--only needs --out: every job of the sweep trains into the same directory, which holds "
                              "the one sweep_summary")
        every = expand_sweep(recipe)
        variants = select_variants(every, only) if only else every
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if out_dir is None and distributed:
            raise ConfigError("under torchrun pass --out RUN_DIR: every process must write to the same run directory")
        if out_dir is None:
            out_dir = latest_run_dir(recipe.name) if resume else None
            if out_dir is None:
                if resume:
                    raise ConfigError(f"--resume: no earlier run of '{recipe.name}' under runs/; pass --out RUN_DIR")
                out_dir = _new_run_dir(recipe.name)
        _refuse_a_file(out_dir)
        _refuse_mixing_run_and_sweep(out_dir, sweep=recipe.sweep is not None)
    try:
        if recipe.sweep is None:
            # The model runs once first (likelihood, sampling, critic), as `recipe check` does: a component
            # that fails only when sampling must not fail at the end of training.
            # (naming_missing_plugins: a norm is only looked up as the model is built)
            with naming_missing_plugins(trained_with), alike_on_this_node():
                check_variants(every, data=False, source=str(file), device=device)
            return [run_recipe(recipe, out_dir, resume=resume, device=device, console=console, progress=progress)]
        # a later variant's bad config or missing data fails now (resumed: their data, not another dataset)
        with data_of_trained_model() if resume else contextlib.nullcontext(), naming_missing_plugins(trained_with), \
                alike_on_this_node():
            check_variants(variants, sweep=every, device=device)
        if not resume:  # before any variant trains (or the plan is rewritten), not at the first such variant's turn
            _refuse_trained_variants(out_dir, recipe.name, variants)
        _record_plan(out_dir, every, {v.name: _variant_dir(out_dir, recipe.name, v, resume).name for v in every})
        summaries, failed = [], []
        for variant in variants:
            run_dir = _variant_dir(out_dir, recipe.name, variant, resume)
            held = _summary_file_state(run_dir) if distributed and is_main_process() else None
            try:
                summary = run_recipe(variant.recipe, run_dir, resume=resume, device=device, console=console,
                                     progress=progress)
            except BusyError:  # another job trains this variant now: no row of ours, and no next variant
                raise
            except (TrainingError, ConfigError, DataError, OutOfMemory) as exc:  # (another variant may fit)
                said_elsewhere = said_by_another_process(exc)  # under torchrun: said once for the job (or node)
                if not said_elsewhere:
                    console.print(f"[red]{escape(variant.name)}:[/] {escape(str(exc))}")
                failed.append(variant.name)
                summary = {"error": str(exc)}
                if distributed and not getattr(exc, "every_process", False):
                    # One process may fail alone (an unreadable image in its share of a batch, rank 0's
                    # sample metrics): going on, its next variant's collectives would meet the others' of
                    # this one, and the job would hang or mix them up. So the sweep stops here, its row
                    # recorded. (A divergence, decided alike by every process, lets the sweep go on.)
                    summaries.append({"name": variant.name, **variant.overrides, **summary})
                    _record_sweep(out_dir, summaries, every, console, show=False)
                    if not said_elsewhere:
                        console.print(f"under torchrun a variant that fails in one process stops the sweep"
                                      f"{_not_run(variants, variant)}: fix it and rerun with --resume (finished "
                                      "variants are kept), or leave it out with --only")
                    raise
                # one diverged (or unbuildable) variant must not cost the others (an lr sweep)
            except RuntimeError as exc:
                failure = job_failure(exc) if distributed else None
                if failure is None:
                    raise
                # This process lost its partner (or waited for it past the timeout): the process that failed alone
                # said why, and recorded it in the variant's summary.json. The sweep stops (as in that process);
                # the variant's row holds that error, not only "another process stopped".
                if is_main_process():
                    with contextlib.suppress(OSError):  # (the error raised stays the job's)
                        recorded = _peer_failure(run_dir, held, PEER_RECORD_WAIT_S if failure == PEER_LOST else 0)
                        summaries.append({"name": variant.name, **variant.overrides,
                                          **(recorded or {"error": failure})})
                        _record_sweep(out_dir, summaries, every, console, show=False)
                raise
            summaries.append({"name": variant.name, **{k: v for k, v in variant.overrides.items()}, **summary})
            if variant is not variants[-1]:  # kept after each variant: a sweep stopped or killed later keeps its rows
                _record_sweep(out_dir, summaries, every, console, show=False)
        _record_sweep(out_dir, summaries, every, console, show=True)
        if failed:
            # (under torchrun only variants that failed alike in every process let the sweep get here)
            raise TrainingError(f"{len(failed)} of {len(variants)} sweep variants failed ({', '.join(failed)}); "
                                f"see {out_dir / 'sweep_summary.json'}", every_process=True)
        return summaries
    except BaseException:
        if out_dir in _MADE and not _children(out_dir):  # (a check failed before the run started)
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        shutdown_distributed(wait=False)
        raise
    finally:
        shutdown_distributed()  # (a no-op after the line above)


def _not_run(variants: Sequence[Variant], failed: Variant) -> str:
    """`` (not run: a, b)``: the variants after ``failed`` that a sweep stopped by it leaves untrained, or ""."""
    rest = [v.name for v in variants[next(i for i, v in enumerate(variants) if v is failed) + 1:]]
    if not rest:
        return ""
    return f" (not run: {', '.join(rest[:3])}{f' and {len(rest) - 3} more' if len(rest) > 3 else ''})"


#: how long rank 0, its partner gone, waits for that process's error in the variant's summary.json (written before
#: the process leaves the job, so at once but on a slow shared file system; nothing comes from a killed process)
PEER_RECORD_WAIT_S = 5.0


def _summary_file_state(run_dir: Path) -> tuple[int, int, int] | None:
    """summary.json of ``run_dir`` as a file (inode, modification time, size), None when there is none: a
    failure recorded after this was taken changes it (an earlier attempt's error is no failure of this one)."""
    try:
        st = (run_dir / "summary.json").stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _peer_failure(run_dir: Path, held: tuple[int, int, int] | None, wait_s: float) -> dict[str, Any] | None:
    """The variant's summary.json (its step and ``error``, e.g. ``rank 1: out of memory ...``) once it holds a
    failure recorded since ``held`` (:func:`_summary_file_state` as the variant started), waiting up to ``wait_s``
    seconds for it; None when none came (the failing process was killed, or failed before its training)."""
    import time

    deadline = time.monotonic() + wait_s
    summary = run_dir / "summary.json"
    while True:
        if run_dir.is_dir():
            with locked_for(summary):  # (as the trainer writes it)
                recorded = read_json_object(summary) if _summary_file_state(run_dir) != held else {}
            if recorded.get("error"):
                return recorded
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


# The run directories this process made for runs without --out: theirs, although they exist before the run starts.
_MADE: set[Path] = set()


def _new_run_dir(recipe_name: str) -> Path:
    """:func:`~avade.train.rundir.make_run_dir`, remembered as this process's."""
    path = make_run_dir(recipe_name)
    _MADE.add(path)
    return path


SWEEP_PLAN = "sweep_plan.json"


def _record_plan(out_dir: Path, every: Sequence[Any], dirs: dict[str, str]) -> None:
    """``sweep_plan.json``: every variant of the sweep (name, run directory, overrides), before any trains,
    so that ``avade eval SWEEP_OUT`` knows the sweep's variants and axes however few have finished.
    ``dirs``: each variant's directory name (an older avade's, for a sweep it started)."""
    if not is_main_process():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir / ".sweep_summary.lock"):
        plan = [{"name": v.name, "dir": dirs.get(v.name, v.name), "overrides": v.overrides} for v in every]
        # A sweep file edited before --resume (a grid's values changed) must not hide the variants trained before
        # from `avade runs` and `avade eval SWEEP_OUT`, which list the plan's: those with a run directory stay, last
        # (as their rows stay in sweep_summary).
        earlier, _ = read_json_checked(out_dir / SWEEP_PLAN, dict, "")
        names = {entry["name"] for entry in plan} | {entry["dir"] for entry in plan}
        for entry in earlier.get("variants", []) if isinstance(earlier, dict) else []:
            folder = entry.get("dir", entry.get("name")) if isinstance(entry, dict) else None
            if (isinstance(folder, str) and isinstance(entry.get("name"), str) and entry["name"] not in names
                    and Path(folder).name == folder and (out_dir / folder / "recipe.toml").is_file()):
                plan.append(entry)
                names.add(entry["name"])
        write_json(out_dir / SWEEP_PLAN, {"variants": plan})


def _record_sweep(out_dir: Path, summaries: list[dict[str, Any]], every: Sequence[Any], console: Console,
                  show: bool) -> None:
    """Write sweep_summary.{json,csv} with the rows so far (and the earlier ones: see :func:`_with_earlier_rows`);
    ``show``: also print the table (once, at the end)."""
    if not is_main_process():
        return
    out_dir.mkdir(parents=True, exist_ok=True)  # (every variant may have failed before making its own)
    with locked(out_dir / ".sweep_summary.lock"):  # variants run as parallel jobs all add their rows
        rows = _with_earlier_rows(out_dir, summaries, every, console)
        axes = list(dict.fromkeys(k for v in every for k in v.overrides))  # (combos may set different keys)
        write_sweep_summary(out_dir, rows, console if show else None, axes=axes)


def _refuse_trained_variants(out_dir: Path, base: str, variants: Sequence[Variant]) -> None:
    """A CheckpointError naming the variants to train whose directories already hold checkpoints (a sweep run
    again without --resume): refused before any variant trains, as each of them would be refused at its turn."""
    held = [v.name for v in variants if list_checkpoints(RunDir(_variant_dir(out_dir, base, v, False)).checkpoints)]
    if held:
        listed = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise CheckpointError(f"--out {out_dir} already holds checkpoints of sweep variant(s) {listed}; continue the "
                              "sweep with --resume (finished variants are kept) or choose another --out")


def _variant_dir(out_dir: Path, base: str, variant: Any, resume: bool) -> Path:
    """``out_dir/<variant name>``; resuming a sweep an older avade started, the directory it named (before
    2026-11-29 ``-1`` and ``1``, or ``1e+30`` and ``1e-30``, could share a name)."""
    path = out_dir / variant.name
    if resume and not path.exists():
        from avade.recipe.sweep import former_variant_name

        former = out_dir / former_variant_name(base, variant.overrides)
        if former.is_dir():
            return former
    return path


def select_variants(variants: Sequence[_Named], only: Sequence[str]) -> list[_Named]:
    """The variants ``only`` names (a name, or a 0-based index as cluster array jobs count), in sweep order."""
    names = [v.name for v in variants]
    chosen = set()
    for item in (part.strip() for text in only for part in text.split(",")):
        if not item:
            continue
        if item.isdecimal() and item.isascii():  # (isdigit takes '²', which int refuses, and other scripts')
            if int(item) >= len(variants):
                raise ConfigError(f"--only {item}: the sweep has {len(variants)} variants "
                                  f"(indices 0..{len(variants) - 1})")
            chosen.add(names[int(item)])
        elif item in names:
            chosen.add(item)
        else:
            raise ConfigError(f"--only: no sweep variant is named '{item}'{did_you_mean(item, names)}; the variants: "
                              f"{', '.join(names)}")
    if not chosen:
        raise ConfigError("--only: name at least one sweep variant (a name or a 0-based index)")
    return [v for v in variants if v.name in chosen]


def check_variants(variants: Sequence[Variant], *, sweep: Sequence[Variant] | None = None, data: bool = True,
                   source: str | None = None, device: str | None = None,
                   sizes: dict[str, dict[str, tuple[int, int]]] | None = None) -> bool:
    """Every variant's model runs on its image shape (``avade recipe check``) and, with ``data``, its
    dataset's files are found: before a sweep trains anything, a bad variant fails at once, named.
    ``sweep``: the whole sweep (``variants`` may be an --only part of it), for the numbers in messages;
    None for a recipe without one. ``device``: --device, where the training state must fit (else each recipe's
    train.device). ``sizes``: filled with each model's parameter counts (:func:`avade.models.build.check_model`).
    Returns whether every model ran (not: a dataset without resolution)."""
    from avade.data.status import dataset_status
    from avade.models.build import check_model

    index = {v.name: i for i, v in enumerate(sweep)} if sweep is not None else {}
    checked: set[str] = set()
    located: dict[str, tuple[bool, str]] = {}
    ran = True
    for variant in variants:
        where = f"sweep variant {index[variant.name]} ({variant.name}): " if sweep is not None else ""
        try:
            ran &= check_model(variant.recipe, seen=checked, device=device, sizes=sizes)
        except ConfigError as exc:
            raise ConfigError(where + exc.detail, path=exc.path, source=source or variant.recipe.source) from None
        world, batch = int(os.environ.get("WORLD_SIZE", "1")), variant.recipe.data.options.batch_size
        if batch % world:  # (a torchrun job: each process takes an equal share of the global batch)
            raise ConfigError(f"{where}batch size {batch} is not divisible by the {world} processes of this torchrun "
                              f"job; make data.batch_size (the job's global batch) a multiple of {world}",
                              path="data.batch_size", source=source or variant.recipe.source)
        if not data:
            continue
        options = variant.recipe.data
        conditional = variant.recipe.model.options.conditional  # (its "not found" hint: labelled data)
        key = json.dumps([options.options.name, recipe_to_dict(variant.recipe).get("data"), conditional],
                         sort_keys=True, default=str)
        if key not in located:
            with data_of_model(conditional):
                located[key] = dataset_status(options.options.name,
                                              options.dataset.config if options.dataset else None,
                                              conditional=conditional)
        present, message = located[key]
        if not present:
            raise DataError(where + message)
    return ran


def _with_earlier_rows(out_dir: Path, rows: list[dict[str, Any]], every: Sequence[Any] = (),
                       console: Console | None = None) -> list[dict[str, Any]]:
    """This run's rows, and those of the variants it did not train (a resumed part of a sweep, or the other
    jobs of an --only array: the table stays the whole sweep's): from the earlier sweep_summary.json, else
    rebuilt from their own summary.json (an unreadable sweep_summary.json loses nothing). In the sweep's
    order; rows of variants it does not know (an earlier sweep in the folder) last."""
    path = out_dir / "sweep_summary.json"
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        earlier = []
    except (OSError, ValueError, RecursionError) as exc:
        if console is not None:
            console.print(f"[yellow]warning:[/] {escape(str(path))} is unreadable ({escape(str(exc))}); its rows are "
                          "rebuilt from the variants' summary.json")
        earlier = []
    fresh = {row["name"]: row for row in rows}
    rank = {v.name: i for i, v in enumerate(every)}
    # an earlier row stays if it is one of this sweep's variants (a failed one has no directory) or its
    # directory is still there
    kept = [row for row in earlier if isinstance(row, dict) and isinstance(row.get("name"), str)
            and row["name"] not in fresh and (row["name"] in rank or (out_dir / row["name"]).is_dir())
            ] if isinstance(earlier, list) else []
    known = set(fresh) | {row["name"] for row in kept}
    for v in every:
        if v.name in known:
            continue
        try:
            summary = json.loads((out_dir / v.name / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(summary, dict):
            kept.append({"name": v.name, **v.overrides, **summary})
    return sorted([*kept, *rows], key=lambda row: rank.get(row["name"], len(rank)))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def write_sweep_summary(out_dir: Path, rows: list[dict[str, Any]], console: Console | None,
                        axes: Sequence[str] = (), stem: str = "sweep_summary", main: Sequence[str] = ()) -> None:
    """``<stem>.json``/``.csv`` (sweep_summary, or sweep_eval for ``avade eval`` of a sweep) and, on
    ``console``, a rich table with BPD and the other metrics; for a two-axis grid (the paper's scales x blocks
    ablation) also the main metric (the first of ``main``, else bpd, fid or is_mean) as a grid, rows by the
    first axis."""
    write_json(out_dir / f"{stem}.json", rows)
    # the name and the sweep's axes first (combos that set different keys: an axis only a later row sets is not
    # put after the metrics), then the rest as the rows have them
    keys: list[str] = [k for k in ("name", *axes) if any(k in row for row in rows)]
    for row in rows:  # the sweep's own axes always; other list/table values (results) only in the JSON
        keys += [k for k in row if k not in keys and (k in axes or not isinstance(row[k], dict | list))]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
    atomic_write_text(out_dir / f"{stem}.csv", buf.getvalue())
    if console is None:
        return
    headers = _short_headers(keys)
    table = Table(title=escape(f"sweep: {out_dir}"), title_justify="left")
    # (which checkpoint each row's final evaluation is of: in the files, not a column of the table)
    shown = [k for k in keys if k not in ("recipe", "variant", "device", "checkpoint")]
    for k in shown:
        table.add_column(escape(headers[k]), justify="left" if k == "name" else "right", overflow="fold")
    for row in rows:
        table.add_row(*(escape(axis_text(row.get(k)) if k in axes else _shown_error(row.get(k)) if k == "error" else
                               cell_text(row.get(k))) for k in shown))
    console.print(table)
    metric = next((m for m in (*main, "bpd", "fid", "is_mean") if any(isinstance(r.get(m), float) for r in rows)),
                  None)
    # a grid only when every variant sets both axes (combos may set different keys)
    if len(axes) == 2 and metric is not None and all(a in r for r in rows for a in axes):
        try:
            grid = _grid(rows, axes, metric, headers)
        except Exception as exc:  # a view of what is already written: it must not fail the sweep
            console.print(f"[yellow]warning:[/] no {metric} grid ({type(exc).__name__}: {escape(str(exc))})")
        else:
            console.print(grid)


def _shown_error(error: Any) -> str:
    """A variant's error in the table: its first 100 characters (a whole one, ~400, made a column of 40 lines; the
    error line said it whole, and the .json/.csv files keep it)."""
    return textwrap.shorten(str(error), 100, placeholder=" ...") if error is not None else ""


def _short_headers(keys: Sequence[str]) -> dict[str, str]:
    """A dotted override key by its last part (``model.flow.scales`` -> ``scales``) where that is unique."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: short if last.count(short) == 1 else k for k, short in zip(keys, last, strict=True)}


def cell_text(value: Any) -> str:
    """A value as a table cell: floats to 4 decimals (very large or small ones in exponent form, 1e+30 not
    31 digits), lists and tables as JSON, nothing for None."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}" if value != 0 and not 1e-4 <= abs(value) < 1e9 else f"{value:.4f}"
    return "" if value is None else str(value)


def _csv_value(value: Any) -> Any:
    """A cell of sweep_summary.csv: tables and lists as JSON; a non-finite number empty, as the JSON's null."""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return json.dumps(value) if isinstance(value, dict | list) else value


def _grid(rows: list[dict[str, Any]], axes: Sequence[str], metric: str, headers: dict[str, str]) -> Table:
    """``metric`` with the first axis' values as rows and the second's as columns (failed: "error")."""
    first, second = axes

    def key(value: Any) -> str:  # the exact value (lr 1e-4 and 1.5e-4 print alike at 4 decimals), hashable
        return json.dumps(value, sort_keys=True, default=str)

    def ordered(axis: str) -> list[Any]:  # numbers in numeric order (blocks 2, 3, 4), else as the sweep lists them
        values = list({key(r.get(axis)): r.get(axis) for r in rows}.values())
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        return sorted(values) if numeric and values else values

    row_values, col_values = ordered(first), ordered(second)
    cells = {(key(r.get(first)), key(r.get(second))): "error" if "error" in r else cell_text(r.get(metric))
             for r in rows}
    title = f"{metric}: {headers[first]} (rows) x {headers[second]} (columns)"
    grid = Table(title=escape(title), title_justify="left", min_width=len(title))
    grid.add_column(escape(headers[first]), justify="right")
    for c in col_values:
        grid.add_column(escape(f"{headers[second]} = {axis_text(c)}"), justify="right")
    for r in row_values:
        grid.add_row(escape(axis_text(r)), *(escape(cells.get((key(r), key(c)), "-")) for c in col_values))
    return grid


def axis_text(value: Any) -> str:
    """A sweep axis value as a table cell: a float in full (its shortest exact form: 0.00015, not 0.0001),
    since it names the variant; anything else as :func:`cell_text`."""
    return repr(value) if isinstance(value, float) else cell_text(value)
