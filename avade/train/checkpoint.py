"""Checkpoints: safetensors for tensors, JSON for the rest; atomic (temp dir + rename); no pickle.

A checkpoint is a directory ``step_XXXXXXXX/`` holding ``model.safetensors``, ``optimizer.safetensors``
(every optimizer's state tensors), ``rng.safetensors`` (torch/CUDA generator states of every process
of the job) and ``state.json`` (step, data position, python/numpy RNG states, optimizer
hyper-parameters, the resolved recipe and its fingerprint, the SHA-256 digests of the tensor files and of its own
content). It only becomes visible under its final name once complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Container, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save

from avade.atomic_files import save_tensors, sync_file, sync_folder
from avade.errors import AvadeError, CheckpointError, argument
from avade.train.rundir import (  # noqa: F401 (parse_step: re-exported, ckpt.parse_step as before)
    STATE_DIGEST,
    checkpoint_name,
    checkpoint_step,
    list_checkpoints,
    parse_step,
    read_json_object,
    state_digest,  # (in rundir: torch-free, for avade runs too)
    state_digest_problem,
)

FORMAT = 1


def _fingerprinted(recipe_dict: dict[str, Any]) -> dict[str, Any]:
    """What must match for a checkpoint to be resumable: the model and the data, not the budget (nor where
    the data live: ``root``, and of an absolute ``folder`` only its name, so a moved image folder is the
    same data; a relative one, which names the data under ``root``, counts whole); the optimizer's kind,
    which decides the layout of its saved state."""
    model = {k: v for k, v in recipe_dict.get("model", {}).items() if k != "temperature"}
    data = {k: _folder_identity(v) if k == "folder" and isinstance(v, str) else v
            for k, v in recipe_dict.get("data", {}).items()
            if k not in ("num_workers", "eval_batch_size", "root", "download")}
    return {"model": model, "data": data, "optimizer": (recipe_dict.get("train") or {}).get("optimizer")}


def _folder_identity(folder: str) -> str:
    """An absolute (or ``~``) image folder by its name alone (where it lives may change); a relative one as is."""
    path = PurePath(os.path.expanduser(folder))
    return path.name if path.is_absolute() else folder


def fingerprint(recipe_dict: dict[str, Any]) -> str:
    """A short hash of :func:`_fingerprinted`."""
    return hashlib.sha256(json.dumps(_fingerprinted(recipe_dict), sort_keys=True, default=str).encode()
                          ).hexdigest()[:16]


def _reread(saved: dict[str, Any]) -> dict[str, Any] | None:
    """A checkpoint's recipe as today's schema reads it (keys added since take their defaults, or the values
    that rebuild its model: :func:`avade.recipe.load.with_saved_defaults`); only what the fingerprint covers
    is re-read, since a train or eval key dropped since says nothing about the weights. None if it cannot be
    (e.g. a component that no longer exists)."""
    from avade.recipe import recipe_from_dict, recipe_to_dict
    from avade.recipe.load import with_saved_defaults

    train = saved.get("train")
    covered = {"name": "checkpoint", "model": saved.get("model"), "data": saved.get("data"),
               "train": {"optimizer": train.get("optimizer")} if isinstance(train, dict) else {}}
    try:
        return recipe_to_dict(recipe_from_dict(with_saved_defaults(covered)))
    except (AvadeError, TypeError, ValueError):
        return None


def fingerprint_differences(saved: Any, recipe_dict: dict[str, Any], limit: int = 3) -> str:
    """What differs between a checkpoint's recipe and ``recipe_dict`` among the keys the fingerprint covers,
    as ``model.flow.hidden 8 -> 16, ...`` (the first ``limit``), or "" when that cannot be told."""
    if not isinstance(saved, dict):
        return ""
    old = flatten(_fingerprinted(_reread(saved) or saved))
    new = flatten(_fingerprinted(recipe_dict))
    unset = "(unset)"
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k, unset) != new.get(k, unset)]

    def show(key: str, side: dict[str, Any]) -> str:
        return json.dumps(side[key], default=str) if key in side else unset

    parts = [f"{'train.optimizer' if k == 'optimizer' else k} {show(k, old)} -> "
             f"{show(k, new)}" for k in keys[:limit]]
    return ", ".join(parts) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def setting_changes(saved: Any, recipe_dict: dict[str, Any], sections: tuple[str, ...] = ("data", "train", "eval")
                    ) -> dict[str, list[Any]]:
    """The keys of ``sections`` (the settings a resume may change: of ``data`` only where they live and how
    they are read, the fingerprint covers the rest) whose values differ between a
    checkpoint's recipe and ``recipe_dict``: ``{"train.seed": [0, 1], ...}``. A key an older avade did not
    save reads as today's default."""
    if not isinstance(saved, dict):
        return {}
    from avade.recipe import recipe_from_dict, recipe_to_dict
    from avade.recipe.load import with_saved_defaults

    with contextlib.suppress(AvadeError, TypeError, ValueError):  # e.g. a gone metric plugin: compared as saved
        saved = recipe_to_dict(recipe_from_dict(with_saved_defaults(saved)))
    out: dict[str, list[Any]] = {}

    def compare(old: Any, new: Any, prefix: str) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for key in dict.fromkeys([*old, *new]):
                compare(old.get(key), new.get(key), f"{prefix}.{key}")
        elif old != new:  # a table added or dropped (a metric's settings) is one change
            out[prefix] = [old, new]

    for section in sections:
        compare(saved.get(section) or {}, recipe_dict.get(section) or {}, section)
    return out


