"""Matching training rows against an `EvalIndex`.

Definitions (both matchers below implement exactly these). Words are normalised with
`normalize.words`; an n-gram never spans two user turns. The index's `score` chooses the score of a
(training row, evaluation instance) pair:

- `token_coverage` (default; the Tulu 3 release's definition): for one user turn and one field of the
  instance, the fraction of the field's words that lie inside at least one of its n-grams also found
  in the turn; a field shorter than `n` words scores 0. The instance's score is the mean over its
  fields, and the row's is its best turn's. A row is contaminated when its best score is *above*
  the threshold (so threshold 0 flags any shared n-gram).
- `ngram_fraction`: the row's n-gram set is the union over its user turns; every occurrence of an
  evaluation instance shorter than `n` words inside a single turn also counts (see `index.py`). The
  score is the fraction of the instance's n-gram occurrences (counted with multiplicity) whose
  n-gram is in the row's set. A row is contaminated when its best score is positive and *at least*
  the threshold.

Either way the match is the instance with the best score, ties going to the instance listed first.
`mode="exact"`: a row matches an instance (score 1.0, always contaminated) when one of its normalised
user turns equals the instance's normalised prompt; empty texts never match.

`find_contamination` hashes every window of known words (numpy, per chunk of rows), looks the hashes
up in the index's sorted hash tables, and then confirms each hash hit by comparing word ids, so a
hash collision can neither add nor hide a match. `brute_force_contamination` is the plain reference.
Results come in the order of the training rows.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import chain, islice

import numpy as np
import pyarrow.compute as pc
from numpy.lib.stride_tricks import sliding_window_view

from tulu_cli.decontam.index import SCORES, EvalIndex, GramTable, iter_window_hashes
from tulu_cli.decontam.normalize import normalize, word_array, words
from tulu_cli.decontam.rows import user_turns

__all__ = ["Match", "TrainRow", "brute_force_contamination", "find_contamination", "user_turns"]

MODES = ("ngram", "exact")
CHUNK_ROWS = 4096


@dataclass
class TrainRow:
    """One training row: where it comes from, its id there, and its user turns."""

    source: str
    id: str
    texts: list[str]


@dataclass(frozen=True)
class Match:
    """A contaminated training row and the evaluation instance it overlaps most."""

    train_source: str
    train_id: str
    eval_set: str
    eval_id: str
    score: float


def check_settings(threshold: float, mode: str | None, score: str) -> None:
    """Raise ValueError unless mode, score and threshold are valid together."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if score == "token_coverage" and not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1) with score token_coverage (a row is flagged when its "
                         f"score is above it), got {threshold}")
    if score == "ngram_fraction" and not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1] with score ngram_fraction, got {threshold}")


def flagged(score: float, threshold: float, score_name: str) -> bool:
    """Whether a best score marks a row contaminated under the named score definition."""
    return score > threshold if score_name == "token_coverage" else score > 0.0 and score >= threshold


