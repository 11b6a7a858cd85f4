"""``avade study prd``: several runs' PRD curves (the prd_curve.json of ``avade eval --metrics prd``) on one plot,
as the paper's Figure 19, with F8 / F1/8 / AUC per curve; bad inputs are one line naming the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avade.cli.app import app
from avade.metrics.prd import max_f_beta, prd_auc, prd_curve

pytest.importorskip("matplotlib")


def _run(folder: Path, name: str, overlap: float) -> Path:
    """A run directory as avade eval leaves it: recipe.toml and the PRD curve of two histograms."""
    folder.mkdir(parents=True)
    (folder / "recipe.toml").write_text(f'name = "{name}"\n', encoding="utf-8")
    ref = np.full(10, 0.1)
    model = overlap * ref + (1 - overlap) * np.eye(10)[0]  # closer to the reference as overlap -> 1
    precision, recall = prd_curve(model, ref)
    (folder / "prd_curve.json").write_text(json.dumps({"label": "model", "precision": precision.tolist(),
                                                       "recall": recall.tolist()}))
    return folder


def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, ["study", "prd", *args])


def test_the_curves_of_several_runs_go_on_one_plot_with_their_scores(tmp_path: Path) -> None:
    good, poor = _run(tmp_path / "a", "av_ade_wg_rd", 0.9), _run(tmp_path / "b", "glow_cifar10", 0.3)
    twin = _run(tmp_path / "c", "glow_cifar10", 0.5)  # a second run of one recipe: told apart by its folder
    _run(tmp_path / "d", "realnvp", 0.7)  # labelled by the user, given as its curve file
    plot = tmp_path / "figs" / "figure19.png"
    result = _invoke(str(good), str(poor), str(twin), f"Real NVP={tmp_path / 'd' / 'prd_curve.json'}",
                     "-o", str(plot), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = [row["label"] for row in report["curves"]]
    assert labels == ["av_ade_wg_rd", "glow_cifar10", "glow_cifar10 (c)", "Real NVP"]
    curve = json.loads((good / "prd_curve.json").read_text())
    expected = (*max_f_beta(curve["precision"], curve["recall"], 8.0), prd_auc(curve["precision"], curve["recall"]))
    first = report["curves"][0]
    assert (first["prd_f8"], first["prd_f1_8"], first["prd_auc"]) == pytest.approx(expected)
    assert first["prd_auc"] > report["curves"][1]["prd_auc"]  # more of the reference covered, larger area
    table = _invoke(str(good), str(poor), "-o", str(tmp_path / "two.png"))
    assert table.exit_code == 0 and "glow_cifar10" in table.stdout and "wrote" in table.stdout


@pytest.mark.parametrize(("damage", "message"), [
    (lambda run: (run / "prd_curve.json").unlink(), "has no PRD curve (prd_curve.json); compute one with `avade eval"),
    (lambda run: (run / "prd_curve.json").write_text('{"precision": [0.5, 0.4'), "is not a PRD curve"),
    (lambda run: (run / "prd_curve.json").write_text('{"precision": [0.5], "recall": [1.5]}'), "values in [0, 1]"),
    # another JSON file (a run's eval.json given for its curve): not "cut short or edited?"
    (lambda run: (run / "prd_curve.json").write_text('{"fid": 40.0}'), "is not a PRD curve (no precision and recall "
                                                                       "lists); give a run directory or its "),
])
def test_a_run_without_a_readable_curve_is_one_line(tmp_path: Path, damage, message: str) -> None:
    run = _run(tmp_path / "a", "av_ade", 0.9)
    damage(run)
    result = _invoke(str(run), "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_one_run_given_twice_is_refused(tmp_path: Path) -> None:
    # (was: drawn twice, labelled "av_ade" and "av_ade (a)")
    run = _run(tmp_path / "a", "av_ade", 0.9)
    result = _invoke(str(run), f"again={run / 'prd_curve.json'}", "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 2 and f"are the same curve ({run / 'prd_curve.json'}); give each run once" in \
        " ".join(result.stderr.split()), result.output


def test_a_label_without_a_path_is_named(tmp_path: Path) -> None:
    # (was: "A=" read as the path ".": ". has no PRD curve")
    result = _invoke("A=", "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 2 and "A=: no path after '='; give LABEL=PATH" in result.stderr, result.output


def test_the_output_must_be_a_png_file(tmp_path: Path) -> None:
    run = _run(tmp_path / "a", "av_ade", 0.9)
    for output in (tmp_path, tmp_path / "figure.pdf"):
        result = _invoke(str(run), "-o", str(output))
        assert result.exit_code == 2 and "give a file name such as figure19.png" in result.stderr, result.output
    assert _invoke(str(tmp_path / "nowhere"), "-o", str(tmp_path / "y.png")).exit_code == 2


def test_without_matplotlib_it_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    run = _run(tmp_path / "a", "av_ade", 0.9)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # (import fails)
    result = _invoke(str(run), "-o", str(tmp_path / "x.png"))
    assert result.exit_code == 2 and "avade study prd draws with matplotlib" in result.stderr, result.output
