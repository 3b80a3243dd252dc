"""`tulu eval compare RUN_A RUN_B ... [--plot OUT.png]`: one table of several eval runs (rows: tasks,
columns: runs labelled by stage or name, e.g. base / sft / dpo / rlvr) and optionally a PNG of the
scores by stage with the training curves of the evaluated models. A task whose settings differ between
runs is flagged: its scores are not comparable.

`--mean` groups the runs by label (e.g. `sft=seed1/eval/sft sft=seed2/eval/sft ...`): each column is one
label's mean and sample standard deviation over its runs, and a last row gives each column's gain in
average over the column before it, paired run by run (the k-th run of one label with the k-th of the
previous one, as a seed sweep lists them), with the spread of those gains."""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tulu_cli.eval.results import format_value, load_results

USAGE = ("usage: tulu eval compare RUN [RUN ...] [--plot OUT.png] [--mean]\n"
         "  RUN: a `tulu eval` run directory or its results.json; LABEL=RUN sets the column label\n"
         "  --mean: one column per label, mean +- spread of its runs (e.g. one run per seed)")


def compare_command(args: list[str]) -> int:
    console = Console()
    if any(arg in ("-h", "--help") for arg in args):
        console.print(USAGE, highlight=False)
        return 0
    mean = "--mean" in args
    try:
        specs, plot = _parse([arg for arg in args if arg != "--mean"])
        runs = [(label, load_results(path)) for label, path in specs]
        if mean:
            groups = grouped_runs([(label or document["label"], document) for label, document in runs])
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}\n{USAGE}", highlight=False)
        return 2
    if mean:
        Console(width=max(console.width, 120)).print(mean_table(groups))
        return 0
    labels = unique_labels([label or document["label"] for (label, document) in runs])
    documents = [document for _, document in runs]
    table, drifted = comparison_table(labels, documents)
    Console(width=max(console.width, 120)).print(table)
    if drifted:
        console.print(f"* settings differ between runs for: {', '.join(drifted)} (scores not comparable)")
    if plot is not None:
        write_plot(plot, labels, documents)
        console.print(f"plot written: {plot}")
    return 0


def _parse(args: list[str]) -> tuple[list[tuple[str | None, str]], Path | None]:
    runs, plot = [], None
    position = 0
    while position < len(args):
        arg = args[position]
        if arg == "--plot" or arg.startswith("--plot="):
            value = arg.split("=", 1)[1] if "=" in arg else (args[position + 1] if position + 1 < len(args) else "")
            if not value:
                raise ValueError("--plot needs an output path (e.g. --plot scores.png)")
            plot = Path(value)
            position += 1 if "=" in arg else 2
            continue
        if arg.startswith("-"):
            raise ValueError(f"unknown option {arg}")
        runs.append(split_label(arg))
        position += 1
    if not runs:
        raise ValueError("give at least one eval run directory")
    return runs, plot


def split_label(arg: str) -> tuple[str | None, str]:
    """`LABEL=PATH` -> (LABEL, PATH); a bare path (even one holding `=`, when it exists) -> (None, PATH)."""
    if "=" in arg and not Path(arg).exists():
        label, path = arg.split("=", 1)
        return label, path
    return None, arg


