"""``avade study prd``: the PRD curves of several runs on one plot (the paper's Figure 19: AV-ADE against GAN,
Glow and Real-NVP), from the ``prd_curve.json`` that ``avade eval RUN --metrics prd`` writes into each run."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avade.errors import AvadeError
from avade.metrics.prd import CURVE_FILE, max_f_beta, plot_prd, prd_auc
from avade.train.rundir import RunDir

#: The paper's F_beta (Sajjadi et al. 2018): F_8 weighs recall, F_1/8 precision.
PAPER_BETA = 8.0


def read_curve(path: Path) -> tuple[list[float], list[float], str | None]:
    """(precision, recall, label) of a ``prd_curve.json`` (a run directory's, or the file itself); an AvadeError
    naming the file and the command that writes it otherwise."""
    file = path / CURVE_FILE if path.is_dir() else path
    if not file.exists():
        if path.is_dir():
            raise AvadeError(f"{path} has no PRD curve ({CURVE_FILE}); compute one with `avade eval {path} --metrics "
                             "prd` (eval.prd.plot = true, the default)")
        raise AvadeError(f"{path}: no such run directory or {CURVE_FILE}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AvadeError(f"{file} is not a PRD curve ({type(exc).__name__}: cut short or edited?); write it again "
                         f"with `avade eval RUN --metrics prd`") from None
    if not isinstance(data, dict) or "precision" not in data or "recall" not in data:  # (another file: eval.json)
        raise AvadeError(f"{file} is not a PRD curve (no precision and recall lists); give a run directory or its "
                         f"{CURVE_FILE}")
    try:
        precision = [float(v) for v in data["precision"]]
        recall = [float(v) for v in data["recall"]]
    except (ValueError, TypeError) as exc:
        raise AvadeError(f"{file} is not a PRD curve ({type(exc).__name__}: cut short or edited?); write it again "
                         f"with `avade eval RUN --metrics prd`") from None
    if not precision or len(precision) != len(recall) or not all(
            math.isfinite(v) and 0.0 <= v <= 1.0 + 1e-9 for v in (*precision, *recall)):
        raise AvadeError(f"{file} is not a PRD curve (precision and recall must be equally long lists of values in "
                         "[0, 1]); write it again with `avade eval RUN --metrics prd`")
    label = data.get("label") if isinstance(data, dict) else None
    return precision, recall, label if isinstance(label, str) else None


def _run_name(path: Path) -> str:
    """A run's name for a legend: its recipe's (recipe.toml's ``name``; a sweep variant's), else its folder's."""
    import tomllib

    folder = path if path.is_dir() else path.parent
    try:
        name = tomllib.loads(RunDir(folder).recipe.read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        name = None
    return name if isinstance(name, str) and name else folder.resolve().name


def prd_study(runs: Sequence[str], output: Path, title: str | None = None) -> list[dict[str, Any]]:
    """Plot the PRD curves of ``runs`` (each a run directory or a ``prd_curve.json``, optionally ``LABEL=PATH``)
    on one PNG at ``output``; returns one row per curve: ``label``, ``path``, ``prd_f8``, ``prd_f1_8``, ``prd_auc``
    (F_8 and F_1/8 as the paper reports them, whatever beta the evaluation used)."""
    try:  # (plot_prd's own message speaks of the prd metric's plot setting)
        import matplotlib  # noqa: F401
    except ImportError:
        raise AvadeError("avade study prd draws with matplotlib: `pip install 'avade[metrics]'`") from None
    if not runs:
        raise AvadeError("give at least one run directory (or prd_curve.json), e.g. avade study prd runs/av_ade "
                         "runs/glow -o figure19.png")
    curves: dict[str, tuple[list[float], list[float]]] = {}
    rows: list[dict[str, Any]] = []
    files: dict[Path, str] = {}  # each curve's file, resolved: one run given twice is one curve drawn twice
    for given in runs:
        label, sep, where = given.partition("=")
        if not sep or not label or Path(given).exists():  # (a path holding "=" is a path)
            label, where = "", given
        elif not where:
            raise AvadeError(f"{given}: no path after '='; give LABEL=PATH (a run directory or its {CURVE_FILE})")
        path = Path(where).expanduser()
        precision, recall, _ = read_curve(path)
        file = (path / CURVE_FILE if path.is_dir() else path).resolve()
        if file in files:
            raise AvadeError(f"{given} and {files[file]} are the same curve ({file}); give each run once")
        files[file] = given
        label = label or _run_name(path)
        if label in curves:  # (two runs of one recipe: told apart by their folders)
            label = f"{label} ({path.resolve().name if path.is_dir() else path.resolve().parent.name})"
        if label in curves:
            raise AvadeError(f"two curves are labelled {label!r}; name them: LABEL=PATH")
        curves[label] = (precision, recall)
        f8, f1_8 = max_f_beta(precision, recall, PAPER_BETA)
        rows.append({"label": label, "path": str(path), "prd_f8": f8, "prd_f1_8": f1_8,
                     "prd_auc": prd_auc(precision, recall)})
    plot_prd(curves, output, title=title)
    return rows
