"""`tulu verify` throughput: rows/s per verifier, and a 50k mixed file with hostile rows in it.

Run with `make bench` or `pytest tests/benchmarks/bench_verify.py -m bench -s`. Sizes (env vars):
- TULU_BENCH_VERIFY_ROWS      rows of each gsm8k / ifeval file and of the mixed file (default 50,000)
- TULU_BENCH_VERIFY_MATH_ROWS rows of the math file (default 5,000: a wrong answer costs a sympy call)
- TULU_BENCH_VERIFY_WORKERS   verifier processes (default 2)

Rows are synthetic but shaped like RLVR rollouts: gsm8k chains of arithmetic ending in `#### N` (60%
right); MATH answers in `\\boxed{}`, some equal only symbolically, some wrong; ifeval rows with one Tulu 3
release constraint (`func_name`) or one to three IFEval instructions, over 50-250 words. The mixed file
adds hostile rows (see HOSTILE) that once hung or crashed the command. Each file goes through
`verify_command` (the code behind `tulu verify`), timed end to end (reading, scoring, writing). Side
by side, in the same run: the same rows scored by a plain loop over `verify_row` in this process (no
worker processes, no time limit), on the first 10k rows of each file.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path

import pytest

from tulu_cli.rewards.registry import verify_row
from tulu_cli.rewards.verify_file import verify_command

ROWS = int(os.environ.get("TULU_BENCH_VERIFY_ROWS", "50000"))
MATH_ROWS = int(os.environ.get("TULU_BENCH_VERIFY_MATH_ROWS", "5000"))
WORKERS = int(os.environ.get("TULU_BENCH_VERIFY_WORKERS", "2"))
BASELINE_ROWS = 10_000
TIMEOUT_S = 5.0
WORDS = (
    "apple river house green quickly music garden window silver happy ocean market little story bright "
    "winter yellow simple travel friend summer coffee morning forest city bridge candle planet mountain "
    "gentle orange people paper stone light water dream number valley"
).split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + rng.choice(".!?.")


def _text(rng: random.Random, words: int) -> str:
    sentences, count = [], 0
    while count < words:
        sentence = _sentence(rng)
        sentences.append(sentence)
        count += sentence.count(" ") + 1
    paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
    return "\n\n".join(paragraphs)


def gsm8k_row(rng: random.Random) -> dict:
    a, b = rng.randint(100, 9999), rng.randint(100, 9999)
    answer = a + b
    given = answer if rng.random() < 0.6 else answer + rng.randint(1, 9)
    steps = " ".join(
        f"{_sentence(rng)} {x} + {y} = {x + y}."
        for x, y in ((rng.randint(1, 99), rng.randint(1, 99)) for _ in range(rng.randint(3, 8)))
    )
    return {"dataset": "gsm8k", "ground_truth": str(answer),
            "messages": [{"role": "user", "content": f"What is {a} + {b}?"}],
            "response": f"{steps}\nSo the total is {given:,}.\n#### {given}"}  # fmt: skip


MATH_ANSWERS = [
    ("\\frac{1}{2}", ["\\frac{1}{2}", "0.5", "\\dfrac12", "\\frac{2}{4}", "\\frac{1}{3}"]),
    ("2\\sqrt{3}", ["2\\sqrt{3}", "\\sqrt{12}", "3\\sqrt{2}"]),
    ("12", ["12", "12.0", "13", "\\text{12}"]),
    ("(x+1)^2", ["(x+1)^2", "x^2+2x+1", "x^2+1"]),
    ("\\pi", ["\\pi", "\\frac{\\pi}{1}", "3.14"]),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", ["\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"]),
]


def math_row(rng: random.Random) -> dict:
    truth, predictions = rng.choice(MATH_ANSWERS)
    prediction = rng.choice(predictions)
    return {"dataset": "math", "ground_truth": truth,
            "messages": [{"role": "user", "content": "Solve the problem."}],
            "response": f"{_text(rng, rng.randint(30, 120))}\nTherefore the answer is $\\boxed{{{prediction}}}$."}  # fmt: skip


def _release(name: str, **kwargs) -> dict:
    return {"func_name": name, **kwargs}


RELEASE_CONSTRAINTS = [
    _release("verify_keywords", keyword_list=["river", "coffee"]), _release("verify_keyword_frequency", word="apple", N=2),
    _release("validate_forbidden_words", forbidden_words=["stone", "paper"]), _release("verify_letter_frequency", letter="e", N=20),
    _release("validate_response_language", language="en"), _release("verify_paragraph_count", N=3),
    _release("validate_word_constraint", N=100, quantifier="at least"), _release("verify_sentence_constraint", N=8, quantifier="around"),
    _release("validate_paragraphs", N=3, first_word="apple", i=2), _release("verify_postscript", postscript_marker="P.S."),
    _release("validate_placeholders", N=2), _release("verify_bullet_points", N=3), _release("validate_title"),
    _release("validate_choice", options="('My answer is yes.', 'My answer is no.')"), _release("validate_highlighted_sections", N=2),
    _release("validate_sections", N=2, section_splitter="Section"), _release("validate_json_format"),
    _release("validate_repeat_prompt", original_prompt="Write about a river."), _release("validate_two_responses"),
    _release("validate_uppercase"), _release("validate_lowercase"), _release("validate_frequency_capital_words", N=3, quantifier="at least"),
    _release("validate_end", end_phrase="Is there anything else I can help with?"), _release("validate_quotation"),
    _release("validate_no_commas"),
]  # fmt: skip
IFEVAL_INSTRUCTIONS = [
    ("keywords:existence", {"keywords": ["river", "market"]}), ("keywords:frequency", {"keyword": "apple", "frequency": 2, "relation": "at least"}),
    ("keywords:forbidden_words", {"forbidden_words": ["stone"]}), ("keywords:letter_frequency", {"letter": "a", "let_frequency": 10, "let_relation": "at least"}),
    ("language:response_language", {"language": "en"}), ("length_constraints:number_sentences", {"num_sentences": 5, "relation": "less than"}),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}), ("length_constraints:number_words", {"num_words": 120, "relation": "at least"}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "apple"}),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}), ("detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}), ("detectable_format:constrained_response", {}),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}), ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2}),
    ("detectable_format:json_format", {}), ("detectable_format:title", {}), ("combination:two_responses", {}),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write about a river."}), ("startend:end_checker", {"end_phrase": "Any other questions?"}),
    ("startend:quotation", {}), ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"}),
    ("change_case:english_capital", {}), ("change_case:english_lowercase", {}), ("punctuation:no_comma", {}),
]  # fmt: skip


def _decorated(rng: random.Random, text: str) -> str:
    if rng.random() < 0.2:
        text = "<<A River Story>>\n\n" + text
    if rng.random() < 0.2:
        text += "\n* first point\n* second point\n* third point"
    if rng.random() < 0.15:
        text += "\n\nP.S. see the *market* and the [address]."
    if rng.random() < 0.1:
        text = text.upper()
    elif rng.random() < 0.1:
        text = text.lower()
    return text


def ifeval_row(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        truth = rng.choice(RELEASE_CONSTRAINTS)
    else:
        chosen = rng.sample(IFEVAL_INSTRUCTIONS, rng.randint(1, 3))
        truth = {"instruction_id_list": [name for name, _ in chosen], "kwargs": [kwargs for _, kwargs in chosen]}
    return {"dataset": "ifeval", "ground_truth": json.dumps(truth),
            "messages": [{"role": "user", "content": "Write about a river."}],
            "response": _decorated(rng, _text(rng, rng.randint(50, 250)))}  # fmt: skip


def _ifeval_truth(instruction: str, **kwargs) -> str:
    return json.dumps({"instruction_id_list": [instruction], "kwargs": [kwargs]})


# Rows that hung `tulu verify` for minutes or aborted it before the verifiers were made safe; the last
# two still take longer than any limit (a power sympy would evaluate for hours, thousands of checks).
HOSTILE = [
    {"dataset": "ifeval", "ground_truth": _ifeval_truth("keywords:existence", keywords=["(a+)+$"]), "response": "a" * 40 + "b"},
    {"dataset": "ifeval", "ground_truth": _ifeval_truth("detectable_content:number_placeholders", num_placeholders=1), "response": "[" * 100_000},
    {"dataset": "ifeval", "ground_truth": json.dumps({"func_name": "validate_title"}), "response": "<<" * 50_000},
    {"dataset": "ifeval", "ground_truth": _ifeval_truth("detectable_format:json_format"), "response": "[" * 100_000 + "]" * 100_000},
    {"dataset": "ifeval", "ground_truth": "[" * 100_000 + "]" * 100_000, "response": "x"},
    {"dataset": "ifeval", "ground_truth": _ifeval_truth("change_case:capital_word_frequency", capital_frequency=3, capital_relation="at least"), "response": "WORD. " * 40_000},
    {"dataset": "math", "ground_truth": "2", "response": "x" * 100_000},
    {"dataset": "math", "ground_truth": "2", "response": "\\boxed{" * 20_000},
    {"dataset": "math", "ground_truth": "2", "response": "Final Answer: The final answer is " * 3_000},
    {"dataset": "math", "ground_truth": "3", "response": "Hence $\\boxed{9^{9^{9^{9}}}}$."},
    {"dataset": "ifeval", "ground_truth": json.dumps([{"func_name": "validate_response_language", "language": "en"}] * 20_000), "response": "A short answer."},
]  # fmt: skip


def write_rows(path: Path, make, count: int, seed: int, extra: list[dict] = ()) -> int:
    rng = random.Random(seed)
    rows = [make(rng) for _ in range(count)]
    for index, row in enumerate(extra):
        rows.insert(rng.randrange(len(rows) + 1) if rows else 0, {**row, "id": f"hostile-{index}"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return len(rows)


def mixed_row(rng: random.Random) -> dict:
    kind = rng.random()
    return gsm8k_row(rng) if kind < 0.45 else ifeval_row(rng) if kind < 0.9 else math_row(rng)


def run_verify(source: Path, out: Path, capsys) -> tuple[float, str]:
    started = time.perf_counter()
    assert verify_command(source, out, loose=False, timeout_s=TIMEOUT_S, workers=WORKERS) == 0
    elapsed = time.perf_counter() - started
    return elapsed, " ".join(capsys.readouterr().out.split())  # rich wraps long lines


def baseline_rows_per_s(source: Path) -> float:
    rows = [json.loads(line) for line in source.read_text().splitlines()[:BASELINE_ROWS]]
    started = time.perf_counter()
    for row in rows:
        verify_row(row, timeout_s=TIMEOUT_S)
    return len(rows) / (time.perf_counter() - started)


@pytest.mark.bench
def test_verify_throughput(tmp_path, capsys):
    files = {
        "gsm8k": (gsm8k_row, ROWS, []),
        "ifeval": (ifeval_row, ROWS, []),
        "math": (math_row, MATH_ROWS, []),
        "mixed+hostile": (mixed_row, ROWS, HOSTILE),
    }
    lines = []
    for seed, (name, (make, count, extra)) in enumerate(files.items()):
        source, out = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.verified.jsonl"
        total = write_rows(source, make, count, seed, extra)
        elapsed, report = run_verify(source, out, capsys)
        written = out.read_text().splitlines()
        assert len(written) == total  # every row, in order
        slowest = float(re.search(r"slowest row ([\d.]+)s", report).group(1))
        timed_out = int(re.search(r"(\d+) timed out", report).group(1))
        assert slowest < TIMEOUT_S + 1.0, report  # the kill grace and polling, nothing more
        baseline = "" if extra else f"; in-process verify_row loop {baseline_rows_per_s(source):,.0f} rows/s"
        lines.append(f"{name:14s} {total:6d} rows {elapsed:7.1f}s {total / elapsed:8,.0f} rows/s "
                     f"(workers={WORKERS}), {timed_out} timed out, slowest row {slowest:.2f}s{baseline}")  # fmt: skip
        if extra:
            by_id = {row.get("id"): row for row in map(json.loads, written) if str(row.get("id", "")).startswith("hostile")}
            assert len(by_id) == len(extra) and all("verified" in row for row in by_id.values())
            assert timed_out >= 2  # the sympy power and the 20k-check row
    with capsys.disabled():
        print("\n" + "\n".join(lines))