def same_model(state: dict[str, Any], recipe_dict: dict[str, Any]) -> bool:
    """Whether a checkpoint's ``state`` was written for the model and data of ``recipe_dict``. A recipe
    saved by an older avade lacks keys added since (with defaults); it is re-read with today's schema
    (:func:`_reread`) before its fingerprint is compared, so new defaults do not orphan old runs."""
    wanted = fingerprint(recipe_dict)
    if state.get("fingerprint") == wanted:
        return True
    saved = state.get("recipe")
    if not isinstance(saved, dict):
        return False
    reread = _reread(saved)
    return reread is not None and fingerprint(reread) == wanted


def optimizer_to_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> flat tensors (for safetensors) + JSON-able hyper-parameters."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(name: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           meta: dict[str, Any]) -> None:
    """The inverse of :func:`optimizer_to_tensors`: load optimizer ``name``'s saved state into ``opt``."""
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(index), {})[field] = value
    for key, value in meta.get("scalars", {}).items():
        index, field = key.split(".", 1)
        state.setdefault(int(index), {})[field] = value
    # torch checks only the number of parameters: state tensors of another shape (an optimizer file from
    # another run) or under another name (a damaged file) would load, and fail at the first step, inside the
    # update, after the run directory was rewritten for the resume
    params = [p for g in opt.param_groups for p in g["params"]]
    expected = _state_fields(opt, meta["param_groups"])
    for idx, fields in state.items():
        if not 0 <= idx < len(params):
            raise ValueError(f"it has state for parameter {idx}, the optimizer {len(params)} parameters")
        if expected is not None and set(fields) != expected:
            odd = sorted(set(fields) ^ expected)
            raise ValueError(f"its state of parameter {idx} has the fields {sorted(fields)}, a "
                             f"{type(opt).__name__}'s are {sorted(expected)} (e.g. {odd[0]!r} differs)")
        for field, value in fields.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[idx].shape:
                raise ValueError(f"its {field} of parameter {idx} has shape {tuple(value.shape)}, the parameter "
                                 f"{tuple(params[idx].shape)}")
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def _state_fields(opt: torch.optim.Optimizer, groups: Any) -> set[str] | None:
    """The per-parameter state fields of ``train.optimizer``'s kinds (None for another optimizer: not checked)."""
    amsgrad = isinstance(groups, list) and any(isinstance(g, dict) and g.get("amsgrad") for g in groups)
    if type(opt) is torch.optim.Adamax:
        return {"step", "exp_avg", "exp_inf"}
    if type(opt) is torch.optim.Adam:
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if amsgrad else set())
    return None


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    cuda = [tensors[k] for k in cuda_keys]  # by device index (as strings, "torch_cuda_10" < "torch_cuda_2")
    if cuda and torch.cuda.is_available():
        for i, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def rng_bundle(generators: dict[str, torch.Generator]) -> bytes:
    """This process's whole random state (torch CPU/CUDA, numpy, python, ``generators``) as bytes:
    a safetensors blob with the JSON part in its metadata, so it can travel between processes
    (data parallelism: every rank's state goes into rank 0's checkpoint) without pickle."""
    tensors, meta = _rng_state()
    for name, gen in generators.items():
        tensors[f"gen_{name}"] = gen.get_state()
    return save(tensors, metadata={"meta": json.dumps(meta)})


