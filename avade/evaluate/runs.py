"""``avade eval`` of one run: metrics on one checkpoint or on every one kept, recorded in eval.json and
eval_checkpoints.json."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console

from avade.atomic_files import locked_for
from avade.errors import AvadeError, CheckpointError, ConfigError, refuse_a_string
from avade.evaluate.compute import (
    build_metrics,
    check_inception_weights,
    compute_each,
    in_record,
    record_name,
    recorded_settings,
    split_records,
)
from avade.evaluate.loading import checkpoint_steps, load_run
from avade.recipe.load import key_parts, parse_override
from avade.recipe.schema import LIKELIHOOD_VARIANTS, EvalSection
from avade.registry import get_registry
from avade.train import checkpoint as ckpt
from avade.train.data import refuse_while_a_worker_starts
from avade.train.ranks import is_main_process
from avade.train.rundir import RunDir, read_json_object, write_json


def evaluate_run(run_dir: str | Path, metrics: Sequence[str] | None = None, samples: int | None = None,
                 device: str = "auto", console: Console | None = None, checkpoint: str | int | None = None,
                 ema: bool = True, importance_samples: int | None = None, overrides: Sequence[str] = ()
                 ) -> dict[str, float]:
    """``avade eval``: compute metrics on a run's newest checkpoint (or that of step ``checkpoint``; its
    averaged weights when it has them, unless ``ema=False``) and record them in ``eval.json`` with the
    checkpoint, its step and which weights; results of earlier calls on the same checkpoint and weights
    are kept (``--metrics bpd`` after ``--metrics fid`` keeps the FID). ``importance_samples``: bpd's k
    (default: the recipe's ``[eval.bpd] importance_samples`` when above 1, else its ``eval.importance_samples``;
    1 = plain bpd only). ``overrides``: ``--set`` keys that leave the trained model as it is (e.g.
    ``data.root=...``, ``model.temperature=0.9``, ``eval.fid.reference=...``); recorded with each metric's
    settings."""
    return evaluate_and_record(run_dir, metrics, samples, device, console, checkpoint, ema, importance_samples,
                               overrides)[0]


def evaluate_checkpoints(run_dir: str | Path, metrics: Sequence[str] | None = None, samples: int | None = None,
                         device: str = "auto", console: Console | None = None, ema: bool = True,
                         importance_samples: int | None = None, overrides: Sequence[str] = ()
                         ) -> list[dict[str, Any]]:
    """``avade eval --checkpoint all``: :func:`evaluate_run` on every checkpoint kept, oldest first; one row
    per checkpoint (:func:`eval_row`: ``checkpoint``, ``step``, ``weights``, the metrics and their ``settings``,
    as ``avade eval --json`` prints one checkpoint's). One removed meanwhile (pruned by a training run
    still going) is skipped with a warning rather than losing the rows computed so far. The run's datasets
    are loaded (and checked) once, for every checkpoint."""
    rows = []
    datasets: dict[Any, Any] = {}  # (one run, one recipe: the same data for each checkpoint)
    for step in checkpoint_steps(run_dir):
        try:
            results, _, record = evaluate_and_record(run_dir, metrics, samples, device, console, step, ema,
                                                     importance_samples, overrides, reuse=datasets)
        except CheckpointError:
            if any(ckpt.checkpoint_step(p) == step for p in ckpt.list_checkpoints(RunDir(Path(run_dir)).checkpoints)):
                raise
            if console is not None:
                console.print(f"[yellow]warning:[/] checkpoint of step {step} was removed meanwhile; skipped")
            continue
        rows.append(eval_row(record, results))
    return rows


def eval_row(record: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A row of ``avade eval``'s output (``--json`` of one checkpoint, of ``--checkpoint all``, and of a sweep's
    variants): which checkpoint ``values`` are of, its step and weights, then the values, and under ``settings``
    those of ``record``'s (a checkpoint's eval record) metrics that have a value among them: the settings of an
    earlier call's metric belong to values the row does not hold (bits/dim's split by split: ``bpd``, ``bpd_train``)."""
    settings = split_records(record.get("settings"))
    return {"checkpoint": record.get("checkpoint"), "step": record.get("step"), "weights": record.get("weights"),
            **values, "settings": {m: s for m, s in settings.items() if any(in_record(m, key) for key in values)}}


