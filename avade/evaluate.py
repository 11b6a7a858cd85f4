"""Evaluation of runs: ``avade eval``, ``avade sample``, metrics during training, the Table 7 study.

:class:`RunContext` implements :class:`avade.metrics.context.EvalContext` over a model and its
datasets, so every metric component works the same during training and from the CLI.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import torch
from rich.console import Console

from avade.atomic_files import locked, replaced_atomically
from avade.data.base import class_counts, content_fingerprint, data_of_trained_model
from avade.errors import AvadeError, CheckpointError, ConfigError, DataError
from avade.models import GenerativeModel, build_model
from avade.recipe import load_recipe
from avade.recipe.load import parse_override, without_absent_critic
from avade.recipe.schema import LIKELIHOOD_VARIANTS, AbsentConfig, ComponentRef, Recipe
from avade.recipe.write import recipe_to_dict
from avade.registry import BUILTIN_DIST, get_registry
from avade.train import checkpoint as ckpt
from avade.train.data import eval_batches, subset_batches
from avade.train.distributed import is_main_process
from avade.train.rundir import RunDir, read_json_list, read_json_object, write_json


def dataset_key(name: str, shape: Sequence[int], config: Any) -> str:
    """What identifies a dataset's images in cache keys (cached reference features): its name, image shape,
    config and how its files are decoded (:data:`~avade.data.base.DECODING_VERSION`)."""
    from avade.data.base import DECODING_VERSION

    digest = hashlib.sha1(f"{config!r}/decoding{DECODING_VERSION}".encode()).hexdigest()[:8]
    return f"{name}/{'x'.join(map(str, shape))}/{digest}"


def draw_class_labels(counts: Sequence[int] | None, num_classes: int, n: int, seed: int) -> torch.Tensor:
    """``n`` class labels drawn independently (seeded) in the proportions of ``counts`` (uniformly when it
    is None): evaluation and ``avade sample -o X.npz`` draw the same labels from the same counts and seed."""
    weights = (torch.as_tensor(counts, dtype=torch.float64) if counts and sum(counts) > 0
               else torch.ones(num_classes, dtype=torch.float64))
    return torch.multinomial(weights, n, replacement=True, generator=torch.Generator().manual_seed(seed))


@attrs.define
class RunContext:
    """The evaluation environment of one model (see EvalContext). ``train``: the training split, or a
    function that loads it when a metric first asks for it (evaluating on the test split needs no training
    data); ``class_counts``: its labels per class as the checkpoint recorded them."""

    model: GenerativeModel
    recipe: Recipe
    train: Any
    test_set: Any
    device: torch.device
    out_dir: Path
    cache_dir: Path
    options: dict[str, Any] = attrs.Factory(dict)
    seed: int = 0
    checkpoint: Path | None = None  # the checkpoint the weights came from
    weights: str = "last"  # "ema": the run's averaged weights (train.ema_decay)
    class_counts: list[int] | None = None

    @property
    def train_set(self) -> Any:
        """The training split, loaded on first use (only metrics that read it pay for it)."""
        if callable(self.train) and not isinstance(self.train, torch.utils.data.Dataset):
            self.train = self.train()
        return self.train

    @property
    def dataset_key(self) -> str:
        """The data's key in cache file names: dataset, shape and config (and ``n_bits`` when below 8)."""
        ref = self.recipe.data.dataset
        bits = self.recipe.data.options.n_bits
        config = ref.config if ref is not None else ""
        # posterized images have reference statistics of their own
        return dataset_key(self.recipe.data.options.name, self.test_set.shape,
                           config if bits == 8 else f"{config!r}/bits{bits}")

    @property
    def num_classes(self) -> int:
        """The data's number of classes (0: unlabeled)."""
        return int(self.test_set.num_classes)

    def _split(self, split: str) -> Any:
        if split not in ("train", "test"):
            raise ConfigError(f"unknown split '{split}'; use train or test")
        return self.train_set if split == "train" else self.test_set

    def split_fingerprint(self, split: str) -> str:
        """What changes when ``split``'s images do (the cache key of its reference features); an optional
        extension of :class:`~avade.metrics.context.EvalContext`."""
        return content_fingerprint(self._split(split))

    def labels(self, split: str) -> torch.Tensor | None:
        """The labels of ``split`` in dataset order, without decoding its images (None when the dataset
        keeps no label list); an optional extension of :class:`~avade.metrics.context.EvalContext`."""
        known = getattr(self._split(split), "labels", None)
        return None if known is None else torch.as_tensor(known, dtype=torch.int64)

    def real_batches(self, split: str, n: int | None = None, batch_size: int = 100
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """See :meth:`~avade.metrics.context.EvalContext.real_batches`."""
        return subset_batches(self._split(split), n, batch_size)

    @property
    def sample_seed(self) -> int:
        """The seed model samples are drawn with (``train.seed + 1``): ``avade sample --seed`` of it (and
        ``--batch-size`` of the metric's) draws them again; eval.json records it with each sample metric's settings."""
        return self.seed + 1

    def class_labels(self, n: int) -> torch.Tensor:
        """``n`` labels drawn (seeded) with the training split's class balance, for a class-conditional
        model (uniform when the split's labels are not at hand)."""
        counts = self.class_counts if self.class_counts is not None else class_counts(self.train_set)
        return draw_class_labels(counts, self.model.num_classes, n, self.seed + 2)

    @torch.no_grad()
    def sample_batches(self, n: int, batch_size: int = 100, labels: torch.Tensor | None = None
                       ) -> Iterator[torch.Tensor]:
        """See :meth:`~avade.metrics.context.EvalContext.sample_batches`; drawn with :attr:`sample_seed`."""
        if labels is not None and not self.model.num_classes:
            raise ConfigError("class-conditional samples were asked for, but the model is not class-conditional "
                              "(model.conditional = false); train one with model.conditional = true, or drop "
                              "the metric that needs them")
        if labels is None and self.model.num_classes:
            # Training always conditions on a class; the unconditional path was never trained.
            labels = self.class_labels(n)
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.sample_seed)
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            lab = labels[start:start + m].to(self.device) if labels is not None else None
            yield self.model.sample(m, lab, generator=gen).cpu()

    def bpd_defined(self) -> None:
        """A ConfigError unless the model has a likelihood (a GAN has none)."""
        if self.recipe.variant not in LIKELIHOOD_VARIANTS:
            raise ConfigError(f"variant '{self.recipe.variant}' is trained without a likelihood term, so bpd is "
                              "undefined for it; evaluate it with sample metrics, e.g. --metrics fid,kid")

    def bpd_images(self, split: str = "test") -> tuple[int, int]:
        """(images the bits/dim of ``split`` are averaged over, images in it): fewer with ``train.eval_batches``."""
        total = len(self._split(split))
        limit = self.recipe.train.eval_batches
        return (min(total, limit * self.recipe.data.options.eval_batch_size) if limit else total), total

    def bpd(self, split: str = "test", importance_samples: int = 1) -> dict[str, float]:
        """See :meth:`~avade.metrics.context.EvalContext.bpd`; a warning when ``train.eval_batches`` caps the images."""
        self.bpd_defined()
        used, total = self.bpd_images(split)
        if used < total:  # as training reported it, but not the published measure: say so
            warnings.warn(f"bpd averaged over {used} of the {total} {split} images (train.eval_batches = "
                          f"{self.recipe.train.eval_batches}); for the whole split: --set train.eval_batches=0",
                          UserWarning, stacklevel=2)
        options = self.recipe.data.options
        batches = eval_batches(self._split(split), options.eval_batch_size, self.recipe.train.eval_batches,
                               options.num_workers)
        key = "bpd" if importance_samples == 1 else f"bpd_iw{importance_samples}"
        return {key: self.model.mean_bpd(batches, importance_samples)}


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

    extractor = get_extractor(_options(recipe), "cpu")
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
    return _compute(ctx, build_metrics(names, recipe, ctx.model.num_classes, samples), console, taken)


