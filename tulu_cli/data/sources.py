"""Reading a dataset: a `tulu curate` output directory, a folder or a local JSONL/JSON/Parquet/Arrow file,
or a hub id. Every stage reads its input files through `load_source`.

Local rows are streamed into an Arrow file in batches (never held as one Python list) with a schema that
fits every row, whatever the first row holds (see `arrow_rows`). A line that cannot be read (invalid
JSON, not UTF-8, not an object) is counted and set aside with its file and line number instead of
failing a million-row read (see `row_files`). A source that cannot be read at all, or holds no rows,
raises SourceError naming it, the file at fault and the cause.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tulu_cli.data.arrow_rows import batched, decode_row, write_rows
from tulu_cli.data.row_files import QUIET, ROW_FILE_SUFFIXES, ReadLog, Reject, RejectFile, file_rows
from tulu_cli.errors import StageError

LOCAL_SUFFIXES = ROW_FILE_SUFFIXES
CURATED_MANIFEST = "manifest.json"
# Part of the cache key of a streamed source: bump it when the stored layout changes.
CACHE_FORMAT = "tulu-rows/2"
# `owner/name` or `name`, as the hub spells repository ids; anything else can only be a local path.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")

__all__ = ["Loaded", "Reject", "SourceError", "is_local", "load_source", "row_dict"]


class SourceError(StageError):
    """A whole source could not be read."""


class RowLocator:
    """The file and row number of each dataset row, kept as runs of consecutive rows: its size grows with
    the number of files and of skipped lines, not with the number of rows."""

    def __init__(self, starts: list[int] | None = None, runs: list[tuple[str, int]] | None = None):
        self.starts = starts or []  # dataset index of the first row of each run
        self.runs = runs or []  # (file, row number) of the first row of each run
        self.size = 0
        self._last: tuple[str, int] | None = None

    def add(self, file: str, row: int) -> None:
        if self._last != (file, row - 1):
            self.starts.append(self.size)
            self.runs.append((file, row))
        self._last = (file, row)
        self.size += 1

    def add_file(self, file: str, rows: int) -> None:
        if rows:
            self.starts.append(self.size)
            self.runs.append((file, 1))
            self.size += rows
            self._last = (file, rows)

    def locate(self, index: int) -> tuple[str, int]:
        run = bisect.bisect_right(self.starts, index) - 1
        file, first = self.runs[run]
        return file, first + index - self.starts[run]

    def to_json(self) -> dict:
        return {"starts": self.starts, "runs": self.runs, "size": self.size}

    @classmethod
    def from_json(cls, data: dict) -> RowLocator:
        locator = cls(list(data["starts"]), [(file, row) for file, row in data["runs"]])
        locator.size = data["size"]
        return locator


@dataclass
class Loaded:
    dataset: Any  # datasets.Dataset, backed by Arrow
    # Rows set aside while reading (on disk for local row files, so a source of many bad rows costs no memory).
    rejects: list[Reject] | RejectFile = field(default_factory=list)
    # Where each row came from; None for a hub dataset (row numbers are then positions in the split).
    locator: RowLocator | None = None
    # What reading noticed besides the rejects, e.g. {"utf8_bom": 1}: files that began with a byte order mark.
    counts: Counter = field(default_factory=Counter)
    name: str = ""

    def row_number(self, index: int) -> int:
        """1-based position of dataset row `index` in its file (the line of a JSONL file)."""
        return self.locator.locate(index)[1] if self.locator is not None else index + 1

    def row_file(self, index: int) -> str:
        """The file dataset row `index` came from (the source's name for a hub dataset)."""
        return self.locator.locate(index)[0] if self.locator is not None else self.name


def row_dict(example: dict) -> dict:
    """A dataset row as it was in its file (undoes the JSON-text storage of mixed-type columns)."""
    return decode_row(example)


def is_local(path: str) -> bool:
    """Whether `path` names a local file or folder (existing or not) rather than a hub dataset."""
    candidate = Path(path).expanduser()
    if candidate.exists() or path.startswith((".", "/", "~")) or path.lower().endswith(LOCAL_SUFFIXES):
        return True
    if not HUB_ID.fullmatch(path):
        return True  # several folders, a backslash, a space: only a path is spelled like that
    # `data/train` where ./data is a folder here is a mistyped local path, not the hub's user `data`.
    return "/" in path and Path(path.split("/", 1)[0]).is_dir()


def load_source(path: str, split: str = "train", config: str | None = None, revision: str | None = None,
                max_rows: int | None = None) -> Loaded:
    """Load one source as an Arrow-backed `datasets.Dataset`, with the rows that could not be read."""
    path = str(path)
    local = is_local(path)
    try:
        if local:
            loaded = _load_local(path, Path(path).expanduser(), max_rows)
        else:
            loaded = _load_hub(path, split, config, revision)
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported with the source's name
        hint = "" if local else f" (and there is no local file or folder {path!r}{_suffix_hint(path)})"
        raise SourceError(f"cannot read source {path!r}: {type(exc).__name__}: {exc}{hint}") from exc
    if max_rows is not None and len(loaded.dataset) > max_rows:
        loaded.dataset = loaded.dataset.select(range(max_rows))
    if len(loaded.dataset) == 0:
        raise SourceError(_no_rows_message(path, loaded))
    return loaded


def _no_rows_message(path: str, loaded: Loaded) -> str:
    if not loaded.rejects:
        return f"source {path!r} holds no rows (an empty file?)"
    first = loaded.rejects[0]
    return (f"source {path!r} holds no readable rows: all {len(loaded.rejects)} were set aside "
            f"(first: {first.source} row {first.row}: {first.reason}: {first.detail})")


def _suffix_hint(path: str) -> str:
    found = [path + suffix for suffix in LOCAL_SUFFIXES if Path(path + suffix).expanduser().exists()]
    return f"; did you mean {found[0]!r}?" if found else ""


def _load_local(name: str, path: Path, max_rows: int | None) -> Loaded:
    if not path.exists():
        raise SourceError(f"cannot read source {name!r}: no such file or directory{_suffix_hint(name)}")
    files = _folder_files(name, path) if path.is_dir() else [path]
    if all(file.suffix.lower() in (".parquet", ".arrow") for file in files) and _same_schema(files):
        return _load_tables(name, files)
    return _load_streamed(name, files, max_rows)


def _row_files_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(file for file in folder.iterdir() if file.is_file() and not file.name.startswith(".")
                  and file.suffix.lower() in ROW_FILE_SUFFIXES)


def _folder_files(name: str, path: Path) -> list[Path]:
    """The row files of a folder: a `tulu curate` output's `data/*.parquet`, else every JSONL, JSON,
    Parquet and Arrow file in it (or in its `data/` folder), in name order."""
    if (path / CURATED_MANIFEST).is_file():
        files = sorted((path / "data").glob("*.parquet"))
    else:
        files = _row_files_in(path) or _row_files_in(path / "data")
    if not files:
        raise SourceError(f"cannot read source {name!r}: the folder holds no {', '.join(ROW_FILE_SUFFIXES)} files "
                          f"(a `tulu curate` output has {CURATED_MANIFEST} and data/*.parquet)")
    return files


def _file_error(name: str, file: Path, exc: BaseException) -> SourceError:
    where = "" if name == str(file) or Path(name).expanduser() == file else f" (file {str(file)!r})"
    return SourceError(f"cannot read source {name!r}{where}: {type(exc).__name__}: {exc}")


def _table_schema(file: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if file.suffix.lower() == ".parquet":
        return pq.read_schema(file).remove_metadata()
    with pa.memory_map(str(file)) as source:
        try:
            return pa.ipc.open_stream(source).schema.remove_metadata()
        except pa.ArrowInvalid:
            return None  # an Arrow IPC *file*: read row by row


def _same_schema(files: list[Path]) -> bool:
    schemas = []
    for file in files:
        try:
            schemas.append(_table_schema(file))
        except Exception:  # noqa: BLE001 - the streamed reader reports the file and the cause
            return False
    return schemas[0] is not None and all(schema == schemas[0] for schema in schemas)


def _load_tables(name: str, files: list[Path]) -> Loaded:
    """Parquet files, or Arrow stream files, that share one schema: read by `datasets` as they are."""
    import datasets

    locator = RowLocator()
    parts = []
    for file in files:
        try:
            if file.suffix.lower() == ".parquet":
                part = datasets.load_dataset("parquet", data_files=str(file), split="train")
            else:
                part = datasets.Dataset.from_file(str(file))
        except Exception as exc:  # noqa: BLE001 - named with its file
            raise _file_error(name, file, exc) from exc
        locator.add_file(str(file), len(part))
        parts.append(part)
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return Loaded(dataset, locator=locator, name=name)


def _cache_base(files: list[Path], max_rows: int | None) -> Path:
    """Where the Arrow copy of `files` is kept; the key changes when any file changes."""
    import datasets

    identity: list[Any] = [CACHE_FORMAT, max_rows]
    for file in files:
        stat = file.stat()
        identity.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino])
    key = hashlib.sha256(json.dumps(identity).encode("utf-8")).hexdigest()[:32]
    return Path(datasets.config.HF_DATASETS_CACHE) / "tulu_rows" / f"{files[0].stem}-{key}"


