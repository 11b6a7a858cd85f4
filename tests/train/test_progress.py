"""Off a terminal (a cluster job's log file) training progress is whole plain lines, not a cut-off bar."""

from __future__ import annotations

import io

from rich.console import Console

from avade.train.progress import TrainProgress


def test_off_a_terminal_progress_is_whole_lines_at_an_interval():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=40)
    logs = {"loss": 1234.5, "bpd": 5.4321, "l_q": -0.25, "images_per_s": 300.0, "ignored": 1.0}
    with TrainProgress(console, total=200, start=100, label="av_ade_wg_rd-scales2-blocks4",
                       interval_s=3600.0) as bar:
        for step in range(101, 201):
            bar.update(step, logs)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines  # the first and the last step (the interval never elapsed)
    assert lines[0].startswith("av_ade_wg_rd-scales2-blocks4 step 101/200 (50%) loss=1.23e+03 bpd=5.43 l_q=-0.25 "
                               "images_per_s=300 first step ")
    assert lines[1] == ("av_ade_wg_rd-scales2-blocks4 step 200/200 (100%) loss=1.23e+03 bpd=5.43 l_q=-0.25 "
                        "images_per_s=300")  # longer than the 40-column console, yet whole


def test_on_a_terminal_it_is_a_bar_and_disabled_it_is_silent():
    out = io.StringIO()
    with TrainProgress(Console(file=out, force_terminal=True, width=120), total=3) as bar:
        assert bar.progress is not None and not bar.lines
        bar.update(1, {"loss": 1.0})
    quiet = io.StringIO()
    with TrainProgress(Console(file=quiet, force_terminal=False), total=3, enabled=False) as bar:
        bar.update(1, {"loss": 1.0})
    assert quiet.getvalue() == ""


def test_the_first_step_is_left_out_of_the_eta(monkeypatch):
    """A first step taking minutes (torch.compile, cuDNN autotuning, CUDA's start) is no measure of the rest: its
    line shows how long it took instead of an ETA, and later ETAs count from its end (1 s a step here)."""
    import types

    import avade.train.progress as progress_module

    now = [0.0]

    def tick() -> float:
        return now[0]

    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=tick))
    out = io.StringIO()
    with TrainProgress(Console(file=out, force_terminal=False, width=200), total=110, start=10,
                       interval_s=0.0) as bar:
        now[0] = 116.0  # the first step: 116 s
        bar.update(11, {"images_per_s": 0.07})
        for step in range(12, 14):
            now[0] += 1.0
            bar.update(step, {"images_per_s": 8.0})
    lines = out.getvalue().splitlines()
    assert lines[0] == "step 11/110 (10%) images_per_s=0.07 first step 1m56s", lines
    assert lines[1] == "step 12/110 (11%) images_per_s=8 eta 1m38s", lines  # 98 steps left at 1 s
    assert lines[2] == "step 13/110 (12%) images_per_s=8 eta 1m37s", lines