#: keys of summary.json / eval.json that are not metric values: a metric may not return them
RECORD_KEYS = frozenset({"recipe", "variant", "steps", "train_images_per_s", "device", "weights", "bpd_untrained",
                         "error", "checkpoint", "step", "settings"})


def _compute(ctx: RunContext, metrics: list[tuple[str, Any]], console: Console | None,
             taken: Sequence[str] = ()) -> dict[str, float]:
    """Each metric's ``compute(ctx)``, merged; ``taken``: keys already reported (the trainer's bpd)."""
    registry = get_registry()
    results: dict[str, float] = {}
    owners = dict.fromkeys(taken, "the trainer")
    for name, metric in metrics:
        if console is not None:
            console.print(f"computing {name} ...")
        info = registry.get("metric", name)
        what, fix = info.blame()  # "metric 'x' (from plugin P)", "; fix or disable that plugin ..."
        try:
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
    return results


def result_stem(metric: str) -> str:
    """The prefix a metric's result names start with: ``kid`` -> ``kid_mean``, ``gan-test`` -> ``gan_test``."""
    return metric.replace("-", "_")


def owns(metric: str, key: str) -> bool:
    """Whether ``key`` is a result name of ``metric`` (its stem, or the stem and ``_...``)."""
    stem = result_stem(metric)
    return key == stem or key.startswith(stem + "_")


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


def compute_metrics(trainer: Any, names: Sequence[str], taken: Sequence[str] = ()) -> dict[str, float]:
    """Metrics during/after training (called by the trainer on the main process); ``taken``: the keys the
    trainer reports itself (bpd)."""
    ctx = RunContext(trainer.model, trainer.recipe, trainer.train_set, trainer.test_set, trainer.device,
                     trainer.run.root, cache_dir(), _options(trainer.recipe), trainer.cfg.seed)
    return run_metrics(ctx, names, trainer.recipe, taken=taken)