def _load_streamed(name: str, files: list[Path], max_rows: int | None) -> Loaded:
    """Row files streamed into one Arrow file (`write_rows`), kept in the datasets cache so that every
    rank and every later run reuses it."""
    import datasets

    base = _cache_base(files, max_rows)
    arrow, sidecar = base.with_suffix(".arrow"), base.with_suffix(".json")
    rejects_file = base.with_suffix(".rejects.jsonl")
    if not (arrow.is_file() and sidecar.is_file() and rejects_file.is_file()):
        base.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_rejects = tempfile.mkstemp(dir=base.parent, prefix=f".{base.name}.", suffix=".rejects.jsonl")
        os.close(fd)
        log, locator = ReadLog(RejectFile(Path(tmp_rejects))), RowLocator()
        reads = iter([(log, locator)])  # the first read records rejects and row places; a second repeats them

        def batches() -> Iterator[list[dict]]:
            read_log, read_locator = next(reads, (QUIET, None))
            return batched(_located_rows(name, files, read_log, read_locator, max_rows))

        fd, tmp = tempfile.mkstemp(dir=base.parent, prefix=f".{base.name}.", suffix=".arrow")
        os.close(fd)
        try:
            write_rows(Path(tmp), batches)
            log.rejects.close()
            os.replace(tmp, arrow)
            os.replace(tmp_rejects, rejects_file)
        finally:
            Path(tmp).unlink(missing_ok=True)
            Path(tmp_rejects).unlink(missing_ok=True)
        record = {"rejects": len(log.rejects), "counts": dict(log.counts), "locator": locator.to_json()}
        from tulu_cli.io import atomic_write_json

        atomic_write_json(sidecar, record)  # written last: the entry is complete once it is there
    record = json.loads(sidecar.read_text(encoding="utf-8"))
    return Loaded(datasets.Dataset.from_file(str(arrow)), RejectFile(rejects_file, record["rejects"]),
                  RowLocator.from_json(record["locator"]), Counter(record["counts"]), name)


def _located_rows(name: str, files: list[Path], log: ReadLog, locator: RowLocator | None,
                  max_rows: int | None) -> Iterator[dict]:
    """The rows of `files` in order (at most `max_rows`), recording where each came from."""
    left = max_rows
    for file in files:
        if left is not None and left <= 0:
            return
        try:
            for number, row in file_rows(file, log, left):
                if locator is not None:
                    locator.add(str(file), number)
                if left is not None:
                    left -= 1
                yield row
        except Exception as exc:  # noqa: BLE001 - any reader failure (FileError, OSError, Arrow) names its file
            raise _file_error(name, file, exc) from exc


def _load_hub(name: str, split: str, config: str | None, revision: str | None) -> Loaded:
    import datasets

    return Loaded(datasets.load_dataset(name, config, split=split, revision=revision), name=name)
