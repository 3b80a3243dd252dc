"""Experiment tracking through accelerate's trackers (`report_to`: tensorboard, wandb, trackio).

The run is named after its run directory; the resolved config is logged as hyperparameters; every row
`metrics.jsonl` gets goes to the trackers too, from rank 0, at the same step (see `runlog.MetricsLogger`).
This module imports neither torch nor accelerate at import time: `tulu` checks `report_to` before launch.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Tracker name -> the package it needs.
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
# Under the run directory: tensorboard's event files (<project>/) and wandb's offline files.
TRACKING_DIR = "tracking"
INSTALL_HINT = "pip install 'tulu-cli[tracking]'"


def tracker_names(value: Any) -> list[str]:
    """`report_to` as a list of names: null/empty -> [], one name -> [name]."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(name) for name in value]


def report_to_error(value: Any) -> str | None:
    """Why `report_to` is not a list of known trackers whose packages are installed (None if it is)."""
    if value is not None and not isinstance(value, str | list | tuple):
        return f"report_to={value!r}: must be a list of tracker names ({', '.join(TRACKERS)})"
    names = tracker_names(value)
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        return f"report_to={names}: unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)}"
    if len(set(names)) != len(names):
        return f"report_to={names}: a tracker is named twice"
    return missing_package_error(names)


def missing_package_error(names: list[str]) -> str | None:
    missing = [name for name in names if importlib.util.find_spec(TRACKERS[name]) is None]
    if not missing:
        return None
    packages = " ".join(TRACKERS[name] for name in missing)
    return (f"report_to names {', '.join(missing)}, but its package is not installed: "
            f"{INSTALL_HINT} (or pip install {packages})")


def accelerator_options(report_to: Any, run_dir: Path) -> dict:
    """Keyword arguments for `Accelerator` that enable the named trackers ({} for none)."""
    from tulu_cli.errors import StageError

    names = tracker_names(report_to)
    if not names:
        return {}
    error = report_to_error(names)
    if error:
        raise StageError(error)
    from accelerate.utils import ProjectConfiguration

    return {"log_with": names, "project_config": ProjectConfiguration(
        project_dir=str(run_dir), logging_dir=str(run_dir / TRACKING_DIR))}


def start_trackers(accelerator, config: Mapping[str, Any], run_dir: Path) -> None:
    """Open the run in each tracker the accelerator was made with, named after `run_dir`, and log the
    resolved config as its hyperparameters (flat `a.b.c` scalars where the tracker needs them)."""
    if not accelerator.log_with:
        return
    name = run_dir.name
    project = str(config.get("tracker_project") or "tulu")
    accelerator.init_trackers(project, init_kwargs={
        "wandb": {"name": name, "dir": str(run_dir / TRACKING_DIR)},
        "trackio": {"name": name},
    })
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        # wandb keeps nested config (and shows it grouped); tensorboard and trackio take flat scalars.
        tracker.store_init_configuration(dict(config) if tracker.name == "wandb" else flat_config(config))


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """`{"optim": {"lr": 1e-5}}` -> `{"optim.lr": 1e-5}`; lists become JSON text, null the text "null"."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_config(value, prefix=f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def tracker_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics row as the trackers take it: the step is theirs, and a missing value (null) is left out."""
    return {key: value for key, value in row.items() if key != "step" and value is not None}