def _resolve_device(name: str) -> torch.device:
    from avade.train.device import resolve_device

    return resolve_device(name)


def cache_dir() -> Path:
    """Reference statistics of real data are shared by every run: ``$AVADE_CACHE`` or ~/.cache/avade."""
    configured = os.environ.get("AVADE_CACHE")
    path = Path(configured or Path.home() / ".cache" / "avade").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "AVADE_CACHE" if configured else "the default cache folder"
        raise AvadeError(f"{where}: cannot use {path} as the folder for cached reference statistics "
                         f"({exc.strerror or exc}); point AVADE_CACHE at a writable folder") from None
    return path


def _options(recipe: Recipe) -> dict[str, Any]:
    return {"inception_weights": recipe.eval.inception_weights} if recipe.eval.inception_weights else {}


def _not_a_run(root: Path) -> CheckpointError:
    """The error for a folder without recipe.toml; a sweep's --out (its runs one level down) names them."""
    try:
        runs = sorted(p for p in Path(root).iterdir() if (p / "recipe.toml").is_file())
    except OSError:
        runs = []
    if runs:
        return CheckpointError(f"{root} is not a run directory but holds {len(runs)} run(s) (a sweep's --out); "
                               f"pass one of them, e.g. {runs[0]}")
    return CheckpointError(f"{root} is not a run directory (no recipe.toml); pass the --out of `avade recipe run`")


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The steps of a run's checkpoints, oldest first (:func:`evaluate_checkpoints`)."""
    run = RunDir(Path(run_dir))
    if not run.recipe.is_file():
        raise _not_a_run(run.root)
    steps = [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(run.checkpoints)]
    if not steps:
        raise CheckpointError(f"{run.root} has no checkpoint yet (checkpoints/ is empty)")
    return steps


def select_checkpoint(run: RunDir, checkpoint: str | int | None = None) -> Path:
    """The newest checkpoint of ``run``, or the one of step ``checkpoint`` (``30000`` or ``step_00030000``)."""
    checkpoints = ckpt.list_checkpoints(run.checkpoints)
    if not checkpoints:
        raise CheckpointError(f"{run.root} has no checkpoint yet (checkpoints/ is empty)")
    if checkpoint is None:
        return checkpoints[-1]
    by_step = {ckpt.checkpoint_step(p): p for p in checkpoints}
    wanted = ckpt.parse_step(str(checkpoint))
    if wanted in by_step:
        return by_step[wanted]
    steps = ", ".join(str(s) for s in sorted(by_step))
    raise CheckpointError(f"--checkpoint {checkpoint}: {run.checkpoints} has no such checkpoint; its steps are {steps}")


def load_model(run_dir: str | Path, device: str = "auto", checkpoint: str | int | None = None,
               ema: bool = True) -> tuple[GenerativeModel, Recipe, Path]:
    """A trained model, in eval mode on ``device``, from a run directory: rebuilt from its ``recipe.toml``
    with the weights of its newest checkpoint (or of step ``checkpoint``); a run trained with
    ``train.ema_decay`` gives its averaged weights (``ema=False``: the last iterate). Returns the model,
    the recipe and the checkpoint directory. The dataset is not needed (checkpoints record the image shape
    and class count the model was built for; one written before they did is rebuilt from the dataset).

    >>> model, recipe, _ = avade.load_model("runs/quickstart/latest")
    >>> images = model.sample(16, temperature=0.9)   # uint8 [16, C, H, W]
    """
    loaded = _load(Path(run_dir), device, checkpoint, datasets=False, ema=ema, library=True)
    return loaded.model, loaded.recipe, loaded.checkpoint


class _Loaded(NamedTuple):
    model: GenerativeModel
    recipe: Recipe
    checkpoint: Path
    datasets: tuple[Any, Any] | None  # (train, test)
    weights: str  # "ema" (the averaged weights) or "last"
    class_counts: list[int] | None  # the training split's labels per class, as recorded by the checkpoint


