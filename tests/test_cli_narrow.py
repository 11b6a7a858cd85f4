"""The CLI as a first-time user meets it: tables in a narrow terminal (cells fold, none is cut to "…"), -o paths."""

from __future__ import annotations

import json
from pathlib import Path

import tomli_w
from rich.console import Console
from typer.testing import CliRunner

from avade.cli.app import app
from avade.cli.runs import render

ROOT = Path(__file__).resolve().parents[1]


def _unfolded(text: str) -> str:
    """Each table column's cells joined top to bottom (a folded cell reads whole again), columns apart."""
    columns: dict[int, str] = {}
    for line in text.splitlines():
        sep = "│" if "│" in line else "┃"
        for i, cell in enumerate(line.split(sep)[1:-1]):
            columns[i] = columns.get(i, "") + cell.strip()
    return " | ".join(columns.values())


def test_runs_table_keeps_variant_step_and_status_at_40_columns() -> None:
    record = {"run": "runs/qs", "variant": "av-ade", "step": 600, "steps": 600, "status": "finished",
              "results": {"bpd": 8.0941, "fid": 275.5}, "updated_s": 5.0}
    console = Console(record=True, width=40)
    render([record], ["bpd", "fid"], console)
    text = console.export_text()
    assert "…" not in text, text
    flat = _unfolded(text)
    for word in ("av-ade", "600/600", "finished"):
        assert word in flat, text


def test_recipe_show_variants_keeps_names_and_overrides_at_40_columns() -> None:
    recipe = ROOT / "recipes" / "paper" / "table9a_av_ade.toml"
    result = CliRunner().invoke(app, ["recipe", "show", str(recipe), "--variants"], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout, result.stdout
    names = json.loads(CliRunner().invoke(app, ["recipe", "show", str(recipe), "--variants", "--json"]).stdout)
    flat = _unfolded(result.stdout)
    for variant in names:
        assert variant["name"] in flat, result.stdout
        for key in variant["overrides"]:
            assert key in flat, result.stdout


def test_eval_table_keeps_long_metric_names_at_30_columns(tmp_path: Path, monkeypatch) -> None:
    import avade.evaluate.runs as runs_mod

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.toml").write_text(tomli_w.dumps({"name": "x"}))
    results = {"prdc_precision_at_k5": 0.123456, "bpd_iw1000_train": 7.25}
    monkeypatch.setattr(runs_mod, "evaluate_and_record",
                        lambda *a, **k: (results, "last", {"step": 3}))
    result = CliRunner().invoke(app, ["eval", str(run)], env={"COLUMNS": "30"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout, result.stdout
    flat = _unfolded(result.stdout)
    assert "prdc_precision_at_k5" in flat and "bpd_iw1000_train" in flat, result.stdout


def test_sample_refuses_an_output_below_a_file_before_sampling(tmp_path: Path, monkeypatch) -> None:
    import avade.evaluate

    drawn: list[object] = []
    monkeypatch.setattr(avade.evaluate, "sample_run", lambda *a, **k: drawn.append(a))
    (tmp_path / "grid.png").write_bytes(b"an earlier grid")
    result = CliRunner().invoke(app, ["sample", str(tmp_path), "-o", str(tmp_path / "grid.png" / "x.png")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: -o:") and "is a file, not a folder" in lines[0], lines
    assert drawn == []  # (every sample drawn first, then "File exists", before)
    assert (tmp_path / "grid.png").read_bytes() == b"an earlier grid"
