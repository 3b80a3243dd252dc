"""Building one data mix: read each source, normalise and validate its rows, de-duplicate, sample.

Nothing grows with the number of rows as Python objects: each source's valid rows are normalised in
batches and written to an Arrow file on disk (memory-mapped afterwards), rejects go to a JSON-lines file
as they occur, and the selection and the final shuffle are arrays of row indices applied with `take`
when the output shards are written. What does stay in memory per row is numpy: the de-duplication needs
one 16-byte content key per valid row of the source being read and per row already in the mix (plus the
row's index), about 40 bytes a row, and the mix order is 8 bytes a row.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from tulu_cli.curate.dataset_dir import take_rows
from tulu_cli.curate.mixing import SourceSpec, parse_sources, select_indices, target_rows
from tulu_cli.curate.schemas import ARROW_SCHEMAS, KINDS, content_key, normalize_row
from tulu_cli.data.sources import Loaded, load_source, row_dict
from tulu_cli.data.validate import RowError
from tulu_cli.io import json_line

# Called as progress(description, total) -> advance(n) for each source read.
ProgressFactory = Callable[[str, int], Callable[[int], None]]
BATCH_ROWS = 1000
KEY = np.dtype("S16")  # content_key's 128-bit digest


@dataclass
class SourceStats:
    """What happened to one source's rows, for the manifest and the summary table."""

    spec: SourceSpec
    rows_read: int = 0
    rows_valid: int = 0
    duplicates: int = 0
    rows_available: int = 0
    rows_out: int = 0
    rejected: Counter = field(default_factory=Counter)
    noticed: Counter = field(default_factory=Counter)  # what reading noticed, e.g. utf8_bom

    @property
    def upsampled(self) -> bool:
        return self.rows_out > self.rows_available

    def to_json(self) -> dict:
        return {**self.spec.to_json(), "rows_read": self.rows_read, "rows_valid": self.rows_valid,
                "duplicates": self.duplicates, "rows_available": self.rows_available, "rows_out": self.rows_out,
                "upsampled": self.upsampled, "rejected": dict(self.rejected), "noticed": dict(self.noticed)}


@dataclass
class RejectsFile:
    """The rows set aside, one JSON object a line on disk: iterated and counted, never held as a list."""

    path: Path
    count: int = 0
    _handle: TextIO | None = None

    def add(self, reject: dict) -> None:
        if self._handle is None:
            self._handle = self.path.open("w", encoding="utf-8")
        self._handle.write(json_line(reject, default=str) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._handle is None:
            self.path.write_text("", encoding="utf-8")
        else:
            self._handle.close()
            self._handle = None

    def __iter__(self) -> Iterator[dict]:
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)

    def __len__(self) -> int:
        return self.count


@dataclass
class MixResult:
    """The mix: row `order[i]` of `rows` (the valid rows of every source, memory-mapped) is output row i."""

    name: str
    kind: str
    rows: pa.Table
    order: np.ndarray
    sources: list[SourceStats]
    rejects: RejectsFile
    workdir: Any = None  # a TemporaryDirectory holding the files above, when the caller gave no folder

    @property
    def table(self) -> pa.Table:
        """The whole mix in memory, for small mixes; large ones are written shard by shard (`write_dataset`)."""
        return take_rows(self.rows, self.order)

    def counts(self) -> dict:
        rejected: Counter = Counter()
        for stats in self.sources:
            rejected.update(stats.rejected)
        return {"rows_in": sum(s.rows_read for s in self.sources), "rows_out": len(self.order),
                "rejected": dict(rejected), "duplicates": sum(s.duplicates for s in self.sources)}


def _reject(mix: str, spec: SourceSpec, file: str, row: int, field_: str, reason: str, detail: str,
            raw: object) -> dict:
    return {"dataset": mix, "source": spec.name, "file": file, "row": row, "field": field_,
            "reason": reason, "detail": detail, "raw": raw}


def _known_verifiers(kind: str) -> set[str] | None:
    if kind != "rlvr":
        return None
    from tulu_cli.rewards.registry import known_datasets

    return set(known_datasets())


