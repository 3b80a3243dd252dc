"""The suite view of an eval config: one row per task with whether it can run here (and what it needs),
the settings that decide its score (shots, chain of thought, metric, max tokens, chat template, runner)
and the OLMES id and setting it is compared with. Printed by `tulu eval --dry-run`; imports nothing
heavy, as it runs in the parent `tulu` process."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tulu_cli.eval.readiness import backend_status, task_status
from tulu_cli.eval.tasks import TaskConfigError, select_tasks, settings_summary


def task_table(resolved: dict) -> Table:
    specs = select_tasks(resolved.get("tasks") or {}, resolved.get("only"))
    generation = resolved.get("generation", {})
    title = (f"suite {resolved.get('suite')}: {len(specs)} tasks, {backend_status(resolved)}, "
             f"temperature {generation.get('temperature')}")
    # the status says why a task cannot run, so the notes column (the same reason) is left out
    rows = [{"task": spec.name, "status": task_status(spec, resolved),
             **{k: v for k, v in settings_summary(spec).items() if k not in ("task", "notes")}} for spec in specs]
    table = Table(title=escape(title))
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(value) for value in row.values()))
    return table


def show_tasks(resolved: dict, console: Console) -> None:
    try:
        table = task_table(resolved)
    except TaskConfigError as exc:
        console.print(f"[red]task settings: {exc}[/red]")
        return
    # Wide enough to keep each task on one line in logs and pipes.
    Console(width=max(console.width, 180)).print(table)
