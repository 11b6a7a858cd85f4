"""A trained run read back: its recipe (with ``--set`` keys that leave the model as trained), the checkpoint
chosen, the model with its (averaged) weights, and its datasets when needed."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from avade.data.base import class_counts, data_of_trained_model
from avade.errors import AvadeError, CheckpointError, ConfigError, DataError, argument
from avade.evaluate.context import RunContext, cache_dir, inception_options
from avade.models import GenerativeModel, build_model
from avade.recipe import load_recipe
from avade.recipe.load import without_absent_critic
from avade.recipe.schema import AbsentConfig, Recipe
from avade.recipe.write import recipe_to_dict
from avade.train import checkpoint as ckpt
from avade.train.rundir import RunDir, read_json_object

if TYPE_CHECKING:
    import torch


def not_a_run(root: Path) -> CheckpointError:
    """The error for a folder without recipe.toml; a sweep's --out (its runs one level down) names them."""
    root = Path(root)
    if root.is_file():  # (a run's recipe.toml or a checkpoint's file given for the run)
        run = next((p for p in root.parents if (p / "recipe.toml").is_file()), None)
        fix = f"pass its run directory, {run}" if run is not None else "pass the --out of `avade recipe run`"
        return CheckpointError(f"{root} is a file, not a run directory; {fix}")
    try:
        runs = sorted(p for p in Path(root).iterdir() if (p / "recipe.toml").is_file())
    except OSError:
        runs = []
    if runs:
        return CheckpointError(f"{root} is not a run directory but holds {len(runs)} run(s) (a sweep's --out); "
                               f"pass one of them, e.g. {runs[0]}")
    kept = ckpt.list_checkpoints(RunDir(Path(root)).checkpoints)
    if kept:  # a run whose recipe.toml was deleted or moved: its checkpoints keep a copy
        return CheckpointError(f"{RunDir(Path(root)).recipe} is missing (deleted or moved?), but {root} holds "
                               f"checkpoints; put back the recipe it was trained with (a copy is in "
                               f"{kept[-1] / 'state.json'}, under \"recipe\")")
    return CheckpointError(f"{root} is not a run directory (no recipe.toml); pass the --out of `avade recipe run`")


def no_checkpoint_yet(run: RunDir) -> CheckpointError:
    """A run with nothing to evaluate yet: the first checkpoint comes at ``train.checkpoint_every`` steps. A run that
    finished (its summary.json) has no checkpoint to wait for: they were deleted since (disk space), said so."""
    done = read_json_object(run.summary)
    if isinstance(done.get("steps"), int) and done["steps"] > 0 and "error" not in done:
        return CheckpointError(f"{run.root} finished at step {done['steps']} (summary.json), but {run.checkpoints} "
                               "holds no checkpoint (deleted since?): there are no weights to read; its final results "
                               "are in summary.json, or put its checkpoints back")
    return CheckpointError(f"{run.root} has no checkpoint yet (checkpoints/ is empty); wait for its first, at "
                           "train.checkpoint_every steps (or the end of training), or save one from Python with "
                           "trainer.save()")


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The steps of a run's checkpoints, oldest first (:func:`evaluate_checkpoints`)."""
    run = RunDir(Path(run_dir))
    if not run.recipe.is_file():
        raise not_a_run(run.root)
    steps = [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(run.checkpoints)]
    if not steps:
        raise no_checkpoint_yet(run)
    return steps


def select_checkpoint(run: RunDir, checkpoint: str | int | None = None) -> Path:
    """The newest checkpoint of ``run``, or the one of step ``checkpoint`` (``30000`` or ``step_00030000``)."""
    checkpoints = ckpt.list_checkpoints(run.checkpoints)
    if not checkpoints:
        raise no_checkpoint_yet(run)
    if checkpoint is None:
        return checkpoints[-1]
    by_step = {ckpt.checkpoint_step(p): p for p in checkpoints}
    wanted = ckpt.parse_step(str(checkpoint))
    if wanted in by_step:
        return by_step[wanted]
    steps = ", ".join(str(s) for s in sorted(by_step))
    if wanted < 0:  # (not a step at all: abc, -2, 1.5)
        raise CheckpointError(f"{argument('checkpoint', checkpoint)}: expected a step (30000 or step_00030000); "
                              f"{run.checkpoints} has steps {steps}")
    raise CheckpointError(f"{argument('checkpoint', checkpoint)}: {run.checkpoints} has no such checkpoint; its steps "
                          f"are {steps}")


