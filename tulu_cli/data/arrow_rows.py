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
# A nested object with more distinct keys than this (keys that are data, such as ids) is kept as JSON
# text: as a struct, every row would carry every key, and the work grows with rows x keys.
MAX_STRUCT_FIELDS = 256
# More distinct top-level fields than this is not a table of rows; the source fails naming the count.
MAX_COLUMNS = 1024


class TooManyFields(ValueError):
    """The rows have more distinct top-level fields than MAX_COLUMNS."""

ColumnTypes = dict[str, "pa.DataType | None"]  # None: the column is JSON text


def batched(rows: Iterable[dict], size: int = BATCH_ROWS) -> Iterator[list[dict]]:
    iterator = iter(rows)
    return iter(lambda: list(islice(iterator, size)), [])


def _fits_a_column(data_type: pa.DataType, depth: int = 0) -> bool:
    """Whether a type is shallow and narrow enough to be stored as itself rather than as JSON text."""
    if depth > MAX_NESTING:
        return False
    if pa.types.is_struct(data_type):
        return data_type.num_fields <= MAX_STRUCT_FIELDS and all(
            _fits_a_column(data_type.field(i).type, depth + 1) for i in range(data_type.num_fields))
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return _fits_a_column(data_type.value_type, depth + 1)
    return True


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


_CONVERSION_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError, UnicodeEncodeError)


def _infer_batch(batch: list[dict], types: ColumnTypes) -> tuple[dict[str, pa.Array], ColumnTypes]:
    """The batch's own Arrow arrays (JSON-text columns excepted) and `types` widened to fit the batch."""
    arrays: dict[str, pa.Array] = {}
    merged = dict(types)
    for name in dict.fromkeys(key for row in batch for key in row):
        if name.startswith(JSON_COLUMN):
            merged[name] = None  # stored as `_json:_json:...`, so that decoding gives the name back
        if name in merged and merged[name] is None:
            continue
        try:
            arrays[name] = pa.array([row.get(name) for row in batch])
        except _CONVERSION_ERRORS:
            merged[name] = None
            continue
        found = arrays[name].type
        wide = found if name not in merged else _merge(merged[name], found)
        merged[name] = wide if wide is not None and _fits_a_column(wide) else None
    if len(merged) > MAX_COLUMNS:
        raise TooManyFields(f"the rows have more than {MAX_COLUMNS} distinct fields (keys that are data, "
                            f"such as ids, belong inside one field)")
    return arrays, merged


def column_name(name: str, data_type: pa.DataType | None) -> str:
    return f"{JSON_COLUMN}{name}" if data_type is None else name


def _schema(types: ColumnTypes) -> pa.Schema:
    return pa.schema([(column_name(name, data_type), data_type or pa.string()) for name, data_type in types.items()])


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _record_batch(rows: list[dict], types: ColumnTypes, schema: pa.Schema,
                  arrays: dict[str, pa.Array] | None = None) -> pa.RecordBatch:
    """`rows` in the columns of `types`, reusing the arrays already built for them where given."""
    columns = []
    for name, data_type in types.items():
        if data_type is None:
            columns.append(pa.array([_json_text(row.get(name)) for row in rows], pa.string()))
        elif arrays is not None and name in arrays:
            array = arrays[name]
            columns.append(array if array.type == data_type else array.cast(data_type))
        else:
            columns.append(pa.array([row.get(name) for row in rows], data_type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def write_rows(path: Path, batches: Callable[[], Iterable[list[dict]]]) -> ColumnTypes:
    """Write the rows of `batches()` to `path` (an Arrow IPC stream) with column types that fit every row;
    returns them. One pass while each batch fits the types of the batches before it (the usual file);
    when a later batch widens them (a new field, a field first seen null), a second pass rewrites the
    file with the widened types."""
    types: ColumnTypes = {}
    one_pass = True
    with pa.OSFile(str(path), "wb") as sink:
        writer = None
        for batch in batches():
            arrays, merged = _infer_batch(batch, types)
            if writer is None:
                schema = _schema(merged)
                writer = pa.ipc.new_stream(sink, schema)
            elif merged != types:
                one_pass = False
            types = merged
            if one_pass:
                try:
                    writer.write_batch(_record_batch(batch, types, schema, arrays))
                except _CONVERSION_ERRORS:
                    one_pass = False
        if writer is not None:
            writer.close()
    if one_pass and writer is not None:
        return types
    return _write_with_types(path, batches, types)


class _ColumnMismatch(Exception):
    """A value did not fit the type inferred for its column."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _write_with_types(path: Path, batches: Callable[[], Iterable[list[dict]]], types: ColumnTypes) -> ColumnTypes:
    """Write the rows of `batches()` with the given column types; a column whose values turn out not to
    fit its type becomes JSON text and the file is written again."""
    while True:
        schema = _schema(types)
        try:
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                for rows in batches():
                    try:
                        writer.write_batch(_record_batch(rows, types, schema))
                    except _CONVERSION_ERRORS as exc:
                        raise _ColumnMismatch(_failing_column(rows, types)) from exc
            return types
        except _ColumnMismatch as mismatch:
            types = {**types, mismatch.name: None}


def _failing_column(rows: list[dict], types: ColumnTypes) -> str:
    for name, data_type in types.items():
        if data_type is None:
            continue
        try:
            pa.array([row.get(name) for row in rows], data_type)
        except _CONVERSION_ERRORS:
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
