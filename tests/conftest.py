"""Suite-wide settings and fixtures shared by the platform tests (registry, recipes, CLI, conformance).

Torch runs single-threaded: the suite's tensors are tiny, and on a 2-core CI machine running two
pytest workers, intra-op threading makes them several times slower, not faster.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from avade.registry import DISABLE_ENV, reset_registry

torch.set_num_threads(1)
# Reference statistics (FID etc.) are cached per user; tests keep theirs out of ~/.cache, in a
# directory of this process that goes with it (each holds ~100 MB of covariance files).
if "AVADE_CACHE" not in os.environ:
    _test_cache = tempfile.mkdtemp(prefix="avade-test-cache-")
    os.environ["AVADE_CACHE"] = _test_cache
    atexit.register(shutil.rmtree, _test_cache, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_onednn() -> Iterator[None]:
    """oneDNN spends seconds building kernels for every new layer shape on its first call; the suite
    sees hundreds of shapes once each, so plain ATen kernels (same results up to rounding) are faster."""
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
