"""A recipe's train and test datasets: built through the registry, checked (labels, classes, sizes) and
posterized to ``data.n_bits``, with one clear error for data that cannot be read."""

from __future__ import annotations

from typing import Any

from avade.data.base import data_of_model
from avade.errors import AvadeError, DataError
from avade.recipe.schema import Recipe
from avade.registry import get_registry
from avade.train.distributed import DistInfo


def load_datasets(recipe: Recipe, train: bool = True, test: bool = True) -> tuple[Any, Any]:
    """(train, test) datasets of a recipe, at its ``data.n_bits``; a split not asked for is None (evaluating
    on the test split needs no training data)."""
    from avade.data.posterized import with_bits
    from avade.data.validate import dataset_problem

    registry = get_registry()
    ref = recipe.data.dataset
    assert ref is not None
    info = registry.get("dataset", ref.name)
    bits = recipe.data.options.n_bits
    root = getattr(ref.config, "root", None)
    where = f" under {root}" if root else ""
    splits = [split for split, wanted in (("train", train), ("test", test)) if wanted]
    try:
        with data_of_model(recipe.model.options.conditional):  # "not found" suggests data it can train on
            sets = {split: registry.build(info, ref.config, split=split) for split in splits}
        problems = [(split, dataset_problem(ds, split)) for split, ds in sets.items()]
    except AvadeError:
        raise
    except Exception as exc:  # a file the loader cannot parse (truncated archive, wrong encoding, bad shapes)
        raise DataError(f"dataset '{ref.name}'{where} could not be read: {type(exc).__name__}: {exc}; check or "
                        "replace its files") from exc
    declared = getattr(ref.config, "num_classes", None)  # what `recipe check` went by, before any loading
    first, problem = problems[0]
    why = getattr(sets[first], "unlabeled_reason", "")  # a dataset that says why it has no labels
    if recipe.model.options.conditional and problem is None and not sets[first].num_classes and why:
        raise DataError(f"model.conditional = true needs a labelled dataset, but '{ref.name}'{where} has no labels: "
                        f"{why}")
    if isinstance(declared, int) and problem is None and declared != sets[first].num_classes:
        problems[0] = (first, f"its config declares num_classes = {declared}, but the loaded data have "
                              f"{sets[first].num_classes} classes")
    for split, problem in problems:
        if problem:
            what, fix = info.blame()  # a plugin's dataset names the plugin
            raise DataError(f"{what}, {split} split: {problem}{fix}")
    return tuple(with_bits(sets[split], bits) if split in sets else None  # type: ignore[return-value]
                 for split in ("train", "test"))


def load_datasets_on_node(recipe: Recipe, info: DistInfo) -> tuple[Any, Any]:
    """:func:`load_datasets` for a torchrun job. With ``data.download = true`` the node's first process
    (``LOCAL_RANK`` 0) loads first, fetching what is missing, while the others wait: every process downloading
    and unpacking into the same folder at once would read each other's half-written files."""
    ref = recipe.data.dataset
    if not info.enabled or ref is None or not getattr(ref.config, "download", False):
        return load_datasets(recipe)
    import torch.distributed as dist

    first = info.local_rank == 0
    sets = load_datasets(recipe) if first else None
    dist.barrier()  # (a first process that failed leaves the job: the others' barrier fails with it)
    return sets if sets is not None else load_datasets(recipe)
