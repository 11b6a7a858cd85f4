"""The learning-rate schedule: a factor of the step alone, so a resumed run continues it exactly and a
checkpoint needs no scheduler state (the recipe's lr and schedule decide every step's lr)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from avade.recipe.schema import ADVERSARIAL_VARIANTS, LIKELIHOOD_VARIANTS, Recipe, TrainSection


def linear_warmup(step: int, steps: int) -> float:
    """``(step + 1) / steps`` up to 1 (1 when ``steps`` is 0): the n-th step (0-based ``step``) gets n/N, so
    none gets 0. The learning-rate and KL warm-ups both ramp this way."""
    return min(1.0, (step + 1) / steps) if steps else 1.0


def lr_factor(cfg: TrainSection, step: int) -> float:
    """The fraction of ``train.lr`` (and ``d_lr``) that step ``step`` (0-based) trains with.

    A linear warm-up over ``lr_warmup_steps`` (step s gets (s + 1) / N: Glow's ramp one step earlier,
    so no step trains at 0), then ``lr_schedule`` from 1 at the warm-up's last step (the first step
    without one) to ``lr_final_ratio`` at ``train.steps``, one past the last step: cosine (half a
    period) or linear; constant stays at 1.
    """
    warmup = cfg.lr_warmup_steps
    ramp = linear_warmup(step, warmup)
    if cfg.lr_schedule == "constant":
        return ramp
    peak = max(warmup - 1, 0)  # the one step at the full rate: the decay starts right after it
    progress = min(1.0, max(0.0, (step - peak) / max(1, cfg.steps - peak)))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if cfg.lr_schedule == "cosine" else 1.0 - progress
    final = cfg.lr_final_ratio
    return ramp * (final + (1.0 - final) * shape)


def scheduled(cfg: TrainSection) -> bool:
    """Whether the lr changes during training (then it is logged as ``lr``)."""
    return cfg.lr_schedule != "constant" or cfg.lr_warmup_steps > 0


def schedule_changes(saved_recipe: Any, cfg: TrainSection, adversarial: bool) -> list[str]:
    """What sets the learning rates and differs between a checkpoint's recipe and ``cfg`` (``"lr 0.002 ->
    0.001"``, ...): the rates, the schedule, and ``steps`` where a schedule decays over them. A key an
    older avade did not save reads as its default (it had none: a constant rate)."""
    saved = saved_recipe.get("train") if isinstance(saved_recipe, Mapping) else None
    if not isinstance(saved, Mapping):
        return []
    defaults = TrainSection()

    def before(key: str) -> Any:
        return saved.get(key, getattr(defaults, key))

    pairs: list[tuple[str, Any, Any]] = [("lr", before("lr"), cfg.lr)]
    if adversarial:
        pairs.append(("d_lr", before("d_lr") or before("lr"), cfg.d_lr or cfg.lr))
    pairs += [(key, before(key), getattr(cfg, key)) for key in ("lr_schedule", "lr_warmup_steps", "lr_final_ratio")]
    if before("lr_schedule") != "constant" or cfg.lr_schedule != "constant":  # a decay spans train.steps
        pairs.append(("steps", before("steps"), cfg.steps))
    return [f"{key} {old!r} -> {new!r}" if isinstance(new, str) else f"{key} {old} -> {new}"
            for key, old, new in pairs if old != new]


def whole_run_warm_up(recipe: Recipe) -> str:
    """What is odd about a hybrid recipe whose MLE warm-up lasts the whole run (valid, e.g. a short smoke run of a
    paper recipe, but easy to miss), said by `avade recipe check` and as training starts; "" for any other."""
    cfg = recipe.train
    hybrid = recipe.variant in LIKELIHOOD_VARIANTS and recipe.variant in ADVERSARIAL_VARIANTS
    if not hybrid or cfg.warmup_steps < cfg.steps:
        return ""
    return (f"train.warmup_steps = {cfg.warmup_steps} >= train.steps = {cfg.steps}: the whole run is the MLE "
            "warm-up, so the adversarial term (L_Q) never trains the generator; lower train.warmup_steps for a "
            "hybrid model")
