"""The `tulu` command line: one thin function per stage. Heavy imports happen in the stage process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tulu_cli import config

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Run, reproduce and extend the Tulu 3 post-training recipe. "
         "Each stage takes conf=PRESET plus Hydra overrides (key=value, +key=value, ~key).",
)
STAGE_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
MULTIRUN = typer.Option(False, "--multirun", "-m", help="Sweep: comma-separated override values run as separate jobs.")
DRY_RUN = typer.Option(False, "--dry-run", help="Print the resolved config and launch command; run nothing.")
CONFIG_DIR = typer.Option(None, "--config-dir", metavar="DIR", help="A folder of your own configs, laid out like the bundled "
                          "tree (sft/NAME.yaml, model/NAME.yaml, ...), searched before the bundled one; may be "
                          f"repeated. ${config.CONFIG_PATH_ENV} lists more (searched after these).")
# The stages take their own --help so that it can list the presets of the folders given with --config-dir.
HELP = typer.Option(False, "--help", help="Show this message, the stage's presets and config groups, and exit.")


def _run_stage(stage: str, ctx: typer.Context, multirun: bool, dry_run: bool, config_dirs: list[Path] | None,
               show_help: bool) -> None:
    try:
        roots = config.config_roots(config_dirs or ())
        if show_help:
            from tulu_cli.config_catalog import show_stage_catalog

            usage = ctx.get_help()  # with rich, Typer prints the help itself and returns ''
            if usage:
                typer.echo(usage)
            show_stage_catalog(stage, roots)
            raise typer.Exit(0)
        preset, overrides = config.split_args(stage, list(ctx.args), roots)
    except config.UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not dry_run and not config.stage_is_built(stage):
        typer.echo(f"`tulu {stage}` is not built yet; `tulu {stage} --dry-run` shows its configuration.", err=True)
        raise typer.Exit(3)
    config.run_hydra(stage, preset, overrides, multirun=multirun, dry_run=dry_run, roots=roots)


@app.command(context_settings=STAGE_CONTEXT, add_help_option=False)
def curate(ctx: typer.Context, multirun: bool = MULTIRUN, dry_run: bool = DRY_RUN,
        config_dir: list[Path] | None = CONFIG_DIR, show_help: bool = HELP) -> None:
    """Build a dataset: read sources, normalise and validate rows, de-duplicate and mix (curate/ presets)."""
    _run_stage("curate", ctx, multirun, dry_run, config_dir, show_help)


@app.command(context_settings=STAGE_CONTEXT, add_help_option=False)
def decontaminate(ctx: typer.Context, multirun: bool = MULTIRUN, dry_run: bool = DRY_RUN,
        config_dir: list[Path] | None = CONFIG_DIR, show_help: bool = HELP) -> None:
    """Find (and optionally remove) training rows that overlap the evaluation suite (decontaminate/ presets)."""
    _run_stage("decontaminate", ctx, multirun, dry_run, config_dir, show_help)


@app.command(context_settings=STAGE_CONTEXT, add_help_option=False)
def sft(ctx: typer.Context, multirun: bool = MULTIRUN, dry_run: bool = DRY_RUN,
        config_dir: list[Path] | None = CONFIG_DIR, show_help: bool = HELP) -> None:
    """Supervised fine-tuning on chat data, loss on assistant tokens (sft/ presets)."""
    _run_stage("sft", ctx, multirun, dry_run, config_dir, show_help)


@app.command(context_settings=STAGE_CONTEXT, add_help_option=False)
def dpo(ctx: typer.Context, multirun: bool = MULTIRUN, dry_run: bool = DRY_RUN,
        config_dir: list[Path] | None = CONFIG_DIR, show_help: bool = HELP) -> None:
    """Preference tuning with (length-normalised) DPO (dpo/ presets)."""
    _run_stage("dpo", ctx, multirun, dry_run, config_dir, show_help)


@app.command(context_settings=STAGE_CONTEXT, add_help_option=False)
def rlvr(ctx: typer.Context, multirun: bool = MULTIRUN, dry_run: bool = DRY_RUN,
        config_dir: list[Path] | None = CONFIG_DIR, show_help: bool = HELP) -> None:
    """Reinforcement learning with verifiable rewards, PPO or GRPO (rlvr/ presets)."""
    _run_stage("rlvr", ctx, multirun, dry_run, config_dir, show_help)


@app.command(name="eval", context_settings=STAGE_CONTEXT, add_help_option=False)
def evaluate(ctx: typer.Context, multirun: bool = MULTIRUN, dry_run: bool = DRY_RUN,
             config_dir: list[Path] | None = CONFIG_DIR, show_help: bool = HELP) -> None:
    """Evaluate a model on a task suite (eval/ presets); `tulu eval compare RUN...` tabulates several runs."""
    if ctx.args and ctx.args[0] == "compare":
        from tulu_cli.eval.compare import compare_command

        raise typer.Exit(compare_command([*ctx.args[1:], *(["--help"] if show_help else [])]))
    _run_stage("eval", ctx, multirun, dry_run, config_dir, show_help)


@app.command(context_settings={**STAGE_CONTEXT, "help_option_names": []}, add_help_option=False)
def recipe(ctx: typer.Context) -> None:
    """Run a recipe shipped with tulu: `tulu recipe list`, `tulu recipe tiny [--dry-run] [--from STAGE]`,
    `tulu recipe tulu3_8b --help`."""
    from tulu_cli.recipe_runner import recipe_command

    raise typer.Exit(recipe_command(list(ctx.args)))


@app.command()
def verify(
    input: Annotated[Path, typer.Argument(help="JSONL rows with dataset, ground_truth and response.")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the scored rows "
                                             "(default: INPUT.verified.jsonl).")] = None,
    loose: Annotated[bool, typer.Option("--loose", help="IFEval loose checking.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds one row may take; a row past it "
                                           "scores 0 with an error.")] = 5.0,
    workers: Annotated[int | None, typer.Option("--workers", help="Verifier processes "
                                                "(default: the CPUs available, at most 8).")] = None,
    profile: Annotated[str, typer.Option("--profile", help="default, or tulu3_release: the Tulu 3 release "
                                         "code's verifier behaviour, for exact reproductions.")] = "default",
) -> None:
    """Score responses with the verifiers (gsm8k, math, ifeval); writes each row back with `verified`."""
    from tulu_cli.rewards.verify_file import verify_command

    raise typer.Exit(verify_command(input, out, loose, timeout, workers, profile))


@app.command()
def plot(
    runs: Annotated[list[str], typer.Argument(help="Training run directories (sft, dpo, rlvr) or their "
                                              "metrics.jsonl; LABEL=RUN names a run's lines.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="The PNG to write "
                                             "(default: curves.png in the first run's directory).")] = None,
) -> None:
    """Draw training curves (loss, reward, verified rate, KL, learning rate) from metrics.jsonl into one PNG."""
    from tulu_cli.plots import plot_command

    raise typer.Exit(plot_command(runs, out))


if __name__ == "__main__":
    app()
