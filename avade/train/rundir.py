"""The one run-directory layout (README, Run directory).

    <run>/recipe.toml      resolved recipe
    <run>/metrics.jsonl    one JSON object per logged step
    <run>/summary.json     final metrics (incl. test ``bpd``)
    <run>/checkpoints/     step_XXXXXXXX/{model,optimizer,rng}.safetensors + state.json (no pickle),
                           and ema.safetensors with train.ema_decay
    <run>/samples/         sample and reconstruction grids (PNG)
    <run>/tb/              TensorBoard events (when tensorboard is installed)
    <run>/eval.json        ``avade eval``: the checkpoint (step, weights) evaluated last, its metrics and their settings
    <run>/eval_checkpoints.json  every checkpoint evaluated: ``{"records": [...]}``, one per checkpoint and weights
    <run>/resumes.jsonl    one line per ``--resume`` that changed settings, the number of processes or the data read
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from avade.atomic_files import replaced_atomically
from avade.errors import CheckpointError
from avade.recipe.load import plain_name


@attrs.frozen
class RunDir:
    """Paths of one run."""

    root: Path

    @property
    def recipe(self) -> Path:
        """``recipe.toml``: the resolved recipe."""
        return self.root / "recipe.toml"

    @property
    def metrics(self) -> Path:
        """``metrics.jsonl``: one JSON object per logged step."""
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        """``summary.json``: the final metrics."""
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``: one ``step_XXXXXXXX`` folder per checkpoint."""
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        """``samples/``: sample and reconstruction grids."""
        return self.root / "samples"

    @property
    def tensorboard(self) -> Path:
        """``tb/``: TensorBoard events."""
        return self.root / "tb"

    @property
    def eval(self) -> Path:
        """``eval.json``: the checkpoint evaluated last, its metrics and their settings."""
        return self.root / "eval.json"

    @property
    def eval_checkpoints(self) -> Path:
        """``eval_checkpoints.json``: every checkpoint evaluated, one record each."""
        return self.root / "eval_checkpoints.json"

    @property
    def resumes(self) -> Path:
        """One JSON line per ``--resume`` that changed settings: step, checkpoint, ``changed`` (old, new)."""
        return self.root / "resumes.jsonl"

    def make(self) -> RunDir:
        """Create the run folder with its checkpoints/ and samples/ (existing ones kept); returns self."""
        for p in (self.root, self.checkpoints, self.samples):
            p.mkdir(parents=True, exist_ok=True)
        return self