@dataclass
class _Seen:
    """The content keys of the rows already in the mix, sorted, with the source and dataset index of each."""

    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, KEY))
    sources: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(whether each key is already in the mix, its position here where it is)."""
        if not self.keys.size:
            return np.zeros(len(keys), bool), np.zeros(len(keys), np.int64)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[at] == keys, at

    def add(self, keys: np.ndarray, source: int, indices: np.ndarray) -> None:
        merged = np.concatenate([self.keys, keys])
        order = np.argsort(merged, kind="stable")
        self.keys = merged[order]
        self.sources = np.concatenate([self.sources, np.full(len(keys), source, np.int32)])[order]
        self.indices = np.concatenate([self.indices, indices])[order]


def _batches(dataset: Any, first: int = 0) -> Iterator[tuple[int, list[dict]]]:
    """(index of the first row, the rows) of an Arrow-backed dataset from row `first`, BATCH_ROWS at a time."""
    for start in range(first, len(dataset), BATCH_ROWS):
        columns = dataset[start:start + BATCH_ROWS]
        if not columns:  # rows without any field: each one is still read, and rejected by validation
            yield start, [{} for _ in range(min(BATCH_ROWS, len(dataset) - start))]
            continue
        yield start, [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _rows_at(dataset: Any, indices: np.ndarray) -> Iterator[tuple[int, dict]]:
    """(index, row as in its file) of the rows at ascending `indices`, reading each batch holding one once."""
    wanted = map(int, indices)
    index = next(wanted, None)
    for batch_start in map(int, np.unique(indices // BATCH_ROWS)):
        start, batch = next(_batches(dataset, batch_start * BATCH_ROWS))
        while index is not None and index < start + len(batch):
            yield index, row_dict(batch[index - start])
            index = next(wanted, None)


def _write_valid_rows(name: str, spec: SourceSpec, kind: str, verifiers: set[str] | None, loaded: Loaded,
                      path: Path, rejects: RejectsFile, stats: SourceStats,
                      advance: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray]:
    """Normalise and validate the rows of `loaded` into an Arrow file at `path` (schema of `kind`), setting
    the invalid ones aside; returns the content key and the dataset index of each row written."""
    keys: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    schema = ARROW_SCHEMAS[kind]
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start, batch in _batches(loaded.dataset):
            valid, batch_keys, batch_indices = [], [], []
            for index, raw in enumerate(map(row_dict, batch), start):
                number = loaded.row_number(index)
                try:
                    row = normalize_row(raw, kind, spec.format, verifiers)
                except RowError as error:
                    rejects.add(_reject(name, spec, loaded.row_file(index), number, error.field, error.reason,
                                        error.detail, raw))
                    stats.rejected[error.reason] += 1
                    continue
                original_id = raw.get("id")
                row_id = str(original_id) if original_id is not None else f"{spec.name}-{number}"
                valid.append({"id": row_id, "source": spec.name, **row})
                batch_keys.append(content_key(kind, row))
                batch_indices.append(index)
            if valid:
                writer.write_batch(pa.RecordBatch.from_pylist(valid, schema=schema))
                keys.append(np.frombuffer(b"".join(batch_keys), KEY))
                indices.append(np.asarray(batch_indices, np.int64))
            advance(len(batch))
    if not keys:
        return np.zeros(0, KEY), np.zeros(0, np.int64)
    return np.concatenate(keys), np.concatenate(indices)


def _first_occurrences(keys: np.ndarray) -> np.ndarray:
    """For each key, the position of the first key equal to it."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.ones(len(keys), bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
    first = np.empty(len(keys), np.int64)
    first[order] = order[group_start]
    return first


def _open_rows(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def build_mix(name: str, mix: dict, seed: int, progress: ProgressFactory, workdir: Path | None = None) -> MixResult:
    """Build the mix `name`, its files under `workdir` (a temporary folder when None); raises SourceError
    when a source cannot be read at all."""
    kind = mix.get("kind", "sft")
    if kind not in KINDS:
        raise ValueError(f"mix {name!r}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    specs = parse_sources(mix.get("sources") or {})
    verifiers = _known_verifiers(kind)
    temporary = None
    if workdir is None:
        temporary = tempfile.TemporaryDirectory(prefix="tulu-mix-")
        workdir = Path(temporary.name)
    rejects = RejectsFile(Path(workdir) / f"{name}.rejects.jsonl")
    seen = _Seen()
    sources: list[Loaded] = []
    tables: list[pa.Table] = []
    chosen: list[np.ndarray] = []
    offset = 0
    all_stats: list[SourceStats] = []
    try:
        for number, spec in enumerate(specs):
            stats = SourceStats(spec)
            loaded = load_source(spec.path, spec.split, spec.config, spec.revision, spec.max_rows)
            sources.append(loaded)
            stats.noticed.update(loaded.counts)
            for bad in loaded.rejects:
                rejects.add(_reject(name, spec, bad.source, bad.row, bad.field, bad.reason, bad.detail, bad.raw))
                stats.rejected[bad.reason] += 1
            stats.rows_read = len(loaded.dataset) + len(loaded.rejects)
            path = Path(workdir) / f"{name}.source-{number:03d}.arrow"
            advance = progress(f"{name}: {spec.name}", len(loaded.dataset))
            keys, indices = _write_valid_rows(name, spec, kind, verifiers, loaded, path, rejects, stats, advance)
            stats.rows_valid = len(keys)
            in_mix, at = seen.find(keys)
            first = _first_occurrences(keys)
            duplicate = in_mix | (first != np.arange(len(keys)))
            positions = np.flatnonzero(duplicate)
            for position, (index, raw) in zip(map(int, positions), _rows_at(loaded.dataset, indices[positions]),
                                              strict=True):
                if in_mix[position]:
                    owner, owner_index = int(seen.sources[at[position]]), int(seen.indices[at[position]])
                else:
                    owner, owner_index = number, int(indices[first[position]])
                detail = f"same content as source {specs[owner].name!r} row {sources[owner].row_number(owner_index)}"
                rejects.add(_reject(name, spec, loaded.row_file(index), loaded.row_number(index), "<row>",
                                    "duplicate", detail, raw))
            stats.duplicates = int(duplicate.sum())
            candidates = np.flatnonzero(~duplicate)
            stats.rows_available = len(candidates)
            picked = candidates[select_indices(len(candidates), target_rows(spec.take, spec.take_mode,
                                                                            len(candidates)), seed)]
            stats.rows_out = len(picked)
            distinct = np.unique(picked)
            seen.add(keys[distinct], number, indices[distinct])
            tables.append(_open_rows(path))
            chosen.append(picked + offset)
            offset += len(keys)
            all_stats.append(stats)
    finally:
        rejects.close()
    order = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    if mix.get("shuffle", True):
        random.Random(seed).shuffle(order)  # the permutation `random.shuffle` gives a list of the rows
    rows = pa.concat_tables(tables) if tables else ARROW_SCHEMAS[kind].empty_table()
    return MixResult(name, kind, rows, order, all_stats, rejects, temporary)
