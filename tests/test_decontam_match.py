"""Decontamination: normalisation, planted contamination, edge cases, and equality with the reference."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal

import pytest

from tulu_cli.decontam import (
    EvalIndex,
    EvalInstance,
    Match,
    TrainRow,
    brute_force_contamination,
    eval_prompt_text,
    find_contamination,
    normalize,
    user_turns,
    words,
)
from tulu_cli.decontam import index as index_module
from tulu_cli.decontam.index import SCORES
from tulu_cli.decontam.normalize import SEPARATOR, word_array

PROMPT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
OTHER = "Write a limerick about a cat who learns to play the violin in the middle of the night."


def _index(*texts: str, n: int = 8, score: str = "token_coverage") -> EvalIndex:
    return EvalIndex.build([EvalInstance("evalset", f"e{i}", t) for i, t in enumerate(texts)], n, score)


def _ids(matches: list[Match]) -> list[str]:
    return [m.train_id for m in matches]


def _both(rows: list[TrainRow], index: EvalIndex, **kwargs) -> list[Match]:
    fast = find_contamination(rows, index, **kwargs)
    assert fast == brute_force_contamination(rows, index, **kwargs)
    return fast


def test_normalize_folds_case_punctuation_unicode() -> None:
    assert normalize("  Hello,\tWORLD!! It's  ") == "hello world it s"
    assert normalize("cafe\u0301") == normalize("café") == "café"  # combining accent composes
    assert normalize("ＡＢＣ １２３") == "abc 123"  # full-width forms
    assert normalize("Straße") == "strasse"
    assert normalize("co\u00adop zero\u200bwidth") == "coop zerowidth"  # format characters vanish
    assert words("你好，世界。") == ["你", "好", "世", "界"]  # one word per ideograph
    assert words("日本語のテスト") == ["日", "本", "語", "の", "テ", "ス", "ト"]
    assert words("안녕하세요 세계") == ["안녕하세요", "세계"]  # Hangul keeps spaces as word breaks
    assert words("2+2=4 costs $5") == ["2+2=4", "costs", "$5"]  # symbols are content
    assert normalize("") == "" and words("...!?") == []
    for text in (PROMPT, "Ǆemal ﬁle Ⅻ ΣΊΣΥΦΟΣ", "中文 mixed テキスト"):
        assert normalize(normalize(text)) == normalize(text)


def test_user_turns_and_eval_text() -> None:
    row = {
        "id": "x",
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "reply"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image"}]},
        ],
    }
    assert user_turns(row) == ["first", "second"]
    assert eval_prompt_text(row) == "first\nsecond"
    assert user_turns({"prompt": "p"}) == ["p"]
    assert user_turns({"prompt": [{"role": "user", "content": "q"}]}) == ["q"]
    assert user_turns({"instruction": "do it", "input": "data"}) == ["do it\n\ndata"]
    assert user_turns({"instruction": "do it", "input": ""}) == ["do it"]
    assert user_turns({"text": "none"}) == []


@pytest.mark.parametrize("score", SCORES)
def test_planted_contamination(score: str) -> None:
    index = _index(PROMPT, OTHER, score=score)
    ws = PROMPT.split()
    few_changed = list(ws)
    few_changed[10] = "blorp"  # one replaced word loses at most 8 of the 24 8-grams
    many_changed = [w if i % 4 else "zz" for i, w in enumerate(ws)]
    rows = [
        TrainRow("train", "copy", [PROMPT.upper()]),
        TrainRow("train", "few", [" ".join(few_changed)]),
        TrainRow("train", "many", [" ".join(many_changed)]),
        TrainRow("train", "embedded", [f"Please help me with my homework. {PROMPT} Thanks a lot, friend!"]),
        TrainRow("train", "second-turn", ["hello there", PROMPT]),
        TrainRow(
            "train", "clean", ["Natalia sold clips to friends in April and May and June, how many in total?"]
        ),
    ]
    matches = _both(rows, index, threshold=0.5)
    assert _ids(matches) == ["copy", "few", "embedded", "second-turn"]
    by_id = {m.train_id: m for m in matches}
    assert (
        by_id["copy"].score == 1.0 and by_id["copy"].eval_id == "e0" and by_id["copy"].eval_set == "evalset"
    )
    assert 0.5 <= by_id["few"].score < 1.0
    # the heavily edited prompt still shares some n-grams only if a run of 8 words survived: none did
    assert _both(rows[2:3], index, threshold=1e-9) == []


@pytest.mark.parametrize("score", SCORES)
def test_near_miss_under_threshold_has_partial_score(score: str) -> None:
    ws = PROMPT.split()
    kept = len(ws) // 3
    near = ws[:kept] + [f"x{i}" for i in range(len(ws) - kept)]
    rows = [TrainRow("train", "near", [" ".join(near)])]
    index = _index(PROMPT, score=score)
    assert _both(rows, index, threshold=0.5) == []
    partial = _both(rows, index, threshold=0.01)
    assert len(partial) == 1 and 0 < partial[0].score < 0.5


@pytest.mark.parametrize("score", SCORES)
def test_ngrams_do_not_span_turns(score: str) -> None:
    ws = PROMPT.split()
    half = len(ws) // 2
    index = _index(" ".join(ws[half - 4 : half + 4]), score=score)  # exactly one 8-gram across the split point
    split_rows = [TrainRow("train", "split", [" ".join(ws[:half]), " ".join(ws[half:])])]
    joined_rows = [TrainRow("train", "joined", [" ".join(ws)])]
    assert _both(split_rows, index, threshold=0.01) == []
    assert _ids(_both(joined_rows, index, threshold=0.01)) == ["joined"]


def test_short_eval_instances_and_empty_inputs_ngram_fraction() -> None:
    index = _index("Capital of France?", "", "   !!! ", OTHER, score="ngram_fraction")
    rows = [
        TrainRow("train", "contains", ["What is the capital of France? Answer briefly."]),
        TrainRow("train", "apart", ["capital city of France"]),
        TrainRow("train", "across-turns", ["the capital", "of France"]),
        TrainRow("train", "empty-row", []),
        TrainRow("train", "empty-turns", ["", "  ", "?!"]),
    ]
    matches = _both(rows, index, threshold=0.5)
    assert [(m.train_id, m.eval_id, m.score) for m in matches] == [("contains", "e0", 1.0)]
    assert _both([], index, threshold=0.5) == []
    for score in SCORES:
        empty_index = _index("", "...", score=score)
        assert _both(rows, empty_index, threshold=0.5) == []
        assert _both(rows, empty_index, threshold=0.5, mode="exact") == []


@pytest.mark.parametrize("score", SCORES)
def test_unicode_prompts_match_across_forms(score: str) -> None:
    index = _index(
        "请计算下列数学题：小明有五个苹果，他吃了两个，还剩几个？",
        "Ｃａｆé au lait: how do I make a good one at home quickly?",
        score=score,
    )
    rows = [
        TrainRow("train", "zh", ["请计算下列数学题 小明有五个苹果 他吃了两个 还剩几个"]),
        TrainRow("train", "fr", ["CAFE\u0301 AU LAIT — how do I make a good one at home quickly"]),
        TrainRow("train", "fr-unaccented", ["cafe au lait how do I make a good one at home quickly"]),
    ]
    matches = _both(rows, index, threshold=0.99)
    assert [(m.train_id, m.score) for m in matches] == [("zh", 1.0), ("fr", 1.0)]


@pytest.mark.parametrize("score", SCORES)
def test_best_instance_and_ties(score: str) -> None:
    index = EvalIndex.build(
        [EvalInstance("a", "1", OTHER), EvalInstance("b", "2", PROMPT), EvalInstance("c", "3", PROMPT)], 8, score
    )
    matches = _both([TrainRow("train", "t", [OTHER[:40], PROMPT])], index, threshold=0.5)
    assert [(m.eval_set, m.eval_id, m.score) for m in matches] == [("b", "2", 1.0)]


@pytest.mark.parametrize("score", SCORES)
def test_exact_mode(score: str) -> None:
    index = _index(PROMPT, OTHER, "Short one", score=score)
    rows = [
        TrainRow("train", "same", ["hi", PROMPT.lower().replace(",", " , ")]),
        TrainRow("train", "embedded", [f"Please: {PROMPT}"]),
        TrainRow("train", "short", ["short ONE!"]),
        TrainRow("train", "empty", [""]),
    ]
    matches = _both(rows, index, threshold=0.5, mode="exact")
    assert [(m.train_id, m.eval_id, m.score) for m in matches] == [("same", "e0", 1.0), ("short", "e2", 1.0)]


def test_argument_checks() -> None:
    index = _index(PROMPT)
    with pytest.raises(ValueError, match="above it"):
        find_contamination([], index, threshold=1.0)  # nothing scores above 1
    with pytest.raises(ValueError):
        find_contamination([], _index(PROMPT, score="ngram_fraction"), threshold=0.0)
    with pytest.raises(ValueError):
        EvalIndex.build([], 8, "overlap")
    with pytest.raises(ValueError):
        find_contamination([], index, threshold=0.5, mode="fuzzy")
    with pytest.raises(ValueError):
        EvalIndex.build([], 0)


def _random_corpus(seed: int, n_train: int, n_eval: int) -> tuple[list[TrainRow], list[EvalInstance]]:
    rng = random.Random(seed)
    vocab = ["a", "b", "c", "d", "E", "f!", "g,", "h"]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))

    evals = []
    for i in range(n_eval):
        if i % 4 == 3:  # a multi-field instance (e.g. passage and question)
            fields = (text(0, 14), text(0, 10))
            evals.append(EvalInstance(f"set{i % 3}", f"e{i}", "\n".join(fields), fields))
        else:
            evals.append(EvalInstance(f"set{i % 3}", f"e{i}", text(0, 14)))
    rows = []
    for i in range(n_train):
        turns = [text(0, 25) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.3 and evals:  # splice an eval prompt (or one of its fields) into a turn
            spliced = rng.choice(rng.choice(evals).parts)
            turns.append(f"{text(0, 5)} {spliced} {text(0, 5)}")
        rows.append(TrainRow("train", f"r{i}", turns))
    return rows, evals


THRESHOLDS = {"token_coverage": (0.0, 0.25, 0.5, 0.8, 0.99), "ngram_fraction": (1e-9, 0.25, 0.5, 0.8, 1.0)}


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_equals_brute_force_on_random_rows(n: int, score: str) -> None:
    rows, evals = _random_corpus(n, 300, 60)
    index = EvalIndex.build(evals, n, score)
    for threshold in THRESHOLDS[score]:
        fast = find_contamination(rows, index, threshold=threshold, chunk_rows=37)
        assert fast == brute_force_contamination(rows, index, threshold=threshold)
        if threshold == 0.5:
            assert fast, "the random corpus should produce matches"
    fast = find_contamination(rows, index, threshold=0.5, mode="exact", chunk_rows=37)
    assert fast == brute_force_contamination(rows, index, threshold=0.5, mode="exact")


@pytest.mark.parametrize("score", SCORES)
def test_forced_hash_collisions_stay_exact(monkeypatch: pytest.MonkeyPatch, score: str) -> None:
    rows, evals = _random_corpus(7, 200, 50)
    expected = {
        n: brute_force_contamination(rows, EvalIndex.build(evals, n, score), threshold=0.3) for n in (2, 4)
    }
    monkeypatch.setattr(index_module, "HASH_MASK", 0x3)  # four possible hash values in total
    for n in (2, 4):
        index = EvalIndex.build(evals, n, score)
        assert len(set(index.tables[n].hashes.tolist())) <= 4
        assert find_contamination(rows, index, threshold=0.3, chunk_rows=50) == expected[n]


def test_workers_and_progress() -> None:
    rows, evals = _random_corpus(3, 400, 40)
    index = EvalIndex.build(evals, 3)
    seen: list[int] = []
    parallel = find_contamination(
        iter(rows), index, threshold=0.5, workers=2, chunk_rows=64, progress=seen.append
    )
    assert parallel == find_contamination(rows, index, threshold=0.5)
    assert sum(seen) == len(rows)


@pytest.mark.timeout(120)
def test_a_killed_worker_fails_the_match_instead_of_hanging() -> None:
    # An out-of-memory kill of a worker that holds a chunk: the match must stop with an error, not wait
    # for the chunk forever.
    rows, evals = _random_corpus(4, 2000, 40)
    index = EvalIndex.build(evals, 3)

    def rows_killing_a_worker():
        for number, row in enumerate(rows):
            if number == 640:  # ten chunks handed out; the pool's workers are up
                os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
            yield row

    with pytest.raises(RuntimeError, match="worker process died"):
        find_contamination(rows_killing_a_worker(), index, threshold=0.5, workers=2, chunk_rows=64)


def _forty_words() -> list[str]:
    return [f"w{i}" for i in range(40)]


def test_release_score_counts_covered_words_22_of_40() -> None:
    """40 eval words, the first 22 shared: 22/40 words covered, 15 of 33 8-grams present."""
    ws = _forty_words()
    row = TrainRow("train", "t", [" ".join(ws[:22] + ["other"] * 18)])
    coverage = _both([row], _index(" ".join(ws)), threshold=0.5)
    assert [(m.train_id, m.score) for m in coverage] == [("t", 0.55)]  # release: 0.55 > 0.5, flagged
    fraction_index = _index(" ".join(ws), score="ngram_fraction")
    assert _both([row], fraction_index, threshold=0.5) == []  # 15/33 = 0.4545... kept
    assert _both([row], fraction_index, threshold=0.45)[0].score == pytest.approx(15 / 33)


def test_release_score_flags_only_above_the_threshold() -> None:
    ws = _forty_words()
    row = TrainRow("train", "t", [" ".join(ws[:20])])  # 20 of 40 words: exactly 0.5
    assert _both([row], _index(" ".join(ws)), threshold=0.5) == []
    assert _both([row], _index(" ".join(ws)), threshold=0.49)[0].score == 0.5
    # ngram_fraction flags at the threshold: 13 of 26 8-grams of a 33-word prompt
    assert _both([row], _index(" ".join(ws[:33]), score="ngram_fraction"), threshold=0.5)[0].score == 0.5


def test_short_eval_text_under_both_scores() -> None:
    """An eval text shorter than n words never matches under token_coverage; ngram_fraction matches it whole."""
    rows = [TrainRow("train", "contains", ["What is the capital of France? Answer briefly."])]
    assert _both(rows, _index("Capital of France?"), threshold=0.0) == []
    fraction = _both(rows, _index("Capital of France?", score="ngram_fraction"), threshold=0.5)
    assert [(m.train_id, m.score) for m in fraction] == [("contains", 1.0)]


def test_fields_are_scored_separately_and_averaged() -> None:
    passage = " ".join(_forty_words())
    question = "How many touchdowns did the home team score in the second half of the game?"
    drop = EvalInstance("drop", "d1", f"{passage}\n{question}", (passage, question))
    popqa = EvalInstance("popqa", "p1", "Paris\ncapital of\nFrance", ("Paris", "capital of", "France"))
    index = EvalIndex.build([drop, popqa], 8)
    passage_only = TrainRow("train", "passage", [passage])
    both_turns = TrainRow("train", "both", [passage, question])  # each turn covers one field
    one_turn = TrainRow("train", "one", [f"{passage} {question}"])
    popqa_row = TrainRow("train", "popqa", ["Paris is the capital of France"])
    rows = [passage_only, both_turns, one_turn, popqa_row]
    assert [(m.train_id, m.score) for m in _both(rows, index, threshold=0.49)] == [
        ("passage", 0.5), ("both", 0.5), ("one", 1.0)
    ]
    assert _ids(_both(rows, index, threshold=0.5)) == ["one"]  # a row's best turn, not the union of turns


def test_word_array_equals_words() -> None:
    rng = random.Random(5)
    alphabet = [chr(c) for c in range(128)] + list("éßÄ中ΣⅫ\u00ad\u200b\u3000ﬁ")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(2000)]
    texts += ["", "   ", "a\x01b", PROMPT, "中文 mixed テキスト"]
    word_arr, text_start = word_array(texts)
    flat = word_arr.to_pylist()
    assert flat == [w for text in texts for w in [*words(text), SEPARATOR]]
    assert [flat[text_start[i] : text_start[i + 1] - 1] for i in range(len(texts))] == [words(t) for t in texts]
    assert word_array([])[0].to_pylist() == [] and word_array([])[1].tolist() == [0]
    index = _index(PROMPT)
    assert _both([TrainRow("train", "no-turns", []), TrainRow("train", "none", [])], index, threshold=0.0) == []
