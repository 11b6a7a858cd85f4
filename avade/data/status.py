"""``dataset_status``: is a dataset's data present at its configured root? (for ``avade doctor``)

Nothing is loaded: each dataset module provides ``locate(cfg, split)``, which finds the files a split
would read, or raises :class:`~avade.errors.DataError` with the paths it searched and the fix. A plugin
dataset can take part by defining ``locate`` the same way in the module of its factory; without one its
status is reported as unchecked.
"""

from __future__ import annotations

import inspect
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from avade.errors import AvadeError

_SPLITS = ("train", "test")


def _config(info: Any, cfg: Any) -> Any:
    cfg_cls = info.load_config()
    if cfg is None or isinstance(cfg, Mapping):
        from avade.registry import get_registry

        return get_registry().validate(info.kind, info.name, dict(cfg or {}), path="data")
    if cfg_cls is not None and not isinstance(cfg, cfg_cls):
        raise TypeError(f"cfg must be a {cfg_cls.__name__}, a mapping or None; got {type(cfg).__name__}")
    return cfg


def _paths(found: Any) -> list[Any]:
    if attrs.has(type(found)) and hasattr(found, "files"):
        return list(found.files)
    if isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], str):  # (layout, where)
        where = found[1]
        return list(where) if isinstance(where, list) else [where]
    return list(found) if isinstance(found, list | tuple) else [found]


#: at most this many files are checked for permission (an ImageNet folder lists 1.3M: seconds of access() calls)
_MAX_PERMISSION_CHECKS = 200_000


def _unreadable(paths: list[Any]) -> Path | None:
    """The first of ``paths`` (files, or folders) that this process may not read, else None. Its contents
    are not read (doctor checks presence): a truncated file shows when it is loaded."""
    for path in paths[:_MAX_PERMISSION_CHECKS]:
        if not isinstance(path, Path):
            continue
        mode = os.R_OK | os.X_OK if path.is_dir() else os.R_OK
        if path.exists() and not os.access(path, mode):
            return path
    return None


def _describe(found: Any) -> str:
    paths = _paths(found)
    if not paths:
        return "generated, nothing to read"
    if len(paths) == 1:
        return str(paths[0])
    if all(isinstance(p, Path) for p in paths):
        common = Path(os.path.commonpath([str(p) for p in paths]))
        return f"{len(paths)} files under {common}"
    return ", ".join(str(p) for p in paths)


def _unlabeled(found: Any) -> str | None:
    """Why a located split has no labels (None when it has, or the dataset's ``locate`` does not say): a
    listing with an empty ``classes`` (image-folder) is unlabeled, with its ``unlabeled_reason`` if any."""
    if not attrs.has(type(found)) or getattr(found, "classes", None) != []:
        return None
    return getattr(found, "unlabeled_reason", "") or "its images are not in class subfolders"


def _image_count(found: Any) -> int | None:
    """How many images a located split holds, where its ``locate`` lists them one file each (an image-folder
    ``Listing``: an attrs object with ``files``); None where it cannot say without loading (archives, batches)."""
    if attrs.has(type(found)) and isinstance(getattr(found, "files", None), list):
        return len(found.files)
    return None


def dataset_status(name: str, cfg: Any = None, *, conditional: bool = False,
                   batch_size: int | None = None) -> tuple[bool, str]:
    """``(present, one-line message)`` for dataset ``name`` with config ``cfg``.

    ``cfg`` is the dataset's config instance, a mapping of its keys (validated, e.g. a recipe's
    ``[data]`` table without ``name``), or None for the defaults. Both splits must be found for
    ``present``; the message says where they are, or what is missing and how to fix it. With
    ``conditional`` (a class-conditional model's data), a split its ``locate`` finds unlabeled is not
    ``present`` either: the run would stop at its start for want of labels. With ``batch_size`` (the recipe's
    ``data.batch_size``), a training split that lists fewer images than one batch is not ``present`` either.
    """
    from avade.registry import get_registry

    try:
        info = get_registry().get("dataset", name)
        config = _config(info, cfg)
        factory = info.load_factory()
        locate = getattr(inspect.getmodule(factory), "locate", None)
    except AvadeError as exc:
        return False, str(exc)
    if not callable(locate):
        return True, f"dataset '{name}': no presence check available (it is checked when loaded)"
    parts = []
    for split in _SPLITS:
        try:
            found = locate(config, split)
        except AvadeError as exc:
            return False, str(exc)
        why = _unlabeled(found) if conditional and split == "train" else None
        if why is not None:
            return False, f"dataset '{name}': model.conditional = true needs labels, but it has none: {why}"
        count = _image_count(found) if batch_size is not None and split == "train" else None
        if count is not None and batch_size is not None and count < batch_size:
            # (the run would stop at its start: BatchStream refuses a split that cannot fill one batch)
            return False, (f"dataset '{name}': the training split has {count} images, fewer than one batch of "
                           f"{batch_size}; lower data.batch_size")
        unreadable = _unreadable(_paths(found))
        if unreadable is not None:  # (present, but the run would stop at it: at its first batch holding it)
            return False, (f"dataset '{name}': {unreadable} cannot be read by this user; make it readable "
                           f"(e.g. chmod -R u+rX {shlex.quote(str(unreadable))})")
        parts.append(f"{split}: {_describe(found)}")
    return True, f"dataset '{name}': " + "; ".join(parts)
