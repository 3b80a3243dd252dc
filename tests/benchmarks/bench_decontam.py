"""Decontamination benchmark: synthetic training prompts against synthetic evaluation prompts.

Run with `make bench` or `pytest tests/benchmarks/bench_decontam.py -m bench -s`. Sizes (env vars):

- TULU_BENCH_TRAIN_ROWS   training rows (default 1,000,000; ~30-80 words, some rows with two turns)
- TULU_BENCH_EVAL_ROWS    evaluation prompts (default 20,000)
- TULU_BENCH_ORACLE_ROWS  leading rows also checked by the independent matchers (default 100,000)
- TULU_BENCH_WORKERS      worker processes for the full run (default 2)

Scores are the default `token_coverage` (the Tulu 3 release's definition). Planted contaminations
(copies, copies with changed case and punctuation, prompts embedded in a longer turn or in a second
turn, prompts with two words replaced) must all be found above threshold 0.5; planted near misses
(the first quarter of a prompt kept, the rest rewritten) must not be.

Independent checks, on the first TULU_BENCH_ORACLE_ROWS rows, each matcher in one process, timed by
CPU time (best of two runs):
- `brute_force_contamination` (Python tuples and sets) at threshold 0.5: identical matches, scores
  included;
- datatrove's `NGramsDecontFilter` (its own xxhash64 n-gram hashing and lookup) when datatrove is
  installed. datatrove removes a document when any one of its n-grams occurs in the evaluation data,
  so it is compared with our matcher at threshold 0 (any covered word): the same rows must be flagged.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tulu_cli.decontam import (
    EvalIndex,
    EvalInstance,
    TrainRow,
    brute_force_contamination,
    find_contamination,
    normalize,
    words,
)

SEED = 1234
N = 8
THRESHOLD = 0.5
ANY_OVERLAP = 0.0
EVAL_SETS = ("gsm8k", "mmlu", "math", "ifeval", "truthfulqa")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _vocabulary(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-words with Zipf frequencies (frequent words are short), and their probabilities."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    seen: set[str] = set()
    vocab: list[str] = []
    while len(vocab) < size:
        length = 2 + min(int(rng.exponential(2.0 + 4.0 * len(vocab) / size)), 10)
        word = "".join(rng.choice(letters, length))
        if word not in seen:
            seen.add(word)
            vocab.append(word)
    prob = 1.0 / np.arange(1, size + 1) ** 1.05
    return np.array(vocab, dtype=object), prob / prob.sum()


class _Synth:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocab, self.prob = _vocabulary(self.rng, 30_000)

    def texts(self, count: int, lo: int = 30, hi: int = 80) -> list[str]:
        """`count` prompts of lo..hi words, capitalised, with some commas and a final mark."""
        lengths = self.rng.integers(lo, hi + 1, size=count)
        tokens = self.vocab[self.rng.choice(len(self.vocab), size=int(lengths.sum()), p=self.prob)]
        commas = np.flatnonzero(self.rng.random(tokens.shape[0]) < 0.04)
        tokens[commas] = tokens[commas] + ","
        ends = np.cumsum(lengths)
        marks = self.rng.choice(np.array(["?", ".", ":"], dtype=object), size=count)
        out = []
        for start, end, mark in zip(ends - lengths, ends, marks, strict=True):
            out.append(" ".join(tokens[start:end]).capitalize() + mark)
        return out


def _plant(synth: _Synth, rows: list[TrainRow], evals: list[EvalInstance], head: int, count: int):
    """Overwrite `count` training rows with contaminated variants; return (expected ids, near-miss ids)."""
    rng = synth.rng
    positions = np.concatenate(
        [
            rng.choice(head, size=count // 2, replace=False),
            rng.choice(np.arange(head, len(rows)), size=count - count // 2, replace=False)
            if len(rows) > head
            else rng.choice(head, size=0),
        ]
    )
    positions = np.unique(positions)
    filler = synth.texts(2 * len(positions), 10, 30)
    expected: set[str] = set()
    near_miss: set[str] = set()
    for j, pos in enumerate(positions.tolist()):
        inst = evals[int(rng.integers(len(evals)))]
        ws = inst.text.split()
        kind = j % 6
        if kind == 0:  # verbatim copy
            texts = [inst.text]
        elif kind == 1:  # case and punctuation changed
            texts = [inst.text.upper().replace(",", " ;").rstrip("?.:") + " !!"]
        elif kind == 2:  # embedded inside a longer turn
            texts = [f"{filler[2 * j]} {inst.text} {filler[2 * j + 1]}"]
        elif kind == 3:  # second turn of a conversation
            texts = [filler[2 * j], f"Now this one: {inst.text}"]
        elif kind == 4:  # two words replaced: at most those two words uncovered
            edited = list(ws)
            for p in rng.choice(len(ws), size=2, replace=False).tolist():
                edited[p] = "zzq" + edited[p]
            texts = [" ".join(edited)]
        else:  # near miss: first quarter kept, every third word afterwards replaced
            keep = len(ws) // 4
            edited = ws[:keep] + [("yyq" + w if i % 3 == 0 else w) for i, w in enumerate(ws[keep:])]
            texts = [" ".join(edited)]
        row = TrainRow(rows[pos].source, rows[pos].id, texts)
        rows[pos] = row
        if kind == 5:
            near_miss.add(row.id)
        elif kind == 4:
            # whether a two-word edit stays above the threshold depends on where the words fell
            if _score(row.texts, inst.text) > THRESHOLD:
                expected.add(row.id)
            else:
                near_miss.add(row.id)
        else:
            expected.add(row.id)
    return expected, near_miss


def _score(train_texts: list[str], eval_text: str) -> float:
    """Best turn's fraction of the eval words covered by its shared n-grams (token_coverage)."""
    ev = words(eval_text)
    best = 0.0
    for text in train_texts:
        ws = words(text)
        have = {tuple(ws[i : i + N]) for i in range(len(ws) - N + 1)}
        covered = {j for i in range(len(ev) - N + 1) if tuple(ev[i : i + N]) in have for j in range(i, i + N)}
        best = max(best, len(covered) / len(ev))
    return best


