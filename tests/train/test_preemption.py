"""The signal handling of the training loop: SIGTERM and a first Ctrl-C ask for a stop at the next step
boundary; a second Ctrl-C quits at once; an ignored SIGINT stays ignored; the handlers are restored."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from avade.errors import StoppedError
from avade.train.preemption import ignore_stop_signals, stop_on_signals

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _raise(signum):
    os.kill(os.getpid(), signum)


def test_sigterm_and_a_first_ctrl_c_only_ask_for_a_stop(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop:
        _raise(signal.SIGTERM)
        assert stop.signal == "SIGTERM"
        _raise(signal.SIGTERM)  # a repeated SIGTERM changes nothing
        _raise(signal.SIGINT)
        assert stop.signal == "SIGTERM", "the first signal is the one reported"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert "press Ctrl-C again to quit now" in capsys.readouterr().err


def test_a_second_ctrl_c_quits_at_once():
    with stop_on_signals(announce=False, repeat_window_s=0.0) as stop:
        _raise(signal.SIGINT)
        assert stop.signal == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            _raise(signal.SIGINT)


def test_a_repeat_within_the_window_is_the_same_request():
    # torchrun forwards the terminal's Ctrl-C to workers that received it already
    with stop_on_signals(announce=False, repeat_window_s=60.0) as stop:
        _raise(signal.SIGINT)
        _raise(signal.SIGINT)
        assert stop.signal == "SIGINT"


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals(announce=False, repeat_window_s=0.0) as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            _raise(signal.SIGINT)
            _raise(signal.SIGINT)
            assert stop.signal is None
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigusr1_asks_for_a_stop_too_and_data_workers_ignore_the_stop_signals():
    with stop_on_signals(announce=False) as stop:
        _raise(signal.SIGUSR1)  # SLURM's early warning (sbatch --signal=USR1@120)
        assert stop.signal == "SIGUSR1"
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        ignore_stop_signals(0)
        assert all(signal.getsignal(s) is signal.SIG_IGN for s in previous)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_before_there_is_anything_to_save_a_stop_signal_stops_at_once():
    for signum in (signal.SIGTERM, signal.SIGINT):
        with pytest.raises(StoppedError) as err, stop_on_signals(immediate="stopped by {signal}: nothing saved"):
            try:  # e.g. a dataset loader that wraps any failure as a corrupt dataset: not a failure
                _raise(signum)
            except Exception as exc:
                raise AssertionError("taken for an error") from exc
            raise AssertionError("the handler raises at once")
        assert str(err.value) == f"stopped by {signal.Signals(signum).name}: nothing saved"
        assert err.value.signal_name == signal.Signals(signum).name
    # one signal stops it; a second one during the unwinding only sets the flag (nothing escapes unconverted)
    with pytest.raises(StoppedError, match="stopped by SIGTERM"), \
            stop_on_signals(immediate="stopped by {signal}") as stop:
        try:
            _raise(signal.SIGTERM)
        finally:
            _raise(signal.SIGUSR1)
    assert stop.signal == "SIGUSR1"



class _KilledByDefault(Exception):
    """Stands in for SIGTERM's default action (the process killed without a word) while a test runs."""


def test_a_stop_signal_in_the_final_evaluation_stops_it_at_once_and_says_so(tmp_path, monkeypatch):
    # (was: outside any handler, the final grid and evaluation died by SIGTERM's default action: exit 143, no line)
    from tiny_recipes import tiny_recipe

    from avade.cli.runs import run_record
    from avade.train.trainer import Trainer

    def default_action(signum, frame):
        raise _KilledByDefault

    trainer = Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=2"), tmp_path / "run", progress=False)
    evaluate = trainer.evaluate

    def signalled(*args, **kwargs):
        if trainer.step == 2:  # the final evaluation, not the untrained model's
            _raise(signal.SIGTERM)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", signalled)
    previous = signal.signal(signal.SIGTERM, default_action)
    try:
        with pytest.raises(StoppedError) as stopped:
            trainer.fit()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert str(stopped.value) == ("stopped by SIGTERM in the final evaluation of step 2 (training is done: its "
                                  "checkpoint is saved); continue with --resume, which evaluates the trained model")
    assert run_record(tmp_path / "run")["status"] == "unfinished"
    resumed = Trainer(tiny_recipe("train.steps=2", "train.checkpoint_every=2"), tmp_path / "run", resume=True,
                      progress=False)
    assert resumed.fit()["steps"] == 2 and run_record(tmp_path / "run")["status"] == "finished"
