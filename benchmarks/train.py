"""Benchmark 2: one step of Algorithm 1 (``Trainer.train_step``) for real recipes, as images/s and as a
fraction of the GEMM peak measured in the same run.

The recipe is loaded with overrides that swap its dataset for ``synthetic`` at the recipe's
resolution (nothing to download) and set ``train.warmup_steps = 0`` so that every timed step is a full
step (discriminator update with gradient penalty, then the generator on L_C + adv_weight * L_Q).
Batches of random uint8 images are fed straight to ``Trainer.train_step`` (no data loading timed).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    ROOT,
    WARM_CALLS,
    Settings,
    characterize,
    count_flops,
    measure,
    ops_table,
    table,
    top_ops,
)

RECIPES = {
    "av_ade_wg_rd": ROOT / "recipes" / "av_ade_wg_rd.toml",
    "quickstart": ROOT / "recipes" / "quickstart.toml",
}
QUICK_BATCH = 8


def recipe_shape(path: Path) -> tuple[int, int]:
    """(resolution, batch_size) the recipe trains at."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))["data"]
    return int(data.get("resolution", 32)), int(data.get("batch_size", 64))


@contextlib.contextmanager
def trainer_for(path: Path, settings: Settings, resolution: int, batch: int,
                extra: Sequence[str] = ()) -> Iterator[Any]:
    """A :class:`~avade.train.trainer.Trainer` for the recipe at ``path`` on synthetic data, in a
    throw-away run directory."""
    from rich.console import Console

    from avade.recipe.load import load_recipe
    from avade.train.device import global_state_kept
    from avade.train.trainer import Trainer

    # The train split must hold at least one batch; the images themselves are never used (see random_batch).
    overrides = ["data.name=synthetic", f"data.resolution={resolution}", f"data.size={max(batch, 16)}",
                 "data.test_size=16", f"data.batch_size={batch}", "train.warmup_steps=0",
                 'eval.metrics=["bpd"]',  # the step alone: no Inception weights needed
                 f"train.precision={settings.precision}", *extra, *settings.recipe_set]
    recipe = load_recipe(path, overrides)
    # global_state_kept: the CUDA flags the trainer sets (train.tf32, train.cudnn_benchmark) end with it, not
    # carried into the benchmarks after this one
    with tempfile.TemporaryDirectory(prefix="avade-bench-") as run_dir, global_state_kept():
        yield Trainer(recipe, Path(run_dir), device=settings.device.type, progress=False,
                      console=Console(stderr=True, quiet=True))


def random_batch(batch: int, resolution: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, resolution, resolution), dtype=torch.uint8, generator=gen)
    return x.to(device), torch.zeros(batch, dtype=torch.long, device=device)


def step_metrics(trainer: Any, x: torch.Tensor, y: torch.Tensor, settings: Settings,
                 gemm: dict[str, Any] | None) -> dict[str, Any]:
    """Time, FLOPs, fraction of peak, memory (and a profile) of ``trainer.train_step(x, y)``."""
    logs: dict[str, float] = {}

    def step() -> None:
        logs.update(trainer.train_step(x, y))

    flops, memory = characterize(step, settings.device)
    timing = measure({"step": step}, settings, warmup=max(settings.warmup - WARM_CALLS, 0))["step"]
    batch = x.shape[0]
    out: dict[str, Any] = {
        "timing": timing.to_dict(),
        "step_s": timing.median,
        "images_per_s": batch / timing.median,
        "flops_per_step": flops,
        "flop_s": flops / timing.median,
        "fraction_of_peak": (flops / timing.median) / gemm["peak_flop_s"] if gemm else None,
        "fraction_of_mm_peak": (flops / timing.median) / gemm["mm_peak_flop_s"] if gemm else None,
        "memory": memory,
        "finite": bool(logs.get("finite", 0.0)),
        "losses": {k: v for k, v in logs.items() if k in ("loss", "l_c", "l_q", "d_loss", "gp", "bpd")},
    }
    if settings.profile:
        out["top_ops"] = top_ops(step, settings.device)
        out["phases"] = phase_breakdown(trainer, x, settings)
    return out


