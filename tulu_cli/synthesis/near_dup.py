"""Near-duplicate prompt removal: MinHash signatures over word n-gram shingles, LSH banding for candidates,
the exact Jaccard similarity of the shingle sets for the decision.

Texts are normalised with the decontamination normaliser (`tulu_cli.decontam.normalize.words`), so case,
punctuation and Unicode forms do not hide a duplicate. A text shorter than `ngram` words is one shingle.
Texts are taken in order; one whose Jaccard similarity with an earlier kept text reaches `threshold` is a
near duplicate of it. LSH only proposes candidates (a pair LSH misses is kept, never wrongly removed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xxhash

from tulu_cli.decontam.normalize import words

_LOW_61_BITS = np.uint64((1 << 61) - 1)


@dataclass(frozen=True)
class NearDupConfig:
    ngram: int = 5
    threshold: float = 0.7
    num_perm: int = 64
    bands: int = 16

    def __post_init__(self):
        if self.ngram < 1 or not 0.0 < self.threshold <= 1.0:
            raise ValueError(
                f"near_dup: ngram must be >= 1 and threshold in (0, 1], got {self.ngram}, {self.threshold}"
            )
        if self.num_perm < 1 or self.bands < 1 or self.num_perm % self.bands:
            raise ValueError(
                f"near_dup: num_perm ({self.num_perm}) must be a positive multiple of bands ({self.bands})"
            )


def shingles(text: str, ngram: int) -> frozenset[str]:
    tokens = words(text)
    if len(tokens) < ngram:
        return frozenset({" ".join(tokens)}) if tokens else frozenset()
    return frozenset(" ".join(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1))


def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0x7E1)  # fixed: signatures must not depend on anything but the text
    a = rng.integers(1, 1 << 61, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 61, size=num_perm, dtype=np.uint64)
    return a, b


def signature(shingle_set: frozenset[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signature: per permutation, the minimum over shingle hashes h of the low 61 bits of
    (a * h + b) mod 2^64."""
    if not shingle_set:
        return np.full(a.shape[0], np.iinfo(np.uint64).max, dtype=np.uint64)
    hashes = np.fromiter(
        (xxhash.xxh3_64_intdigest(s.encode("utf-8")) for s in sorted(shingle_set)),
        dtype=np.uint64,
        count=len(shingle_set),
    )
    with np.errstate(over="ignore"):
        permuted = (hashes[:, None] * a[None, :] + b[None, :]) & _LOW_61_BITS
    return permuted.min(axis=0)


def jaccard(first: frozenset[str], second: frozenset[str]) -> float:
    if not first and not second:
        return 1.0
    return len(first & second) / len(first | second)


def _band_keys(texts: Iterable[str], count: int, cfg: NearDupConfig) -> np.ndarray:
    """A 64-bit hash of each band of each text's MinHash signature: `count` x `bands`."""
    a, b = _permutations(cfg.num_perm)
    keys = np.empty((count, cfg.bands), np.uint64)
    for index, text in enumerate(texts):
        bands = signature(shingles(text, cfg.ngram), a, b).reshape(cfg.bands, -1)
        keys[index] = [xxhash.xxh3_64_intdigest(band.tobytes()) for band in bands]
    return keys


def _shared(keys: np.ndarray) -> np.ndarray:
    """Whether each text's band key is also another text's, per band."""
    shared = np.zeros(keys.shape, bool)
    for band in range(keys.shape[1]):
        _, inverse, counts = np.unique(keys[:, band], return_inverse=True, return_counts=True)
        shared[:, band] = counts[inverse.ravel()] > 1
    return shared


def near_duplicates(texts: Sequence[str], cfg: NearDupConfig) -> Iterator[tuple[int, int, float]]:
    """(index, index of the earlier kept text it repeats, Jaccard) of each near-duplicate text, in order.

    One pass over `texts` hashes the bands; only texts that share a band key with another text can be or
    have a near duplicate, and only those enter the buckets. Their shingle sets are made again from
    `texts[i]` when compared (a few thousand cached), so memory holds the band keys, not the texts.
    """
    keys = _band_keys(texts, len(texts), cfg)
    shared = _shared(keys)

    @lru_cache(maxsize=4096)
    def shingles_of(index: int) -> frozenset[str]:
        return shingles(texts[index], cfg.ngram)

    buckets: list[dict[int, list[int]]] = [{} for _ in range(cfg.bands)]
    for index in np.flatnonzero(shared.any(axis=1)).tolist():
        bands = [(band, int(keys[index, band])) for band in np.flatnonzero(shared[index]).tolist()]
        candidates = sorted({kept for band, key in bands for kept in buckets[band].get(key, ())})
        best = max(((jaccard(shingles_of(index), shingles_of(kept)), -kept) for kept in candidates), default=None)
        if best is not None and best[0] >= cfg.threshold:
            yield index, -best[1], best[0]
            continue  # only kept texts enter the buckets: a duplicate is matched against what survives
        for band, key in bands:
            buckets[band].setdefault(key, []).append(index)
