"""``run_recipe`` from a notebook leaves the process's global random states and CUDA TF32 flags as it found them
(training seeds them from ``train.seed`` and sets ``train.tf32``; the user's own code after it must not inherit
those)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
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
