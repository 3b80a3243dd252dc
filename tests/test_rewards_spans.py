"""The linear-time span scanners return exactly what the (quadratic) reference regexes return."""

from __future__ import annotations

import random
import re

import pytest

from tulu_cli.rewards.ifeval_checks import _titles
from tulu_cli.rewards.math_normalize import _unboxed, minerva_answer
from tulu_cli.rewards.spans import first_dollar_pair, lazy_spans, unwrap_lazy_spans

TOKENS = ["\\text{", "\\boxed{", "}", "{", "$", "\n", "a", "b", " ", "[", "]", "<<", ">>", "<", ">", "*", ".",
          "Final Answer: The final answer is", " I hope it is correct", "I hope it is correct."]  # fmt: skip


def texts(count: int = 3000) -> list[str]:
    rng = random.Random(7)
    return ["".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 14))) for _ in range(count)]


def per_line(function, text: str) -> str:
    return "\n".join(function(line) for line in text.split("\n"))


MINERVA = re.compile(r"Final Answer: The final answer is(.*?). I hope it is correct.")


@pytest.mark.parametrize(
    "ours, reference",
    [
        (lambda t: list(lazy_spans(t, "[", "]")), lambda t: re.findall(r"\[(.*?)\]", t)),
        (lambda t: list(lazy_spans(t, "<<", ">>")), lambda t: re.findall(r"<<(.*?)>>", t)),
        (lambda t: list(lazy_spans(t, "*", "*")), lambda t: re.findall(r"\*(.*?)\*", t)),
        (lambda t: list(_titles(t)), lambda t: re.findall(r"<<[^\n]+>>", t)),
        (lambda t: unwrap_lazy_spans(t, "\\text{", "}"), lambda t: re.sub(r"(\\text\{)(.*?)(\})", "\\2", t)),
        (lambda t: per_line(first_dollar_pair, t), lambda t: re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", "$\\3$", t)),
        (lambda t: per_line(_unboxed, t), lambda t: re.sub(r"(\\boxed\{)(.*)(\})", "\\2", t)),
        (
            minerva_answer,
            lambda t: (m.group(1).strip() if (m := MINERVA.search(t + "I hope it is correct.")) else "[invalidanswer]"),
        ),
    ],
    ids=["brackets", "angles", "stars", "titles", "unwrap_text", "dollars", "unboxed", "minerva"],
)
def test_scanner_matches_reference_regex(ours, reference):
    for text in texts():
        assert ours(text) == reference(text), repr(text)
