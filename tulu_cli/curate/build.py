"""Building one data mix: read each source, normalise and validate its rows, de-duplicate, sample."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from tulu_cli.curate.mixing import SourceSpec, parse_sources, select, target_rows
from tulu_cli.curate.schemas import ARROW_SCHEMAS, KINDS, content_key, normalize_row
from tulu_cli.data.sources import load_source, row_dict
from tulu_cli.data.validate import RowError

# Called as progress(description, total) -> advance(n) for each source read.
ProgressFactory = Callable[[str, int], Callable[[int], None]]


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
class MixResult:
    name: str
    kind: str
    table: pa.Table
    sources: list[SourceStats]
    rejects: list[dict]

    def counts(self) -> dict:
        rejected: Counter = Counter()
        for stats in self.sources:
            rejected.update(stats.rejected)
        return {"rows_in": sum(s.rows_read for s in self.sources), "rows_out": self.table.num_rows,
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


def build_mix(name: str, mix: dict, seed: int, progress: ProgressFactory) -> MixResult:
    """Build the mix `name`; raises SourceError when a source cannot be read at all."""
    kind = mix.get("kind", "sft")
    if kind not in KINDS:
        raise ValueError(f"mix {name!r}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    verifiers = _known_verifiers(kind)
    seen: dict[bytes, tuple[str, int]] = {}  # content key -> (source, row) of a row already in the mix
    rows: list[dict] = []
    all_stats: list[SourceStats] = []
    rejects: list[dict] = []
    for spec in parse_sources(mix.get("sources") or {}):
        stats = SourceStats(spec)
        loaded = load_source(spec.path, spec.split, spec.config, spec.revision, spec.max_rows)
        stats.noticed.update(loaded.counts)
        for bad in loaded.rejects:
            rejects.append(_reject(name, spec, bad.source, bad.row, bad.field, bad.reason, bad.detail, bad.raw))
            stats.rejected[bad.reason] += 1
        stats.rows_read = len(loaded.dataset) + len(loaded.rejects)
        candidates: list[dict] = []
        local_seen: dict[bytes, tuple[str, int]] = {}
        advance = progress(f"{name}: {spec.name}", len(loaded.dataset))
        for index, example in enumerate(loaded.dataset):
            if index and index % 1000 == 0:
                advance(1000)
            raw = row_dict(example)
            number, file = loaded.row_number(index), loaded.row_file(index)
            try:
                row = normalize_row(raw, kind, spec.format, verifiers)
            except RowError as error:
                rejects.append(_reject(name, spec, file, number, error.field, error.reason, error.detail, raw))
                stats.rejected[error.reason] += 1
                continue
            stats.rows_valid += 1
            key = content_key(kind, row)
            first = seen.get(key) or local_seen.get(key)
            if first is not None:
                stats.duplicates += 1
                rejects.append(_reject(name, spec, file, number, "<row>", "duplicate",
                                       f"same content as source {first[0]!r} row {first[1]}", raw))
                continue
            local_seen[key] = (spec.name, number)
            original_id = raw.get("id")
            row_id = str(original_id) if original_id is not None else f"{spec.name}-{number}"
            candidates.append({"id": row_id, "source": spec.name, **row, "_key": key, "_row": number})
        advance(len(loaded.dataset) - 1000 * max(0, (len(loaded.dataset) - 1) // 1000))
        stats.rows_available = len(candidates)
        target = target_rows(spec.take, spec.take_mode, len(candidates))
        chosen = [candidates[i] for i in select(len(candidates), target, seed)]
        stats.rows_out = len(chosen)
        for row in chosen:
            seen.setdefault(row["_key"], (spec.name, row["_row"]))
        rows += chosen
        all_stats.append(stats)
    if mix.get("shuffle", True):
        random.Random(seed).shuffle(rows)
    for row in rows:
        row.pop("_key", None)
        row.pop("_row", None)
    table = pa.Table.from_pylist(rows, schema=ARROW_SCHEMAS[kind])
    return MixResult(name, kind, table, all_stats, rejects)
