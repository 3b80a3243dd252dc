"""`tulu verify INPUT.jsonl`: score every row with its verifier and write the rows back with `verified`.

Every row is written, in input order: a row that cannot be scored (unreadable, a bad field, a verifier
past the time limit) gets `verified: 0` and an `error` naming the row. Rows stream through the worker
pool (pool.py), so memory does not grow with the file, and the output appears under its name only when
complete.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tulu_cli.io import atomic_open, json_line
from tulu_cli.rewards.pool import Ready, VerifierPool
from tulu_cli.rewards.registry import DEFAULT_TIMEOUT_S, PROFILES, VerifyResult, verify_row

NO_DATASET = "(none)"
# Output lines written at once.
_WRITE_LINES = 256
_BOM = b"\xef\xbb\xbf"


def default_output_path(input: Path) -> Path:
    name = input.name[: -len(".jsonl")] if input.name.endswith(".jsonl") else input.name
    return input.with_name(f"{name}.verified.jsonl")


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


# ---- one line -> [dataset, score, error, timed_out, output line] ----------------------------------------
# In place of the output line, a compact payload (from a worker, to the parent that holds the line) says
# how to make it: the fields appended to the row's own text, after a comma or (an empty row) without.
APPEND, APPEND_TO_EMPTY = 1, 0

def _parse(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "unparsable JSON: nested too deeply"
    except ValueError as exc:
        return None, f"unparsable JSON: {exc}"


def _fields(score: float, error: str | None) -> dict:
    return {"verified": score, **({"error": error} if error is not None else {})}


def _appended(text: str, fields: dict, how: int) -> str:
    """The row's own text with `fields` appended: no re-serialisation of long responses."""
    added = json_line(fields)[1:]
    return text.rstrip()[:-1] + (", " if how == APPEND else "") + added


def _payload(number: int, text: str, row: Any, result: VerifyResult, *, compact: bool = False) -> list:
    error = f"row {number}: {result.error}" if result.error is not None else None
    dataset = row.get("dataset") if isinstance(row, dict) else None
    fields = _fields(result.score, error)
    if isinstance(row, dict) and not fields.keys() & row.keys() and text.rstrip().endswith("}"):
        how = APPEND if row else APPEND_TO_EMPTY
        line: str | int = how if compact else _appended(text, fields, how)
    else:
        line = json_line({**row, **fields} if isinstance(row, dict) else {"raw": text, **fields})
    return [dataset if isinstance(dataset, str) else NO_DATASET, result.score, error, result.timed_out, line]


def complete_line(item: list, payload: list) -> list:
    """The payload of a line from a worker's compact one (made in the parent, which holds the line)."""
    line = payload[4]
    if isinstance(line, int):
        payload[4] = _appended(item[1], _fields(payload[1], payload[2]), line)
    return payload


def score_line(number: int, text: str, *, loose: bool, timeout_s: float, profile: str = "default",
               compact: bool = False) -> list:  # fmt: skip
    """The payload of one input line, scored in this process (a pool worker runs this); `compact`: the
    output line left for `complete_line` to make where it can."""
    row, error = _parse(text)
    if error is not None:
        return _payload(number, text, None, VerifyResult(0.0, error))
    result = verify_row(row, loose=loose, timeout_s=timeout_s, profile=profile)
    return _payload(number, text, row, result, compact=compact)


def failed_line(item: list, result: VerifyResult) -> list:
    """The payload of a line whose verifier hung or died (made in the parent)."""
    number, text = item
    row, error = _parse(text)
    return _payload(number, text, row, result if error is None else VerifyResult(0.0, error))


def _lines(handle: BinaryIO) -> Iterator[list | Ready]:
    """[line number, text] per non-blank line; undecodable lines come back already failed."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            yield Ready(_payload(number, text, None, VerifyResult(0.0, f"not valid UTF-8: {exc.reason} at byte {exc.start}")))
            continue
        yield [number, text]


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


# ---- the command ------------------------------------------------------------------------------------------
class _Tally:
    def __init__(self) -> None:
        # dataset -> [rows, sum of scores, errors, timed out]
        self.groups: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0])
        self.rows = 0

    def add(self, dataset: str, score: float, error: str | None, timed_out: bool) -> None:
        group = self.groups[dataset]
        group[0] += 1
        group[1] += score
        group[2] += error is not None
        group[3] += timed_out
        self.rows += 1

    def total(self, index: int) -> int:
        return int(sum(group[index] for group in self.groups.values()))


def _summary_table(tally: _Tally):
    from rich.table import Table

    table = Table(title="verified")
    for column in ("dataset", "rows", "mean verified", "errors", "timed out"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for dataset in sorted(tally.groups):
        rows, total, errors, timeouts = tally.groups[dataset]
        table.add_row(dataset, str(int(rows)), f"{total / rows:.4f}", str(int(errors)), str(int(timeouts)))
    return table


def verify_command(
    input: Path,
    out: Path | None,
    loose: bool,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    profile: str = "default",
) -> int:
    """Score INPUT (JSONL) into OUT; returns the exit code (bad rows are reported on the row, not fatal)."""
    from rich.console import Console

    from tulu_cli.progress import progress

    input = Path(input)
    console = Console()
    if timeout_s <= 0:
        console.print(f"[red]--timeout must be positive, got {timeout_s:g}[/red]")
        return 2
    if profile not in PROFILES:
        console.print(f"[red]--profile must be one of {', '.join(PROFILES)}, got {profile!r}[/red]")
        return 2
    try:
        expected = _count_lines(input)
        handle = input.open("rb")
    except OSError as exc:
        console.print(f"[red]cannot read {input}: {exc}[/red]")
        return 2
    out = Path(out) if out is not None else default_output_path(input)
    workers = workers or default_workers()
    tally = _Tally()
    started = time.monotonic()
    with handle, progress("verify", expected) as bar, VerifierPool(workers) as pool, atomic_open(out) as sink:
        lines: list[str] = []
        for dataset, score, error, timed_out, line in pool.run(
            "line", _lines(handle), loose=loose, timeout_s=timeout_s, failed=failed_line, profile=profile,
            complete=complete_line,
        ):  # fmt: skip
            lines.append(line)
            if len(lines) == _WRITE_LINES:
                sink.write("\n".join(lines) + "\n")
                lines.clear()
            tally.add(dataset, score, error, timed_out)
            bar.advance(1)
        sink.write("".join(line + "\n" for line in lines))
    elapsed = time.monotonic() - started
    console.print(_summary_table(tally))
    console.print(
        f"{tally.rows} rows in {elapsed:.1f}s ({tally.rows / max(elapsed, 1e-9):,.0f} rows/s), "
        f"{tally.total(2)} with errors, {tally.total(3)} timed out (limit {timeout_s:g}s, slowest row "
        f"{pool.slowest_row_s:.2f}s) -> {out}"
    )
    return 0
