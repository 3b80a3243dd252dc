"""The synthesis run's rows between its steps, and the rows it sets aside.

A step that must read its input more than once (near-duplicate removal, decontamination against several
eval sets, responses keyed by every request) reads it from an Arrow file the step before wrote a batch at
a time; the file is memory-mapped and read back a batch at a time, so the run holds one batch of rows as
Python objects, never all of them. Rejects go to a file as they happen, with a count per stage and reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from tulu_cli.curate.schemas import ARROW_SCHEMAS
from tulu_cli.io import json_line

# Rows written or read at a time.
BATCH_ROWS = 1024

# Every field a synthetic row can have on its way through the steps (the outputs take subsets of it).
SYNTH_SCHEMA = pa.schema(
    [
        *ARROW_SCHEMAS["rlvr"],
        ("persona", pa.string()),
        ("response", pa.string()),
        ("agreement", pa.float64()),
    ]
)

T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def spool_rows(path: Path, rows: Iterable[dict], schema: pa.Schema = SYNTH_SCHEMA) -> pa.Table:
    """Write `rows` (fields outside `schema` are dropped, missing ones are null) to `path` as they come;
    returns the file memory-mapped as a table."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in chunked(rows, BATCH_ROWS):
            writer.write_batch(
                pa.RecordBatch.from_pylist([{f: row.get(f) for f in schema.names} for row in batch], schema=schema)
            )
    return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()


def read_rows(table: pa.Table, keep: np.ndarray | None = None) -> Iterator[tuple[int, dict]]:
    """(index, row) of every row of `table` (of those `keep` marks), a batch at a time."""
    offset = 0
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        for index, row in enumerate(batch.to_pylist(), offset):
            if keep is None or keep[index]:
                yield index, row
        offset += batch.num_rows


class LastTurns(Sequence):
    """The text of each row's last message, read from the table on demand."""

    def __init__(self, table: pa.Table):
        self.messages = table.column("messages")

    def __len__(self) -> int:
        return len(self.messages)

    def __getitem__(self, index: int) -> str:
        return self.messages[index].as_py()[-1]["content"]

    def __iter__(self) -> Iterator[str]:
        for chunk in self.messages.chunks:
            for start in range(0, len(chunk), BATCH_ROWS):
                for messages in chunk.slice(start, BATCH_ROWS).to_pylist():
                    yield messages[-1]["content"]


class RejectLog:
    """Rows set aside, written to `path` (one JSON object a line) as they are set aside, and counted in
    `counts` by stage and reason."""

    def __init__(self, path: Path, counts: Counter):
        self.path = path
        self.counts = counts
        self.total = 0
        self._handle = path.open("w", encoding="utf-8")

    def add(self, stage: str, row_id: str, reason: str, detail: str, raw: Any = None) -> None:
        """A row of the run set aside at `stage`; counted as `stage:reason`."""
        self.add_record({"stage": stage, "id": row_id, "reason": reason, "detail": detail, "raw": raw})
        self.counts[f"{stage}:{reason}"] += 1

    def add_record(self, record: dict) -> None:
        """A reject as its reader wrote it (a persona or prompt row, with file, row and field)."""
        self._handle.write(json_line(record, default=str) + "\n")
        self.total += 1

    def close(self) -> None:
        self._handle.close()  # closing again does nothing
