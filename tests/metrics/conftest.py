"""Fixtures for the metric tests."""

from __future__ import annotations

import pytest
from metric_helpers import load_digits_splits


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits, uint8 [N, 1, 8, 8]: {"train": (x, y), "test": (x, y)}."""
    return load_digits_splits()
