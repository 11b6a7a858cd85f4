"""Suite-wide settings and fixtures shared by the platform tests (registry, recipes, CLI, conformance).

Torch runs single-threaded: the suite's tensors are tiny, and on a 2-core CI machine running two
pytest workers, intra-op threading makes them several times slower, not faster.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from avade.registry import DISABLE_ENV, reset_registry

torch.set_num_threads(1)
_test_cache: Path | None = None


@pytest.hookimpl(trylast=True)  # (after pytest's own configure, which sets up its temporary folder)
def pytest_configure(config: pytest.Config) -> None:
    """Reference statistics (FID etc.) are cached per user; tests keep theirs out of ~/.cache, in a folder
    of this session (~100 MB of covariance files) removed when it ends. It lies in pytest's numbered
    temporary folder, which later sessions rotate away: a session that was killed (a CI or ``timeout``
    limit) leaves it for a few sessions only, not in the temp folder for good. Set before pytest-xdist
    starts its workers, which inherit it (and neither make nor remove their own)."""
    global _test_cache
    if "AVADE_CACHE" in os.environ:
        return
    _test_cache = config._tmp_path_factory.mktemp("avade-cache", numbered=False)  # type: ignore[attr-defined]
    os.environ["AVADE_CACHE"] = str(_test_cache)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _test_cache is not None:
        shutil.rmtree(_test_cache, ignore_errors=True)
        os.environ.pop("AVADE_CACHE", None)


@pytest.fixture(autouse=True)
def _no_onednn(request: pytest.FixtureRequest) -> Iterator[None]:
    """oneDNN spends seconds building kernels for every new layer shape on its first call; the suite
    sees hundreds of shapes once each, so plain ATen kernels (same results up to rounding) are faster.
    A test marked ``onednn`` keeps it: one that runs large convolutions (the Inception network at 299x299)
    many times over a few shapes, where oneDNN's kernels are several times faster."""
    if request.node.get_closest_marker("onednn") is not None:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "TF32 on top of oneDNN" notice when toggling the flags
        with torch.backends.mkldnn.flags(enabled=False):
            yield


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


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
