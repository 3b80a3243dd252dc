"""Console output of the data stages: rich summary tables (progress bars: `tulu_cli.progress`)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def _reasons(rejected: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(rejected.items())) or "-"


def curate_table(manifests: dict[str, dict]) -> Table:
    """One row per (dataset, source): rows read, rejected by reason, duplicates, rows out."""
    table = Table(title="tulu curate", show_lines=False)
    for column in ("dataset", "source", "take", "read", "rejected", "duplicates", "out"):
        table.add_column(column, justify="left" if column in ("dataset", "source", "rejected") else "right")
    for name, manifest in manifests.items():
        for source in manifest["sources"]:
            out = str(source["rows_out"]) + (" (upsampled)" if source["upsampled"] else "")
            table.add_row(name, source["name"], str(source["take"]), str(source["rows_read"]),
                          _reasons(source["rejected"]), str(source["duplicates"]), out)
        counts = manifest["counts"]
        table.add_row(f"[bold]{name}[/bold]", "[bold]total[/bold]", "", str(counts["rows_in"]),
                      _reasons(counts["rejected"]), str(counts["duplicates"]), f"[bold]{counts['rows_out']}[/bold]",
                      end_section=True)
    return table


def _label(path: str) -> str:
    """A short name for a table cell: a file's name, or the last two parts of a directory or hub id."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return parts[-1] if "." in parts[-1] else "/".join(parts[-2:])


def decontaminate_table(summary: list[dict]) -> Table:
    """One row per (training file, eval set): rows checked, contaminated, percent (report.json has full paths)."""
    table = Table(title="tulu decontaminate")
    for column in ("train", "eval set", "checked", "contaminated", "percent"):
        table.add_column(column, justify="left" if column in ("train", "eval set") else "right")
    for row in summary:
        style = "red" if row["rows_contaminated"] else None
        table.add_row(_label(row["train_file"]), _label(row["eval_file"]), str(row["rows_checked"]), str(row["rows_contaminated"]),
                      f"{row['percent']:.2f}%", style=style)
    return table