def _unbundle(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    # safetensors layout: 8-byte little-endian header length, then the JSON header (with __metadata__).
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + header_len])
    return load(blob), json.loads(header["__metadata__"]["meta"])


def save_checkpoint(directory: Path, step: int, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                    rng: list[bytes], state: dict[str, Any], keep: int = 3, keep_every: int = 0,
                    ema: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``directory/step_XXXXXXXX`` atomically and prune all but the newest ``keep`` and, with
    ``keep_every``, the milestones (steps that are multiples of it: :func:`is_milestone`), as well as those
    of the ``keep_every`` each checkpoint was written with (:func:`kept_for_good`). ``ema``: the
    generator's averaged weights (``train.ema_decay``), written as ``ema.safetensors``.

    ``rng``: :func:`rng_bundle` of every process, rank 0 first. Rank 0's state is stored under plain
    names (the single-process layout), rank ``r``'s under ``rank{r}.`` names and ``state["rng_ranks"]``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    tmp = directory / f".tmp-{final.name}-{os.getpid()}"
    for stale in directory.glob(".tmp-*"):  # left by a process killed (or a save that failed) while writing
        shutil.rmtree(stale, ignore_errors=True)
    aside: Path | None = None  # a checkpoint of this step already there (Trainer.save called twice at one step)
    try:
        _write(tmp, model, optimizers, rng, state, step, ema)
        if final.exists():  # moved aside, deleted only once the new one is in its place
            os.replace(final, trash := _trash_name(final))
            aside = trash
        os.replace(tmp, final)
    except (OSError, SafetensorError) as exc:  # e.g. a full disk: the earlier checkpoints stay as they are
        if aside is not None:
            with contextlib.suppress(OSError):
                os.replace(aside, final)
        shutil.rmtree(tmp, ignore_errors=True)
        detail = " ".join(str(getattr(exc, "strerror", None) or exc).split())
        # safetensors' errors carry no errno, only "(os error N)" in their text
        code = getattr(exc, "errno", None) or next((int(n) for n in re.findall(r"os error (\d+)", detail)), None)
        full = code in (errno.ENOSPC, errno.EDQUOT)
        fix = ("free space there (or lower train.keep_checkpoints, or use another --out)" if full
               else "check that folder (permissions, a read-only or unmounted disk) or use another --out")
        kept = list_checkpoints(directory)
        then = (f"--resume goes on from {kept[-1].name}" if kept else "run it again (no checkpoint was saved yet)")
        raise CheckpointError(f"cannot write checkpoint {final}: {detail}; {fix}, then {then}") from None
    sync_folder(directory)  # the rename on disk too: a power loss then leaves this checkpoint, not a gap
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    for old in list_checkpoints(directory)[:-keep]:
        if not kept_for_good(old, keep_every):
            _discard(old)
    return final


def kept_for_good(path: Path, keep_every: int) -> bool:
    """Whether pruning spares checkpoint ``path``: a milestone of ``keep_every`` (this run's setting) or of the
    setting it was written with."""
    return is_milestone(path, keep_every) or _saved_as_milestone(path)


def _saved_as_milestone(path: Path) -> bool:
    """Whether checkpoint ``path`` was a milestone of the ``train.keep_every`` it was written with (its
    state.json's recipe): kept for good, as that setting promised, when a resume changes or drops it."""
    recipe = read_json_object(path / "state.json").get("recipe")
    train = recipe.get("train") if isinstance(recipe, dict) else None
    every = train.get("keep_every") if isinstance(train, dict) else None
    return isinstance(every, int) and not isinstance(every, bool) and is_milestone(path, every)


def _write(tmp: Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer], rng: list[bytes],
           state: dict[str, Any], step: int, ema: dict[str, torch.Tensor] | None) -> None:
    """A checkpoint's files into the fresh folder ``tmp``, synced to disk."""
    tmp.mkdir()
    model_tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_tensors(model_tensors, tmp / "model.safetensors")
    opt_tensors: dict[str, torch.Tensor] = {}
    opt_meta: dict[str, Any] = {}
    for name, opt in optimizers.items():
        t, m = optimizer_to_tensors(name, opt)
        opt_tensors.update(t)
        opt_meta[name] = m
    save_tensors(opt_tensors, tmp / "optimizer.safetensors")
    rng_tensors, rng_meta = _unbundle(rng[0])
    rank_metas = []
    for r, blob in enumerate(rng[1:], start=1):
        tensors, meta = _unbundle(blob)
        rng_tensors.update({f"rank{r}.{k}": v for k, v in tensors.items()})
        rank_metas.append(meta)
    save_tensors(rng_tensors, tmp / "rng.safetensors")
    if ema is not None:
        save_tensors(ema, tmp / "ema.safetensors")
    # what each tensor file held when written: damage that still parses (a flipped bit in a weight) is found on
    # reading (verify_digests), not trained on or evaluated silently
    digests = {f.name: file_digest(f) for f in sorted(tmp.glob("*.safetensors"))}
    payload = {"format": FORMAT, "step": step, "optimizers": opt_meta, "rng": rng_meta, "rng_ranks": rank_metas,
               **state, "digests": digests}
    # as state.json reads back (keys as strings, tuples as lists, default=str's strings), so that the digest of its
    # own content is the one state_intact computes from what it reads
    payload = json.loads(json.dumps(payload, default=str))
    payload[STATE_DIGEST] = state_digest(payload)
    (tmp / "state.json").write_text(json.dumps(payload), encoding="utf-8")
    for f in tmp.iterdir():  # on disk before the rename makes the checkpoint visible
        sync_file(f)
    sync_folder(tmp)


