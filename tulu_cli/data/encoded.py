"""Turning a source into encoded training rows: read it, encode each row, set bad rows aside.

Every trainer's data module supplies an `encode(example, **kwargs)` that returns the encoded columns
plus `truncated` and the `error_*` fields (empty when the row is usable); this module does the rest:
counting, the rejects file, the report of what happened to the rows, and the on-disk cache.

The kept rows stay in a memory-mapped Arrow dataset (never a list of Python rows): trainers read
the rows of one micro-batch at a time. The encoded dataset is cached (see `token_cache`): a later
run, and every rank after the first, maps the cached entry instead of tokenising again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tulu_cli.data.sources import Loaded, Reject, is_local, load_source, row_dict
from tulu_cli.data.token_cache import cache_key, cache_root, load_entry, local_source_identity
from tulu_cli.data.validate import RowError
from tulu_cli.io import atomic_copy, atomic_dir, atomic_write_json, json_line
from tulu_cli.progress import progress

# Rows tokenised per `map` call: at least this many, and at most TOKENISE_MAX_CHUNKS calls per source.
TOKENISE_CHUNK_ROWS = 20_000
TOKENISE_MAX_CHUNKS = 50
NO_ERROR = {"error_field": "", "error_reason": "", "error_detail": ""}


@dataclass
class DataReport:
    """What happened to the rows: read, kept, truncated, set aside per reason, and whether the
    encoded rows came from the cache (`cache`: hit or miss) and how long encoding took."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    truncated: int = 0
    rejected: Counter = field(default_factory=Counter)
    cache: str = ""
    encode_s: float = 0.0

    def to_json(self) -> dict:
        return {"source": self.source, "rows_read": self.rows_read, "rows_kept": self.rows_kept,
                "truncated": self.truncated, "rejected": dict(self.rejected), "cache": self.cache,
                "encode_s": self.encode_s}


DATA_REPORT_FILE = "data_report.json"


def record_data_report(run_dir: Path, split: str, report: DataReport) -> None:
    """Keep a split's row counts (`train`, `eval`) in RUN_DIR/data_report.json, for the model card.
    The train split, recorded first, starts the file afresh."""
    path = run_dir / DATA_REPORT_FILE
    recorded = {} if split == "train" or not path.exists() else json.loads(path.read_text(encoding="utf-8"))
    atomic_write_json(path, {**recorded, split: {key: value for key, value in report.to_json().items()
                                                 if key not in ("cache", "encode_s")}})


def error_fields(error: RowError) -> dict:
    """The `error_*` columns of a row that cannot be used."""
    return {"error_field": error.field, "error_reason": error.reason, "error_detail": error.detail}


def token_features(columns: list[str]) -> dict:
    """int32 token-id features for `columns` (ids and -100 labels fit; half the size of int64)."""
    import datasets

    return {column: datasets.Sequence(datasets.Value("int32")) for column in columns}


def encode_source(source: str, data_cfg: Any, encode: Callable[..., dict], fn_kwargs: dict, features: dict,
                  rejects_path: Path | None) -> tuple[Any, DataReport]:
    """Return (memory-mapped dataset of the `features` columns, DataReport) for `source`.

    `features` maps each encoded column to its datasets feature. Rejects are written to `rejects_path`.
    """
    started = time.time()
    loaded = None
    path = Path(str(source)).expanduser()
    if is_local(str(source)) and path.exists():
        # A local source is keyed by its files' stats: a warm run does not read it at all.
        identity = {"local": local_source_identity(path), "max_rows": data_cfg.get("max_rows")}
    else:
        loaded = _load(source, data_cfg)  # a hub dataset (or a missing file: a clear error)
        identity = {"hub": str(source), "config": data_cfg.get("config"), "split": data_cfg.get("split", "train"),
                    "revision": data_cfg.get("revision"), "fingerprint": loaded.dataset._fingerprint}
    key = cache_key(identity, encode, fn_kwargs, features)
    entry = cache_root(data_cfg.get("cache_dir")) / key
    cached = load_entry(entry)
    if cached is None:
        _build_entry(entry, loaded or _load(source, data_cfg), encode, fn_kwargs, features, data_cfg)
        cached = load_entry(entry)
        status = "miss"
    else:
        status = "hit"
    dataset, saved = cached
    report = DataReport(source=str(source), rows_read=saved["rows_read"], rows_kept=saved["rows_kept"],
                        truncated=saved["truncated"], rejected=Counter(saved["rejected"]), cache=status,
                        encode_s=round(time.time() - started, 3))
    if rejects_path is not None:
        atomic_copy(entry / "rejects.jsonl", rejects_path)
    return dataset, report