def _load(run_dir: Path, device: str, checkpoint: str | int | None, datasets: bool, ema: bool = True,
          library: bool = False, overrides: Sequence[str] = ()) -> _Loaded:
    """The model (eval mode, on ``device``), recipe and checkpoint of a run, and its (train, test) datasets
    when ``datasets`` is set or the checkpoint does not say what the model was built for. On CUDA the run's
    ``train.tf32`` is applied, unless ``library`` (:func:`load_model` leaves global settings alone).
    ``overrides``: ``--set`` keys that leave the trained model as it is (:func:`_overridden`)."""
    from avade.registry import PluginWarning
    from avade.train.device import resolve_device
    from avade.train.ema import apply_average
    from avade.train.provenance import missing_plugin_hint, naming_missing_plugins

    run = RunDir(run_dir)
    if not run.recipe.is_file():
        raise _not_a_run(run.root)
    # e.g. a component of a plugin uninstalled (or disabled) since: named; only the critic can be done without
    with naming_missing_plugins(run.checkpoints), without_absent_critic():
        recipe = load_recipe(run.recipe, saved=True)
        if overrides:
            recipe = _overridden(run, recipe, overrides)
    critic = recipe.model.discriminator
    if critic is not None and isinstance(critic.config, AbsentConfig):
        warnings.warn(f"{run.recipe}: discriminator '{critic.name}' is not installed "
                      f"({missing_plugin_hint(run.checkpoints).removeprefix('; ') or 'a plugin removed or disabled?'}"
                      "); the run is read without its critic, which only training needs", PluginWarning, stacklevel=3)
    chosen = select_checkpoint(run, checkpoint)
    data = ckpt.read_checkpoint(chosen, need_average=ema, training_state=False)
    with without_absent_critic():  # an older checkpoint's recipe is re-read: its critic may be gone too
        same = ckpt.same_model(data["state"], recipe_to_dict(recipe))
    if not same:
        # e.g. recipe.toml edited by hand: the weights would be evaluated as another model (a wrong
        # logit_alpha still loads, and gives a wrong BPD).
        raise CheckpointError(f"{run.recipe} no longer describes the model of {chosen} (model or data "
                              "settings changed since it was written); put back the recipe it was trained with "
                              f"(a copy is in {chosen / 'state.json'}, under \"recipe\")")
    try:
        dev = resolve_device(device)
    except ConfigError as exc:  # the device comes from --device here, not from the recipe's train.device
        raise ConfigError(exc.detail, path="--device") from None
    shape, classes = data["state"].get("data_shape"), data["state"].get("num_classes")
    # the training split only when the checkpoint does not say what it needs of it (metrics load it lazily)
    known = shape is not None and classes is not None and (data["state"].get("class_counts") is not None
                                                           or not int(classes))
    sets = (_datasets(recipe, train=not known) if datasets or shape is None or classes is None else None)
    if shape is None or classes is None:  # a checkpoint from before they were recorded
        assert sets is not None
        shape, classes = sets[1].shape, sets[1].num_classes
    if sets is not None and recipe.model.options.conditional:
        for split, found in zip(("train", "test"), sets, strict=True):
            check_classes(found, int(classes), split, recipe)
    if dev.type == "cuda" and not library:  # the CLI evaluates with the precision the run trained with
        from avade.train.device import configure_tf32

        configure_tf32(recipe.train.tf32)
    with naming_missing_plugins(run.checkpoints):  # a norm is only looked up here, as the model is built
        model = build_model(recipe, tuple(shape), int(classes))
    weights = data["model"]
    if model.discriminator is None:  # a critic left out (its plugin is gone): its weights are not read
        weights = {k: v for k, v in weights.items() if not k.startswith("discriminator.")}
    ckpt.load_weights(model, weights, chosen)
    weights = "last"
    if ema and "ema" in data:
        apply_average(model, model.generator_parameters(), data["ema"], chosen)
        weights = "ema"
    model.to(dev).eval()
    counts = data["state"].get("class_counts")
    if counts is None and int(classes):  # a checkpoint from before they were recorded: count the data's
        counts = class_counts(sets[0]) if sets is not None and sets[0] is not None else _data_class_counts(recipe)
    return _Loaded(model, recipe, chosen, sets, weights, counts)


def check_classes(found: Any, classes: int, split: str, recipe: Recipe) -> Any:
    """``found`` (a split of a class-conditional run's data, or None), refused with a DataError unless it has the
    ``classes`` classes the run was trained on: label i would mean another class to the model (an image folder
    with a class folder added or removed since), or lie outside its classes. ``classes = 0``: an unconditional
    model, which reads no labels. Returns ``found``."""
    if found is not None and classes and int(found.num_classes) != classes:
        root = getattr(recipe.data.dataset.config if recipe.data.dataset is not None else None, "root", None)
        where = f" under data.root = {root!r}" if isinstance(root, str) else ""
        raise DataError(f"the run's class-conditional model was trained on {classes} classes, but the {split} split "
                        f"of '{recipe.data.options.name}'{where} has {int(found.num_classes)}: its labels would mean "
                        "other classes to the model; point --set data.root at the data it was trained on")
    return found


def _data_class_counts(recipe: Recipe) -> list[int] | None:
    """The training split's labels per class, read from the data (None when it is not at hand: a run
    copied without its data is then sampled with uniform classes)."""
    try:
        return class_counts(_datasets(recipe)[0])
    except (AvadeError, OSError):
        return None


def _datasets(recipe: Recipe, train: bool = True, test: bool = True) -> tuple[Any, Any]:
    """(train, test) of a trained run's recipe (None for a split not asked for); their "not found" hints
    point at ``--set data.root``, not at another dataset (the model was trained on this one)."""
    from avade.train.datasets import load_datasets

    with data_of_trained_model():
        return load_datasets(recipe, train=train, test=test)


