"""Tests' edits of a checkpoint's state.json: written back with the digest of its own content recomputed (as
avade writes it), so that what a test changes is read as such, not refused as damage (state.json's digest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from avade.train import checkpoint as ckpt


def read_state(file: Path) -> dict[str, Any]:
    """A checkpoint's state.json (``file``, or the checkpoint folder holding it)."""
    file = file / "state.json" if file.is_dir() else file
    return json.loads(file.read_text(encoding="utf-8"))


def write_state(file: Path, state: dict[str, Any], digest: bool = True) -> None:
    """``state`` into ``file`` (a state.json, or the checkpoint folder holding it) with its own digest recomputed;
    ``digest=False``: without one, as an avade from before it was recorded wrote it."""
    file = file / "state.json" if file.is_dir() else file
    body = {k: v for k, v in state.items() if k != ckpt.STATE_DIGEST}
    if digest:
        body = json.loads(json.dumps(body, default=str))
        body[ckpt.STATE_DIGEST] = ckpt.state_digest(body)
    file.write_text(json.dumps(body, default=str), encoding="utf-8")


def edit_state(file: Path, **changes: Any) -> dict[str, Any]:
    """Set keys of a checkpoint's state.json (``file``, or its folder), its digest recomputed; returns the new state."""
    state = {**read_state(file), **changes}
    write_state(file, state)
    return state
