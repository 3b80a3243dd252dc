"""Personas for prompt synthesis: from a local file (JSONL/JSON/Parquet, a curate output directory) or a hub
dataset such as PersonaHub, one persona description per row in a configured field.

A row without a non-empty string in that field is set aside (file, row, field, reason); an exact repeat of
an earlier persona is set aside as a duplicate. `take` draws a seeded sample (a number read as a data mix
reads a bare number: above 1 an integer row count, otherwise a fraction; at most all of them) in file order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import xxhash

from tulu_cli.curate.mixing import MixError, bare_number_modes, select_indices, target_rows
from tulu_cli.data.sources import Loaded, SourceError, load_source, row_dict
from tulu_cli.errors import StageError

# Personas read at a time when all of them are walked in order.
READ_ROWS = 1024


@dataclass(frozen=True)
class Persona:
    id: str
    text: str


class PersonaSet:
    """The chosen personas in file order, read from the (Arrow-backed) source a slice at a time: only the
    dataset indices of the chosen rows are held."""

    def __init__(self, loaded: Loaded, rows: np.ndarray, field: str, id_field: str):
        self.loaded, self.rows, self.field, self.id_field = loaded, rows, field, id_field

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, start: int, stop: int) -> list[Persona]:
        personas = []
        for index in self.rows[start:stop].tolist():
            row = row_dict(self.loaded.dataset[index])
            row_id = row.get(self.id_field)
            number = self.loaded.row_number(index)
            personas.append(Persona(str(row_id) if row_id is not None else f"persona-{number}", row[self.field].strip()))
        return personas

    def __iter__(self) -> Iterator[Persona]:
        for start in range(0, len(self), READ_ROWS):
            yield from self.read(start, start + READ_ROWS)


# Why a persona row is set aside (none: it is usable).
USABLE, MISSING, BAD, DUPLICATE = 0, 1, 2, 3


def load_personas(cfg: dict, seed: int, set_aside: Callable[[dict], None]) -> PersonaSet:
    """The personas of the `personas` config block; each row set aside goes to `set_aside`.

    Keys: path, field, id_field, take, split, config, revision, max_rows.
    """
    unknown = set(cfg) - {"path", "field", "id_field", "take", "split", "config", "revision", "max_rows"}
    if unknown:
        raise StageError(f"personas: unknown keys {sorted(unknown)}")
    if not cfg.get("path"):
        raise StageError("personas.path (a persona file or hub dataset) is required")
    path, field, id_field = (
        str(cfg["path"]),
        str(cfg.get("field") or "persona"),
        str(cfg.get("id_field") or "id"),
    )
    try:
        loaded = load_source(
            path, cfg.get("split") or "train", cfg.get("config"), cfg.get("revision"), cfg.get("max_rows")
        )
    except SourceError as exc:
        raise StageError(f"personas: {exc}") from None
    for bad in loaded.rejects:
        set_aside({"stage": "personas", **bad.to_json(), "file": path})

    def reject(index: int, reason: str, detail: str) -> None:
        set_aside({"stage": "personas", "file": path, "row": loaded.row_number(index), "field": field,
                   "reason": reason, "detail": detail, "raw": row_dict(loaded.dataset[index])})

    # A 128-bit digest of each usable persona's text: repeats are found among the digests, not the texts.
    # Rows set aside are written in row order once the repeats are known: a byte a row says why.
    digests = np.zeros((len(loaded.dataset), 2), np.uint64)
    why = np.zeros(len(loaded.dataset), np.int8)
    for index, example in enumerate(loaded.dataset):
        text = row_dict(example).get(field)
        if text is None:
            why[index] = MISSING
        elif not isinstance(text, str) or not text.strip():
            why[index] = BAD
        else:
            digests[index] = np.frombuffer(xxhash.xxh3_128_digest(text.strip().encode("utf-8")), np.uint64)
    candidates = np.flatnonzero(why == USABLE)
    _, first, inverse = np.unique(digests[candidates], axis=0, return_index=True, return_inverse=True)
    first_of = candidates[first][inverse.ravel()]
    why[candidates[first_of != candidates]] = DUPLICATE
    for index in map(int, np.flatnonzero(why)):
        if why[index] == DUPLICATE:
            original = int(first_of[np.searchsorted(candidates, index)])
            reject(index, "duplicate", f"same persona as row {loaded.row_number(original)}")
        else:
            reject(index, "missing_field" if why[index] == MISSING else "bad_persona",
                   f"expected a non-empty string in {field!r}")
    rows = candidates[first_of == candidates]
    take = cfg.get("take")
    if take is not None:
        if isinstance(take, bool) or not isinstance(take, (int, float)) or take < 0:
            raise StageError(f"personas.take must be a row count (int) or a fraction (float), got {take!r}")
        try:
            mode = bare_number_modes({"personas": take})["personas"]
        except MixError as exc:
            raise StageError(f"personas.take: {exc}") from None
        # Never more than all: a persona repeated would only repeat its prompts.
        target = min(target_rows(take, mode, len(rows)), len(rows))
        rows = rows[np.sort(select_indices(len(rows), target, seed))]
    return PersonaSet(loaded, rows, field, id_field)
