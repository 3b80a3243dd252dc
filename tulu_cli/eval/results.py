"""Eval outputs of a run directory: `results.json` (per task: metric, value, n, settings, model, config
hash), `predictions.jsonl` (one row per scored item), `rejects.jsonl`, and the printed table."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tulu_cli.io import atomic_write_json, write_jsonl

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
REJECTS_FILE = "rejects.jsonl"
FORMAT_VERSION = 1


@dataclass
class TaskResult:
    task: str
    type: str
    metric: str
    value: float | None
    n: int
    metrics: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    settings_hash: str = ""
    # How the task ran here (runner, shots, metric, max tokens, chat template) and the OLMES id and
    # setting it is compared with, side by side.
    ran_with: dict[str, str] = field(default_factory=dict)
    olmes: dict[str, str] = field(default_factory=dict)
    # ok | not_run (no backend can run it here) | error (the message is in `detail`)
    status: str = "ok"
    detail: str | None = None
    rejected: int = 0
    seconds: float = 0.0


def mean_metrics(rows: list[dict[str, float]], weights: dict[str, str] | None = None) -> dict[str, float]:
    """Mean of each metric over items; `weights` maps a metric to the per-item field weighting it
    (IFEval instruction-level accuracy is over instructions, not prompts)."""
    weights = weights or {}
    keys = sorted({key for row in rows for key in row if key not in set(weights.values())})
    out = {}
    for key in keys:
        weight_key = weights.get(key)
        total = sum(row.get(weight_key, 1.0) if weight_key else 1.0 for row in rows)
        value = sum(row[key] * (row.get(weight_key, 1.0) if weight_key else 1.0) for row in rows)
        out[key] = value / total if total else 0.0
    return out


def write_results(run_dir: Path, results: list[TaskResult], *, suite: str, label: str, model: dict,
                  config_hash: str) -> dict:
    tasks = {}
    for result in results:
        entry = asdict(result)
        entry.pop("task")
        entry["model"] = model.get("path") or model.get("name")
        entry["config_hash"] = config_hash
        tasks[result.task] = entry
    document = {"format": FORMAT_VERSION, "suite": suite, "label": label, "model": model,
                "config_hash": config_hash, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tasks": tasks}
    atomic_write_json(run_dir / RESULTS_FILE, document)
    return document


def write_predictions(run_dir: Path, predictions: list[dict]) -> None:
    write_jsonl(run_dir / PREDICTIONS_FILE, predictions)


def write_rejects(run_dir: Path, rejects: list[dict]) -> None:
    path = run_dir / REJECTS_FILE
    if rejects:
        write_jsonl(path, rejects)
    else:
        path.unlink(missing_ok=True)


def load_results(path: str | Path) -> dict:
    """A results document from a run directory or a results.json path."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no {RESULTS_FILE} in {path} (is it a `tulu eval` run directory?)")
    document = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("tasks"), dict):
        raise ValueError(f"{file}: not a tulu eval results file (no `tasks` object)")
    return document


def format_value(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_results(document: dict, console: Console | None = None) -> None:
    table = Table(title=f"tulu eval: {document['label']} ({document['suite']})")
    for column in ("task", "metric", "score", "n", "other metrics", "status"):
        table.add_column(column, justify="right" if column in ("score", "n") else "left")
    for name, entry in document["tasks"].items():
        others = ", ".join(f"{k} {format_value(v)}" for k, v in entry["metrics"].items() if k != entry["metric"])
        status = entry["status"] if entry["status"] == "ok" else f"{entry['status']}: {entry['detail']}"
        if entry.get("rejected"):
            status += f" ({entry['rejected']} rows set aside)"
        table.add_row(name, entry["metric"], format_value(entry["value"]), str(entry["n"]), others, status)
    (console or Console()).print(table)