def _expand_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate the integer ranges [starts[i], starts[i] + lengths[i]) into one array."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def _chunk_word_ids(rows: list[TrainRow], index: EvalIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Word ids of all turns of `rows` as one flat array, each turn's start in it, and each turn's row.

    Words outside the evaluation vocabulary get -1, and a -1 follows every turn, so no window of
    known words spans two turns or two rows. The vocabulary lookup runs in Arrow.
    """
    texts = [row.texts for row in rows]
    turns = list(chain.from_iterable(texts))
    turn_row = np.repeat(np.arange(len(rows), dtype=np.int64), np.fromiter(map(len, texts), np.int64, len(rows)))
    word_arr, turn_start = word_array(turns)
    vocab = index.vocab_array if word_arr.type == index.vocab_array.type else index.vocab_array.cast(word_arr.type)
    found = pc.index_in(word_arr, value_set=vocab).fill_null(-1)
    ids = found.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return ids, turn_start, turn_row


def _gram_hits(ids: np.ndarray, index: EvalIndex) -> Iterator[tuple[GramTable, np.ndarray, np.ndarray]]:
    """Per n-gram table: (table, window start, table row) of every window equal to an index n-gram."""
    unknown = ids < 0
    tok = index.token_hash[np.where(unknown, 0, ids)]
    bad_cum = np.zeros(ids.shape[0] + 1, dtype=np.int64)
    np.cumsum(unknown, out=bad_cum[1:])
    for k, hashes in iter_window_hashes(tok, max(index.tables)):
        table = index.tables.get(k)
        if table is None:
            continue
        m = hashes.shape[0]
        pos = np.flatnonzero(bad_cum[k : k + m] == bad_cum[:m])  # windows made only of known words
        hv = hashes[pos]
        maybe = table.maybe_contains(hv)
        pos, hv = pos[maybe], hv[maybe]
        n_grams = table.hashes.shape[0]
        lo = np.searchsorted(table.hashes, hv)
        hit = table.hashes[np.minimum(lo, n_grams - 1)] == hv
        pos, lo, hv = pos[hit], lo[hit], hv[hit]
        if pos.size == 0:
            continue
        # every index n-gram sharing the window's hash is a candidate; keep those equal word for word
        span = np.searchsorted(table.hashes, hv, side="right") - lo
        cand_pos = np.repeat(pos, span)
        cand_gram = _expand_ranges(lo, span)
        same = (sliding_window_view(ids, k)[cand_pos] == table.grams[cand_gram]).all(axis=1)
        if same.any():
            yield table, cand_pos[same], cand_gram[same]


def _postings(table: GramTable, owner: np.ndarray, gram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (owner, gram) pairs expanded to their postings: (owner, posting target, count)."""
    n_grams = table.hashes.shape[0]
    pair = np.unique(owner * np.int64(n_grams) + gram)
    owner, gram = pair // n_grams, pair % n_grams
    n_post = table.post_start[gram + 1] - table.post_start[gram]
    post = _expand_ranges(table.post_start[gram], n_post)
    return np.repeat(owner, n_post), table.post_inst[post].astype(np.int64), table.post_count[post]