def phase_breakdown(trainer: Any, x: torch.Tensor, settings: Settings) -> dict[str, dict[str, float]]:
    """Time and FLOPs of the parts of one step, re-enacted one by one from the trainer's model, losses
    and optimizers: where the step's time goes. The parts add up to roughly the full step."""
    from avade.losses.adversarial import discriminator_loss, generator_loss, gradient_penalty
    from avade.models.preprocess import to_unit

    model, cfg, noise, n = trainer.model, trainer.cfg, trainer.noise, x.shape[0]
    disc = model.discriminator
    model.train()

    def likelihood() -> None:  # L_C: f, encoder, posterior, decoder; forward + backward
        with settings.autocast():
            loss = -model.log_likelihood(x, None, noise)["log_px"].mean()
        loss.backward()

    def sample_nograd() -> None:  # the D update's samples (prior -> decoder -> f^-1), no graph
        with torch.no_grad(), settings.autocast():
            model.generate(n, None, noise, flow_grad=False)

    with torch.no_grad():
        fake = to_unit(model.generate(n, None, noise, flow_grad=False)).float()
        real = to_unit(model.preprocess.dequantize(x, noise))

    def disc_update() -> None:  # D on real and fake, gradient penalty (double backward), backward
        with settings.autocast():
            d_loss = discriminator_loss(cfg.adv_loss, disc(real, None), disc(fake, None))
        gp = gradient_penalty(disc, real, fake, None, cfg.gp_weight, noise)
        (d_loss + gp).backward()

    def generator_adv() -> None:  # L_Q: samples with a graph to the decoder (f's params detached), D, backward
        disc.requires_grad_(False)  # as the trainer does: no D parameter gradients for L_Q
        try:
            with settings.autocast():
                fake_g = to_unit(model.generate(n, None, noise, flow_grad=cfg.flow_adv_grad)).float()
                l_q = generator_loss(cfg.adv_loss, disc(fake_g, None))
            (cfg.adv_weight * l_q).backward()
        finally:
            disc.requires_grad_(True)

    optimizers = [(trainer.opt_g, model.generator_parameters())]
    if disc is not None:
        optimizers.append((trainer.opt_d, list(disc.parameters())))

    def updates() -> None:  # what _finite_update does after backward: clip, finiteness check, optimizer step
        for opt, params in optimizers:
            with_grad = [p for p in params if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(with_grad, cfg.grad_clip or math.inf)
            bool(torch.isfinite(norm))
            opt.step()

    phases = {"likelihood (L_C fwd+bwd)": likelihood}
    if disc is not None:
        phases.update({"sampling for D (no grad)": sample_nograd, "D update incl. gradient penalty": disc_update,
                       "generator L_Q fwd+bwd": generator_adv})
    phases["clip + optimizer steps (G and D)"] = updates  # runs last: every parameter has a gradient by now
    out: dict[str, dict[str, float]] = {}
    for name, fn in phases.items():
        flops = count_flops(fn)  # doubles as a warm-up call
        timing = measure({name: fn}, settings, warmup=0, repeats=max(settings.repeats // 2, 1))[name]
        out[name] = {"time_s": timing.median, "flops": flops, "flop_s": flops / timing.median}
    model.zero_grad(set_to_none=True)
    return out


def param_counts(model: Any) -> dict[str, int]:
    counts = {name: sum(p.numel() for p in m.parameters())
              for name in ("flow", "encoder", "posterior", "decoder", "discriminator")
              if (m := getattr(model, name, None)) is not None}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def run(settings: Settings, gemm: dict[str, Any] | None = None, recipes: Sequence[str] | None = None,
        batch: int | None = None) -> dict[str, Any]:
    """Every recipe in ``recipes`` (default: av_ade_wg_rd and quickstart) at its own resolution."""
    result: dict[str, Any] = {"peak_flop_s": gemm["peak_flop_s"] if gemm else None,
                              "peak_source": gemm["peak_source"] if gemm else None,
                              "mm_peak_flop_s": gemm["mm_peak_flop_s"] if gemm else None,
                              "gemm_dtype": gemm["dtype"] if gemm else None, "recipes": {}}
    for name in recipes or list(RECIPES):
        path = RECIPES[name]
        resolution, recipe_batch = recipe_shape(path)
        b = batch or (min(recipe_batch, QUICK_BATCH) if settings.quick else recipe_batch)
        with trainer_for(path, settings, resolution, b) as trainer:
            x, y = random_batch(b, resolution, settings.device)
            entry = {"recipe": str(path.relative_to(ROOT)), "resolution": resolution, "batch": b,
                     "variant": trainer.recipe.variant, "params": param_counts(trainer.model)}
            entry.update(step_metrics(trainer, x, y, settings, gemm))
        result["recipes"][name] = entry
    return result


def render(result: dict[str, Any]) -> list[Any]:
    rows, tables = [], []
    for name, r in result["recipes"].items():
        rows.append([name, f"{r['batch']}x3x{r['resolution']}x{r['resolution']}", r["step_s"], r["images_per_s"],
                     r["flops_per_step"] / 1e9, r["flop_s"] / 1e9, r["fraction_of_peak"], r.get("fraction_of_mm_peak"),
                     r["memory"]["peak_mb"], r["finite"]])
        if "phases" in r:
            parts = [[k, v["time_s"], 100 * v["time_s"] / r["step_s"], v["flops"] / 1e9, v["flop_s"] / 1e9]
                     for k, v in r["phases"].items()]
            total = sum(v["time_s"] for v in r["phases"].values())
            parts.append(["sum of parts", total, 100 * total / r["step_s"], None, None])
            tables.append(table(f"train step parts, {name} (re-enacted from the trainer's model and losses; "
                                "% of the median step)", ["part", "time s", "% of step", "GFLOP", "GFLOP/s"], parts))
        if "top_ops" in r:
            tables.append(ops_table(f"top ops, train step, {name}", r["top_ops"]))
    peak = result.get("peak_flop_s")
    caption = (f"GEMM peak ({result.get('gemm_dtype')}, same run): {peak / 1e9:.1f} GFLOP/s by "
               f"{result.get('peak_source')}; torch.mm alone {result.get('mm_peak_flop_s', 0) / 1e9:.1f} GFLOP/s. "
               "FLOPs = matmul/conv only (FlopCounterMode)") if peak else None
    return [table("train: one Algorithm 1 step (D update + G update), synthetic data, warm-up off",
                  ["recipe", "batch shape", "step s", "img/s", "GFLOP/step", "GFLOP/s", "of GEMM peak",
                   "of torch.mm", "peak MiB", "finite"], rows, caption=caption), *tables]