def evaluate_and_record(run_dir: str | Path, metrics: Sequence[str] | None, samples: int | None, device: str,
                        console: Console | None, checkpoint: str | int | None, ema: bool,
                        importance_samples: int | None = None, overrides: Sequence[str] = (),
                        reuse: dict[Any, Any] | None = None) -> tuple[dict[str, float], str, dict[str, Any]]:
    """:func:`evaluate_run`'s results, which weights they are of ("ema" or "last") and the checkpoint's record
    as written to eval.json (with its results of earlier calls), not read back: another ``avade eval`` of the
    run may replace eval.json right after. ``reuse``: datasets loaded by earlier calls (:func:`load_run`)."""
    refuse_a_string(metrics, "metrics", '["bpd", "fid"]')
    refuse_a_string(overrides, "overrides", '["data.root=/scratch/data"]')
    refuse_while_a_worker_starts("evaluate")
    ctx = load_run(run_dir, device, checkpoint, ema, overrides, reuse=reuse)
    names = list(metrics) if metrics else list(ctx.recipe.eval.metrics)
    if not names:
        example = "bpd,fid" if ctx.recipe.variant in LIKELIHOOD_VARIANTS else "fid,kid"
        raise ConfigError(f"nothing to evaluate: the run's recipe has an empty eval.metrics; choose metrics, e.g. "
                          f"--metrics {example}")
    if not metrics and ctx.recipe.variant not in LIKELIHOOD_VARIANTS:
        # As in training: the default metric (bpd) does not apply to a model without a likelihood.
        names = [m for m in names if m != "bpd"]
        if not names:
            raise ConfigError(f"variant '{ctx.recipe.variant}' has no likelihood, so the recipe's eval.metrics "
                              "(bpd) do not apply; choose sample metrics, e.g. --metrics fid,kid")
    registry = get_registry()
    for name in names:
        registry.get("metric", name)  # fail fast on a typo, before any work
    if "bpd" in names:
        ctx.bpd_defined()  # ... and on bpd for a model without a likelihood
    metrics_built = build_metrics(names, ctx.recipe, ctx.model.num_classes, samples, importance_samples)
    # Inception weights (with the classifier head IS needs) and reference files: checked before any metric
    # runs, so a late one cannot fail after the others' work
    check_inception_weights(metrics_built, ctx.recipe)
    results = compute_each(ctx, metrics_built, console)
    settings = recorded_settings(ctx, metrics_built)
    if overrides:  # e.g. model.temperature: part of what each value was computed with
        given = dict(parse_override(text) for text in overrides)
        settings = {record_name(name, metric): {**settings.get(record_name(name, metric), {}),
                                                **_overrides_of(name, given)} for name, metric in metrics_built}
    record = _record_of(ctx.checkpoint, ctx.weights, results)  # (what another process than the first returns)
    if is_main_process():  # (the CLI runs it on rank 0 only; a script under torchrun may call it on every rank)
        run = RunDir(Path(run_dir))
        try:  # (a plugin dataset's data_source that fails must not lose the results computed, FID's minutes)
            data: dict[str, Any] | None = ctx.data_read()
        except Exception as exc:
            warnings.warn(f"what data the evaluation read is not recorded in {run.eval} (data_read): "
                          f"{type(exc).__name__}: {exc}", UserWarning, stacklevel=2)
            data = None
        try:
            record = record_eval(run, ctx.checkpoint, results, ctx.weights, settings,
                                 ran=[record_name(name, metric) for name, metric in metrics_built], data=data)
        except OSError as exc:  # a run on a read-only disk, a colleague's, a full disk: the results are not lost
            from avade.train.run import cell_text

            shown = ", ".join(f"{k} {cell_text(v)}" for k, v in results.items())
            raise AvadeError(f"cannot record the results in {run.eval} ({exc.strerror or exc}): make the run "
                             f"writable (or evaluate a copy of it) to record them; they are: {shown}") from None
    return results, ctx.weights, record


