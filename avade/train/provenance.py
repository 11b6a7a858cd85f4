"""Which distribution provided each component of a run: recorded in its checkpoints, and named when a run
is read back without the plugin it was trained with."""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avade.errors import AvadeError, ConfigError
from avade.recipe.schema import Recipe
from avade.registry import get_registry
from avade.train import checkpoint as ckpt
from avade.train.rundir import read_json_object


def component_providers(recipe: Recipe) -> dict[str, str]:
    """``{"flow/glow": "avade 0.1.0", "dataset/my-data": "my-plugin 1.2", ...}`` for the recipe's components."""
    registry = get_registry()
    refs = [(kind, getattr(recipe.model, kind)) for kind in ("flow", "encoder", "posterior", "decoder",
                                                             "discriminator")]
    pairs = [(kind, ref.name) for kind, ref in refs if ref is not None]
    if recipe.data.dataset is not None:
        pairs.append(("dataset", recipe.data.dataset.name))
    pairs += [("metric", name) for name in recipe.eval.metrics]
    # norms: named by the components' options (``norm = "weight-norm"``) and by model.norm_options
    from avade.models.build import flat_config

    norms = list(recipe.model.options.norm_options)
    for _, ref in refs:
        if ref is not None:
            norms += [v for k, v in flat_config(ref.config) if isinstance(v, str) and "norm" in k.rsplit(".", 1)[-1]]
    pairs += [("norm", name) for name in dict.fromkeys(norms) if ("norm", name) in registry]
    out = {}
    for kind, name in pairs:
        try:
            out[f"{kind}/{name}"] = registry.get(kind, name).provider
        except AvadeError:
            continue
    return out


def data_read(recipe: Recipe, train: Any, test: Any) -> dict[str, Any]:
    """What data each split read, recorded in each checkpoint (``data_read``): ``{"train": {...}, "test": {...}}``,
    each :func:`avade.data.base.data_source`'s record (name, paths, image count, the dataset's own facts: bits/dim
    compare only on the same version and split of a dataset). From what loading found: nothing is read again."""
    from avade.data.base import data_source

    ref = recipe.data.dataset
    assert ref is not None
    return {split: data_source(dataset, ref.name, ref.config)
            for split, dataset in (("train", train), ("test", test)) if dataset is not None}


def data_read_changes(saved: Any, read: dict[str, Any]) -> dict[str, list[Any]]:
    """What the data a start read (``read``, :func:`data_read`'s) change from a checkpoint's record (``saved``):
    ``{"train.images": [old, new], "test.paths": [[...], [...]], ...}``, each split's facts both records hold.
    ``resolved`` is compared for the paths both records name (another path is a ``paths`` change already):
    ``"train.resolved": [{path: then}, {path: now}]`` for each that leads elsewhere now (a symlink re-pointed).
    A checkpoint written before ``data_read`` was recorded, and a fact the older record lacks (one added to
    avade since, e.g. ``resolved``), are no change: nothing says what was read then."""
    if not isinstance(saved, dict):
        return {}
    out: dict[str, list[Any]] = {}
    for split, now in read.items():
        then = saved.get(split)
        if not (isinstance(then, dict) and isinstance(now, dict)):
            continue
        out.update({f"{split}.{key}": [then[key], now[key]] for key in now
                    if key != "resolved" and key in then and then[key] != now[key]})
        led = _targets_changed(then, now)
        if led:
            out[f"{split}.resolved"] = led
    return out


def data_changes_text(changes: dict[str, list[Any]]) -> str:
    """:func:`data_read_changes`'s ``changes`` as a resume says them: ``train.images 4 -> 6, ...``, and a path
    that leads elsewhere now as ``train.paths "/data/x" the same, now leading to "/disk2/x" (was "/disk1/x")``."""
    parts = []
    for key, (was, now) in changes.items():
        if key.endswith(".resolved") and isinstance(was, dict) and isinstance(now, dict):
            split = key[:-len(".resolved")]
            parts += [f"{split}.paths {json.dumps(path)} the same, now leading to {json.dumps(now.get(path))} "
                      f"(was {json.dumps(target)})" for path, target in was.items()]
        else:
            parts.append(f"{key} {json.dumps(was)} -> {json.dumps(now)}")
    return ", ".join(parts)


