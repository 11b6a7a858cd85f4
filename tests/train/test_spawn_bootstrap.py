"""A script without ``if __name__ == "__main__":`` under the ``spawn`` start method (macOS, Windows): each
DataLoader worker runs it again while starting; avade's entry points refuse with an error that says so."""

from __future__ import annotations

import multiprocessing

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.errors import ConfigError
from avade.evaluate.runs import evaluate_run
from avade.train.data import from_workers
from avade.train.run import run_recipe, run_recipe_file


@pytest.fixture
def starting_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # what multiprocessing's spawn/forkserver bootstrap sets while it re-imports the parent's main script
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)


@pytest.mark.usefixtures("starting_worker")
def test_training_and_evaluating_in_a_starting_worker_name_the_main_guard(tmp_path) -> None:
    out = tmp_path / "run"
    for call in (lambda: run_recipe(tiny_recipe(), out), lambda: run_recipe_file(tmp_path / "r.toml", out_dir=out),
                 lambda: evaluate_run(out, metrics=["bpd"])):
        with pytest.raises(ConfigError, match=r'if __name__ == "__main__":.*data\.num_workers = 0') as err:
            call()
        assert "spawn" in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()  # (not a lock of its own, which would fail as "another process is training")


@pytest.mark.usefixtures("starting_worker")
def test_a_loader_with_workers_is_refused_before_it_starts_any() -> None:
    data = torch.utils.data.TensorDataset(torch.zeros(4, 1, 1, 1, dtype=torch.uint8), torch.zeros(4))
    with pytest.raises(ConfigError, match="while a worker process was starting"):
        next(from_workers(torch.utils.data.DataLoader(data, batch_size=2, num_workers=1)))
    # without workers nothing is spawned, and nothing is refused
    assert len(next(from_workers(torch.utils.data.DataLoader(data, batch_size=2)))[0]) == 2
