"""What `tulu` prints around a stage: the dry-run view, success and failure summaries."""

from __future__ import annotations

import importlib
import shlex
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

console = Console()


# Stages that add a summary to the dry-run view: stage -> "module:function(resolved, console)".
DRY_RUN_SUMMARIES = {"eval": "tulu_cli.eval.suite:show_tasks", "rlvr": "tulu_cli.train.rl.layout:show_layout"}


def show_dry_run(stage: str, resolved: dict, command: list[str]) -> None:
    console.print(Panel.fit(f"tulu {stage} (dry run): nothing is launched", style="bold"))
    console.print(Syntax(OmegaConf.to_yaml(OmegaConf.create(resolved)), "yaml", theme="ansi_dark"))
    if stage in DRY_RUN_SUMMARIES:
        module, function = DRY_RUN_SUMMARIES[stage].split(":")
        getattr(importlib.import_module(module), function)(resolved, console)
    console.print("[bold]launch command[/bold]")
    # Printed plainly (no wrapping) so it can be copied and is stable for scripts.
    print(shlex.join(command), flush=True)


def show_success(stage: str, run_dir: Path) -> None:
    console.print(f"[green]tulu {stage} finished[/green]: {escape(str(run_dir))}")


def show_interrupted(stage: str, run_dir: Path, signum: int) -> None:
    import signal

    name = signal.Signals(signum).name
    console.print(f"[yellow]tulu {stage} interrupted ({name})[/yellow]: {run_dir} "
                  f"(a trainer continues from its newest checkpoint with resume=true)", soft_wrap=True)


def show_failure(stage: str, run_dir: Path, code: int) -> None:
    failure = run_dir / "logs" / "failure.txt"
    if failure.exists():
        summary = failure.read_text().strip().splitlines()[0]
    else:
        log = run_dir / "logs" / "stage.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        summary = next((line for line in reversed(lines) if line.strip()), "no output")
    # Plain text, not markup: error messages carry brackets (`[/path]`, `[rank 0]`) that rich would parse.
    body = Text(f"{summary}\n\nfull log: {run_dir / 'logs' / 'stage.log'}")
    console.print(Panel(body, title=escape(f"tulu {stage} failed (exit code {code})"), style="red"))
