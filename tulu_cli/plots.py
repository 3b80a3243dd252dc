"""Pictures of runs as PNG (matplotlib, Agg backend): the training curves of `metrics.jsonl` files.

`tulu plot RUN [RUN...] [-o OUT.png]` draws them; `tulu eval compare --plot` draws the same panels
beside its scores for the evaluated models that a tulu trainer produced. A panel is drawn only when at
least one run logged one of its metrics; the x axis is the optimizer step (a rollout batch in RLVR).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (panel title, the metrics.jsonl keys it draws): SFT and DPO log loss and lr, DPO its reward margin,
# RLVR reward, verified rate and KL.
CURVE_PANELS = (
    ("loss", ("loss",)),
    ("reward", ("reward", "rewards/margin")),
    ("verified rate", ("verified_rate",)),
    ("KL", ("kl",)),
    ("learning rate", ("lr",)),
)
METRICS_FILE = "metrics.jsonl"
PLOT_USAGE = ("usage: tulu plot RUN [RUN ...] [-o OUT.png]\n"
              "  RUN: a tulu sft/dpo/rlvr run directory or its metrics.jsonl; LABEL=RUN sets the line label")


class CurvesError(ValueError):
    """A run's metrics cannot be drawn (no file, an unreadable line, nothing logged)."""


@dataclass
class RunCurves:
    label: str
    source: Path
    rows: list[dict]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric; a non-numeric value (e.g. "nan" for a non-finite one) is a gap."""
        steps, values = [], []
        for row in self.rows:
            if key in row and isinstance(row.get("step"), int):
                steps.append(row["step"])
                values.append(as_number(row[key]))
        return steps, values


def as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def load_curves(path: str | Path, label: str | None = None) -> RunCurves:
    """The metrics of a run directory (or of a metrics.jsonl path). A torn last line is left out with a
    note (`read_metrics`); a missing file, another unreadable line or an empty file is a CurvesError."""
    from tulu_cli.errors import StageError
    from tulu_cli.runlog import read_metrics

    path = Path(path).expanduser()
    run_dir = path.parent if path.name == METRICS_FILE else path
    if not (run_dir / METRICS_FILE).is_file():
        kind = "no such directory" if not run_dir.exists() else f"no {METRICS_FILE} in it"
        raise CurvesError(f"{run_dir}: {kind} (give a tulu sft/dpo/rlvr run directory)")
    try:
        rows = read_metrics(run_dir)
    except (StageError, UnicodeDecodeError) as exc:
        raise CurvesError(str(exc)) from None
    if not rows:
        raise CurvesError(f"{run_dir / METRICS_FILE}: no metrics logged yet")
    return RunCurves(label or run_dir.name, run_dir / METRICS_FILE, rows)


def curve_panels(runs: list[RunCurves]) -> list[tuple[str, tuple[str, ...]]]:
    """The panels of CURVE_PANELS that some run has a value for."""
    logged = {key for run in runs for row in run.rows for key in row}
    return [(title, keys) for title, keys in CURVE_PANELS if logged.intersection(keys)]


def panel_figure(count: int, columns: int = 2):
    """(figure, the first `count` axes) of a grid of panels, `columns` wide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), squeeze=False)
    axes = list(grid.flat)
    for extra in axes[count:]:
        extra.remove()
    return figure, axes[:count]


def draw_curves(axes: list, runs: list[RunCurves], panels: list[tuple[str, tuple[str, ...]]]) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax, (title, keys) in zip(axes, panels, strict=True):
        for run in runs:
            for key in keys:
                steps, values = run.series(key)
                if steps:
                    ax.plot(steps, values, label=run.label if len(keys) == 1 else f"{run.label}: {key}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def training_curves(runs: list[RunCurves]):
    """A figure with one panel per CURVE_PANELS entry that the runs logged."""
    panels = curve_panels(runs)
    if not panels:
        wanted = ", ".join(key for _, keys in CURVE_PANELS for key in keys)
        raise CurvesError(f"none of {wanted} is logged in {', '.join(str(run.source) for run in runs)}")
    figure, axes = panel_figure(len(panels))
    draw_curves(axes, runs, panels)
    figure.tight_layout()
    return figure


def save_png(figure, path: Path) -> None:
    """Write `figure` to `path` as a PNG through a temporary file and a rename, then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        figure.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        Path(tmp).unlink(missing_ok=True)


def plot_command(specs: list[str], out: Path | None) -> int:
    """`tulu plot`: 0 when the PNG is written, 2 with the reason when a run cannot be drawn."""
    from rich.console import Console

    from tulu_cli.eval.compare import split_label, unique_labels

    console = Console()
    try:
        if not specs:
            raise CurvesError("give at least one run directory")
        runs = [load_curves(path, label) for label, path in map(split_label, specs)]
        for run, label in zip(runs, unique_labels([run.label for run in runs]), strict=True):
            run.label = label
        figure = training_curves(runs)
    except CurvesError as exc:
        console.print(f"[red]error:[/red] {exc}\n{PLOT_USAGE}", highlight=False, soft_wrap=True)
        return 2
    target = out or runs[0].source.parent / "curves.png"
    save_png(figure, target)
    console.print(f"curves written: {target}", highlight=False, soft_wrap=True)
    return 0