def _run_arguments(run_dir: object, device: object, ema: object) -> tuple[Path, str]:
    """The run directory as a Path and the device as a str (a torch.device taken too), a wrong kind of either, or
    an ``ema`` that is no bool, refused in one line naming the argument (rather than a TypeError from deep inside
    ``Path()`` or a device parser)."""
    import os

    import torch

    if not isinstance(run_dir, str | os.PathLike):
        raise TypeError(f"{argument('run_dir', run_dir)}: expected a run directory (a str or Path, e.g. "
                        f"'runs/quickstart/latest'), got {type(run_dir).__name__}")
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"{argument('device', device)}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, "
                        f"got {type(device).__name__}")
    if not isinstance(ema, bool):  # (a truthy string such as "false" would silently pick the average)
        raise TypeError(f"{argument('ema', ema)}: expected True (the averaged weights) or False (the last "
                        f"iterate), got {type(ema).__name__}")
    return Path(run_dir), device


def load_model(run_dir: str | Path, device: str | torch.device = "auto", checkpoint: str | int | None = None,
               ema: bool = True) -> tuple[GenerativeModel, Recipe, Path]:
    """A trained model, in eval mode on ``device``, from a run directory: rebuilt from its ``recipe.toml``
    with the weights of its newest checkpoint (or of step ``checkpoint``); a run trained with
    ``train.ema_decay`` gives its averaged weights (``ema=False``: the last iterate). Returns the model,
    the recipe and the checkpoint directory. The dataset is not needed (checkpoints record the image shape
    and class count the model was built for; one written before they did is rebuilt from the dataset).

    >>> model, recipe, _ = avade.load_model("runs/quickstart/latest")
    >>> images = model.sample(16, temperature=0.9)   # uint8 [16, C, H, W]
    """
    loaded = load_trained(run_dir, device, checkpoint, datasets=False, ema=ema, library=True)
    return loaded.model, loaded.recipe, loaded.checkpoint


class Loaded(NamedTuple):
    """What :func:`load_trained` reads of a run."""

    model: GenerativeModel
    recipe: Recipe
    checkpoint: Path
    datasets: tuple[Any, Any] | None  # (train, test)
    weights: str  # "ema" (the averaged weights) or "last"
    class_counts: list[int] | None  # the training split's labels per class, as recorded by the checkpoint