def default_run_dir(recipe_name: str, base: Path = Path("runs")) -> Path:
    """``runs/<recipe>/<YYYYmmdd-HHMMSS>``; a name that is not a plain file name is made one, so the run
    stays under ``runs/`` (``name = "../x"`` -> ``runs/x/...``)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return base / plain_name(recipe_name) / stamp


def make_run_dir(recipe_name: str, base: Path = Path("runs")) -> Path:
    """:func:`default_run_dir`, made at once: runs started in the same second without --out (the jobs of an
    array, say) would share it, and all but one be refused as busy; the later ones get ``<stamp>-2``, ``-3``..."""
    first = default_run_dir(recipe_name, base)
    first.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = first if n == 1 else first.with_name(f"{first.name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def latest_run_dir(recipe_name: str, base: Path = Path("runs")) -> Path | None:
    """The newest run of a recipe under ``runs/`` (for ``--resume`` without ``--out``): by the time stamp of its
    name and the number a run started in the same second got (``<stamp>-10`` after ``<stamp>-9``, which a sort
    by name puts first); a folder not named so (someone's own, e.g. ``best``) only when there is no such run."""
    parent = base / plain_name(recipe_name)
    runs = [p for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
    stamped = [(m[1], int(m[2] or 1), p) for p in runs if (m := _STAMPED.fullmatch(p.name))]
    if stamped:
        return max(stamped, key=lambda t: t[:2])[2]
    return max(runs, key=lambda p: p.name) if runs else None


#: a run directory :func:`default_run_dir` named (and ``-2``, ``-3``, ... for runs started in the same second)
_STAMPED = re.compile(r"(\d{8}-\d{6})(?:-(\d+))?")


def sweep_runs(root: Path) -> tuple[list[Path], dict[str, dict[str, Any]]]:
    """The run directories of a sweep's ``--out``, in the sweep's order, and each variant's override values
    (``{"model.flow.scales": 2, ...}``): those of its ``sweep_plan.json`` (every variant of the sweep as last
    started, also those not trained yet, whose directories do not exist), else of its sweep_summary.json
    (runs it does not list after, by name). CheckpointError for a plan naming a folder outside the sweep."""
    runs, axes, problems = sweep_layout(root)
    escaped = [text for file, text in problems if file.name == "sweep_plan.json" and text.startswith(_ESCAPES)]
    if escaped:
        raise CheckpointError(f"{root / 'sweep_plan.json'} {escaped[0]}")
    return runs, axes


#: how a sweep's own files are mended: a sweep started again rewrites its plan and its summary
_RESUME_SWEEP = "start the sweep again (avade recipe run RECIPE --out SWEEP --resume) to rewrite it"
#: how :func:`sweep_layout` says that a plan names a folder outside the sweep (which :func:`sweep_runs` refuses)
_ESCAPES = "names a variant directory"


def sweep_layout(root: Path) -> tuple[list[Path], dict[str, dict[str, Any]], list[tuple[Path, str]]]:
    """:func:`sweep_runs`, and what is wrong with the sweep's files (``(file, "what is wrong; how to fix it")``)
    instead of an error: a plan that cannot be read is passed over (the sweep's runs are then those of its
    sweep_summary.json or its folders), a variant that names a folder outside the sweep is left out."""
    root = Path(root)
    problems: list[tuple[Path, str]] = []
    plan_file = root / "sweep_plan.json"
    data, problem = read_json_checked(plan_file, dict, _RESUME_SWEEP)
    if problem:
        problems.append((plan_file, problem))
    plan = data.get("variants") if isinstance(data, dict) else None
    if data is not None and not isinstance(plan, list):
        problems.append((plan_file, f"has no list of variants (edited?); {_RESUME_SWEEP}"))
    if isinstance(plan, list):
        listed = [v for v in plan if isinstance(v, dict) and isinstance(v.get("name"), str)]
        # a run is named by its directory (the name an older avade gave a variant it started)
        dirs = {v["name"]: v["dir"] if isinstance(v.get("dir"), str) else v["name"] for v in listed}
        # avade writes plain names (sweep.variant_name): a path would lead elsewhere
        plain = {name: Path(name).name == name and name not in (".", "..") for name in dirs.values()}
        problems += [(plan_file, f"{_ESCAPES} {name!r:.80}, which is not a folder of {root}: it was edited; fix or "
                                 "delete that entry") for name, ok in plain.items() if not ok]
        axes = {dirs[v["name"]]: dict(v["overrides"]) if isinstance(v.get("overrides"), dict) else {}
                for v in listed if plain[dirs[v["name"]]]}
        return [root / name for name in axes], axes, problems
    summary = root / "sweep_summary.json"
    rows, problem = read_json_checked(summary, list, _RESUME_SWEEP)
    if problem:
        problems.append((summary, problem))
    if not summary.is_file():  # a folder of separate runs (runs/<recipe>/<time>) is no sweep
        return [], {}, problems
    try:
        runs = {p.name: p for p in sorted(root.iterdir()) if (p / "recipe.toml").is_file()}
    except OSError as exc:
        problems.append((root, f"cannot be read ({exc.strerror or exc}); give yourself read access to it"))
        runs = {}
    axes = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and isinstance(row.get("name"), str):
            # the variant's overrides are its dotted keys (its summary's own keys have no dots)
            axes[row["name"]] = {k: v for k, v in row.items() if "." in k}
    order = [name for name in axes if name in runs] + [name for name in runs if name not in axes]
    return [runs[name] for name in order], axes, problems


#: a checkpoint folder's name: ``step_XXXXXXXX`` (:func:`checkpoint_step`)
CHECKPOINT_PREFIX = "step_"


def checkpoint_name(step: int) -> str:
    """The name of the checkpoint folder of ``step``: ``step_XXXXXXXX`` (:func:`checkpoint_step` reads it back)."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are ignored, and so are other folders
    such as a user's copy ``step_00000400.bak``: pruning must not delete them, nor ``avade eval --checkpoint
    all`` trip over them)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir()
             if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and checkpoint_step(p) >= 0]
    # By step, not by name: past step 99,999,999 the name has nine digits and would sort first, and
    # pruning (which keeps the last ones) would delete the newest checkpoint.
    return sorted(found, key=lambda p: (checkpoint_step(p), p.name))


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint directory's name says (``step_00000120`` -> 120; -1 if it says none)."""
    return parse_step(path.name) if path.name.startswith(CHECKPOINT_PREFIX) else -1


def parse_step(text: str) -> int:
    """A step as users and directory names write it (``120``, ``step_00000120`` -> 120); -1 for anything
    else (ASCII digits only: ``int`` would take other scripts' digits too)."""
    digits = text.strip().removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if digits.isdecimal() and digits.isascii() else -1


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file + rename so readers never see half a file."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    """``data`` as strict JSON (non-finite numbers become null, as in metrics.jsonl), written atomically."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, sort_keys=False, default=_json_default,
                                       allow_nan=False) + "\n")