def unique_labels(labels: list[str]) -> list[str]:
    """Labels as given, with `#2`, `#3`... appended to repeats so every column is distinct."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def task_names(documents: list[dict]) -> list[str]:
    names: list[str] = []
    for document in documents:
        names += [name for name in document["tasks"] if name not in names]
    return names


def score(document: dict, task: str) -> float | None:
    entry = document["tasks"].get(task)
    return entry.get("value") if entry and entry.get("status") == "ok" else None


def comparison_table(labels: list[str], documents: list[dict]) -> tuple[Table, list[str]]:
    table = Table(title="tulu eval compare")
    table.add_column("task")
    table.add_column("metric")
    for label in labels:
        table.add_column(label, justify="right")
    drifted = []
    names = task_names(documents)
    for name in names:
        entries = [document["tasks"].get(name) for document in documents]
        hashes = {entry.get("settings_hash") for entry in entries if entry}
        metric = next(entry["metric"] for entry in entries if entry)
        if len(hashes) > 1:
            drifted.append(name)
        table.add_row(name + (" *" if len(hashes) > 1 else ""), metric,
                      *[format_value(score(document, name)) for document in documents])
    complete = [name for name in names if all(score(document, name) is not None for document in documents)]
    if len(complete) > 1:
        averages = [sum(score(document, name) for name in complete) / len(complete) for document in documents]
        table.add_section()
        table.add_row(f"average ({len(complete)} tasks)", "", *[format_value(value) for value in averages])
    return table, drifted


def grouped_runs(runs: list[tuple[str, dict]]) -> dict[str, list[dict]]:
    """Runs by label, in the order labels first appear; every label must have the same number of runs."""
    groups: dict[str, list[dict]] = {}
    for label, document in runs:
        groups.setdefault(label, []).append(document)
    sizes = {label: len(documents) for label, documents in groups.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"--mean pairs runs label by label, but the labels have different numbers of runs: {sizes}")
    return groups


def mean_and_spread(values: list[float]) -> str:
    """`mean +- sample std` in points (x100); the spread is left out for a single run."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def mean_table(groups: dict[str, list[dict]]) -> Table:
    every_run = [document for documents in groups.values() for document in documents]
    runs_per_label = len(next(iter(groups.values())))
    table = Table(title=f"tulu eval compare: mean ± sample std over {runs_per_label} runs per column")
    table.add_column("task")
    table.add_column("metric")
    for label in groups:
        table.add_column(label, justify="right")
    names = task_names(every_run)
    for name in names:
        metric = next(document["tasks"][name]["metric"] for document in every_run if name in document["tasks"])
        cells = []
        for documents in groups.values():
            values = [score(document, name) for document in documents]
            cells.append("-" if None in values else mean_and_spread(values))
        table.add_row(name, metric, *cells)
    complete = [name for name in names if all(score(document, name) is not None for document in every_run)]
    if len(complete) > 1:
        averages = {label: [sum(score(document, name) for name in complete) / len(complete) for document in documents]
                    for label, documents in groups.items()}
        table.add_section()
        table.add_row(f"average ({len(complete)} tasks)", "", *[mean_and_spread(values) for values in averages.values()])
        series = list(averages.values())
        gains = [[after - before for before, after in zip(previous, current, strict=True)]
                 for previous, current in zip(series, series[1:], strict=False)]
        table.add_row("gain over the column before", "", "", *[mean_and_spread(values) for values in gains])
    return table


def write_plot(path: Path, labels: list[str], documents: list[dict]):
    """One PNG: the scores (x100) by run, one line per task, then the training curves (plots.CURVE_PANELS)
    of each evaluated model that a tulu trainer wrote (its run's metrics.jsonl). Returns the figure."""
    from tulu_cli.plots import curve_panels, draw_curves, panel_figure, save_png

    curves = training_curves_of(labels, documents)
    panels = curve_panels(curves)
    figure, axes = panel_figure(1 + len(panels))
    draw_scores(axes[0], labels, documents)
    draw_curves(axes[1:], curves, panels)
    figure.tight_layout()
    save_png(figure, path)
    return figure


def training_curves_of(labels: list[str], documents: list[dict]) -> list:
    """The metrics of the training run behind each evaluated model that is a tulu run's `final/`; a run
    whose metrics cannot be read is named and left out of the picture."""
    from tulu_cli.plots import CurvesError, load_curves
    from tulu_cli.run_lineage import training_run_of

    curves = []
    for label, document in zip(labels, documents, strict=True):
        run_dir = training_run_of((document.get("model") or {}).get("path"))
        if run_dir is None:
            continue
        try:
            curves.append(load_curves(run_dir, label))
        except CurvesError as exc:
            Console().print(f"training curves of {label} left out: {exc}", highlight=False, soft_wrap=True)
    return curves


def draw_scores(axes, labels: list[str], documents: list[dict]) -> None:
    positions = list(range(len(labels)))
    for name in task_names(documents):
        values = [score(document, name) for document in documents]
        points = [(x, 100 * v) for x, v in zip(positions, values, strict=True) if v is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker="o", label=name)
    axes.set_xticks(positions, labels)
    axes.set_ylabel("score")
    axes.set_xlabel("run")
    axes.set_title("eval scores by stage")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="best")
