"""Evaluation of runs: ``avade eval``, ``avade sample``, metrics during training, the Table 7 study.

:class:`RunContext` implements :class:`avade.metrics.context.EvalContext` over a model and its
datasets, so every metric component works the same during training and from the CLI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console

from avade.errors import CheckpointError, ConfigError
from avade.models import GenerativeModel, build_model
from avade.recipe import load_recipe
from avade.recipe.schema import LIKELIHOOD_VARIANTS, ComponentRef, Recipe
from avade.recipe.write import recipe_to_dict
from avade.registry import get_registry
from avade.train import checkpoint as ckpt
from avade.train.data import eval_batches, subset_batches
from avade.train.distributed import is_main_process
from avade.train.rundir import RunDir, write_json


@attrs.define
class RunContext:
    """The evaluation environment of one model (see EvalContext)."""

    model: GenerativeModel
    recipe: Recipe
    train_set: Any
    test_set: Any
    device: torch.device
    out_dir: Path
    cache_dir: Path
    options: dict[str, Any] = attrs.Factory(dict)
    seed: int = 0
    checkpoint: Path | None = None  # the checkpoint the weights came from

    @property
    def dataset_key(self) -> str:
        ref = self.recipe.data.dataset
        shape = "x".join(str(s) for s in self.train_set.shape)
        config = repr(ref.config) if ref is not None else ""
        return f"{self.recipe.data.options.name}/{shape}/{hashlib.sha1(config.encode()).hexdigest()[:8]}"

    @property
    def num_classes(self) -> int:
        return int(self.train_set.num_classes)

    def _split(self, split: str) -> Any:
        if split not in ("train", "test"):
            raise ConfigError(f"unknown split '{split}'; use train or test")
        return self.train_set if split == "train" else self.test_set

    def real_batches(self, split: str, n: int | None = None, batch_size: int = 100
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return subset_batches(self._split(split), n, batch_size)

    def class_labels(self, n: int) -> torch.Tensor:
        """``n`` labels drawn (seeded) from the training split's labels: a class-conditional model is
        sampled with the data's class balance (uniform when the split's labels are not at hand)."""
        gen = torch.Generator().manual_seed(self.seed + 2)
        known = getattr(self.train_set, "labels", None)
        if known is not None:
            known = torch.as_tensor(known, dtype=torch.int64)
            known = known[(known >= 0) & (known < self.model.num_classes)]
        if known is None or len(known) == 0:
            return torch.randint(self.model.num_classes, (n,), generator=gen)
        return known[torch.randint(len(known), (n,), generator=gen)]

    @torch.no_grad()
    def sample_batches(self, n: int, batch_size: int = 100, labels: torch.Tensor | None = None
                       ) -> Iterator[torch.Tensor]:
        if labels is not None and not self.model.num_classes:
            raise ConfigError("class-conditional samples were asked for, but the model is not class-conditional "
                              "(model.conditional = false); train one with model.conditional = true, or drop "
                              "the metric that needs them")
        if labels is None and self.model.num_classes:
            # Training always conditions on a class; the unconditional path was never trained.
            labels = self.class_labels(n)
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            lab = labels[start:start + m].to(self.device) if labels is not None else None
            yield self.model.sample(m, lab, generator=gen).cpu()

    def bpd_defined(self) -> None:
        """A ConfigError unless the model has a likelihood (a GAN has none)."""
        if self.recipe.variant not in LIKELIHOOD_VARIANTS:
            raise ConfigError(f"variant '{self.recipe.variant}' is trained without a likelihood term, so bpd is "
                              "undefined for it; evaluate it with sample metrics, e.g. --metrics fid,kid,is")

    def bpd(self, split: str = "test", importance_samples: int = 1) -> dict[str, float]:
        self.bpd_defined()
        batches = eval_batches(self._split(split), self.recipe.data.options.eval_batch_size,
                               self.recipe.train.eval_batches)
        key = "bpd" if importance_samples == 1 else f"bpd_iw{importance_samples}"
        return {key: self.model.mean_bpd(batches, importance_samples)}


def _metric_config(ref: ComponentRef | None, name: str, samples: int | None) -> Any:
    registry = get_registry()
    config = ref.config if ref is not None else registry.validate("metric", name, {}, path=f"eval.{name}")
    if samples is not None and config is not None and hasattr(config, "samples"):
        config = attrs.evolve(config, samples=samples)
    return config


def build_metrics(names: Sequence[str], recipe: Recipe, model_classes: int, samples: int | None = None
                  ) -> list[tuple[str, Any]]:
    """The metrics ``names`` built with the recipe's settings, each checked against the model before any
    runs: one that ``needs_conditional`` samples needs a class-conditional model (``model_classes > 0``)."""
    registry = get_registry()
    metrics = []
    for name in names:
        metric = registry.build(registry.get("metric", name),
                                _metric_config(recipe.eval.settings.get(name), name, samples))
        if getattr(metric, "needs_conditional", False) and not model_classes:
            raise ConfigError(f"metric '{name}' scores class-conditional samples, but this model is not "
                              "class-conditional (model.conditional = false); leave it out of the metrics")
        metrics.append((name, metric))
    return metrics


def run_metrics(ctx: RunContext, names: Sequence[str], recipe: Recipe, samples: int | None = None,
                console: Console | None = None) -> dict[str, float]:
    """Compute registered metrics by name with the recipe's per-metric settings."""
    results: dict[str, float] = {}
    for name, metric in build_metrics(names, recipe, ctx.model.num_classes, samples):
        if console is not None:
            console.print(f"computing {name} ...")
        results.update(metric.compute(ctx))
    return results


