"""Glue between the command line and Hydra: compose a stage preset, sweep, and prepare run directories.

`tulu STAGE conf=NAME [overrides...] [-m]` becomes a Hydra application whose primary config is
`STAGE/NAME.yaml` under the first config root that has it. The roots are searched in order: the user's
`--config-dir` folders, then those of `$TULU_CONFIG_PATH`, then the tree bundled in the package
(`tulu_cli/conf/`). The config groups (`model/`, `launcher/`, `data/`, ...) and the presets a preset
builds on are looked up on the same roots, so a user's preset may extend a bundled one and a user's
group option may stand in for a bundled one of the same name. Every Hydra job writes a run directory
and launches the stage process.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from collections.abc import Sequence
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
CONFIG_PATH_ENV = "TULU_CONFIG_PATH"


class UsageError(Exception):
    pass


def conf_dir() -> Path:
    """The config tree bundled in the package."""
    return Path(__file__).resolve().parent / "conf"


def config_roots(config_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """Config roots in search order: `config_dirs` (`--config-dir`), `$TULU_CONFIG_PATH` (os.pathsep
    separated), then the bundled tree. A user root is laid out like the bundled one (`sft/NAME.yaml`,
    `model/NAME.yaml`, ...)."""
    from_env = [entry for entry in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if entry]
    roots: list[Path] = []
    named = [*((given, "--config-dir") for given in config_dirs), *((given, f"${CONFIG_PATH_ENV}") for given in from_env)]
    for given, source in named:
        root = Path(given).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"{source} names {given}, which is not a directory")
        if root not in roots:
            roots.append(root)
    return [*roots, conf_dir()] if conf_dir() not in roots else roots


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


def preset_files(stage: str, roots: Sequence[Path] | None = None) -> dict[str, Path]:
    """Selectable presets of a stage and the file each name resolves to (the first root that has it);
    files starting with `_` are shared bases, not presets."""
    found: dict[str, Path] = {}
    for root in config_roots() if roots is None else roots:
        for path in sorted((root / stage).glob("*.yaml")):
            if not path.stem.startswith("_"):
                found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def presets(stage: str, roots: Sequence[Path] | None = None) -> list[str]:
    return list(preset_files(stage, roots))


def stage_is_built(stage: str) -> bool:
    return importlib.util.find_spec(STAGE_MODULES[stage]) is not None


def split_args(stage: str, args: list[str], roots: Sequence[Path] | None = None) -> tuple[str, list[str]]:
    """Separate `conf=NAME` from the Hydra overrides and check the preset exists."""
    roots = config_roots() if roots is None else roots
    preset, overrides = DEFAULT_PRESET, []
    for arg in args:
        if arg.startswith("conf="):
            preset = arg.split("=", 1)[1]
        else:
            overrides.append(arg)
    known = presets(stage, roots)
    if preset not in known:
        looked = ", ".join(str(root / stage / f"{preset}.yaml") for root in roots)
        raise UsageError(f"no preset conf={preset} for `tulu {stage}` (looked for {looked}); "
                         f"available: {', '.join(known) or 'none'}")
    return preset, overrides


def hydra_search(stage: str, preset: str, roots: Sequence[Path]) -> tuple[Path, str]:
    """Where Hydra finds a preset: the stage folder holding it (Hydra's primary config path) and the
    `hydra.searchpath` override for the rest. Names in a stage's defaults list without a leading `/`
    (`_base`, another preset) are looked up in the stage folders of every root, groups (`/model`, ...)
    in the roots, each in search order after the preset's own folder."""
    primary = preset_files(stage, roots)[preset].parent
    folders = [root / stage for root in roots if (root / stage).is_dir() and root / stage != primary]
    entries = ",".join(_quoted(f"file://{folder}") for folder in [*folders, *roots])
    return primary, f"hydra.searchpath=[{entries}]"


def _quoted(text: str) -> str:
    """A single-quoted string in Hydra's override grammar (paths may hold spaces, commas or brackets)."""
    return "'" + text.replace("'", "\\'") + "'"


def run_hydra(stage: str, preset: str, overrides: list[str], multirun: bool, dry_run: bool,
              roots: Sequence[Path] | None = None) -> None:
    """Run the stage as a Hydra application (one job, or a sweep with `-m`)."""
    import hydra

    register_resolvers()
    primary, searchpath = hydra_search(stage, preset, config_roots() if roots is None else roots)
    # Our own overrides go first: Hydra's parser takes overrides only before its flags (--cfg, -p...).
    # Hydra's record of the job (.hydra/) is written by run_job once the run directory is this run's.
    argv = [f"tulu {stage}", *(["--multirun"] if multirun else []), searchpath,
            "hydra.output_subdir=null", *(["dry_run=true"] if dry_run else []), *overrides]
    saved = sys.argv
    sys.argv = argv
    try:
        app = hydra.main(config_path=str(primary), config_name=preset, version_base="1.3")(
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
