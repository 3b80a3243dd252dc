"""Rows (dicts) written to an Arrow stream file in batches, with one schema that fits every row.

The columns are the union of the fields of all rows, in first-seen order; a row without a field holds
null there. Each column gets the Arrow type that fits all its values (structs merged field by field).
A column whose values have no common type (an int in one row, a string in another; a string `content`
in one row, a list of parts in another) is stored as JSON text under `_json:NAME` and `decode_row`
gives each row its own value back: the loader never loses or rewrites a field; the stage's row
validation then judges each value (and rejects a wrong type with the file, row and field).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa

JSON_COLUMN = "_json:"
BATCH_ROWS = 1000
# Deeper nested types are kept as JSON text: Arrow readers limit the nesting depth they accept.
MAX_NESTING = 32

ColumnTypes = dict[str, "pa.DataType | None"]  # None: the column is JSON text


def batched(rows: Iterable[dict], size: int = BATCH_ROWS) -> Iterator[list[dict]]:
    iterator = iter(rows)
    return iter(lambda: list(islice(iterator, size)), [])


def _depth(data_type: pa.DataType) -> int:
    if pa.types.is_struct(data_type):
        return 1 + max((_depth(data_type.field(i).type) for i in range(data_type.num_fields)), default=0)
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return 1 + _depth(data_type.value_type)
    return 0


def _merge(known: pa.DataType | None, new: pa.DataType) -> pa.DataType | None:
    """The type that holds values of both types, or None when there is none."""
    if known == new:
        return known
    try:
        schema = pa.unify_schemas([pa.schema([("v", known)]), pa.schema([("v", new)])],
                                  promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    merged = schema.field("v").type
    return None if pa.types.is_union(merged) else merged


def infer_columns(batches: Iterable[list[dict]]) -> tuple[ColumnTypes, int]:
    """The column types that fit every row of `batches`, and the number of rows."""
    types: ColumnTypes = {}
    rows = 0
    for batch in batches:
        rows += len(batch)
        names = dict.fromkeys(key for row in batch for key in row)
        for name in names:
            if name in types and types[name] is None:
                continue
            try:
                found = pa.array([row.get(name) for row in batch]).type
            except (pa.ArrowException, OverflowError, TypeError, ValueError, UnicodeEncodeError):
                types[name] = None
                continue
            merged = found if name not in types else _merge(types[name], found)
            types[name] = merged if merged is not None and _depth(merged) <= MAX_NESTING else None
    return types, rows


def column_name(name: str, data_type: pa.DataType | None) -> str:
    return f"{JSON_COLUMN}{name}" if data_type is None else name


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _batch(rows: list[dict], types: ColumnTypes, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for name, data_type in types.items():
        values = [row.get(name) for row in rows]
        if data_type is None:
            arrays.append(pa.array([_json_text(value) for value in values], pa.string()))
        else:
            arrays.append(pa.array(values, data_type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class ColumnMismatch(Exception):
    """A value did not fit the type inferred for its column (the inference saw a narrower sample)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def write_arrow_stream(path: Path, batches: Callable[[], Iterable[list[dict]]], types: ColumnTypes) -> ColumnTypes:
    """Write the rows of `batches()` to `path` (an Arrow IPC stream); returns the column types used.

    A column whose values turn out not to fit its type becomes JSON text and the file is rewritten.
    """
    while True:
        schema = pa.schema([(column_name(name, data_type), data_type or pa.string())
                            for name, data_type in types.items()])
        try:
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for rows in batches():
                    try:
                        writer.write_batch(_batch(rows, types, schema))
                    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                        raise ColumnMismatch(_failing_column(rows, types)) from exc
            return types
        except ColumnMismatch as mismatch:
            types = {**types, mismatch.name: None}


def _failing_column(rows: list[dict], types: ColumnTypes) -> str:
    for name, data_type in types.items():
        if data_type is None:
            continue
        try:
            pa.array([row.get(name) for row in rows], data_type)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return name
    raise RuntimeError("an Arrow batch failed but no column fails on its own")


def decode_row(example: dict) -> dict:
    """A row as it was in its file: JSON-text columns (`_json:NAME`) decoded back to NAME."""
    if not any(key.startswith(JSON_COLUMN) for key in example):
        return example
    row = {}
    for key, value in example.items():
        if key.startswith(JSON_COLUMN):
            row[key[len(JSON_COLUMN):]] = None if value is None else json.loads(value)
        else:
            row[key] = value
    return row
