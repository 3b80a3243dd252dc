"""Data-mix semantics: how much of each source a mix takes, and which rows.

How much. A source says it explicitly with `rows: N` (a row count) or `fraction: f` (a share of its
rows), or with a bare number (`path: number`, or `take: number`) read by the reference mixer's rule
(open-instruct's `get_datasets`, which the Tulu 3 recipe used): if any bare number of the mix is
above 1, the bare numbers are row counts and must all be integers; otherwise they are fractions, so
`1` (like `1.0`) means every row. Explicit forms take no part in that rule, so a mix may combine them.

Which rows. As in the reference: the source's rows are shuffled with a seeded permutation (numpy's
`default_rng(seed).permutation`, which is what `datasets.Dataset.shuffle(seed=...)` draws; the mix seed
is 42 by default, the reference's fixed seed) and the first N are taken, in shuffled order. A mix built
from the same sources therefore selects the same rows as the reference whenever no row of the source is
rejected or de-duplicated (the permutation runs over the rows that remain). Each source is shuffled on
its own, so adding a source does not change what is drawn from the others.

Where the project deliberately differs: the reference mixer could not upsample (a count above the rows
available fails there, and fractions above 1 are refused). Here a count above the rows available, or a
fraction above 1, takes the whole permutation as often as it fits and then its first rows, e.g. to
repeat a small source on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tulu_cli.curate.schemas import FORMATS

TAKE_KEYS = ("take", "rows", "fraction")


class MixError(ValueError):
    """A data-mix config that cannot be used."""


@dataclass
class SourceSpec:
    """One source of a mix: where to read it and how much of it to take (`take_mode` rows or fraction)."""

    name: str
    path: str
    take: float | int
    take_mode: str = "fraction"
    split: str = "train"
    config: str | None = None
    revision: str | None = None
    format: str = "auto"
    max_rows: int | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "split": self.split, "config": self.config,
                "revision": self.revision, "format": self.format, "max_rows": self.max_rows,
                "take": self.take, "take_mode": self.take_mode}


def _number(name: str, key: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MixError(f"source {name!r}: {key} must be a number, got {value!r}")
    if value < 0:
        raise MixError(f"source {name!r}: {key} must not be negative, got {value}")
    return value


def bare_number_modes(values: dict[str, float | int]) -> dict[str, str]:
    """The reference rule for bare numbers: each source's mode, `rows` or `fraction`."""
    if not any(value > 1 for value in values.values()):
        return dict.fromkeys(values, "fraction")
    floats = sorted(name for name, value in values.items() if not isinstance(value, int))
    if floats:
        raise MixError(f"a bare number above 1 makes every bare number of the mix a row count, as in the reference "
                       f"mixer, but {floats} are not integers: write `rows: N` or `fraction: f` to mix them")
    return dict.fromkeys(values, "rows")


def _take(name: str, value: dict) -> tuple[str | None, float | int]:
    """(explicit mode or None for a bare number, the number) of one source mapping."""
    given = [key for key in TAKE_KEYS if key in value]
    if len(given) > 1:
        raise MixError(f"source {name!r}: give one of take, rows, fraction (got {given})")
    if not given:
        return None, 1
    key = given[0]
    number = _number(name, key, value[key])
    if key == "rows" and not isinstance(number, int):
        raise MixError(f"source {name!r}: rows must be an integer, got {number!r}")
    return (None if key == "take" else key), number


def parse_sources(sources: dict[str, Any]) -> list[SourceSpec]:
    """Mix sources from config: `name: {path, rows | fraction | take, ...}`, or `path: number`."""
    if not sources:
        raise MixError("a mix needs at least one source")
    specs, bare = [], {}
    for name, value in sources.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = {"path": name, "take": value}
        if not isinstance(value, dict):
            raise MixError(f"source {name!r}: expected a mapping with path and rows/fraction/take, or a number")
        value = dict(value)
        unknown = set(value) - {"path", *TAKE_KEYS, "split", "config", "revision", "format", "max_rows"}
        if unknown:
            raise MixError(f"source {name!r}: unknown keys {sorted(unknown)}")
        fmt = value.get("format") or "auto"
        if fmt not in FORMATS:
            raise MixError(f"source {name!r}: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
        mode, number = _take(str(name), value)
        if mode is None:
            bare[str(name)] = number
        specs.append(SourceSpec(
            name=str(name), path=str(value.get("path") or name), take=number, take_mode=mode or "fraction",
            split=value.get("split") or "train", config=value.get("config"), revision=value.get("revision"),
            format=fmt, max_rows=value.get("max_rows")))
    modes = bare_number_modes(bare)
    for spec in specs:
        spec.take_mode = modes.get(spec.name, spec.take_mode)
    return specs


def target_rows(take: float | int, take_mode: str, available: int) -> int:
    """How many rows a source contributes: the row count, or int(fraction * available)."""
    return int(take) if take_mode == "rows" else int(take * available)


def select(available: int, target: int, seed: int) -> list[int]:
    """Indices of the `target` rows drawn from a source of `available` rows: a seeded permutation's first
    rows, in that order (the whole permutation repeated first when `target` exceeds `available`)."""
    return select_indices(available, target, seed).tolist()


def select_indices(available: int, target: int, seed: int) -> np.ndarray:
    """`select` as an int64 array (8 bytes a row rather than a Python int each)."""
    if available == 0 or target <= 0:
        return np.zeros(0, dtype=np.int64)
    permutation = np.random.default_rng(seed).permutation(available).astype(np.int64)
    repeats, extra = divmod(target, available)
    return np.concatenate([np.tile(permutation, repeats), permutation[:extra]])