def _trash_name(path: Path) -> Path:
    """Where a checkpoint is moved out of the ``step_*`` namespace before it is deleted (a ``.tmp-*`` name, which
    the next save removes if this process is killed first)."""
    return path.with_name(f".tmp-trash-{path.name}-{os.getpid()}")


def _discard(path: Path) -> None:
    """Rename out of the ``step_*`` namespace first, so a kill mid-delete never leaves a partial one."""
    trash = _trash_name(path)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def is_milestone(path: Path, keep_every: int) -> bool:
    """Whether checkpoint ``path`` is kept for good under ``train.keep_every`` (0: none is)."""
    step = checkpoint_step(path)
    return keep_every > 0 and step > 0 and step % keep_every == 0


def fallback_hint(path: Path) -> str:
    """What to do about a broken checkpoint: for the newest, delete it (naming the one a resume would then
    use); for an older one (``--checkpoint``), pick another."""
    step = checkpoint_step(path)
    others = [p for p in list_checkpoints(path.parent) if p != path]
    if any(checkpoint_step(p) > step for p in others):
        steps = ", ".join(str(checkpoint_step(p)) for p in others)
        return f"pick another with --checkpoint STEP (steps: {steps})"
    older = [p for p in others if checkpoint_step(p) < step]
    if older:
        # (said to `recipe run --resume` and to `avade eval` alike: the option is named with its command)
        return (f"delete {path.name} to resume from {older[-1].name}, the newest older checkpoint (or evaluate "
                f"that one: avade eval --checkpoint {checkpoint_step(older[-1])})")
    return f"delete {path.name} (no older checkpoint: the run would start again from step 0)"


