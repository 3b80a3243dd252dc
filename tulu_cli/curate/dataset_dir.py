"""A curated dataset directory: `data/*.parquet` plus `manifest.json`, written atomically.

The whole directory is assembled under a hidden temporary name and renamed into place at the end,
with `manifest.json` written last inside it: a killed run leaves no directory under the final name,
and a directory with a manifest is always complete.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tulu_cli.io import atomic_dir, atomic_open, atomic_write_json, json_line

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "tulu-dataset/1"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(table: pa.Table) -> str:
    """A hash of the rows themselves (canonical JSON, in order), independent of the Parquet encoding."""
    digest = hashlib.sha256()
    _hash_rows(digest, table)
    return digest.hexdigest()


def _hash_rows(digest: Any, table: pa.Table) -> None:
    for batch in table.to_batches(max_chunksize=10_000):
        for row in batch.to_pylist():
            digest.update(json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                                     default=str).encode("utf-8"))
            digest.update(b"\n")


def take_rows(table: pa.Table, indices: np.ndarray) -> pa.Table:
    """`table.take(indices)`, one record batch at a time: Arrow's take on a table of many batches first
    joins them into one, a copy of the whole (memory-mapped) table; this copies only the rows taken."""
    indices = np.asarray(indices, np.int64)
    ascending = np.argsort(indices, kind="stable")
    wanted = indices[ascending]
    parts, offset = [], 0
    for batch in table.to_batches():
        low, high = np.searchsorted(wanted, [offset, offset + batch.num_rows])
        if high > low:
            parts.append(batch.take(pa.array(wanted[low:high] - offset)))
        offset += batch.num_rows
    taken = pa.Table.from_batches(parts, schema=table.schema).combine_chunks()
    inverse = np.empty_like(ascending)
    inverse[ascending] = np.arange(len(ascending))
    return taken.take(pa.array(inverse))


def write_dataset(path: Path, table: pa.Table, manifest: dict[str, Any], rows_per_file: int = 100_000,
                  order: np.ndarray | None = None) -> dict:
    """Write `table` as Parquet shards under `path/data/` and the manifest (completed with the row
    count, the files and their hashes, and a content hash); returns the written manifest. With `order`,
    the rows written are `table`'s rows at those indices, taken one shard at a time (a memory-mapped
    `table` is then never copied into memory whole)."""
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    rows = table.num_rows if order is None else len(order)
    shards = max(1, -(-rows // rows_per_file))
    digest = hashlib.sha256()
    with atomic_dir(path) as tmp:
        tmp.chmod(0o755)  # a private temporary directory becomes an ordinary shared dataset directory
        (tmp / "data").mkdir()
        files = []
        for shard in range(shards):
            if order is None:
                part = table.slice(shard * rows_per_file, rows_per_file)
            else:
                part = take_rows(table, order[shard * rows_per_file:(shard + 1) * rows_per_file])
            _hash_rows(digest, part)
            relative = f"data/train-{shard:05d}-of-{shards:05d}.parquet"
            pq.write_table(part, tmp / relative)
            files.append({"path": relative, "rows": part.num_rows, "sha256": _sha256_file(tmp / relative)})
        manifest = {"format": MANIFEST_FORMAT, **manifest, "rows": rows, "files": files,
                    "content_sha256": digest.hexdigest(),
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_json(tmp / MANIFEST, manifest)
    return manifest


def read_manifest(path: Path) -> dict | None:
    """The manifest of a dataset directory, or None if `path` is not one."""
    file = Path(path) / MANIFEST
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def write_rows_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Side files (rejects, removed rows): one JSON object per line, written atomically as `rows` are
    iterated (a generator is never gathered into one string)."""
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json_line(row, default=str) + "\n")
