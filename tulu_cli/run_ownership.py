"""Who owns a run directory.

A trainer's checkpoints, metrics and final model belong to one run. A new run started where an
earlier one left them would mix the two (`checkpoint.keep` deleting the new run's checkpoint in
favour of old ones, `resume=true` picking up the old run, a stale `final/`), so it is refused unless
the user says which they mean: `resume=true` continues the earlier run, `overwrite=true` replaces it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# What a run leaves that a new run in the same directory would mix with.
RUN_OUTPUTS = ("checkpoints", "final", "initial", "metrics.jsonl")


class RunDirError(Exception):
    """The run directory belongs to another run, or the request for it is contradictory."""


def run_outputs(run_dir: Path) -> list[str]:
    """The outputs of an earlier run present in `run_dir` (empty directories do not count)."""
    present = []
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            present.append(name)
    return present


def holds_launched_run(run_dir: Path) -> bool:
    """Whether a run (not a dry run) was started in `run_dir`."""
    if run_outputs(run_dir):
        return True
    config = run_dir / "config.yaml"
    if not config.exists():
        return False
    try:
        written = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True
    return not (isinstance(written, dict) and written.get("dry_run") is True)


def is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def claim(run_dir: Path, resolved: Mapping[str, Any], own_files: Iterable[str]) -> str | None:
    """Make `run_dir` this run's, or raise RunDirError saying why it cannot be.

    `own_files` are entries the current job has already written (Hydra's) and overwrite keeps.
    Returns a note for the user when something was replaced.
    """
    resume, overwrite = resolved.get("resume", False), is_true(resolved.get("overwrite", False))
    resuming = resume not in (None, False) and not (isinstance(resume, str) and resume.lower() == "false")
    if resuming and overwrite:
        raise RunDirError(f"resume={resume} continues the run in {run_dir} and overwrite=true replaces it: set one")
    earlier = run_outputs(run_dir)
    if not earlier:
        return None
    if overwrite:
        keep = set(own_files)
        for entry in run_dir.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return f"overwrite=true: removed the earlier run in {run_dir} ({', '.join(earlier)})"
    if is_true(resume) or (resuming and Path(str(resume)).resolve().is_relative_to(run_dir.resolve())):
        return None
    started = "starting from another run's checkpoint" if resuming else "a new run"
    raise RunDirError(
        f"output_dir {run_dir} already holds a run ({', '.join(earlier)}); {started} there would mix with it.\n"
        f"  resume=true continues that run, overwrite=true replaces it, or choose another output_dir."
    )
