"""``run_recipe`` from a notebook leaves the process's global random states and CUDA TF32 flags as it found them
(training seeds them from ``train.seed`` and sets ``train.tf32``; the user's own code after it must not inherit
those)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.train.run import run_recipe


def test_run_recipe_puts_back_the_global_random_states_and_tf32_flags(tmp_path: Path) -> None:
    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        expected = torch.rand(3), random.random(), np.random.rand()
        torch.manual_seed(1234)
        random.seed(1234)
        np.random.seed(1234)
        run_recipe(tiny_recipe("train.steps=1", "train.seed=7", "train.tf32=false"), tmp_path / "run",
                   progress=False)
        assert torch.equal(torch.rand(3), expected[0])
        assert random.random() == expected[1] and np.random.rand() == expected[2]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.mark.skipif(not hasattr(torch.backends.cuda.matmul, "fp32_precision"), reason="torch < 2.9")
def test_run_recipe_takes_and_puts_back_tf32_set_through_the_fp32_precision_api(tmp_path: Path) -> None:
    # Reading allow_tf32 after the new per-backend setters raises in torch: run_recipe raised that RuntimeError
    # before training (it kept the flags through allow_tf32), where it trained before it put flags back.
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        run_recipe(tiny_recipe("train.steps=1", "train.tf32=false"), tmp_path / "run", progress=False)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_cuda_generators_started_by_the_run_are_put_back_as_they_would_have_started(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A notebook's first GPU work is often run_recipe: CUDA starts inside it, so no CUDA state was there to
    # fork; its generators were left at train.seed's stream (stood in for here: no GPU needed).
    from avade.train import device

    started = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: bool(started))
    seeded: list[int] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeded.append)
    torch.manual_seed(4321)  # (seeds CUDA's generators too, through torch.cuda.manual_seed_all)
    with device.global_state_kept():
        started.append(True)  # CUDA starts in the run
        torch.manual_seed(7)  # train.seed
    assert seeded == [4321, 7, 4321]
    with device.global_state_kept():  # CUDA already running: fork_rng keeps its states, nothing reseeded
        pass
    assert seeded == [4321, 7, 4321]


def test_cudnns_benchmark_flag_is_put_back_as_the_tf32_flags_are() -> None:
    from avade.train.device import global_state_kept

    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with global_state_kept():
            torch.backends.cudnn.benchmark = True  # as train.cudnn_benchmark = true sets it on a GPU
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before