def _load(source: str, data_cfg: Any) -> Loaded:
    return load_source(str(source), data_cfg.get("split", "train"), data_cfg.get("config"),
                       data_cfg.get("revision"), data_cfg.get("max_rows"))


def _build_entry(entry: Path, loaded: Loaded, encode: Callable[..., dict], fn_kwargs: dict, features: dict,
                 data_cfg: Any) -> None:
    """Encode every row of `loaded` into the cache entry `entry` (written atomically)."""
    import datasets
    import numpy as np
    import pyarrow.compute as pc

    dataset = loaded.dataset
    with atomic_dir(entry) as tmp:
        work = tmp / "work"
        work.mkdir()
        status = {"truncated": datasets.Value("bool"), **{name: datasets.Value("string") for name in NO_ERROR}}
        encoded = _encode_in_chunks(dataset, encode, fn_kwargs, datasets.Features({**features, **status}), work,
                                    entry.name, data_cfg.get("num_proc") or None)
        reasons = encoded.data.column("error_reason")
        usable = pc.equal(reasons, "").to_numpy(zero_copy_only=False)
        rejected: Counter = Counter()
        with (tmp / "rejects.jsonl").open("w", encoding="utf-8") as handle:
            for reject in _rejects(loaded, encoded, np.flatnonzero(~usable)):
                rejected[reject.reason] += 1
                handle.write(json_line(reject.to_json(), default=str) + "\n")
        kept = encoded if usable.all() else encoded.select(np.flatnonzero(usable))
        # One shard at least: datasets cannot load back an empty dataset saved as zero shards.
        kept.select_columns(list(features)).save_to_disk(str(tmp / "rows"), num_shards=None if len(kept) else 1)
        report = {"rows_read": len(dataset) + len(loaded.rejects), "rows_kept": int(usable.sum()),
                  "truncated": int(pc.sum(encoded.data.column("truncated")).as_py() or 0),
                  "rejected": dict(rejected)}
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        del encoded, kept
        shutil.rmtree(work)


def _encode_in_chunks(dataset: Any, encode: Callable[..., dict], fn_kwargs: dict, features: Any, work: Path,
                      fingerprint: str, num_proc: int | None) -> Any:
    """`dataset.map(encode)` a chunk of rows at a time (each chunk's own processes), so progress shows
    between chunks; the chunks are memory-mapped Arrow files in `work`, read back as one dataset."""
    import datasets

    rows = len(dataset)
    chunk_rows = max(TOKENISE_CHUNK_ROWS, -(-rows // TOKENISE_MAX_CHUNKS))
    chunks = []
    with progress("tokenising", rows) as bar:
        for index, start in enumerate(range(0, max(rows, 1), chunk_rows)):
            chunk = dataset.select(range(start, min(start + chunk_rows, rows)))
            # An explicit cache file keeps the encoded rows on disk even when the source is in memory.
            chunks.append(chunk.map(encode, fn_kwargs=fn_kwargs, num_proc=num_proc,
                                    remove_columns=dataset.column_names, features=features,
                                    cache_file_name=str(work / f"encoded-{index:05d}.arrow"),
                                    new_fingerprint=f"{fingerprint}-{index}"))
            bar.advance(len(chunk))
    return chunks[0] if len(chunks) == 1 else datasets.concatenate_datasets(chunks)


def _rejects(loaded: Loaded, encoded: Any, bad: Any) -> Iterator[Reject]:
    """The source's unparsable rows, then each row whose encoding failed (read one at a time)."""
    yield from loaded.rejects
    for index in map(int, bad):
        item = encoded[index]
        yield Reject(loaded.row_file(index), loaded.row_number(index), item["error_field"], item["error_reason"],
                     item["error_detail"], row_dict(loaded.dataset[index]))