# what `--set` of eval and sample may change: everything the checkpoint fingerprint leaves out
SETTABLE_AFTER_TRAINING = ("data.root, data.folder (moved, same name), data.eval_batch_size, data.num_workers, "
                           "model.temperature, train.seed, train.eval_batches, eval.*")
# ... and of those, what evaluating and sampling read (others, e.g. train.lr, change nothing here)
_READ_AFTER_TRAINING = ("data.", "model.temperature", "train.seed", "train.eval_batches", "train.tf32", "eval.")


def _overridden(run: RunDir, recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """The run's recipe with ``--set`` ``overrides`` applied; refused, naming the keys, when they would change
    the model or data the checkpoints were trained on (their weights would be read as another model)."""
    changed = load_recipe(run.recipe, overrides, saved=True)
    before, after = recipe_to_dict(recipe), recipe_to_dict(changed)
    if ckpt.fingerprint(after) != ckpt.fingerprint(before):
        what = ckpt.fingerprint_differences(before, after)
        raise ConfigError(f"{what or ', '.join(overrides)} would change the model or data the run was trained on; "
                          f"here --set takes keys that leave them as trained: {SETTABLE_AFTER_TRAINING}",
                          path="--set")
    old, new = ckpt.flatten(before), ckpt.flatten(after)
    idle = [k for k in dict.fromkeys([*old, *new])
            if old.get(k) != new.get(k) and not k.startswith(_READ_AFTER_TRAINING)]
    if idle:  # accepted (the model stays as trained) but read only by training: say so rather than seem to work
        warnings.warn(f"--set {', '.join(idle)}: read only by training, no effect on evaluating or sampling a trained "
                      f"run (here --set takes {SETTABLE_AFTER_TRAINING})", UserWarning, stacklevel=2)
    return changed


def load_run(run_dir: Path, device: str = "auto", checkpoint: str | int | None = None,
             ema: bool = True, overrides: Sequence[str] = ()) -> RunContext:
    """Rebuild a run's model from ``recipe.toml`` and its newest checkpoint (or that of step ``checkpoint``),
    with its datasets, for evaluation (:func:`load_model` for the model alone). ``overrides``: ``--set``
    style keys that leave the trained model as it is, e.g. ``data.root=/scratch/data``."""
    loaded = _load(Path(run_dir), device, checkpoint, datasets=True, ema=ema, overrides=overrides)
    assert loaded.datasets is not None
    train_set, test_set = loaded.datasets
    recipe = loaded.recipe
    classes = loaded.model.num_classes
    train = train_set if train_set is not None else (
        lambda: check_classes(_datasets(recipe, test=False)[0], classes, "train", recipe))
    return RunContext(loaded.model, recipe, train, test_set, next(loaded.model.parameters()).device,
                      Path(run_dir), cache_dir(), _options(recipe), recipe.train.seed, loaded.checkpoint,
                      loaded.weights, loaded.class_counts)


def evaluate_run(run_dir: Path, metrics: Sequence[str] | None = None, samples: int | None = None,
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
    return _evaluate(run_dir, metrics, samples, device, console, checkpoint, ema, importance_samples, overrides)[0]


def sweep_runs(root: Path) -> tuple[list[Path], dict[str, dict[str, Any]]]:
    """The run directories of a sweep's ``--out``, in the sweep's order, and each variant's override values
    (``{"model.flow.scales": 2, ...}``): those of its ``sweep_plan.json`` (every variant of the sweep as last
    started, also those not trained yet, whose directories do not exist), else of its sweep_summary.json
    (runs it does not list after, by name)."""
    root = Path(root)
    plan = read_json_object(root / "sweep_plan.json").get("variants")
    if isinstance(plan, list):
        listed = [v for v in plan if isinstance(v, dict) and isinstance(v.get("name"), str)]
        # a run is named by its directory (the name an older avade gave a variant it started)
        dirs = {v["name"]: v["dir"] if isinstance(v.get("dir"), str) else v["name"] for v in listed}
        for name in dirs.values():  # avade writes plain names (sweep.variant_name): a path would lead elsewhere
            if Path(name).name != name or name in (".", ".."):
                raise CheckpointError(f"{root / 'sweep_plan.json'} names a variant directory {name!r:.80}, which "
                                      f"is not a folder of {root}: it was edited; fix or delete that entry")
        axes = {dirs[v["name"]]: dict(v["overrides"]) if isinstance(v.get("overrides"), dict) else {}
                for v in listed}
        return [root / name for name in axes], axes
    summary = root / "sweep_summary.json"
    if not summary.is_file():  # a folder of separate runs (runs/<recipe>/<time>) is no sweep
        return [], {}
    runs = {p.name: p for p in sorted(root.iterdir()) if (p / "recipe.toml").is_file()}
    axes = {}
    for row in read_json_list(summary):
        if isinstance(row, dict) and isinstance(row.get("name"), str):
            # the variant's overrides are its dotted keys (its summary's own keys have no dots)
            axes[row["name"]] = {k: v for k, v in row.items() if "." in k}
    order = [name for name in axes if name in runs] + [name for name in runs if name not in axes]
    return [runs[name] for name in order], axes


def evaluate_sweep(root: Path, metrics: Sequence[str] | None = None, samples: int | None = None,
                   device: str = "auto", console: Console | None = None, ema: bool = True,
                   importance_samples: int | None = None, overrides: Sequence[str] = (),
                   only: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``avade eval SWEEP_OUT``: :func:`evaluate_run` on every variant's newest checkpoint (each run records
    its own eval.json), one row each (``name``, the variant's overrides, ``step``, ``weights``, the metrics,
    with those evaluated earlier on the same checkpoint and weights;
    ``error`` for a variant that could not be evaluated, the others go on), written to the sweep's
    ``sweep_eval.{json,csv}`` and shown as sweep_summary is (a two-axis sweep also as a grid of the first
    metric): e.g. FID of the whole scales x blocks ablation after training it with bpd alone. A sweep's
    --out is a folder with its sweep_summary.json. ``only``: just these variants (names or 0-based indices, as
    ``recipe run --only``: one variant per cluster array job); the rows of the others already in
    sweep_eval.json stay, so the table fills up as the jobs finish. Returns the rows of the variants evaluated."""
    from avade.train.run import select_variants, write_sweep_summary

    root = Path(root)
    every, axes = sweep_runs(root)
    if not every:
        raise _not_a_run(root)
    runs = select_variants(every, only) if only else every
    rows = []
    for run in runs:
        row: dict[str, Any] = {"name": run.name, **axes.get(run.name, {})}
        if console is not None:
            console.print(f"[bold]{run.name}[/]")
        try:
            if not (run / "recipe.toml").is_file():
                raise CheckpointError(f"{run.name} has not started training yet (no {run}); train it with "
                                      f"`avade recipe run ... --out {root} --resume` (or --only {run.name})")
            results, weights = _evaluate(run, metrics, samples, device, console, None, ema, importance_samples,
                                         overrides)
        except AvadeError as exc:
            row["error"] = str(exc)
        except Exception as exc:  # e.g. out of memory on one variant's model: the others are still evaluated
            row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        else:
            # with the metrics evaluated earlier on the same checkpoint and weights (bpd, then fid: both)
            record = read_json_object(run / "eval.json")
            earlier = ({k: v for k, v in record.items() if k not in ("checkpoint", "step", "weights", "settings")}
                       if record.get("weights", "last") == weights else {})
            row.update({"step": record.get("step"), "weights": weights, **earlier, **results})
        rows.append(row)
    with locked(root / ".sweep_eval.lock"):  # --only jobs of one sweep, run in parallel, all add their rows
        table = _with_earlier_eval_rows(root, rows, every) if only else rows
        keys = list(dict.fromkeys(k for row in table for k in axes.get(row["name"], {})))
        results_keys = list(dict.fromkeys(k for row in table for k in row))
        main = [k for m in metrics or [] for k in results_keys if owns(m, k)]  # the grid shows the first metric's
        write_sweep_summary(root, table, console or Console(stderr=True), axes=keys, stem="sweep_eval", main=main)
    return rows


def _with_earlier_eval_rows(root: Path, rows: list[dict[str, Any]], every: Sequence[Path]) -> list[dict[str, Any]]:
    """``rows`` and, for the sweep's other variants, their rows in the earlier sweep_eval.json (an
    unreadable one counts as none), in the sweep's order."""
    fresh = {row["name"] for row in rows}
    rank = {run.name: i for i, run in enumerate(every)}
    earlier = read_json_list(root / "sweep_eval.json")
    kept = [row for row in earlier if isinstance(row, dict) and row.get("name") in rank and row["name"] not in fresh]
    return sorted([*kept, *rows], key=lambda row: rank[row["name"]])


def sweep_eval_failures(root: Path, rows: Sequence[Mapping[str, Any]]) -> AvadeError | None:
    """The error to end ``avade eval SWEEP_OUT`` with when some variants could not be evaluated (after their
    rows were written and shown), or None."""
    failed = [str(row.get("name")) for row in rows if "error" in row]
    if not failed:
        return None
    return AvadeError(f"{len(failed)} of {len(rows)} sweep variants could not be evaluated ({', '.join(failed)}); "
                      f"their errors are in {Path(root) / 'sweep_eval.json'}, with the other rows")


def evaluate_checkpoints(run_dir: Path, metrics: Sequence[str] | None = None, samples: int | None = None,
                         device: str = "auto", console: Console | None = None, ema: bool = True,
                         importance_samples: int | None = None, overrides: Sequence[str] = ()
                         ) -> list[dict[str, Any]]:
    """``avade eval --checkpoint all``: :func:`evaluate_run` on every checkpoint kept, oldest first; one row
    per checkpoint (``step``, ``weights``, the metrics). One removed meanwhile (pruned by a training run
    still going) is skipped with a warning rather than losing the rows computed so far."""
    rows = []
    for step in checkpoint_steps(run_dir):
        try:
            results, weights = _evaluate(run_dir, metrics, samples, device, console, step, ema, importance_samples,
                                         overrides)
        except CheckpointError:
            if any(ckpt.checkpoint_step(p) == step for p in ckpt.list_checkpoints(RunDir(Path(run_dir)).checkpoints)):
                raise
            if console is not None:
                console.print(f"[yellow]warning:[/] checkpoint of step {step} was removed meanwhile; skipped")
            continue
        rows.append({"step": step, "weights": weights, **results})
    return rows


def _evaluate(run_dir: Path, metrics: Sequence[str] | None, samples: int | None, device: str,
              console: Console | None, checkpoint: str | int | None, ema: bool,
              importance_samples: int | None = None, overrides: Sequence[str] = ()) -> tuple[dict[str, float], str]:
    """:func:`evaluate_run`'s results and which weights they are of ("ema" or "last")."""
    ctx = load_run(run_dir, device, checkpoint, ema, overrides)
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
    results = _compute(ctx, metrics_built, console)
    settings = metric_settings(metrics_built)
    for name, metric in metrics_built:  # bits/dim of part of the split (train.eval_batches): recorded as such
        split = getattr(getattr(metric, "cfg", None), "split", None)
        if name == "bpd":  # each batch draws its own noise: another eval_batch_size, another (equally good) draw
            settings[name] = {**settings.get(name, {}), "eval_batch_size": ctx.recipe.data.options.eval_batch_size}
        if name == "bpd" and isinstance(split, str) and ctx.recipe.train.eval_batches:
            used, total = ctx.bpd_images(split)
            if used < total:
                settings[name] = {**settings.get(name, {}), "images": used, "split_images": total}
        if "samples" in settings.get(name, {}):  # a metric of model samples: which ones (train.seed, or --set's)
            settings[name] = {**settings[name], "sample_seed": ctx.sample_seed}
    if overrides:  # e.g. model.temperature: part of what each value was computed with
        given = dict(parse_override(text) for text in overrides)
        settings = {name: {**settings.get(name, {}), "overrides": given} for name, _ in metrics_built}
    if is_main_process():  # (the CLI runs it on rank 0 only; a script under torchrun may call it on every rank)
        _record_eval(RunDir(Path(run_dir)), ctx.checkpoint, results, ctx.weights, settings,
                     ran=[name for name, _ in metrics_built])
    return results, ctx.weights


def _record_eval(run: RunDir, checkpoint: Path | None, results: dict[str, float], weights: str = "last",
                 settings: dict[str, Any] | None = None, ran: Sequence[str] = ()) -> None:
    """Merge ``results`` (and the ``settings`` each metric ran with, under ``"settings"``) into eval.json
    when it holds the same checkpoint's (else it starts over: eval.json is the checkpoint evaluated last),
    and into that checkpoint's record in eval_checkpoints.json (every checkpoint evaluated, so evaluating
    an older one loses nothing). Under a lock: two ``avade eval`` at once (say fid and bpd on two GPUs) both
    land. The trainer drops what training since made stale. ``ran``: the metrics computed now (their earlier
    results are replaced)."""
    name = checkpoint.name if checkpoint is not None else None
    step = ckpt.checkpoint_step(checkpoint) if checkpoint else None

    def merged(earlier: Any) -> dict[str, Any]:
        record = dict(earlier) if (isinstance(earlier, dict) and earlier.get("checkpoint") == name
                                   and earlier.get("weights", "last") == weights) else {}
        # a metric run again replaces all its earlier results (bpd_iw4 of an earlier k goes with it), so the
        # values and its recorded settings agree
        record = {k: v for k, v in record.items() if not any(owns(m, k) for m in ran)}
        record.update({"checkpoint": name, "step": step, "weights": weights, **results})
        record["settings"] = {**record.get("settings", {}), **(settings or {})}
        return record

    with locked(run.eval.with_name(f".{run.eval.name}.lock")):
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
            settings_ = {**(earlier.get("settings") or {}), **(last.get("settings") or {})}
            earlier = {**earlier, **last, "settings": settings_}
        record = merged(earlier or None)
        write_json(run.eval, record)
        rows = sorted([*rest, record],
                      key=lambda r: (r.get("step") if isinstance(r.get("step"), int) else -1, str(r.get("weights"))))
        write_json(run.eval_checkpoints, {"records": rows})


SAMPLE_BATCH = 100  # images per model call when sampling


def sample_run(run_dir: Path, n: int = 64, output: Path = Path("samples.png"), temperature: float | None = None,
               reconstructions: bool = False, seed: int = 0, device: str = "auto",
               checkpoint: str | int | None = None, batch_size: int = SAMPLE_BATCH, ema: bool = True,
               overrides: Sequence[str] = (), label: int | None = None) -> Path:
    """``avade sample``: a PNG grid of samples (or test images next to their reconstructions), or with an
    ``.npz`` output all ``n`` samples as a uint8 ``[n, H, W, C]`` array ``arr_0`` (the layout external FID
    tools read; for a class-conditional model ``labels`` beside it, drawn with the training split's class
    balance as evaluation draws them), written atomically. ``overrides``: ``--set`` keys that leave the trained
    model as it is (e.g. ``data.root`` for reconstructions, ``model.temperature``). A class-conditional model's
    grid shows one class per column; ``label``: samples of that class alone."""
    from torchvision.utils import save_image

    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    output = Path(output)
    as_array = output.suffix.lower() == ".npz"
    if as_array and reconstructions:
        raise ConfigError("--reconstructions writes an image grid; give -o a .png (or another image) file")
    # Samples need only the model (a run copied without its data can be sampled); reconstructions need test images.
    loaded = _load(Path(run_dir), device, checkpoint, datasets=reconstructions, ema=ema, overrides=overrides)
    model, sets = loaded.model, loaded.datasets
    if reconstructions and model.variant == "gan":  # its encoder is never trained: no reconstructions to show
        raise ConfigError("a GAN trains no encoder, so it has no reconstructions; leave out --reconstructions")
    if label is not None:
        if not model.num_classes:
            raise ConfigError(f"--class {label}: this run's model is not class-conditional; leave out --class")
        if reconstructions:
            raise ConfigError("--class picks the class of samples; reconstructions are of the test images' own "
                              "classes: leave out one of them")
        if not 0 <= label < model.num_classes:
            raise ConfigError(f"--class {label}: the model has classes 0..{model.num_classes - 1}")
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    nrow = max(1, int(n**0.5))
    labels = None
    if label is not None:
        labels = torch.full((n,), label, dtype=torch.int64, device=dev)
    elif model.num_classes and as_array:
        # The training split's class balance, drawn as evaluation draws them (seeded one above the noise):
        # `--seed <train.seed + 1>` gives the samples `avade eval` scores.
        labels = draw_class_labels(loaded.class_counts, model.num_classes, n, seed + 1).to(dev)
    elif model.num_classes:  # a grid shows the classes in turn: one per column
        labels = torch.arange(n, device=dev) % model.num_classes
        nrow = class_columns(model.num_classes, n)
    if reconstructions:
        assert sets is not None
        if n > len(sets[1]):  # say so rather than hand back a smaller grid unannounced
            warnings.warn(f"-n {n}: the test split holds {len(sets[1])} images; the grid shows all of them",
                          UserWarning, stacklevel=2)
        x, y = next(subset_batches(sets[1], n, batch_size=n))
        x = x.to(dev)
        recon = model.reconstruct(x, y.to(dev) if model.num_classes else None, gen)
        images = torch.stack([x, recon], 1).flatten(0, 1)
        nrow = 2 * max(1, int((n / 2) ** 0.5))
    else:
        with torch.inference_mode():
            images = torch.cat([
                model.sample(min(batch_size, n - start), labels[start:start + batch_size] if labels is not None
                             else None, temperature=temperature, generator=gen).cpu()
                for start in range(0, n, batch_size)])
    output.parent.mkdir(parents=True, exist_ok=True)
    if as_array:
        _save_npz(output, images, labels)
    else:
        save_image(images.float() / 255.0, output, nrow=nrow)
    return output


def class_columns(num_classes: int, n: int) -> int:
    """Images per row of a grid of ``n`` samples labelled ``arange(n) % num_classes``: one class per column
    (a square grid when there are too many classes, or too few images, for that)."""
    return num_classes if num_classes <= min(n, 32) else max(1, int(n**0.5))


def _save_npz(path: Path, images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """``images`` (uint8 NCHW) as ``arr_0`` (NHWC) [and ``labels``] in ``path``, replaced atomically."""
    import numpy as np

    arrays = {"arr_0": images.permute(0, 2, 3, 1).contiguous().numpy()}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    with replaced_atomically(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)  # a file object: savez would append .npz to a name


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
    try:
        train_set = registry.build(info, config, split="train")
    except DataError as exc:  # this command names its dataset with --data, not a recipe's data.name
        raise DataError(str(exc).replace("--set data.name=", "--data ")) from None
    ctx = _DataOnlyContext(train_set, dataset, dict(options or {}), config=config)
    if console is not None:  # the features of a few thousand images take many minutes on a CPU: not in silence
        console.print(f"computing Inception features of the {len(train_set)} '{dataset}' training images ...")
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
        return dataset_key(self.name, self.data.shape, self.config)

    def split_fingerprint(self, split: str) -> str:
        """The data's content fingerprint (see :meth:`RunContext.split_fingerprint`)."""
        return content_fingerprint(self.data)

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
