"""The evaluation-side n-gram index.

Each evaluation instance is normalised (see `normalize.py`) and cut into word n-grams. How depends on
the score the index serves (`SCORES`, defined in `match.py`):

- `token_coverage` (the Tulu 3 release's definition): each field of an instance (e.g. DROP's passage
  and its question) is a separate unit; a unit with fewer than `n` words has no n-grams and never
  matches. Every window of a unit is one occurrence, numbered globally so that the occurrences of one
  unit are consecutive and in text order; postings point at occurrences, which is what lets the
  matcher count the *words* a training turn covers.
- `ngram_fraction`: the fields are joined into one text; an instance with fewer than `n` words (but
  at least one) is one "n-gram" made of its whole text, of its own length. Postings point at
  instances, with the number of times the n-gram occurs there.

Every distinct word of the evaluation side gets an integer id (`vocab`); an n-gram is then
a row of ids. A training word missing from `vocab` cannot be part of any evaluation n-gram, which is
what lets the training side drop most windows without hashing them.

For each n-gram length `k` that occurs, a `GramTable` holds the distinct n-grams (as id rows), their
64-bit hashes in sorted order, and CSR postings: which instances contain the n-gram and how often.
A hash is only a fast filter: `match.py` confirms every hash hit by comparing the id rows, so hash
collisions (even a forced tiny hash range) cannot change any result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import xxhash
from numpy.lib.stride_tricks import sliding_window_view

from tulu_cli.decontam.normalize import normalize

__all__ = [
    "SCORES",
    "EvalIndex",
    "EvalInstance",
    "GramTable",
    "hash_windows",
    "iter_window_hashes",
    "token_hashes",
]

# Score definitions (see `match.py`); the first is the default.
SCORES = ("token_coverage", "ngram_fraction")

# Multiplier of the polynomial that combines token hashes into an n-gram hash (odd, 64-bit).
_POLY = np.uint64(0x9E3779B97F4A7C15)
# Applied to every n-gram hash; all ones in normal use. Narrowing it (tests do) forces collisions.
HASH_MASK = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class EvalInstance:
    """One evaluation prompt: `set_name` names the eval file or task, `id` the instance within it.

    `fields` holds the texts of the matched fields separately when there are several (scored one by
    one and averaged under `token_coverage`); `text` is them joined by newlines.
    """

    set_name: str
    id: str
    text: str
    fields: tuple[str, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        return self.fields or (self.text,)


@dataclass
class GramTable:
    """Distinct evaluation n-grams of one length `k`, sorted by hash, with CSR postings."""

    k: int
    hashes: np.ndarray  # uint64 [G], sorted; equal hashes are adjacent
    grams: np.ndarray  # int32 [G, k], word ids of each n-gram
    post_start: np.ndarray  # int64 [G + 1]; postings of gram g are post_start[g]:post_start[g + 1]
    post_inst: np.ndarray  # int32 [P], instance index (token_coverage: occurrence index)
    post_count: np.ndarray  # int32 [P], occurrences of the n-gram in that instance (token_coverage: 1)
    bits: np.ndarray  # uint8 bitmap over the low hash bits: a clear bit means "no n-gram has this hash"
    bits_mask: int  # low-bit mask selecting a bit of `bits`

    def maybe_contains(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask of the hashes that may be in the table (no false negatives)."""
        slot = hashes & np.uint64(self.bits_mask)
        byte = self.bits[(slot >> np.uint64(3)).astype(np.intp)]
        return ((byte >> (slot & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)


def token_hashes(vocab_words: list[str]) -> np.ndarray:
    """A 64-bit xxh3 hash per vocabulary word (uint64 [V])."""
    return np.fromiter(
        (xxhash.xxh3_64_intdigest(word.encode("utf-8")) for word in vocab_words),
        dtype=np.uint64,
        count=len(vocab_words),
    )


def iter_window_hashes(tok: np.ndarray, max_k: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(k, hashes)` for k = 1..max_k: the hash of every length-k window of `tok`.

    `tok` is a uint64 sequence of token hashes; `hashes[i]` covers `tok[i:i + k]`. The hash is the
    polynomial (((t0 * P + t1) * P + t2) ...) modulo 2**64, masked with `HASH_MASK`; each length is
    one multiply-add over the previous one. `_gram_hashes` computes the same value for index rows.
    """
    mask = np.uint64(HASH_MASK)
    h = tok.copy()
    for k in range(1, max_k + 1):
        m = tok.shape[0] - k + 1
        if m <= 0:
            return
        if k > 1:
            h = h[:m] * _POLY
            h += tok[k - 1 : k - 1 + m]
        yield k, h & mask


def hash_windows(tok: np.ndarray, k: int) -> np.ndarray:
    """Hashes of all length-`k` windows of the token-hash sequence `tok` (uint64 [len - k + 1])."""
    for length, hashes in iter_window_hashes(tok, k):
        if length == k:
            return hashes
    return np.empty(0, dtype=np.uint64)


def _gram_hashes(grams: np.ndarray, token_hash: np.ndarray) -> np.ndarray:
    """Hash each row of an id matrix [G, k] exactly as `hash_windows` hashes a window."""
    tok = token_hash[grams]
    h = tok[:, 0].copy()
    for j in range(1, grams.shape[1]):
        h *= _POLY
        h += tok[:, j]
    return h & np.uint64(HASH_MASK)


@dataclass
class EvalIndex:
    """Everything the matcher needs about the evaluation side; build it with `EvalIndex.build`."""

    n: int
    instances: list[EvalInstance]
    vocab: dict[str, int]
    token_hash: np.ndarray  # uint64 [V]
    tables: dict[int, GramTable]  # keyed by n-gram length: `n`, plus the lengths of short instances
    total: np.ndarray  # int64 [E], number of n-gram occurrences of each instance (0: never matches)
    exact: dict[str, int] = field(default_factory=dict)  # normalised prompt -> first instance index
    score: str = SCORES[0]
    # token_coverage only: the unit (instance field) of each occurrence, each unit's length in words
    # and instance, and each instance's number of fields
    occ_unit: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    unit_len: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    unit_inst: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    inst_fields: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def vocab_array(self) -> pa.Array:
        """The vocabulary as an Arrow string array (position = word id), for vectorised lookups."""
        if self._vocab_array is None:
            self._vocab_array = pa.array(list(self.vocab), type=pa.string())
        return self._vocab_array

    _vocab_array: pa.Array | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, instances: list[EvalInstance], n: int = 8, score: str = SCORES[0]) -> EvalIndex:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        instances = list(instances)
        if score == "token_coverage":
            return cls._build_coverage(instances, n)
        vocab: dict[str, int] = {}
        exact: dict[str, int] = {}
        flat: list[int] = []  # word ids of all instances, each followed by -1
        starts = np.zeros(len(instances), dtype=np.int64)
        lengths = np.zeros(len(instances), dtype=np.int64)
        for inst_idx, inst in enumerate(instances):
            text = normalize(inst.text)
            starts[inst_idx] = len(flat)
            if text:
                exact.setdefault(text, inst_idx)
                ids = [vocab.setdefault(word, len(vocab)) for word in text.split()]
                lengths[inst_idx] = len(ids)
                flat += ids
            flat.append(-1)
        ids_arr = np.array(flat, dtype=np.int32)
        token_hash = token_hashes(list(vocab))
        total = np.zeros(len(instances), dtype=np.int64)
        tables: dict[int, GramTable] = {}

        # instances of >= n words: every window of n words inside the instance
        long_inst = np.flatnonzero(lengths >= n)
        if long_inst.size:
            per_inst = lengths[long_inst] - n + 1
            pos = np.repeat(starts[long_inst] - (np.cumsum(per_inst) - per_inst), per_inst)
            pos += np.arange(int(per_inst.sum()), dtype=np.int64)
            tables[n] = _build_table(
                sliding_window_view(ids_arr, n)[pos],
                np.repeat(long_inst, per_inst),
                len(instances),
                token_hash,
            )
            total[long_inst] = per_inst
        # instances of 1..n-1 words: the whole instance, grouped by length
        for k in sorted(set(lengths[(lengths > 0) & (lengths < n)].tolist())):
            short_inst = np.flatnonzero(lengths == k)
            grams = sliding_window_view(ids_arr, k)[starts[short_inst]]
            tables[k] = _build_table(grams, short_inst, len(instances), token_hash)
            total[short_inst] = 1
        return cls(
            n=n,
            instances=instances,
            vocab=vocab,
            token_hash=token_hash,
            tables=dict(sorted(tables.items())),
            total=total,
            exact=exact,
            score="ngram_fraction",
        )

    @classmethod
    def _build_coverage(cls, instances: list[EvalInstance], n: int) -> EvalIndex:
        vocab: dict[str, int] = {}
        exact: dict[str, int] = {}
        flat: list[int] = []  # word ids of all units, each followed by -1
        unit_inst: list[int] = []
        unit_start: list[int] = []
        unit_len: list[int] = []
        inst_fields = np.zeros(len(instances), dtype=np.int64)
        for inst_idx, inst in enumerate(instances):
            text = normalize(inst.text)
            if text:
                exact.setdefault(text, inst_idx)
            inst_fields[inst_idx] = len(inst.parts)
            for part in inst.parts:
                ids = [vocab.setdefault(word, len(vocab)) for word in normalize(part).split()]
                unit_inst.append(inst_idx)
                unit_start.append(len(flat))
                unit_len.append(len(ids))
                flat += ids
                flat.append(-1)
        ids_arr = np.array(flat, dtype=np.int32)
        token_hash = token_hashes(list(vocab))
        lengths = np.array(unit_len, dtype=np.int64)
        starts = np.array(unit_start, dtype=np.int64)
        windows = np.maximum(lengths - n + 1, 0)
        occ_unit = np.repeat(np.arange(lengths.shape[0], dtype=np.int32), windows)
        tables: dict[int, GramTable] = {}
        if occ_unit.size:
            occ_first = np.cumsum(windows) - windows
            pos = np.repeat(starts - occ_first, windows) + np.arange(occ_unit.shape[0], dtype=np.int64)
            occurrences = np.arange(occ_unit.shape[0], dtype=np.int64)
            tables[n] = _build_table(sliding_window_view(ids_arr, n)[pos], occurrences, occ_unit.shape[0],
                                     token_hash)
        total = np.zeros(len(instances), dtype=np.int64)
        np.add.at(total, np.array(unit_inst, dtype=np.int64), windows)
        return cls(
            n=n,
            instances=instances,
            vocab=vocab,
            token_hash=token_hash,
            tables=tables,
            total=total,
            exact=exact,
            score="token_coverage",
            occ_unit=occ_unit,
            unit_len=lengths,
            unit_inst=np.array(unit_inst, dtype=np.int64),
            inst_fields=inst_fields,
        )


def _build_table(grams: np.ndarray, inst: np.ndarray, n_inst: int, token_hash: np.ndarray) -> GramTable:
    """Table from n-gram occurrences: `grams` [M, k] word ids, `inst` [M] the instance of each."""
    k = grams.shape[1]
    distinct, gram_of = np.unique(grams, axis=0, return_inverse=True)
    gram_of = gram_of.reshape(-1)
    hashes = _gram_hashes(distinct, token_hash)
    order = np.argsort(hashes, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    # postings: (gram, instance) pairs with their counts, sorted by gram in hash order
    pair, count = np.unique(rank[gram_of] * np.int64(n_inst) + inst, return_counts=True)
    post_gram = pair // n_inst
    post_start = np.zeros(distinct.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(post_gram, minlength=distinct.shape[0]), out=post_start[1:])
    sorted_hashes = hashes[order]
    bits_log2 = min(max(int(distinct.shape[0]).bit_length() + 6, 12), 28)
    bits = np.zeros(1 << (bits_log2 - 3), dtype=np.uint8)
    slot = sorted_hashes & np.uint64((1 << bits_log2) - 1)
    np.bitwise_or.at(
        bits, (slot >> np.uint64(3)).astype(np.intp), np.left_shift(1, slot & np.uint64(7)).astype(np.uint8)
    )
    return GramTable(
        k=k,
        hashes=sorted_hashes,
        grams=np.ascontiguousarray(distinct[order], dtype=np.int32),
        post_start=post_start,
        post_inst=(pair % n_inst).astype(np.int32),
        post_count=count.astype(np.int32),
        bits=bits,
        bits_mask=(1 << bits_log2) - 1,
    )