def load_trained(run_dir: str | Path, device: str | torch.device, checkpoint: str | int | None, datasets: bool,
                 ema: bool = True,
                 library: bool = False, overrides: Sequence[str] = (), reuse: dict[Any, Any] | None = None
                 ) -> Loaded:
    """The model (eval mode, on ``device``), recipe and checkpoint of a run, and its (train, test) datasets
    when ``datasets`` is set or the checkpoint does not say what the model was built for. On CUDA the run's
    ``train.tf32`` is applied, unless ``library`` (:func:`load_model` leaves global settings alone).
    ``overrides``: ``--set`` keys that leave the trained model as it is (:func:`_overridden`); ``reuse``: see
    :func:`trained_datasets`."""
    from avade.registry import PluginWarning
    from avade.train.device import resolve_device
    from avade.train.ema import apply_average
    from avade.train.provenance import missing_plugin_hint, naming_missing_plugins

    run_dir, device = _run_arguments(run_dir, device, ema)
    run = RunDir(run_dir)
    if not run.recipe.is_file():
        raise not_a_run(run.root)
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
        ckpt.state_intact(data["state"], chosen)  # (a damaged state.json's recipe is no other model: named as damage)
        # e.g. recipe.toml edited by hand: the weights would be evaluated as another model (a wrong
        # logit_alpha still loads, and gives a wrong BPD).
        raise CheckpointError(f"{run.recipe} no longer describes the model of {chosen} (model or data "
                              "settings changed since it was written); put back the recipe it was trained with "
                              f"(a copy is in {chosen / 'state.json'}, under \"recipe\")")
    try:
        dev = resolve_device(device)
    except ConfigError as exc:  # the device comes from the caller here (--device), not from the recipe's train.device
        raise ConfigError(exc.detail, path=argument("device")) from None
    shape, classes = data["state"].get("data_shape"), data["state"].get("num_classes")
    # the training split only when the checkpoint does not say what it needs of it (metrics load it lazily)
    known = shape is not None and classes is not None and (data["state"].get("class_counts") is not None
                                                           or not int(classes))
    sets = (trained_datasets(recipe, train=not known, reuse=reuse) if datasets or shape is None or classes is None
            else None)
    if shape is None or classes is None:  # a checkpoint from before they were recorded
        assert sets is not None
        shape, classes = sets[1].shape, sets[1].num_classes
    if sets is not None and recipe.model.options.conditional:
        try:
            for split, found in zip(("train", "test"), sets, strict=True):
                check_classes(found, int(classes), split, recipe)
        except DataError:
            ckpt.state_intact(data["state"], chosen)  # (a damaged state.json's num_classes is no other data)
            raise
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
    ckpt.verify_digests(data, chosen, ("model", "ema") if weights == "ema" else ("model",))  # (last: damage the
    # checks above name is named so)
    model.to(dev).eval()
    counts = data["state"].get("class_counts")
    if counts is None and int(classes):  # a checkpoint from before they were recorded: count the data's
        counts = class_counts(sets[0]) if sets is not None and sets[0] is not None else _data_class_counts(recipe)
    return Loaded(model, recipe, chosen, sets, weights, counts)


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
        return class_counts(trained_datasets(recipe)[0])
    except (AvadeError, OSError):
        return None


def trained_datasets(recipe: Recipe, train: bool = True, test: bool = True, reuse: dict[Any, Any] | None = None
                     ) -> tuple[Any, Any]:
    """(train, test) of a trained run's recipe (None for a split not asked for); their "not found" hints
    point at ``--set data.root``, not at another dataset (the model was trained on this one). ``reuse``: the
    splits loaded (and checked) by earlier calls with it, by their data settings: the checkpoints of one run
    (``avade eval --checkpoint all``) share one load of its data; a split not in it yet is loaded and kept."""
    from avade.train.datasets import load_datasets

    if reuse is None:
        with data_of_trained_model():
            return load_datasets(recipe, train=train, test=test)
    data = repr(recipe_to_dict(recipe).get("data"))  # (the same settings: the same images)
    wanted = {split: asked and (data, split) not in reuse for split, asked in (("train", train), ("test", test))}
    if any(wanted.values()):
        with data_of_trained_model():
            loaded = load_datasets(recipe, train=wanted["train"], test=wanted["test"])
        reuse.update({(data, split): found for (split, new), found in zip(wanted.items(), loaded, strict=True) if new})
    return reuse[data, "train"] if train else None, reuse[data, "test"] if test else None


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


def load_run(run_dir: str | Path, device: str | torch.device = "auto", checkpoint: str | int | None = None,
             ema: bool = True, overrides: Sequence[str] = (), reuse: dict[Any, Any] | None = None) -> RunContext:
    """Rebuild a run's model from ``recipe.toml`` and its newest checkpoint (or that of step ``checkpoint``),
    with its datasets, for evaluation (:func:`load_model` for the model alone). ``overrides``: ``--set``
    style keys that leave the trained model as it is, e.g. ``data.root=/scratch/data``. ``reuse``: datasets
    loaded by earlier calls, shared (:func:`trained_datasets`)."""
    loaded = load_trained(run_dir, device, checkpoint, datasets=True, ema=ema, overrides=overrides,
                          reuse=reuse)
    assert loaded.datasets is not None
    train_set, test_set = loaded.datasets
    recipe = loaded.recipe
    classes = loaded.model.num_classes
    train = train_set if train_set is not None else (
        lambda: check_classes(trained_datasets(recipe, test=False, reuse=reuse)[0], classes, "train", recipe))
    return RunContext(loaded.model, recipe, train, test_set, next(loaded.model.parameters()).device,
                      Path(run_dir), cache_dir(), inception_options(recipe), recipe.train.seed, loaded.checkpoint,
                      loaded.weights, loaded.class_counts)
