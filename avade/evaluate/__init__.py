"""Evaluation of runs: ``avade eval``, ``avade sample``, metrics during training, the Table 7 study.

- :mod:`~avade.evaluate.context`: :class:`RunContext`, the :class:`~avade.metrics.context.EvalContext` of a
  model and its datasets, so every metric component works the same during training and from the CLI.
- :mod:`~avade.evaluate.compute`: metrics by name, built with the recipe's settings, their results checked.
- :mod:`~avade.evaluate.loading`: a trained run read back (recipe, checkpoint, weights, datasets).
- :mod:`~avade.evaluate.runs` and :mod:`~avade.evaluate.sweeps`: ``avade eval`` of a run or of a sweep, recorded.
- :mod:`~avade.evaluate.sampling`: ``avade sample``; :mod:`~avade.evaluate.study`: ``avade study subsets``.
"""

from avade.evaluate.compute import (
    RECORD_KEYS,
    bpd_config,
    build_metrics,
    check_inception_weights,
    compute_metrics,
    metric_settings,
    metric_values,
    owns,
    result_stem,
    run_metrics,
)
from avade.evaluate.context import RunContext, cache_dir, dataset_key, draw_class_labels
from avade.evaluate.loading import (
    SETTABLE_AFTER_TRAINING,
    check_classes,
    checkpoint_steps,
    load_model,
    load_run,
    select_checkpoint,
)
from avade.evaluate.runs import evaluate_checkpoints, evaluate_run
from avade.evaluate.sampling import SAMPLE_BATCH, class_columns, sample_run
from avade.evaluate.study import subset_study_cli
from avade.evaluate.sweeps import evaluate_sweep, sweep_eval_failures, sweep_eval_warnings, sweep_runs

__all__ = [
    "RECORD_KEYS",
    "SAMPLE_BATCH",
    "SETTABLE_AFTER_TRAINING",
    "RunContext",
    "bpd_config",
    "build_metrics",
    "cache_dir",
    "check_classes",
    "check_inception_weights",
    "checkpoint_steps",
    "class_columns",
    "compute_metrics",
    "dataset_key",
    "draw_class_labels",
    "evaluate_checkpoints",
    "evaluate_run",
    "evaluate_sweep",
    "load_model",
    "load_run",
    "metric_settings",
    "metric_values",
    "owns",
    "result_stem",
    "run_metrics",
    "sample_run",
    "select_checkpoint",
    "subset_study_cli",
    "sweep_eval_failures",
    "sweep_eval_warnings",
    "sweep_runs",
]