def compute_metrics(trainer: Any, names: Sequence[str]) -> dict[str, float]:
    """Metrics during/after training (called by the trainer on the main process)."""
    ctx = RunContext(trainer.model, trainer.recipe, trainer.train_set, trainer.test_set, trainer.device,
                     trainer.run.root, cache_dir(), _options(trainer.recipe), trainer.cfg.seed)
    return run_metrics(ctx, names, trainer.recipe)


def _resolve_device(name: str) -> torch.device:
    from avade.train.trainer import resolve_device

    return resolve_device(name)


def cache_dir() -> Path:
    """Reference statistics of real data are shared by every run: ``$AVADE_CACHE`` or ~/.cache/avade."""
    path = Path(os.environ.get("AVADE_CACHE", Path.home() / ".cache" / "avade")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _options(recipe: Recipe) -> dict[str, Any]:
    return {"inception_weights": recipe.eval.inception_weights} if recipe.eval.inception_weights else {}


def select_checkpoint(run: RunDir, checkpoint: str | int | None = None) -> Path:
    """The newest checkpoint of ``run``, or the one of step ``checkpoint`` (``30000`` or ``step_00030000``)."""
    checkpoints = ckpt.list_checkpoints(run.checkpoints)
    if not checkpoints:
        raise CheckpointError(f"{run.root} has no checkpoint yet (checkpoints/ is empty)")
    if checkpoint is None:
        return checkpoints[-1]
    text = str(checkpoint).strip().removeprefix("step_")
    by_step = {ckpt.checkpoint_step(p): p for p in checkpoints}
    if text.isdecimal() and text.isascii() and int(text) in by_step:
        return by_step[int(text)]
    steps = ", ".join(str(s) for s in sorted(by_step))
    raise CheckpointError(f"--checkpoint {checkpoint}: {run.checkpoints} has no such checkpoint; its steps are {steps}")


def load_run(run_dir: Path, device: str = "auto", checkpoint: str | int | None = None) -> RunContext:
    """Rebuild a run's model from ``recipe.toml`` and its newest checkpoint (or that of step ``checkpoint``)."""
    from avade.train.trainer import load_datasets, resolve_device

    run = RunDir(Path(run_dir))
    if not run.recipe.is_file():
        raise CheckpointError(f"{run.root} is not a run directory (no recipe.toml); pass the --out of "
                              "`avade recipe run`")
    recipe = load_recipe(run.recipe)
    chosen = select_checkpoint(run, checkpoint)
    data = ckpt.read_checkpoint(chosen)
    if not ckpt.same_model(data["state"], recipe_to_dict(recipe)):
        # e.g. recipe.toml edited by hand: the weights would be evaluated as another model (a wrong
        # logit_alpha still loads, and gives a wrong BPD).
        raise CheckpointError(f"{run.recipe} no longer describes the model of {chosen} (model or data "
                              "settings changed since it was written); put back the recipe it was trained with "
                              f"(a copy is in {chosen / 'state.json'}, under \"recipe\")")
    try:
        dev = resolve_device(device)
    except ConfigError as exc:  # the device comes from --device here, not from the recipe's train.device
        raise ConfigError(exc.detail, path="--device") from None
    train_set, test_set = load_datasets(recipe)
    model = build_model(recipe, train_set.shape, train_set.num_classes)
    ckpt.load_weights(model, data["model"], chosen)
    model.to(dev).eval()
    return RunContext(model, recipe, train_set, test_set, dev, run.root, cache_dir(), _options(recipe),
                      recipe.train.seed, chosen)


def evaluate_run(run_dir: Path, metrics: Sequence[str] | None = None, samples: int | None = None,
                 device: str = "auto", console: Console | None = None, checkpoint: str | int | None = None
                 ) -> dict[str, float]:
    """``avade eval``: compute metrics on a run's newest checkpoint (or that of step ``checkpoint``) and
    record them in ``eval.json`` with the checkpoint and its step; results of earlier calls on the same
    checkpoint are kept (``--metrics bpd`` after ``--metrics fid`` keeps the FID)."""
    ctx = load_run(run_dir, device, checkpoint)
    names = list(metrics) if metrics else list(ctx.recipe.eval.metrics)
    if not metrics and ctx.recipe.variant not in LIKELIHOOD_VARIANTS:
        # As in training: the default metric (bpd) does not apply to a model without a likelihood.
        names = [m for m in names if m != "bpd"]
        if not names:
            raise ConfigError(f"variant '{ctx.recipe.variant}' has no likelihood, so the recipe's eval.metrics "
                              "(bpd) do not apply; choose sample metrics, e.g. --metrics fid,kid,is")
    registry = get_registry()
    for name in names:
        registry.get("metric", name)  # fail fast on a typo, before any work
    if "bpd" in names:
        ctx.bpd_defined()  # ... and on bpd for a model without a likelihood
    results = run_metrics(ctx, names, ctx.recipe, samples, console)
    if is_main_process():  # (the CLI runs it on rank 0 only; a script under torchrun may call it on every rank)
        _record_eval(RunDir(Path(run_dir)).eval, ctx.checkpoint, results)
    return results


def _record_eval(path: Path, checkpoint: Path | None, results: dict[str, float]) -> None:
    """Merge ``results`` into eval.json when it holds the same checkpoint's, under a lock: two ``avade
    eval`` at once (say fid and bpd on two GPUs) both land. The trainer drops an eval.json that training
    since made stale."""
    name = checkpoint.name if checkpoint is not None else None
    with _locked(path.with_name(f".{path.name}.lock")):
        record: dict[str, Any] = {}
        if path.is_file():
            try:
                earlier = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                earlier = None
            if isinstance(earlier, dict) and earlier.get("checkpoint") == name:
                record = earlier
        step = ckpt.checkpoint_step(checkpoint) if checkpoint else None
        record.update({"checkpoint": name, "step": step, **results})
        write_json(path, record)


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX ``flock``; elsewhere none)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(lock_file, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sample_run(run_dir: Path, n: int = 64, output: Path = Path("samples.png"), temperature: float = 1.0,
               reconstructions: bool = False, seed: int = 0, device: str = "auto",
               checkpoint: str | int | None = None) -> Path:
    """``avade sample``: a PNG grid of samples (or test images next to their reconstructions)."""
    from torchvision.utils import save_image

    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    ctx = load_run(run_dir, device, checkpoint)
    model = ctx.model
    gen = torch.Generator(device=ctx.device).manual_seed(seed)
    nrow = max(1, int(n**0.5))
    if reconstructions:
        x, y = next(ctx.real_batches("test", n, batch_size=n))
        x = x.to(ctx.device)
        recon = model.reconstruct(x, y.to(ctx.device) if model.num_classes else None, gen)
        images = torch.stack([x, recon], 1).flatten(0, 1)
        nrow = 2 * max(1, int((n / 2) ** 0.5))
    else:
        labels = (torch.arange(n, device=ctx.device) % model.num_classes) if model.num_classes else None
        images = model.sample(n, labels, temperature=temperature, generator=gen)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float() / 255.0, output, nrow=nrow)
    return output


