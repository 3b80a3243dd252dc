"""Local row files read as a stream of rows: JSONL line by line, a JSON document element by element,
Parquet and Arrow batch by batch. Nothing holds a whole file in memory.

Bytes are decoded strictly: a line (or array element) that is not valid UTF-8 is set aside as a reject
naming the file, the line and the byte offset, never repaired with replacement characters. A UTF-8 byte
order mark at the start of a file is skipped and counted; a UTF-16/32 mark fails the file, since every
line of it would be unreadable. Row numbers are 1-based: the line of a JSONL file, the position of an
element in a JSON array, the row of a Parquet/Arrow file.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

JSONL_SUFFIXES = (".jsonl",)
ROW_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")
UTF8_BOM = b"\xef\xbb\xbf"
# Longest first: the UTF-32 little-endian mark starts with the UTF-16 one.
FOREIGN_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
RAW_LIMIT = 500
# A JSON escape of a UTF-16 surrogate: the only way a lone surrogate (which no UTF-8 file can hold)
# gets into a parsed row.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Characters Python's `surrogateescape` decoding puts where a byte was not UTF-8.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_JSON_CHUNK = 1 << 20
# A `.json` file whose first line is longer than this is taken for a document (not parsed whole to decide).
_FIRST_LINE_LIMIT = 1 << 24


class FileError(ValueError):
    """A whole file cannot be read (wrong encoding, broken JSON document, not a row file)."""


@dataclass
class Reject:
    """A row set aside: where it came from (file), which field was at fault, and why."""

    source: str
    row: int
    field: str
    reason: str
    detail: str
    raw: Any = None

    def to_json(self) -> dict:
        return {"source": self.source, "row": self.row, "field": self.field, "reason": self.reason,
                "detail": self.detail, "raw": self.raw}


class RejectFile:
    """Rejects kept on disk, one JSON object a line: appended, counted, iterated and indexed from the
    file, never held as a list (a file of a million bad lines has a million rejects)."""

    def __init__(self, path: Path, count: int = 0):
        self.path = Path(path)
        self.count = count
        self._handle: TextIO | None = None

    def append(self, reject: Reject) -> None:
        from tulu_cli.io import json_line

        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json_line(reject.to_json(), default=str) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.path.touch()

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Reject]:
        if not self.count:
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                yield Reject(**json.loads(line))

    def __getitem__(self, index: int) -> Reject:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return next(itertools.islice(iter(self), index, None))


@dataclass
class ReadLog:
    """What reading set aside (rejects, each with its reason; a `RejectFile` for a source of any size)
    and noticed besides (counts such as `utf8_bom`, the files that started with a UTF-8 byte order mark)."""

    rejects: list[Reject] | RejectFile = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def reject(self, file: Path, row: int, field_: str, reason: str, detail: str, raw: Any = None) -> None:
        self.rejects.append(Reject(str(file), row, field_, reason, detail, raw))


class _Quiet(ReadLog):
    """A log that keeps nothing: the second read of a file repeats what the first one recorded."""

    def reject(self, *args: Any, **kwargs: Any) -> None:
        pass


QUIET = _Quiet()


def file_rows(path: Path, log: ReadLog, max_rows: int | None = None) -> Iterator[tuple[int, dict]]:
    """(row number, row) of each usable row of `path`, in file order; bad rows go to `log`."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or (suffix == ".json" and looks_like_jsonl(path)):
        rows = jsonl_rows(path, log)
    elif suffix == ".json":
        rows = json_document_rows(path, log)
    elif suffix in (".parquet", ".arrow"):
        rows = table_rows(path)
    else:
        raise FileError(f"unknown file type (use one of {', '.join(ROW_FILE_SUFFIXES)})")
    for count, item in enumerate(rows, start=1):
        yield item
        if max_rows is not None and count >= max_rows:
            return


def _check_encoding(head: bytes, log: ReadLog) -> int:
    """Length of the byte order mark that `head` (the first bytes of a file) starts with."""
    for mark, encoding in FOREIGN_BOMS:
        if head.startswith(mark):
            raise FileError(f"the file is {encoding} encoded (byte order mark {mark.hex(' ')}); "
                            f"convert it to UTF-8")
    if head.startswith(UTF8_BOM):
        log.counts["utf8_bom"] += 1
        return len(UTF8_BOM)
    return 0


def looks_like_jsonl(path: Path) -> bool:
    """A `.json` file whose first line is a complete JSON object is JSON Lines, unless that line is the
    whole file and a `{"data": [...]}` document. A first line too long to be a row is taken for a
    document, read as a stream."""
    with path.open("rb") as handle:
        first = handle.readline(_FIRST_LINE_LIMIT + 1).removeprefix(UTF8_BOM).strip()
        if not first.startswith(b"{") or len(first) > _FIRST_LINE_LIMIT:
            return False
        try:
            row = json.loads(first)
        except (ValueError, RecursionError):
            return False
        return not isinstance(row.get("data"), list) or any(line.strip() for line in handle)


def _raw_text(data: bytes | str) -> str:
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    return text[:RAW_LIMIT]


def jsonl_rows(path: Path, log: ReadLog) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as handle:
        for number, data in enumerate(handle, start=1):
            if number == 1:
                data = data[_check_encoding(data, log):]
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                log.reject(path, number, "<line>", "invalid_utf8",
                           f"byte {exc.start} of the line is not UTF-8 ({exc.reason})", _raw_text(data))
                continue
            if not line.strip():
                continue
            row = _parse_row(path, number, line, log)
            if row is not None:
                yield number, row


