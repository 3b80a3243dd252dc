"""Per-run logging: `metrics.jsonl` (one JSON object per logged step) and the console."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from tulu_cli.errors import StageError
from tulu_cli.io import atomic_write_text


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class MetricsLogger:
    """Appends one JSON object per call to `run_dir/metrics.jsonl` (main process only).

    On resume the file is truncated to the steps at or before the checkpoint, so a resumed run's
    metrics read as one uninterrupted run. `trackers` (an Accelerator made with `log_with`) get every
    row too, at the same step.
    """

    def __init__(self, run_dir: str | os.PathLike, resume_step: int | None = None, trackers: Any = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = is_main_process()
        self.trackers = trackers
        self.start = time.time()
        if self.enabled and resume_step is not None and self.path.exists():
            kept = [row for row in read_metrics(run_dir) if row.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        elif self.enabled and resume_step is None and self.path.exists():
            self.path.unlink()

    def log(self, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        values = {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}
        row = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.trackers is not None:
            from tulu_cli.tracking import tracker_values

            self.trackers.log(tracker_values(values), step=step)
        shown = "  ".join(f"{k}={_short(v)}" for k, v in row.items())
        print(f"[{time.time() - self.start:7.1f}s] {shown}", flush=True)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of `run_dir/metrics.jsonl`. A torn last line (the run was killed while writing it) is
    left out with a note; an unreadable line elsewhere is an error naming the file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # the last line, with no newline after it: a write cut off
                print(f"{path}: line {number} was cut off mid-write (the run was killed); left out", flush=True)
                continue
            raise StageError(f"{path}: line {number} is not JSON ({exc.msg}): remove or repair it") from None
        if not isinstance(row, dict):
            raise StageError(f"{path}: line {number} is not a JSON object: remove or repair it")
        rows.append(row)
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
