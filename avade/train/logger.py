"""metrics.jsonl (one JSON object per logged step) and TensorBoard events when available."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

from avade.atomic_files import naming, replaced_atomically
from avade.train.rundir import RunDir, json_safe


class MetricsLogger:
    """Appends ``{"step": s, ...}`` lines; mirrors scalars to TensorBoard if it is installed."""

    def __init__(self, run: RunDir, enabled: bool = True, start_step: int = 0) -> None:
        self.enabled = enabled
        self.path = run.metrics
        self._tb_dir = run.tensorboard
        self._tb: Any = None
        self._hook: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self._hook = _quiet_tensorboard_threads()
        try:
            # purge_step: TensorBoard drops what earlier writers logged from ``start_step`` on (the
            # steps a resume replays, or a whole earlier attempt that left no checkpoint) ...
            with naming(self._tb_dir):  # (its first event is written at once)
                self._tb = SummaryWriter(str(run.tensorboard), purge_step=max(start_step, 1))
            # ... the resumed step included, whose records metrics.jsonl may have changed (a finished
            # run's final/ results, dropped or kept as eval/): they are written again as it now holds them
            for record in _records_at(self.path, start_step) if start_step > 0 else ():
                self._scalars(start_step, record)
        except BaseException:
            with contextlib.suppress(Exception):  # (the error raised is the one above)
                self.close()
            raise

    def _scalars(self, step: int, values: dict[str, Any]) -> None:
        """``values``' finite numbers as TensorBoard scalars at ``step``."""
        # (a write of TensorBoard's thread that failed, a full disk, is raised here: named by the run's tb/ folder)
        with naming(self._tb_dir):
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):  # (bools too: `finite` plots as 0/1)
                    self._tb.add_scalar(k, v, step)

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Append ``{"step": step, "time": unix seconds, **values}`` to metrics.jsonl (and ``values`` to
        TensorBoard, whose events carry their own wall time); non-finite numbers become null."""
        if not self.enabled:
            return
        with naming(self.path), self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, "time": round(time.time(), 3), **json_safe(values)}) + "\n")
        if self._tb is not None:
            self._scalars(step, values)

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        tb, self._tb = self._tb, None
        hook, self._hook = self._hook, None
        try:
            if tb is not None:
                with naming(self._tb_dir):
                    tb.close()  # (its thread has ended when this returns)
        finally:
            if hook is not None and threading.excepthook is hook:
                threading.excepthook = hook.shown

    @staticmethod
    def truncate(path: Path, step: int, final_as_eval: bool = False) -> None:
        """Drop lines logged after ``step`` (they are replayed after a resume) and the ``final/`` results
        of a finished run (a resumed run logs its own at its new end); ``step = -1`` drops every line.
        ``final_as_eval``: the run goes on past ``step``, where ``eval.every`` evaluates: the final results
        logged at ``step`` are that evaluation (the same metrics of the same weights), kept as ``eval/``."""
        if not path.exists():
            return
        # streamed line by line: a long run's log (log_every = 1 over days) need not fit in memory
        with replaced_atomically(path) as tmp, path.open(encoding="utf-8", errors="replace") as src, \
                tmp.open("w", encoding="utf-8") as out:
            for line in src:
                kept = _kept_line(line.rstrip("\n"), step, final_as_eval)
                if kept is not None:
                    out.write(f"{kept}\n")


def _quiet_tensorboard_threads() -> Any:
    """TensorBoard's writer thread keeps a failed write's error (a full disk) for the training thread, which
    raises it at its next scalar or at close, and then raises it again itself: its traceback on stderr would only
    repeat, in 20 lines, the one-line error the run stops with. Other threads' errors are shown as before.
    Returns the hook installed, which :meth:`MetricsLogger.close` takes away again (a notebook's process keeps
    its own ``threading.excepthook``)."""
    shown = threading.excepthook

    def hook(args: Any) -> None:
        thread = type(args.thread) if args.thread is not None else type(None)
        if not (thread.__name__ == "_AsyncWriterThread" and thread.__module__.startswith("tensorboard.")
                and getattr(args.thread, "exception", None) is args.exc_value):  # (kept for the training thread)
            shown(args)

    hook.shown = shown  # type: ignore[attr-defined]
    threading.excepthook = hook
    return hook


def _records_at(path: Path, step: int) -> list[dict[str, Any]]:
    """The values of metrics.jsonl's records at ``step`` (without their ``step``), in file order."""
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8", errors="replace") as src:
        for line in src:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict) and record.get("step") == step:
                records.append({k: v for k, v in record.items() if k not in RECORD_KEYS})
    return records


def _kept_line(line: str, step: int, final_as_eval: bool) -> str | None:
    """What :meth:`MetricsLogger.truncate` keeps of one metrics.jsonl line (None: drop it)."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None  # a line cut by a crash (or nested thousands deep: not one avade wrote)
    if not isinstance(record, dict) or not isinstance(record.get("step", 0), int):
        return None  # (not a line avade wrote)
    final = [k for k in record if str(k).startswith("final/")]
    if record.get("step", 0) <= step and not final:
        return line
    values = [k for k in record if k not in RECORD_KEYS]
    if final_as_eval and record.get("step") == step and len(final) == len(values):
        stamp = {k: record[k] for k in RECORD_KEYS if k in record}
        return json.dumps({**stamp, **{f"eval/{k.removeprefix('final/')}": record[k] for k in final}})
    return None


#: the keys of a metrics.jsonl record that say when it was logged (the others are values)
RECORD_KEYS = ("step", "time")