def _datatrove_flagged(rows: list[TrainRow], evals: list[EvalInstance]) -> tuple[set[str], float] | None:
    """Rows datatrove's n-gram filter removes (any shared n-gram), and the CPU seconds it took."""
    try:
        from datatrove.data import Document
        from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
        from datatrove.utils.hashing import HashConfig, create_hash_func
        from datatrove.utils.text import TextNormConfig
        from datatrove.utils.word_tokenizers import WordTokenizer
    except ImportError:
        return None

    class SpaceTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            raise NotImplementedError("not used by the n-gram filter")

    off = TextNormConfig(
        lowercase=False,
        norm_whitespace=False,
        remove_punctuation=False,
        norm_unicode_diacritics=False,
        norm_numbers=False,
    )
    config = NGramsDecontConfig(n_grams=N, norm_config=off, hash_config=HashConfig(precision=64))
    xxhash64 = create_hash_func(config.hash_config, bytes)

    def hash_func(text: str) -> int:  # xxhash >= 4 only hashes bytes; datatrove passes str
        return xxhash64(text.encode("utf-8"))

    hashes = set()
    for inst in evals:
        ws = words(inst.text)
        hashes.update(hash_func(" ".join(ws[i : i + N])) for i in range(len(ws) - N + 1))
    with tempfile.TemporaryDirectory() as folder:
        np.array(sorted(hashes), dtype=np.uint64).tofile(Path(folder) / "synth.index.hashes")
        filt = NGramsDecontFilter(index_folder=folder, config=config, language=SpaceTokenizer())
        filt.hash_func = hash_func
        filt.load_index_hashes()
        start = time.process_time()
        flagged = {
            row.id
            for row in rows
            if any(filt.filter(Document(text=normalize(t), id=row.id)) is not True for t in row.texts)
        }
        seconds = time.process_time() - start
    return flagged, seconds


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def _cpu_timed(fn, *args, repeats: int = 2, **kwargs):
    """Result and the fewest CPU seconds of this process over `repeats` runs (as timeit does): CPU time,
    not wall time, and the best run, so that single-process comparisons stay fair on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        result = fn(*args, **kwargs)
        best = min(best, time.process_time() - start)
    return result, best


@pytest.mark.bench
def test_bench_decontam() -> None:
    n_train = _env_int("TULU_BENCH_TRAIN_ROWS", 1_000_000)
    n_eval = _env_int("TULU_BENCH_EVAL_ROWS", 20_000)
    n_oracle = min(_env_int("TULU_BENCH_ORACLE_ROWS", 100_000), n_train)
    workers = _env_int("TULU_BENCH_WORKERS", 2)

    start = time.perf_counter()
    synth = _Synth(SEED)
    eval_texts = synth.texts(n_eval)
    evals = [EvalInstance(EVAL_SETS[i % len(EVAL_SETS)], f"q{i}", t) for i, t in enumerate(eval_texts)]
    train_texts = synth.texts(n_train)
    second = synth.rng.random(n_train) < 0.2
    extra = iter(synth.texts(int(second.sum()), 5, 25))
    rows = [
        TrainRow("synth", f"r{i}", [t, next(extra)] if two else [t])
        for i, (t, two) in enumerate(zip(train_texts, second.tolist(), strict=True))
    ]
    expected, near_miss = _plant(synth, rows, evals, head=n_oracle, count=max(12, min(500, n_train // 200)))
    print(
        f"\n[decontam bench] data: {n_train:,} train rows, {n_eval:,} eval prompts, n={N}, "
        f"{len(expected)} planted over threshold, {len(near_miss)} planted under it "
        f"({time.perf_counter() - start:.1f}s to generate)"
    )

    index, build_s = _timed(EvalIndex.build, evals, N)
    print(
        f"[decontam bench] index: {sum(t.hashes.size for t in index.tables.values()):,} distinct n-grams, "
        f"built in {build_s:.1f}s"
    )

    # full run
    full, full_s = _timed(find_contamination, rows, index, threshold=THRESHOLD, workers=workers)
    found = {m.train_id for m in full}
    print(
        f"[decontam bench] ours, all rows, {workers} workers: {full_s:.1f}s = {n_train / full_s:,.0f} rows/s, "
        f"{len(found)} contaminated rows"
    )
    assert expected <= found, f"planted contamination missed: {sorted(expected - found)[:10]}"
    assert not (near_miss & found), f"near misses flagged: {sorted(near_miss & found)[:10]}"
    assert found == expected, f"unexpected matches: {sorted(found - expected)[:10]}"

    # same rows, one process each: ours against the brute-force reference
    head = rows[:n_oracle]
    ours, ours_s = _cpu_timed(find_contamination, head, index, threshold=THRESHOLD, workers=1)
    ref, ref_s = _cpu_timed(brute_force_contamination, head, index, threshold=THRESHOLD)
    assert ours == ref
    assert {m.train_id for m in ours} == {m.train_id for m in full if int(m.train_id[1:]) < n_oracle}
    print(
        f"[decontam bench] first {n_oracle:,} rows, 1 process, threshold {THRESHOLD}, CPU time: "
        f"ours {n_oracle / ours_s:,.0f} rows/s, brute force {n_oracle / ref_s:,.0f} rows/s, "
        f"ratio {ref_s / ours_s:.1f}x; {len(ours)} identical matches"
    )

    dt = _datatrove_flagged(head, evals)
    if dt is None:
        print("[decontam bench] datatrove not installed: datatrove comparison skipped")
        return
    dt_flagged, dt_s = dt
    any_ours, any_s = _cpu_timed(find_contamination, head, index, threshold=ANY_OVERLAP, workers=1)
    any_ids = {m.train_id for m in any_ours}
    assert any_ids == dt_flagged, (sorted(any_ids - dt_flagged)[:10], sorted(dt_flagged - any_ids)[:10])
    print(
        f"[decontam bench] first {n_oracle:,} rows, 1 process, any shared {N}-gram, CPU time: "
        f"ours {n_oracle / any_s:,.0f} rows/s, datatrove {n_oracle / dt_s:,.0f} rows/s, "
        f"ratio {dt_s / any_s:.1f}x; {len(any_ids)} identical rows flagged"
    )
