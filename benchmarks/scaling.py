"""Benchmark 4: how one av_ade_wg_rd training step grows with the number of pixels.

The same recipe (on synthetic data, warm-up off, see :mod:`benchmarks.train`) at 32², 64² and 128²,
batch 32: time and peak memory per step, and both normalized per pixel relative to the smallest
resolution (1.0 = exactly linear in pixels); beside the measured peak, the activations `avade recipe memory`
estimates for the same step (counted on the meta device, no memory), and the ratio measured / estimated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.common import WARM_CALLS, Settings, characterize, measure, table
from benchmarks.train import RECIPES, random_batch, trainer_for

FULL_RESOLUTIONS = (32, 64, 128)
QUICK_RESOLUTIONS = (8, 16, 32)


def run(settings: Settings, resolutions: Sequence[int] | None = None, batch: int | None = None,
        recipe: str = "av_ade_wg_rd") -> dict[str, Any]:
    resolutions = list(resolutions or (QUICK_RESOLUTIONS if settings.quick else FULL_RESOLUTIONS))
    b = batch or (2 if settings.quick else 32)
    # Big steps are slow on a CPU (a 128² step is ~60x the FLOPs of train's quickstart): half the repeats.
    repeats = max(1, settings.repeats // 2)
    rows: list[dict[str, Any]] = []
    for res in resolutions:
        with trainer_for(RECIPES[recipe], settings, res, b) as trainer:
            x, y = random_batch(b, res, settings.device)

            def step(trainer: Any = trainer, x: Any = x, y: Any = y) -> None:
                trainer.train_step(x, y)

            flops, memory = characterize(step, settings.device)
            estimate = _estimated_mb(trainer.recipe, b)
            t = measure({"step": step}, settings, warmup=max(settings.warmup - WARM_CALLS, 0), repeats=repeats)
            t = t["step"]
        rows.append({"resolution": res, "pixels": res * res, "batch": b, "timing": t.to_dict(), "step_s": t.median,
                     "flops_per_step": flops, "memory": memory, "estimated_activations_mb": estimate,
                     "measured_vs_estimated": memory["peak_mb"] / estimate if estimate else None})
    base = rows[0]
    for r in rows:
        scale = r["pixels"] / base["pixels"]
        r["time_vs_pixels"] = (r["step_s"] / base["step_s"]) / scale
        r["memory_vs_pixels"] = ((r["memory"]["peak_mb"] / base["memory"]["peak_mb"]) / scale
                                 if base["memory"]["peak_mb"] else None)
        r["flops_vs_pixels"] = (r["flops_per_step"] / base["flops_per_step"]) / scale
    return {"recipe": recipe, "batch": b, "rows": rows}


def _estimated_mb(recipe: Any, batch: int) -> float | None:
    """The activations avade's estimate counts for one step of ``recipe`` at ``batch`` (MiB), None without one."""
    from avade.models.activations import step_memory

    plan = step_memory(recipe)
    return None if plan is None else (plan.need(batch) - plan.state) / 2**20


def render(result: dict[str, Any]) -> list[Any]:
    rows = [[f"{r['resolution']}²", r["step_s"], r["memory"]["peak_mb"], r.get("estimated_activations_mb"),
             r.get("measured_vs_estimated"), r["flops_per_step"] / 1e9, r["time_vs_pixels"], r["memory_vs_pixels"],
             r["flops_vs_pixels"]] for r in result["rows"]]
    return [table(f"scaling: {result['recipe']} train step, batch {result['batch']} "
                  "(x/pixels = growth relative to the first row, divided by the growth in pixels)",
                  ["resolution", "step s", "peak MiB", "estimated MiB", "peak/estimated", "GFLOP/step",
                   "time/pixels", "memory/pixels", "FLOPs/pixels"], rows)]