def _targets_changed(then: dict[str, Any], now: dict[str, Any]) -> list[dict[str, str]] | None:
    """``[{path: target then}, {path: target now}]`` for the paths both records name whose targets differ
    (a path not in ``resolved`` leads to itself); None when none does or a record has no ``resolved``."""
    was, is_ = then.get("resolved"), now.get("resolved")
    if not (isinstance(was, dict) and isinstance(is_, dict)):
        return None
    earlier = {p for p in then.get("paths") or [] if isinstance(p, str)}
    moved = [p for p in now.get("paths") or [] if isinstance(p, str) and p in earlier
             and was.get(p, p) != is_.get(p, p)]
    return [{p: was.get(p, p) for p in moved}, {p: is_.get(p, p) for p in moved}] if moved else None


def environment() -> dict[str, Any]:
    """What a reviewer needs, beside the recipe and the plugins' versions, to reproduce a run: the versions of
    Python, avade, torch, torchvision and numpy, the CUDA torch was built for, the platform, the command line,
    and the git commit of avade's source when it runs from a checkout (``git_dirty``: with local changes).
    Recorded in each checkpoint."""
    import numpy
    import torch

    from avade import __version__
    from avade.registry import dist_version

    env: dict[str, Any] = {"python": platform.python_version(), "avade": __version__, "torch": torch.__version__,
                           "torchvision": dist_version("torchvision"), "numpy": numpy.__version__,
                           "cuda": torch.version.cuda, "platform": platform.platform(), "command": list(sys.argv)}
    env.update(_git_state(Path(__file__).resolve().parents[1]))  # (a copy: the cached dict stays as it is)
    return env


@functools.cache  # (three git subprocesses: asked once per process, not once per sweep variant or Trainer)
def _git_state(package: Path) -> dict[str, Any]:
    """``{"git_commit": ..., "git_dirty": ...}`` of the checkout ``package`` is tracked in; {} when it is none
    (an installed wheel: a virtual environment inside some repository must not report that repository's commit);
    ``git_dirty``: whether avade's files there have local changes, None where git status did not answer (a slow
    file system: the commit is still known)."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        # --no-optional-locks: git status would otherwise refresh and rewrite the checkout's index, taking
        # index.lock, as training starts (every process under torchrun): a user's git command then fails on it
        return subprocess.run(["git", "--no-optional-locks", "-C", str(package), *args], capture_output=True,
                              text=True, errors="replace", timeout=10, check=False)

    try:
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return {}
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):  # no git, or a file system that does not answer
        return {}
    if commit.returncode != 0:
        return {}
    try:
        # (avade's own files: an editable install inside a monorepo would otherwise have all of it scanned)
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return {"git_commit": commit.stdout.strip(), "git_dirty": dirty}


def missing_plugin_hint(checkpoints: Path) -> str:
    """For a run whose recipe names a component this avade does not know: which plugin provided it when
    the run was trained (from the newest checkpoint's state.json), or ""."""
    registry = get_registry()
    for path in reversed(ckpt.list_checkpoints(checkpoints)):
        providers = read_json_object(path / "state.json").get("providers")
        if not isinstance(providers, dict):
            continue
        gone = [f"{key.replace('/', ' ')!s} from {who}" for key, who in providers.items()
                if isinstance(key, str) and "/" in key and key.partition("/")[::2] not in registry]
        if gone:
            # installed but broken: "install that plugin" would contradict the failure named beside it
            failed = sorted({f.dist for f in registry.failures for who in providers.values()
                             if isinstance(who, str) and (who == f.dist or who.startswith(f"{f.dist} "))})
            if failed:
                return (f"; the run was trained with {', '.join(gone)}: plugin {', '.join(failed)} is installed "
                        "but failed to load (see its warning; `avade --debug` shows the traceback): fix it")
            return (f"; the run was trained with {', '.join(gone)}: install that plugin, or take it out of "
                    "--disable-plugins / AVADE_DISABLE_PLUGINS")
        return ""
    return ""


@contextlib.contextmanager
def naming_missing_plugins(checkpoints: Path | None) -> Iterator[None]:
    """Around reading a run's recipe: a ConfigError from a component this avade lacks gains the name of the
    plugin the run was trained with (:func:`missing_plugin_hint`)."""
    try:
        yield
    except ConfigError as exc:
        hint = missing_plugin_hint(checkpoints) if checkpoints is not None else ""
        if not hint:
            raise
        error = ConfigError(exc.detail + hint, path=exc.path, source=exc.source)
        for mark in ("alike_on_node", "every_process"):  # which process says it under torchrun: as before
            if hasattr(exc, mark):
                setattr(error, mark, getattr(exc, mark))
        raise error from None