def unfit_hint(path: Path, file: str) -> str:
    """What to do about ``file`` of checkpoint ``path`` whose tensors' names or shapes do not fit the model built for
    it: when it is the file that was saved (its digest is state.json's), the model's code changed since (a component
    or plugin upgraded), which deleting the checkpoint would not mend, every older one failing alike; else, damage
    (or a checkpoint from before digests): :func:`fallback_hint`."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        digests = state.get("digests") if isinstance(state, dict) else None
        intact = (isinstance(digests, dict) and digests.get(file) == file_digest(path / file)
                  and state_digest_problem(state) is None)
    except (OSError, ValueError, TypeError):
        intact = False
    if not intact:
        return fallback_hint(path)
    from avade.registry import get_registry  # (not at import: the registry imports much of avade)

    registry = get_registry()
    trained = state.get("providers") if isinstance(state.get("providers"), dict) else {}
    changed = []
    for key, then in trained.items():
        kind, _, name = str(key).partition("/")
        try:
            now = registry.get(kind, name).provider if (kind, name) in registry else None
        except AvadeError:  # (a name two plugins register: not ours to settle here)
            now = None
        if now is not None and now != then:
            changed.append(f"{key} (trained with {then}, now {now})")
    since = f": {', '.join(changed[:3])}" if changed else " (a component's or plugin's code)"
    return (f"{file} is the file that was saved (its SHA-256 is state.json's), so the model's code changed since it "
            f"was trained{since}; keep the checkpoint, and read it with the versions that trained it")


def read_checkpoint(path: Path, need_average: bool = True, training_state: bool = True) -> dict[str, Any]:
    """Read and check a checkpoint directory; CheckpointError if anything is missing or corrupt. The
    result holds ``state`` (state.json) and the tensors of ``model``, ``optimizer``, ``rng`` and, when the
    run averaged its weights, ``ema`` (required unless ``need_average`` is False: the last iterate alone).
    ``training_state=False`` (evaluation, sampling): the optimizer and random states are neither needed
    nor read."""
    parts = ("model", "optimizer", "rng") if training_state else ("model",)
    files = {n: path / f"{n}.safetensors" for n in parts}
    state_file = path / "state.json"
    for f in (*files.values(), state_file):
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {f.name} is missing; {fallback_hint(path)}")
    if (path / "ema.safetensors").is_file():  # written with train.ema_decay
        files["ema"] = path / "ema.safetensors"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _removed(path) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: state.json is not valid JSON ({exc}); "
                              f"{fallback_hint(path)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt: state.json holds a JSON {type(state).__name__}, not "
                              f"a checkpoint's state; {fallback_hint(path)}")
    if state.get("format") == FORMAT and "step" not in state:  # (this avade's format: damage, not another version)
        raise CheckpointError(f"checkpoint {path} is corrupt: state.json has no step; {fallback_hint(path)}")
    if state.get("format") != FORMAT or "step" not in state:
        raise CheckpointError(f"checkpoint {path} has an unknown format (state.json format "
                              f"{state.get('format')!r}, this avade reads {FORMAT!r}): it was written by another "
                              f"avade version, or is not a checkpoint; read it with that version, or "
                              f"{fallback_hint(path)}")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {path} is corrupt: state.json's step is {step!r}, not a count of "
                              f"steps; {fallback_hint(path)}")
    named = checkpoint_step(path)
    if named >= 0 and step != named:  # a resume would go on from the one step with the other's weights
        raise CheckpointError(f"checkpoint {path} is corrupt: its state.json is of step {step}, not {named} (a file "
                              f"copied from another checkpoint?); {fallback_hint(path)}")
    wrong = _wrong_state_field(state)
    if wrong:
        raise CheckpointError(f"checkpoint {path} is corrupt: state.json's {wrong}; {fallback_hint(path)}")
    recipe = state.get("recipe")
    train = recipe.get("train") if isinstance(recipe, dict) else None
    if need_average and isinstance(train, dict) and train.get("ema_decay") and "ema" not in files:
        # a run with train.ema_decay writes its average into every checkpoint: without it, evaluation would
        # silently score the last iterate and a resume would restart the average
        # (a resume has no --no-ema: it goes on without the average when the recipe turns it off)
        instead = ("resume with --set train.ema_decay=0 to go on without an average" if training_state
                   else f"evaluate or sample the last iterate with {argument('ema', False)}")
        raise CheckpointError(f"checkpoint {path} is incomplete: ema.safetensors (the weight average of "
                              f"train.ema_decay) is missing; {instead}, or {fallback_hint(path)}")
    tensors = {}
    for name, f in files.items():
        try:
            tensors[name] = load_file(f)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            if not f.is_file():
                raise _removed(path) from None
            detail = " ".join(str(exc).split())[:120]
            raise CheckpointError(f"checkpoint {path} is corrupt: {f.name} cannot be read ({detail}); "
                                  f"{fallback_hint(path)}") from None
    return {"state": state, **tensors}


def _removed(path: Path) -> CheckpointError:
    """A checkpoint whose files went while it was read: not a corrupt one, but (most likely) one that the run,
    still training, pruned (``train.keep_checkpoints``) as it wrote a newer one."""
    return CheckpointError(f"checkpoint {path} was removed while it was read (a run still training prunes its older "
                           f"checkpoints, train.keep_checkpoints); run the command again for the newest, or "
                           f"{fallback_hint(path)}")


def _count(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _wrong_state_field(state: dict[str, Any]) -> str:
    """What is wrong with the state.json fields a model is rebuilt or a run resumed by (absent ones are
    fine: older checkpoints lack them), as "data_shape is 'abc', not ..."; "" when nothing is."""
    shape, classes, counts = state.get("data_shape"), state.get("num_classes"), state.get("class_counts")
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(_count(s, 1) for s in shape)):
        return f"data_shape is {shape!r:.60}, not an image shape [C, H, W]"
    if classes is not None and not _count(classes):
        return f"num_classes is {classes!r:.60}, not a count of classes"
    if counts is not None and not (isinstance(counts, list) and all(_count(c) for c in counts)
                                   and (classes is None or len(counts) == classes)):
        return (f"class_counts is {counts!r:.60}, not a count of images per class"
                + (f" ({classes} classes)" if classes is not None else ""))
    for key, least in (("bad_steps", 0), ("world", 1)):
        if key in state and not _count(state[key], least):
            return f"{key} is {state[key]!r:.60}, not a count"
    return ""


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    with path.open("rb") as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def state_intact(state: Mapping[str, Any], path: Path) -> None:
    """A one-line CheckpointError unless state.json's content (``state``, as read) is the one the checkpoint was
    written with: its digest equals the one it recorded (a checkpoint from before it was recorded: not checked)."""
    problem = state_digest_problem(state)
    if problem:
        raise CheckpointError(f"checkpoint {path} is corrupt: state.json {problem}; {fallback_hint(path)}")


def verify_digests(ckpt: dict[str, Any], path: Path, parts: Container[str] = ("model", "optimizer", "rng", "ema")
                   ) -> None:
    """state.json (:func:`state_intact`) and the tensor files of ``parts`` that :func:`read_checkpoint` read are
    those the checkpoint was written with: each one's digest equals the one state.json recorded (a checkpoint from
    before digests were recorded has none: not checked). Called once the contents were checked, so that damage those
    checks name (a NaN, a shape, a step) is named so; ``parts``: those used (evaluating the last iterate does not
    need a sound weight average). state.json first: its digests of the tensor files are only as sound as it is."""
    state_intact(ckpt["state"], path)
    digests = ckpt["state"].get("digests")
    if digests is None:
        return
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise CheckpointError(f"checkpoint {path} is corrupt: state.json's digests is {digests!r:.60}, not a table of "
                              f"file digests; {fallback_hint(path)}")
    for name in (n for n in ("model", "optimizer", "rng", "ema") if n in ckpt and n in parts):
        file = path / f"{name}.safetensors"
        expected = digests.get(file.name)
        if expected is None:
            continue
        try:
            found = file_digest(file)
        except FileNotFoundError:
            raise _removed(path) from None
        if found != expected:
            raise CheckpointError(f"checkpoint {path} is corrupt: {file.name} is not the file that was saved (its "
                                  "SHA-256 differs from the one state.json recorded: damaged on disk, or replaced); "
                                  f"{fallback_hint(path)}")


def check_finite(tensors: Mapping[str, torch.Tensor], path: Path, file: str = "model.safetensors",
                 buffers: Container[str] = ()) -> None:
    """A one-line CheckpointError when weights of ``file`` hold NaN or inf: training writes a checkpoint only
    after a finite step, so such a file was damaged (or edited), and every sample and metric of it is NaN.
    ``buffers``: names of tensors that are no parameters, and may hold inf (a mask of -inf, say), not NaN."""
    bad = [name for name, t in tensors.items() if t.is_floating_point()
           and not bool((~torch.isnan(t) if name in buffers else torch.isfinite(t)).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path} is corrupt: {file} holds NaN or inf in {len(bad)} weight "
                              f"tensor(s), e.g. {bad[0]}; {fallback_hint(path)}")


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Model weights from a checkpoint; CheckpointError (one line) when they do not fit or are not finite."""
    own = model.state_dict()
    check_finite(tensors, path, buffers=set(own) - {name for name, _ in model.named_parameters()})
    for name, t in tensors.items():  # load_state_dict casts: integer weights (a damaged file) would load truncated
        if name in own and t.is_floating_point() != own[name].is_floating_point():
            raise CheckpointError(f"checkpoint {path} is corrupt: model.safetensors holds {name} as {t.dtype}, the "
                                  f"model's is {own[name].dtype}; {fallback_hint(path)}")
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint {path} does not fit this model: {detail}; "
                              f"{unfit_hint(path, 'model.safetensors')}") from None
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} does not fit this model (missing {len(missing)} / unexpected "
                              f"{len(unexpected)} tensors, e.g. {(missing or unexpected)[0]}); "
                              f"{unfit_hint(path, 'model.safetensors')}")


