"""Glue between the command line and Hydra: compose a stage preset, sweep, and prepare run directories.

`tulu STAGE conf=NAME [overrides...] [-m]` becomes a Hydra application whose primary config is
`conf/STAGE/NAME.yaml`; the config groups (`model/`, `launcher/`, `data/`, ...) are found on the
search path `conf/`. Every Hydra job writes a run directory and launches the stage process.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf, open_dict

STAGE_MODULES = {
    "curate": "tulu_cli.stages.curate",
    "decontaminate": "tulu_cli.stages.decontaminate",
    "sft": "tulu_cli.train.sft",
    "dpo": "tulu_cli.train.dpo",
    "rlvr": "tulu_cli.train.rlvr",
    "eval": "tulu_cli.stages.evaluate",
}
DEFAULT_PRESET = "tiny"


def conf_dir() -> Path:
    """The config tree: `$TULU_CONF_DIR`, else `conf/` beside the package."""
    override = os.environ.get("TULU_CONF_DIR")
    return Path(override).resolve() if override else Path(__file__).resolve().parent.parent / "conf"


def assets_dir() -> Path:
    """Data bundled with the package (the tiny task's datasets)."""
    return Path(__file__).resolve().parent / "assets"


def user_cache_dir(name: str) -> Path:
    """`$XDG_CACHE_HOME/tulu/NAME` (default ~/.cache/tulu/NAME): caches a later run may reuse."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tulu" / name


def register_resolvers() -> None:
    """`${asset:tiny/sft_train.jsonl}` names a bundled file by its path under assets/."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", lambda name: str(assets_dir() / name))


def presets(stage: str) -> list[str]:
    """Selectable presets of a stage; files starting with `_` are shared bases, not presets."""
    return sorted(p.stem for p in (conf_dir() / stage).glob("*.yaml") if not p.stem.startswith("_"))


def stage_is_built(stage: str) -> bool:
    return importlib.util.find_spec(STAGE_MODULES[stage]) is not None


class UsageError(Exception):
    pass


def split_args(stage: str, args: list[str]) -> tuple[str, list[str]]:
    """Separate `conf=NAME` from the Hydra overrides and check the preset exists."""
    preset, overrides = DEFAULT_PRESET, []
    for arg in args:
        if arg.startswith("conf="):
            preset = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    if preset not in presets(stage):
        known = ", ".join(presets(stage)) or "none"
        raise UsageError(f"no preset conf={preset} for `tulu {stage}` (looked for "
                         f"{conf_dir() / stage / (preset + '.yaml')}); available: {known}")
    return preset, overrides


def run_hydra(stage: str, preset: str, overrides: list[str], multirun: bool, dry_run: bool) -> None:
    """Run the stage as a Hydra application (one job, or a sweep with `-m`)."""
    import hydra

    register_resolvers()
    # Our own overrides go first: Hydra's parser takes overrides only before its flags (--cfg, -p...).
    # Hydra's record of the job (.hydra/) is written by run_job once the run directory is this run's.
    argv = [f"tulu {stage}", *(["--multirun"] if multirun else []), f"hydra.searchpath=[file://{conf_dir()}]",
            "hydra.output_subdir=null", *(["dry_run=true"] if dry_run else []), *overrides]
    saved = sys.argv
    sys.argv = argv
    try:
        app = hydra.main(config_path=str(conf_dir() / stage), config_name=preset, version_base="1.3")(
            lambda cfg: run_job(stage, cfg))
        app()
    finally:
        sys.argv = saved


def run_job(stage: str, cfg: DictConfig) -> None:
    """One Hydra job: check the config, claim the run directory, write it, then launch (or, with dry_run,
    only show) the stage. A failure ends a single run with its exit code; in a sweep it fails only its job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from tulu_cli import launch, report
    from tulu_cli.run_ownership import RunDirError, claim, holds_launched_run
    from tulu_cli.validate_config import ConfigError, validate

    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir).resolve()
    hydra_record = {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
                    "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.overrides.task)}
    with open_dict(cfg):
        cfg.output_dir = str(run_dir)
        cfg.stage = stage
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    try:
        validate(stage, resolved)
    except ConfigError as exc:
        _stop(f"{run_dir}: {exc}" if in_sweep else str(exc), 2, in_sweep)
    command = launch.build_command(resolved["launcher"], STAGE_MODULES[stage], run_dir)
    if resolved.get("dry_run"):
        if holds_launched_run(run_dir):
            report.console.print(f"[yellow]{run_dir} holds a run: the dry run writes nothing there[/yellow]",
                                 soft_wrap=True)
        else:
            write_run_dir(run_dir, resolved, command, hydra_record)
        report.show_dry_run(stage, resolved, command)
        return
    if not stage_is_built(stage):
        raise SystemExit(f"`tulu {stage}` is not built yet.")
    try:
        note = claim(run_dir, resolved, own_files=(f"{hydra_cfg.job.name}.log",))
    except RunDirError as exc:
        _stop(str(exc), 2, in_sweep)
    if note:
        report.console.print(note, soft_wrap=True)
    write_run_dir(run_dir, resolved, command, hydra_record)
    ended = launch.run_logged(command, launch.launch_env(resolved["launcher"]), run_dir / "logs" / "stage.log")
    if ended.interrupted:
        report.show_interrupted(stage, run_dir, ended.signal)
        raise SystemExit(128 + ended.signal)
    if ended.code != 0:
        report.show_failure(stage, run_dir, ended.code)
        _stop(f"tulu {stage} failed in {run_dir} (exit code {ended.code})", ended.code, in_sweep, shown=True)
    report.show_success(stage, run_dir)


def _stop(message: str, code: int, in_sweep: bool, shown: bool = False) -> NoReturn:
    """End this job: the whole command with `code` for a single run; only this job in a sweep."""
    if not shown:
        print(f"error: {message}", file=sys.stderr, flush=True)
    if in_sweep:
        from tulu_cli.sweep import SweepPointFailed

        raise SweepPointFailed(message)
    # A stage killed by a signal has a negative code: report it the shell's way (128 + signal).
    raise SystemExit(128 - code if code < 0 else code)


def write_run_dir(run_dir: Path, resolved: dict, command: list[str], hydra_record: dict[str, str]) -> None:
    from tulu_cli import launch
    from tulu_cli.io import atomic_write_text

    run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in hydra_record.items():
        atomic_write_text(run_dir / ".hydra" / name, text)
    (run_dir / "logs").mkdir(exist_ok=True)
    (run_dir / "logs" / "failure.txt").unlink(missing_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    atomic_write_text(run_dir / "command.txt", shlex.join(command) + "\n")
    launch.write_launcher_files(resolved["launcher"], run_dir)