#: state.json's key of the digest of its own content (see :func:`state_digest`)
STATE_DIGEST = "state_digest"


def state_digest(state: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a checkpoint's state as state.json holds it (parsed JSON), without its own digest
    (``STATE_DIGEST``), in canonical JSON (sorted keys, no spaces): what checkpoint writing records under
    ``STATE_DIGEST``, so that damage to state.json that still parses (a flipped digit in a learning rate, a data
    position or a random state) is found on reading (avade eval, --resume, avade runs), as the tensor files' is."""
    body = {k: v for k, v in state.items() if k != STATE_DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def state_digest_problem(state: Mapping[str, Any]) -> str | None:
    """What is wrong with state.json as read (``state``) by the digest of its own content, said after "state.json"
    (``is not the one that was saved (...)``), or None: intact, or from before the digest was recorded."""
    recorded = state.get(STATE_DIGEST)
    if recorded is None:
        return None
    if not isinstance(recorded, str):
        return f"has a {STATE_DIGEST} of {recorded!r:.60}, not a digest"
    if recorded != state_digest(state):
        return (f"is not the one that was saved (the SHA-256 of its content differs from the one it recorded, "
                f"{STATE_DIGEST}: damaged on disk, or edited)")
    return None


def read_file_checked(path: Path, fix: str) -> tuple[bytes | None, str | None]:
    """The bytes of the run file ``path`` and None, or None and what is wrong with it, in words ending with ``fix``
    (how to mend it); ``(None, None)`` when there is no such file (run files come as a run goes on)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except IsADirectoryError:
        return None, f"is a folder, not a file; move it away, then {fix}"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc}); give yourself read access to it"
    if not data.strip():
        return None, f"is empty; {fix}"
    return data, None


def read_json_checked(path: Path, kind: type, fix: str) -> tuple[Any, str | None]:
    """The JSON ``kind`` (dict or list) in ``path`` and None, or None and what is wrong with the file
    (:func:`read_file_checked`), in words ending with ``fix``. Run files are written whole (renamed into place),
    so one that cannot be read was damaged or edited, not caught half-written."""
    kinds: dict[type, str] = {dict: "an object", list: "a list"}
    what = kinds[kind]
    text, problem = read_file_checked(path, fix)
    if text is None:
        return None, problem
    try:
        data = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        return None, f"is not text (binary data: damaged?); {fix}"
    except ValueError as exc:
        return None, f"is not valid JSON ({' '.join(str(exc).split())[:80]}: cut short or edited?); {fix}"
    except RecursionError:
        return None, f"is JSON nested too deep to read; {fix}"
    if not isinstance(data, kind):
        return None, f"holds a JSON {_json_type(data)}, not {what}; {fix}"
    return data, None


def _json_type(data: Any) -> str:
    kinds = {dict: "object", list: "list", str: "string", bool: "true/false", type(None): "null"}
    return kinds.get(type(data), "number")


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` when the file is missing, unreadable or holds no object (run
    files other processes may be rewriting or that an older avade wrote: read as far as they go)."""
    return read_json_checked(path, dict, "")[0] or {}


def read_json_list(path: Path) -> list[Any]:
    """The JSON list in ``path`` (a sweep summary), or ``[]``, as :func:`read_json_object`."""
    return read_json_checked(path, list, "")[0] or []


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy/torch scalars as Python numbers and non-finite numbers as None (JSON null)."""
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