def _overrides_of(metric: str, given: dict[str, Any]) -> dict[str, Any]:
    """``{"overrides": ...}``: the ``--set`` keys that ``metric``'s value was computed with, or nothing.

    Another metric's table (``eval.gan-train.width``) is left out: recorded under gan-test it read as a
    setting gan-test ran with."""
    own = attrs.fields_dict(EvalSection)  # eval.importance_samples, eval.inception_weights, ...: kept

    def another_metrics(key: str) -> bool:
        parts = key_parts(key)
        return len(parts) > 1 and parts[0] == "eval" and parts[1] != metric and parts[1] not in own

    kept = {key: value for key, value in given.items() if not another_metrics(key)}
    return {"overrides": kept} if kept else {}


def _record_of(checkpoint: Path | None, weights: str, results: dict[str, float]) -> dict[str, Any]:
    """A checkpoint's eval record of ``results``: which checkpoint, its step, which weights, then the values."""
    return {"checkpoint": checkpoint.name if checkpoint is not None else None,
            "step": ckpt.checkpoint_step(checkpoint) if checkpoint is not None else None, "weights": weights,
            **results}


def record_eval(run: RunDir, checkpoint: Path | None, results: dict[str, float], weights: str = "last",
                 settings: dict[str, Any] | None = None, ran: Sequence[str] = (),
                 data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``results`` (and the ``settings`` each metric ran with, under ``"settings"``) into eval.json
    when it holds the same checkpoint's (else it starts over: eval.json is the checkpoint evaluated last),
    and into that checkpoint's record in eval_checkpoints.json (every checkpoint evaluated, so evaluating
    an older one loses nothing). Under a lock: two ``avade eval`` at once (say fid and bpd on two GPUs) both
    land. The trainer drops what training since made stale. ``ran``: the metrics computed now, by
    :func:`record_name` (their earlier results and settings are replaced; bits/dim's of the other split are
    kept); ``data``: what data the splits loaded now read (``{"test": {...}}``, as a
    checkpoint's ``data_read``), under ``"data_read"``, each split's replacing its earlier record. Returns the
    checkpoint's record as written to eval.json."""
    name = checkpoint.name if checkpoint is not None else None

    def merged(earlier: Any) -> dict[str, Any]:
        record = dict(earlier) if (isinstance(earlier, dict) and earlier.get("checkpoint") == name
                                   and earlier.get("weights", "last") == weights) else {}
        # a metric run again replaces all its earlier results (bpd_iw4 of an earlier k goes with it), so the
        # values and its recorded settings agree; bits/dim of one split keeps the other's (bpd, bpd_train)
        record = {k: v for k, v in record.items() if not any(in_record(m, k) for m in ran)}
        record.update(_record_of(checkpoint, weights, results))
        record["settings"] = {**split_records(record.get("settings")), **(settings or {})}
        if data:  # which test set a number is of (another data.root, version or count than training's)
            record["data_read"] = {**_table(record.get("data_read")), **data}
        return record

    with locked_for(run.eval):
        last = read_json_object(run.eval)
        history = read_json_object(run.eval_checkpoints)
        records = history.get("records")
        records = [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
        if not history and "checkpoint" in last:
            records = [last]  # a run evaluated before eval_checkpoints.json existed: its eval.json is history
        same = [r for r in records if r.get("checkpoint") == name and r.get("weights", "last") == weights]
        rest = [r for r in records if r not in same]
        # the checkpoint's whole record, in both files: its results of before an older checkpoint was
        # evaluated in between (`--checkpoint all`, say) are back in eval.json with the new ones
        earlier = dict(same[0]) if same else {}
        if last.get("checkpoint") == name and last.get("weights", "last") == weights:  # (the same, unless edited)
            settings_ = {**split_records(earlier.get("settings")), **split_records(last.get("settings"))}
            data_ = {**_table(earlier.get("data_read")), **_table(last.get("data_read"))}
            earlier = {**earlier, **last, "settings": settings_, **({"data_read": data_} if data_ else {})}
        record = merged(earlier or None)
        write_json(run.eval, record)
        rows = sorted([*rest, record],
                      key=lambda r: (r.get("step") if isinstance(r.get("step"), int) else -1, str(r.get("weights"))))
        write_json(run.eval_checkpoints, {"records": rows})
    return record


def _table(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict (a record's table as avade wrote it), else {} (one edited into something else)."""
    return value if isinstance(value, dict) else {}