def restore(ckpt: dict[str, Any], model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
            generators: dict[str, torch.Generator], path: Path, rank: int = 0) -> bool:
    """Load weights, optimizer states and process ``rank``'s RNG states from a checkpoint read by
    :func:`read_checkpoint`. Returns False when the checkpoint has no random state for ``rank`` (it
    was written by a job with fewer processes): the caller then has to seed that process itself."""
    load_weights(model, ckpt["model"], path)
    meta = ckpt["state"].get("optimizers")
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt: state.json has no optimizer table; {fallback_hint(path)}")
    for name, opt in optimizers.items():
        if name not in meta:
            raise CheckpointError(f"checkpoint {path} has no state for optimizer '{name}'")
        try:
            optimizer_from_tensors(name, opt, ckpt["optimizer"], meta[name])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(f"checkpoint {path}: optimizer '{name}' state does not fit ({exc}); "
                                  f"{unfit_hint(path, 'optimizer.safetensors')}") from None
    if rank == 0:
        tensors = {k: v for k, v in ckpt["rng"].items() if not k.startswith("rank")}
        rng_meta = ckpt["state"].get("rng")
    else:
        prefix = f"rank{rank}."
        tensors = {k.removeprefix(prefix): v for k, v in ckpt["rng"].items() if k.startswith(prefix)}
        metas = ckpt["state"].get("rng_ranks", [])
        if not tensors or len(metas) < rank:
            return False
        rng_meta = metas[rank - 1]
    try:
        _set_rng_state(tensors, rng_meta)  # type: ignore[arg-type]  # a missing table fails inside, as corrupt
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, OverflowError) as exc:  # (numpy: -1 as uint32)
        raise CheckpointError(f"checkpoint {path} is corrupt: its random state cannot be restored ({exc}); "
                              f"{fallback_hint(path)}") from None
    for name, gen in generators.items():
        key = f"gen_{name}"
        if key in tensors:
            try:
                gen.set_state(tensors[key])
            except RuntimeError:
                raise CheckpointError(f"checkpoint {path} was written on another device type (its '{name}' "
                                      f"random state does not fit a {gen.device.type} generator); resume with "
                                      "the device it was trained on") from None
    return True