def _parse_row(path: Path, number: int, text: str, log: ReadLog) -> dict | None:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        log.reject(path, number, "<line>", "unparsable_line", f"invalid JSON: {exc}", _raw_text(text))
        return None
    except RecursionError:
        log.reject(path, number, "<line>", "unparsable_line", "JSON nested too deeply", _raw_text(text))
        return None
    return _checked_row(path, number, row, text, log)


def _checked_row(path: Path, number: int, row: Any, text: str, log: ReadLog) -> dict | None:
    if not isinstance(row, dict):
        log.reject(path, number, "<line>", "unparsable_line",
                   f"a row must be a JSON object, got {type(row).__name__}", _raw_text(text))
        return None
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(row)
        if where is not None:
            log.reject(path, number, where, "invalid_unicode",
                       "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text", _raw_text(text))
            return None
    return row


def _lone_surrogate(value: Any, where: str = "") -> str | None:
    """The field path of the first string (or key) in `value` that cannot be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "<row>"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else str(key)
            found = _lone_surrogate(key, inner) or _lone_surrogate(item, inner)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None


class _JsonText:
    """A text file read in chunks, parsed one JSON value at a time (`json.JSONDecoder.raw_decode`)."""

    def __init__(self, handle: TextIO):
        self.handle = handle
        self.text = ""
        self.pos = 0
        self.eof = False
        self.chunk = _JSON_CHUNK

    def _more(self) -> bool:
        if self.eof:
            return False
        data = self.handle.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.text = self.text[self.pos:] + data
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.text) or not self._more():
                return self.text[self.pos:self.pos + 1]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {char!r}")
        self.pos += 1

    def value(self) -> tuple[Any, str]:
        """The next JSON value and its text. A value that reaches the end of the text read so far may be
        cut short (a number), so it is only taken once a character follows it or the file has ended."""
        self.peek()
        decoder = json.JSONDecoder()
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as exc:
                # Only an error at the end of the text read so far (or inside a string that runs past
                # it) may be a value cut short by the chunk boundary.
                cut = exc.pos >= len(self.text) - 8 or exc.msg.startswith("Unterminated string")
                if cut and self._more():
                    self.chunk *= 2  # a long value: read further ahead rather than re-parse it many times
                    continue
                self.pos = exc.pos
                raise self.error(exc.msg) from None
            except RecursionError:
                raise self.error("JSON nested too deeply") from None
            if end < len(self.text) or not self._more():
                self.chunk = _JSON_CHUNK
                text, self.pos = self.text[self.pos:end], end
                return value, text

    def error(self, message: str) -> FileError:
        return FileError(f"invalid JSON document: {message} (near {self.text[self.pos:self.pos + 40]!r})")


def json_document_rows(path: Path, log: ReadLog) -> Iterator[tuple[int, dict]]:
    """Rows of a JSON document: a list of rows, or an object whose `data` member is that list."""
    with path.open("rb") as handle:
        bom = _check_encoding(handle.read(4), log)
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        handle.read(1 if bom else 0)
        reader = _JsonText(handle)
        start = reader.peek()
        if start == "{":
            reader.pos += 1
            if not _seek_data_member(reader):
                raise FileError("a JSON document must be a list of rows or an object with a `data` list")
        elif start != "[":
            raise FileError("a JSON document must be a list of rows or an object with a `data` list")
        yield from _array_rows(path, reader, log)
        if start == "{":
            _seek_data_member(reader)
            reader.expect("}")
        if reader.peek():
            raise reader.error("more follows the end of the document (JSON Lines? name the file .jsonl)")


def _seek_data_member(reader: _JsonText) -> bool:
    """Move past the members of an object up to the `[` of its `data` member (True), or to its `}`."""
    while reader.peek() not in ("}", ""):
        if reader.peek() == ",":
            reader.pos += 1
        key, _ = reader.value()
        reader.expect(":")
        if key == "data" and reader.peek() == "[":
            return True
        reader.value()
    return False


def _array_rows(path: Path, reader: _JsonText, log: ReadLog) -> Iterator[tuple[int, dict]]:
    reader.expect("[")
    if reader.peek() == "]":
        reader.pos += 1
        return
    number = 0
    while True:
        number += 1
        try:
            value, text = reader.value()
        except FileError as exc:
            raise FileError(f"row {number}: {exc}") from None
        if _UNDECODABLE.search(text):
            log.reject(path, number, "<row>", "invalid_utf8", "holds bytes that are not UTF-8",
                       _raw_text(text.encode("utf-8", "surrogateescape")))
        else:
            row = _checked_row(path, number, value, text, log)
            if row is not None:
                yield number, row
        if reader.peek() == "]":
            reader.pos += 1
            return
        reader.expect(",")


def table_rows(path: Path, batch_size: int = 1000) -> Iterator[tuple[int, dict]]:
    """Rows of a Parquet file or an Arrow stream/file, a batch at a time."""
    number = 0
    for batch in _table_batches(path, batch_size):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _table_batches(path: Path, batch_size: int) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)
        return
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            file_reader = pa.ipc.open_file(source)
            for index in range(file_reader.num_record_batches):
                yield file_reader.get_batch(index)
            return
        yield from reader