def _best_per_row(row: np.ndarray, inst: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.lexsort((inst, -score, row))
    row, inst, score = row[order], inst[order], score[order]
    first = np.ones(row.shape[0], dtype=bool)
    first[1:] = row[1:] != row[:-1]
    return row[first], inst[first], score[first]


def _fraction_scores(ids, turn_start, turn_row, index: EvalIndex) -> tuple[np.ndarray, ...]:
    """`ngram_fraction`: (row, instance, score) of every pair sharing an n-gram."""
    row_of_word = np.repeat(turn_row, np.diff(turn_start))
    n_inst = np.int64(len(index.instances))
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for table, pos, gram in _gram_hits(ids, index):
        row, inst, count = _postings(table, row_of_word[pos], gram)  # the row's n-gram *set*
        keys.append(row * n_inst + inst)
        counts.append(count)
    if not keys:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    key, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    matched = np.bincount(inverse, weights=np.concatenate(counts).astype(np.float64))
    inst = key % n_inst
    return key // n_inst, inst, matched / index.total[inst]


def _coverage_scores(ids, turn_start, turn_row, index: EvalIndex) -> tuple[np.ndarray, ...]:
    """`token_coverage`: (row, instance, score) of every (turn, instance) pair sharing an n-gram."""
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
    turn_of_word = np.repeat(np.arange(turn_row.shape[0], dtype=np.int64), np.diff(turn_start))
    n_occ = np.int64(index.occ_unit.shape[0])
    keys = [turn * n_occ + occ for table, pos, gram in _gram_hits(ids, index)
            for turn, occ, _ in [_postings(table, turn_of_word[pos], gram)]]
    if not keys:
        return empty
    key = np.sort(np.concatenate(keys))  # (turn, occurrence) pairs are distinct
    turn, occ = key // n_occ, key % n_occ
    unit = index.occ_unit[occ].astype(np.int64)
    # words covered by the matched windows of each (turn, unit): consecutive windows in text order
    # overlap by n - gap words, so each covers min(gap, n) new words and the last one n
    last = np.ones(key.shape[0], dtype=bool)
    last[:-1] = (turn[1:] != turn[:-1]) | (unit[1:] != unit[:-1])
    new_words = np.full(key.shape[0], index.n, dtype=np.int64)
    new_words[:-1] = np.where(last[:-1], index.n, np.minimum(occ[1:] - occ[:-1], index.n))
    group_start = np.flatnonzero(np.concatenate(([True], last[:-1])))
    covered = np.add.reduceat(new_words, group_start)
    g_turn, g_unit = turn[group_start], unit[group_start]
    unit_score = covered / index.unit_len[g_unit]
    n_inst = np.int64(len(index.instances))
    pair, inverse = np.unique(g_turn * n_inst + index.unit_inst[g_unit], return_inverse=True)
    inst = pair % n_inst
    score = np.bincount(inverse, weights=unit_score) / index.inst_fields[inst]
    return turn_row[pair // n_inst], inst, score


def _best_ngram_matches(rows: list[TrainRow], index: EvalIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row with any overlap: (row position, best instance, best score), rows ascending."""
    if not index.tables or not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
    ids, turn_start, turn_row = _chunk_word_ids(rows, index)
    scores = _coverage_scores if index.score == "token_coverage" else _fraction_scores
    return _best_per_row(*scores(ids, turn_start, turn_row, index))


def _match_chunk(rows: list[TrainRow], index: EvalIndex, threshold: float, mode: str) -> list[Match]:
    found: list[tuple[int, int, float]] = []
    if mode == "exact":
        for r, row in enumerate(rows):
            hits = [index.exact.get(normalize(text), -1) for text in row.texts]
            hits = [i for i in hits if i >= 0]
            if hits:
                found.append((r, min(hits), 1.0))
    else:
        best_row, best_inst, best_score = _best_ngram_matches(rows, index)
        found = [(r, i, score) for r, i, score in zip(best_row.tolist(), best_inst.tolist(),
                                                      best_score.tolist(), strict=True)
                 if flagged(score, threshold, index.score)]
    return [Match(rows[r].source, rows[r].id, index.instances[i].set_name, index.instances[i].id, score)
            for r, i, score in found]


def _chunks(rows: Iterable[TrainRow], size: int) -> Iterator[list[TrainRow]]:
    rows = iter(rows)
    while chunk := list(islice(rows, size)):
        yield chunk


_WORKER_STATE: tuple[EvalIndex, float, str] | None = None


def _worker_init(index: EvalIndex, threshold: float, mode: str) -> None:
    global _WORKER_STATE
    _WORKER_STATE = (index, threshold, mode)


def _worker_chunk(rows: list[TrainRow]) -> tuple[int, list[Match]]:
    assert _WORKER_STATE is not None
    return len(rows), _match_chunk(rows, *_WORKER_STATE)


def find_contamination(
    train_rows: Iterable[TrainRow],
    index: EvalIndex,
    *,
    threshold: float = 0.5,
    mode: str = "ngram",
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[Match]:
    """Contaminated training rows, in input order (see the module docstring for the definitions).

    `train_rows` is consumed as a stream, `chunk_rows` rows at a time; with `workers > 1` chunks are
    matched in worker processes, at most two chunks per worker in flight. `progress`, if given, is
    called with the number of rows of each finished chunk.
    """
    check_settings(threshold, mode, index.score)
    matches: list[Match] = []
    if workers <= 1:
        for chunk in _chunks(train_rows, chunk_rows):
            matches += _match_chunk(chunk, index, threshold, mode)
            if progress is not None:
                progress(len(chunk))
        return matches
    # A process pool that fails when a worker dies (killed, out of memory): `multiprocessing.Pool`
    # replaces the worker and never returns the chunk it held, so the match would wait forever.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    matched = 0
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_worker_init,
                                 initargs=(index, threshold, mode)) as pool:
            pending: deque = deque()

            def collect() -> None:
                nonlocal matched
                done, chunk_matches = pending.popleft().result()
                matched += done
                matches.extend(chunk_matches)
                if progress is not None:
                    progress(done)

            for chunk in _chunks(train_rows, chunk_rows):
                pending.append(pool.submit(_worker_chunk, chunk))
                while len(pending) > 2 * workers:
                    collect()
            while pending:
                collect()
    except BrokenProcessPool as exc:
        raise RuntimeError(f"a decontamination worker process died (killed, or out of memory?) after {matched} "
                           "rows were matched; run again, with fewer workers if memory was short") from exc
    return matches


def _brute_coverage(turns: list[list[str]], field_grams: list[list[list[tuple[str, ...]]]], n: int,
                    candidates: set[int]) -> tuple[int, float]:
    """Best (instance, score) under `token_coverage`: words covered per field, mean over fields, best turn."""
    best_i, best_score = -1, 0.0
    for ws in turns:
        turn_grams = {tuple(ws[start : start + n]) for start in range(len(ws) - n + 1)}
        for i in sorted(candidates):
            total = 0.0
            for grams in field_grams[i]:
                covered: set[int] = set()
                for start, gram in enumerate(grams):
                    if gram in turn_grams:
                        covered.update(range(start, start + n))
                if grams:
                    total += len(covered) / (len(grams) + n - 1)
            score = total / len(field_grams[i])
            if score > best_score or (score == best_score and best_i >= 0 and i < best_i):
                best_i, best_score = i, score
    return best_i, best_score


def brute_force_contamination(
    train_rows: Iterable[TrainRow],
    index: EvalIndex,
    *,
    threshold: float = 0.5,
    mode: str = "ngram",
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[Match]:
    """Reference matcher: the definitions written out with Python tuples and sets, one row at a time.

    Reads only `index.instances`, `index.n` and `index.score`; `workers` is accepted for signature
    compatibility.
    """
    check_settings(threshold, mode, index.score)
    n = index.n
    coverage = index.score == "token_coverage"
    eval_grams: list[list[tuple[str, ...]]] = []  # ngram_fraction: per instance, every n-gram occurrence
    field_grams: list[list[list[tuple[str, ...]]]] = []  # token_coverage: per instance and field
    eval_texts: list[str] = []
    for inst in index.instances:
        ws = words(inst.text)
        eval_texts.append(" ".join(ws))
        if coverage:
            parts = [words(part) for part in inst.parts]
            field_grams.append([[tuple(fw[i : i + n]) for i in range(len(fw) - n + 1)] for fw in parts])
            eval_grams.append([gram for grams in field_grams[-1] for gram in grams])
        elif len(ws) >= n:
            eval_grams.append([tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)])
        elif ws:
            eval_grams.append([tuple(ws)])
        else:
            eval_grams.append([])
    lengths = {len(grams[0]) for grams in eval_grams if grams}
    # instances containing each n-gram, so a row is only scored against instances it shares one with
    containing: dict[tuple[str, ...], set[int]] = {}
    for i, grams in enumerate(eval_grams):
        for gram in grams:
            containing.setdefault(gram, set()).add(i)

    matches: list[Match] = []
    for row in train_rows:
        best_i, best_score = -1, 0.0
        if mode == "exact":
            turns = {normalize(text) for text in row.texts}
            for i, text in enumerate(eval_texts):
                if text and text in turns:
                    best_i, best_score = i, 1.0
                    break
        else:
            row_grams: set[tuple[str, ...]] = set()
            turn_words = [words(text) for text in row.texts]
            for ws in turn_words:
                for k in lengths:
                    for start in range(len(ws) - k + 1):
                        row_grams.add(tuple(ws[start : start + k]))
            candidates: set[int] = set()
            for gram in row_grams:
                candidates |= containing.get(gram, set())
            if coverage:
                best_i, best_score = _brute_coverage(turn_words, field_grams, n, candidates)
            else:
                for i in sorted(candidates):
                    grams = eval_grams[i]
                    score = sum(1 for gram in grams if gram in row_grams) / len(grams)
                    if score > best_score:
                        best_i, best_score = i, score
        if best_i >= 0 and (mode == "exact" or flagged(best_score, threshold, index.score)):
            inst = index.instances[best_i]
            matches.append(Match(row.source, row.id, inst.set_name, inst.id, best_score))
        if progress is not None:
            progress(1)
    return matches
