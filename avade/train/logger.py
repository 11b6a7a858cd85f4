"""metrics.jsonl (one JSON object per logged step) and TensorBoard events when available."""

from __future__ import annotations

import json
import math
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
        self._tb: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: TensorBoard drops what earlier writers logged from ``start_step`` on (the
                # steps a resume replays, or a whole earlier attempt that left no checkpoint) ...
                self._tb = SummaryWriter(str(run.tensorboard), purge_step=max(start_step, 1))
            except ImportError:  # tensorboard is optional
                self._tb = None
            else:
                # ... the resumed step included, whose records metrics.jsonl may have changed (a finished
                # run's final/ results, dropped or kept as eval/): they are written again as it now holds them
                for record in _records_at(self.path, start_step) if start_step > 0 else ():
                    self._scalars(start_step, record)

    def _scalars(self, step: int, values: dict[str, Any]) -> None:
        """``values``' finite numbers as TensorBoard scalars at ``step``."""
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
        if self._tb is not None:
            self._tb.close()
            self._tb = None

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
