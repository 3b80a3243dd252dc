"""`verifier.profile: tulu3_release`: the verifier behaviour of the Tulu 3 release code (open-instruct
`ground_truth_utils.py`, `if_functions.py` and `math_utils.py` as released in November 2024), for exact
reproductions of its RLVR runs and scores.

Only the functions whose behaviour differs from the defaults are here, each as the release computes it
(in linear time where the release used a regular expression); everything else is shared. The README
("Where the defaults follow the release") lists every difference with an example; the defaults are the
fixed behaviour, under which a right GSM8K, MATH or IF answer verifies.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from tulu_cli.rewards.if_functions import _within
from tulu_cli.rewards.math_normalize import candidate_answers

NAME = "tulu3_release"
_ASSISTANT_TURN = "<|assistant|>\n"


def response_text(response: str) -> str:
    """Every release verifier first keeps the text after the last `<|assistant|>` turn marker, stripped."""
    return response.split(_ASSISTANT_TURN)[-1].strip()


# ---- IF functions (ground truth `{"func_name": ...}`) -------------------------------------------------
def validate_placeholders(text: str, N: int) -> bool:
    # The release returned `(has_enough, placeholders)`, a tuple, which the reward code tests for truth:
    # it always passed, whatever the count.
    return True


def verify_sentence_constraint(text: str, N: int, quantifier: str) -> bool:
    # Sentences end at "." and "?" only: "!" does not end one.
    sentences = re.split(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?)\s", text)
    return _within(len(sentences), N, quantifier, 1)


def validate_paragraphs(text: str, N: int, first_word: str, i: int) -> bool:
    # `i` is not checked: 0 reads the last paragraph, past N fails the row (IndexError).
    paragraphs = text.split("\n\n")
    if len(paragraphs) != N:
        return False
    return paragraphs[i - 1].strip().startswith(first_word)


def validate_choice(text: str, options: Any) -> bool:
    # Reversed test (the response inside an option), over `options` as stored: a string of a tuple is
    # iterated character by character.
    return any(text in option for option in options)


def validate_sections(text: str, N: int, section_splitter: str) -> bool:
    # The splitter as case-sensitive text (no section number), text before the first one counted as a
    # section, and exactly N sections.
    sections = text.split(section_splitter)
    if sections[0] == "":
        sections.pop(0)
    return len(sections) == N


def validate_frequency_capital_words(text: str, N: int, quantifier: str) -> bool:
    # "around" N means exactly N.
    count = len(re.findall(r"\b[A-Z]+\b", text))
    return count == N if quantifier == "around" else _within(count, N, quantifier, 0)


IF_FUNCTIONS = {
    fn.__name__: fn
    for fn in (validate_placeholders, verify_sentence_constraint, validate_paragraphs, validate_choice,
               validate_sections, validate_frequency_capital_words)
}  # fmt: skip


# ---- GSM8K ----------------------------------------------------------------------------------------------
_THOUSANDS = re.compile(r"(\d),(\d)")
_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")


def gsm8k_equal(response: str, ground_truth: str) -> bool:
    # The last number, compared as text ("18.00" is not "18"); with no number, the whole response.
    text = _THOUSANDS.sub(r"\1\2", response)
    numbers = _NUMBER.findall(text)
    prediction = numbers[-1] if numbers else text
    return str(prediction).lower() == str(ground_truth).lower()


# ---- MATH -----------------------------------------------------------------------------------------------
def boxed_content(text: str) -> str | None:
    """The release's `remove_boxed(last_boxed_only_string(text))`: `\\fbox{...}` is found but then
    rejected by an assertion, so only `\\boxed` answers count."""
    from tulu_cli.rewards.math_normalize import last_boxed_content

    if "\\boxed " not in text and text.rfind("\\boxed") < 0:
        return None
    return last_boxed_content(text)


# Boxed answers compared as written (no Minerva normalisation of them).
math_candidates = functools.partial(candidate_answers, boxed=boxed_content, normalize_boxed=False)
