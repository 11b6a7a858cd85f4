"""Fixtures shared by the platform tests (registry, recipes, CLI, conformance)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from avade.registry import DISABLE_ENV, reset_registry


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test that changes plugin loading (env, fake entry points) starts and ends with a clean cache."""
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write("x.toml", text)`` -> the path of a new file under ``tmp_path``."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write
