"""What every dataset must serve (:mod:`avade.data.base`), checked once when a run loads it and by the
conformance kit: a wrong dtype or an out-of-range label otherwise shows up steps later as a wrong bits/dim
or an ``IndexError`` deep inside an embedding."""

from __future__ import annotations

from typing import Any

import torch

#: items looked at when a dataset has no in-memory tensors: first, middle, last
_PROBES = 3


def dataset_problem(ds: Any, split: str) -> str | None:
    """The first way ``ds`` breaks the dataset contract, in a few words, or None."""
    shape = getattr(ds, "shape", None)
    if not (isinstance(shape, tuple | list) and len(shape) == 3
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        return f"`shape` must be a (C, H, W) tuple of positive ints, got {shape!r}"
    if shape[0] not in (1, 3):
        return f"`shape` {tuple(shape)} has {shape[0]} channels; images are (C, H, W) with C = 1 or 3"
    classes = getattr(ds, "num_classes", None)
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 0:
        return f"`num_classes` must be an int >= 0 (0 = unlabeled), got {classes!r}"
    n = len(ds)
    if n < 1:
        return f"the {split} split is empty"
    tensors = ds.as_tensors() if callable(getattr(ds, "as_tensors", None)) else None
    if tensors is not None:
        images, labels = tensors
        if images.dtype != torch.uint8 or tuple(images.shape) != (n, *shape):
            return (f"as_tensors() images are {images.dtype} {tuple(images.shape)}, expected uint8 "
                    f"{(n, *tuple(shape))}")
        if labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
            return f"as_tensors() labels are {labels.dtype} {tuple(labels.shape)}, expected int64 ({n},)"
        problem = label_problem(labels, classes)
        if problem:
            return problem
        probes = [0]  # and the items must be those tensors' (evaluation subsets may index items)
    else:
        probes = sorted({0, n // 2, n - 1})[:_PROBES]
    for i in probes:
        item = ds[i]
        if not (isinstance(item, tuple | list) and len(item) == 2):
            return f"item {i} must be (image, label), got {type(item).__name__}"
        x, label = item
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or tuple(x.shape) != tuple(shape):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            return f"item {i} is {got}, expected a uint8 tensor {tuple(shape)} (values 0..255)"
        if not isinstance(label, int) or isinstance(label, bool):
            return f"item {i}'s label must be a python int, got {type(label).__name__}"
        problem = label_problem(torch.tensor([label]), classes)
        if problem:
            return f"item {i}: {problem}"
        if tensors is not None and not (torch.equal(x, tensors[0][i]) and label == int(tensors[1][i])):
            return f"item {i} differs from as_tensors()'s image and label {i}"
    return None


def label_problem(labels: torch.Tensor, classes: int) -> str | None:
    """What is wrong with ``labels`` of a dataset of ``classes`` classes, or None."""
    # unlabeled data (num_classes = 0): nothing reads the labels, whatever they are
    if labels.numel() == 0 or classes == 0:
        return None
    low, high = int(labels.min()), int(labels.max())
    if low < -1 or high >= classes:
        return f"labels must be in 0..{classes - 1} (or -1 for an unlabeled image), got values in [{low}, {high}]"
    return None
