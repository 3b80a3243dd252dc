"""The sharded, resumable work store: finished work is never paid for twice.

Each unit of work (one pool member's completions for one shard of prompts, or the judgements of one
shard) ends as `shard-NNNNN.jsonl`, written atomically: a shard file that exists is complete. While a
shard is in progress, each finished API call is appended to `shard-NNNNN.calls.jsonl` (flushed and
synced), so a killed run re-sends only the calls that had not returned. A torn last line (the kill
landed mid-write) is ignored. Directories are keyed by a fingerprint of everything that determines
their content, so a changed setting starts new work instead of mixing old and new.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tulu_cli.errors import StageError
from tulu_cli.io import atomic_write_json, atomic_write_text, json_line

_CANONICAL = {"sort_keys": True, "separators": (",", ":"), "default": str}


def fingerprint(value: Any) -> str:
    """A short stable hash of a JSON-able value (key order does not matter)."""
    return hashlib.sha256(json_line(value, **_CANONICAL).encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Streamed:
    """A value of a `streamed_fingerprint` document given as its pieces: the items of a JSON array, or with
    `mapping` the (key, value) pairs of a JSON object in sorted key order."""

    items: Iterable
    mapping: bool = False


def streamed_fingerprint(document: dict[str, Any]) -> str:
    """`fingerprint(document)` with its `Streamed` values hashed a piece at a time as they are iterated, so a
    description of a million rows is never one string or one list. (A piece is escaped on its own where a
    string holds a lone surrogate, which `fingerprint` escapes for the whole text.)"""
    digest = hashlib.sha256()

    def put(text: str) -> None:
        digest.update(text.encode("utf-8"))

    put("{")
    for number, key in enumerate(sorted(document)):
        put(("," if number else "") + json_line(key) + ":")
        value = document[key]
        if not isinstance(value, Streamed):
            put(json_line(value, **_CANONICAL))
            continue
        put("{" if value.mapping else "[")
        for position, item in enumerate(value.items):
            put("," if position else "")
            if value.mapping:
                put(json_line(str(item[0])) + ":" + json_line(item[1], **_CANONICAL))
            else:
                put(json_line(item, **_CANONICAL))
        put("}" if value.mapping else "]")
    put("}")
    return digest.hexdigest()[:16]


def derived_seed(*parts) -> int:
    """A sampling seed derived from a run seed and the names of a piece of work (stable across runs)."""
    return int(fingerprint(parts), 16) % (2 ** 31)


class CallJournal:
    """Results of individual calls of an unfinished shard, keyed by request key."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, dict]:
        """The journaled results. A torn last line (a write cut off by a kill) is cut from the file, so
        the next append starts a line of its own instead of joining it and being lost; that call is
        simply made again. An unreadable line anywhere else is an error naming the line."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        complete = data[:data.rfind(b"\n") + 1]
        if len(complete) < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete))
        results = {}
        for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                entry = json.loads(line)
                results[entry["key"]] = entry["value"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise StageError(f"{self.path}, line {number}: not a journaled call ({line[:80]!r}); remove the "
                                 f"file to make this shard's calls again") from None
        return results

    def append(self, key: str, value: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json_line({"key": key, "value": value}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class ShardStore:
    """Finished shards of one kind of work under `root`, with `spec.json` saying what they are."""

    def __init__(self, root: Path, spec: dict):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "spec.json").exists():
            atomic_write_json(root / "spec.json", spec)

    def _file(self, shard: int) -> Path:
        return self.root / f"shard-{shard:05d}.jsonl"

    def done(self, shard: int) -> bool:
        return self._file(shard).exists()

    def read(self, shard: int) -> list[dict]:
        with self._file(shard).open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def write(self, shard: int, rows: list[dict]) -> None:
        atomic_write_text(self._file(shard), "".join(json_line(r) + "\n" for r in rows))
        self.journal(shard).path.unlink(missing_ok=True)

    def journal(self, shard: int) -> CallJournal:
        return CallJournal(self.root / f"shard-{shard:05d}.calls.jsonl")

    def count_done(self, shards: int) -> int:
        return sum(self.done(shard) for shard in range(shards))
