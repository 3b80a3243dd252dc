"""Which run produced a model directory, and what that run started from.

A trainer writes its model to `RUN_DIR/final` beside `RUN_DIR/config.yaml`, so a model path tells its
run: the stage that trained it, and (through the run's `model.path`) the model before it.
"""

from __future__ import annotations

from pathlib import Path

TRAINING_STAGES = ("sft", "dpo", "rlvr")
# How many runs back `hub_base_model` follows a chain of local models (sft -> dpo -> rlvr is 3).
MAX_CHAIN = 16


def run_config(run_dir: Path) -> dict | None:
    """The resolved `config.yaml` of a run directory; None when there is none or it cannot be read."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def producing_stage(path: str | None) -> str | None:
    """The stage that wrote a `<run>/final` model (from the run's config.yaml), if it is one."""
    if not path:
        return None
    config = run_config(Path(path).expanduser().parent)
    stage = config.get("stage") if config else None
    return str(stage) if stage else None


def training_run_of(model_path: str | Path | None) -> Path | None:
    """The run directory of a `tulu sft|dpo|rlvr` model (`RUN_DIR/final`), else None."""
    if not model_path:
        return None
    path = Path(model_path).expanduser()
    if path.name != "final" or not path.is_dir() or producing_stage(str(path)) not in TRAINING_STAGES:
        return None
    return path.parent.resolve()


def hub_base_model(model_path: str | None) -> str | None:
    """The hub id a model was trained from: `model_path` itself when it is a hub id; for a tulu run's
    `final/`, the repository that run pushed to, else what that run started from (followed back)."""
    from tulu_cli.data.sources import is_local

    for _ in range(MAX_CHAIN):
        if not model_path:
            return None
        if not is_local(str(model_path)):
            return str(model_path)
        run_dir = training_run_of(model_path)
        config = run_config(run_dir) if run_dir else None
        if config is None:
            return None
        hub = config.get("hub") or {}
        if hub.get("push") and hub.get("repo_id"):
            return str(hub["repo_id"])
        model_path = (config.get("model") or {}).get("path")
    return None