def subset_study_cli(dataset: str, overrides: Sequence[str], fractions: Sequence[float],
                     console: Console | None = None, options: Mapping[str, Any] | None = None
                     ) -> list[dict[str, float]]:
    """``avade study subsets``: Table 7 on a dataset (``--set`` keys are the dataset's own config, given
    as ``resolution=16`` or, as in a recipe, ``data.resolution=16``)."""
    from avade.metrics.subset_study import subset_study
    from avade.recipe.load import parse_override

    registry = get_registry()
    info = registry.get("dataset", dataset)
    settings = {}
    for text in overrides:
        key, value = parse_override(text)
        settings[key.removeprefix("data.")] = value
    config = registry.validate("dataset", dataset, settings, path="data")
    train_set = registry.build(info, config, split="train")
    ctx = _DataOnlyContext(train_set, dataset, dict(options or {}), config=config)
    return subset_study(ctx, list(fractions), split="train")


@attrs.define
class _DataOnlyContext:
    """EvalContext over real data only (no model), for studies of the data itself."""

    data: Any
    name: str
    options: dict[str, Any]
    out_dir: Path = Path(".")
    cache_dir: Path = attrs.Factory(cache_dir)
    device: torch.device = attrs.Factory(lambda: _resolve_device("auto"))
    config: Any = None

    @property
    def dataset_key(self) -> str:
        config = hashlib.sha1(repr(self.config).encode()).hexdigest()[:8]
        return f"{self.name}/{'x'.join(map(str, self.data.shape))}/{config}"

    @property
    def num_classes(self) -> int:
        return int(self.data.num_classes)

    def real_batches(self, split: str, n: int | None = None, batch_size: int = 100
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return subset_batches(self.data, n, batch_size)

    def sample_batches(self, n: int, batch_size: int = 100, labels: torch.Tensor | None = None
                       ) -> Iterator[torch.Tensor]:
        raise ConfigError("this study has no model to sample from")

    def bpd(self, split: str = "test", importance_samples: int = 1) -> dict[str, float]:
        raise ConfigError("this study has no model")
