"""The 25 constraint functions of the Tulu 3 RLVR release (ground truth `{"func_name": ..., <args>}`).

Semantics follow the functions the released data is scored with (open-instruct `if_functions.py`), which
are looser or stricter than the IFEval benchmark checkers in places (exact counts, an "around"
quantifier, substring matching); `IFEVAL_ID` names the benchmark instruction each one corresponds to.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from tulu_cli.rewards.language import detect_language
from tulu_cli.rewards.spans import lazy_spans

IfFunction = Callable[..., bool]


def _within(actual: int, n: int, quantifier: str, around: int) -> bool:
    if quantifier == "at least":
        return actual >= n
    if quantifier == "at most":
        return actual <= n
    if quantifier == "around":
        return abs(actual - n) <= around
    return False


def verify_keywords(text: str, keyword_list: list[str]) -> bool:
    lowered = text.lower()
    return all(keyword.lower() in lowered for keyword in keyword_list)


def verify_keyword_frequency(text: str, word: str, N: int) -> bool:
    words = re.findall(r"\b\w+\b", text.lower())
    return sum(1 for token in words if token == word.lower()) == N


def validate_forbidden_words(text: str, forbidden_words: list[str]) -> bool:
    lowered = text.lower()
    return not any(word.lower() in lowered for word in forbidden_words)


def verify_letter_frequency(text: str, letter: str, N: int) -> bool:
    if len(letter) != 1:
        raise ValueError("letter must be a single character")
    return text.count(letter) == N


def validate_response_language(text: str, language: str) -> bool:
    return detect_language(text) == language


def verify_paragraph_count(text: str, N: int) -> bool:
    cleaned = "\n".join(line.strip() for line in text.splitlines()).strip()
    paragraphs = cleaned.split("* * *")
    return all(paragraph.strip() for paragraph in paragraphs) and len(paragraphs) == N


def validate_word_constraint(text: str, N: int, quantifier: str) -> bool:
    return _within(len(text.strip().split()), N, quantifier, max(round(N * 0.1), 1))


def verify_sentence_constraint(text: str, N: int, quantifier: str) -> bool:
    sentences = re.split(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?|!)\s", text)
    return _within(len(sentences), N, quantifier, 1)


def validate_paragraphs(text: str, N: int, first_word: str, i: int) -> bool:
    paragraphs = text.split("\n\n")
    if len(paragraphs) != N or not 1 <= i <= len(paragraphs):
        return False
    return paragraphs[i - 1].strip().startswith(first_word)


def verify_postscript(text: str, postscript_marker: str) -> bool:
    index = text.find(postscript_marker)
    # The marker alone, with nothing after it, is not a postscript.
    return index >= 0 and len(text[index:].strip()) > len(postscript_marker)


def validate_placeholders(text: str, N: int) -> bool:
    # The release's `re.findall(r"\[(.*?)\]", text)`, in linear time.
    return sum(1 for _ in lazy_spans(text, "[", "]")) >= N


def verify_bullet_points(text: str, N: int) -> bool:
    return sum(1 for line in text.split("\n") if line.strip().startswith(("*", "-"))) == N


def validate_title(text: str) -> bool:
    # The release's `re.findall(r"<<(.*?)>>", text)`, in linear time.
    return next(lazy_spans(text, "<<", ">>"), None) is not None


def _option_list(options: Any) -> list[str]:
    if isinstance(options, str):
        # Options may arrive as the text of a Python/JSON list or tuple.
        try:
            parsed = ast.literal_eval(options)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return [options]
        return [str(option) for option in parsed] if isinstance(parsed, list | tuple) else [options]
    return [str(option) for option in options]


def validate_choice(text: str, options: Any) -> bool:
    return any(option in text for option in _option_list(options))


def validate_highlighted_sections(text: str, N: int) -> bool:
    return len(re.findall(r"\*(.*?)\*", text)) >= N


def validate_sections(text: str, N: int, section_splitter: str) -> bool:
    # A header is the splitter followed by a number ("Section 1"), in any case.
    pattern = r"\s?" + re.escape(section_splitter) + r"\s?\d+\s?"
    return len(re.split(pattern, text, flags=re.IGNORECASE)) - 1 >= N


def validate_json_format(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        # Nesting deeper than the parser's recursion limit counts as not JSON.
        return False
    return True


def validate_repeat_prompt(text: str, original_prompt: str) -> bool:
    return text.startswith(original_prompt)


def validate_two_responses(text: str) -> bool:
    if text.count("******") != 1:
        return False
    first, second = text.split("******")
    return first.strip() != second.strip()


def validate_uppercase(text: str) -> bool:
    return text == text.upper()


def validate_lowercase(text: str) -> bool:
    return text == text.lower()


def validate_frequency_capital_words(text: str, N: int, quantifier: str) -> bool:
    return _within(len(re.findall(r"\b[A-Z]+\b", text)), N, quantifier, max(round(N * 0.1), 1))


def validate_end(text: str, end_phrase: str) -> bool:
    return text.endswith(end_phrase)


def validate_quotation(text: str) -> bool:
    return text.startswith('"') and text.endswith('"')


def validate_no_commas(text: str) -> bool:
    return "," not in text


IF_FUNCTIONS: dict[str, IfFunction] = {
    fn.__name__: fn
    for fn in (
        verify_keywords, verify_keyword_frequency, validate_forbidden_words, verify_letter_frequency,
        validate_response_language, verify_paragraph_count, validate_word_constraint,
        verify_sentence_constraint, validate_paragraphs, verify_postscript, validate_placeholders,
        verify_bullet_points, validate_title, validate_choice, validate_highlighted_sections,
        validate_sections, validate_json_format, validate_repeat_prompt, validate_two_responses,
        validate_uppercase, validate_lowercase, validate_frequency_capital_words, validate_end,
        validate_quotation, validate_no_commas,
    )
}  # fmt: skip

IFEVAL_ID = {
    "verify_keywords": "keywords:existence",
    "verify_keyword_frequency": "keywords:frequency",
    "validate_forbidden_words": "keywords:forbidden_words",
    "verify_letter_frequency": "keywords:letter_frequency",
    "validate_response_language": "language:response_language",
    "verify_paragraph_count": "length_constraints:number_paragraphs",
    "validate_word_constraint": "length_constraints:number_words",
    "verify_sentence_constraint": "length_constraints:number_sentences",
    "validate_paragraphs": "length_constraints:nth_paragraph_first_word",
    "verify_postscript": "detectable_content:postscript",
    "validate_placeholders": "detectable_content:number_placeholders",
    "verify_bullet_points": "detectable_format:number_bullet_lists",
    "validate_title": "detectable_format:title",
    "validate_choice": "detectable_format:constrained_response",
    "validate_highlighted_sections": "detectable_format:number_highlighted_sections",
    "validate_sections": "detectable_format:multiple_sections",
    "validate_json_format": "detectable_format:json_format",
    "validate_repeat_prompt": "combination:repeat_prompt",
    "validate_two_responses": "combination:two_responses",
    "validate_uppercase": "change_case:english_capital",
    "validate_lowercase": "change_case:english_lowercase",
    "validate_frequency_capital_words": "change_case:capital_word_frequency",
    "validate_end": "startend:end_checker",
    "validate_quotation": "startend:quotation",
    "validate_no_commas": "punctuation:no_comma",
}

_ARG_TYPES: dict[str, type | tuple[type, ...]] = {
    "N": int, "i": int, "keyword_list": list, "forbidden_words": list, "word": str, "letter": str,
    "language": str, "quantifier": str, "first_word": str, "postscript_marker": str,
    "options": (list, tuple, str), "section_splitter": str, "original_prompt": str, "end_phrase": str,
}  # fmt: skip


def build_function_check(
    constraint: Mapping[str, Any], prompt: str | None, profile: str = "default"
) -> Callable[[str], bool]:
    """A checker for one `{"func_name": ..., <args>}` constraint; `None` arguments count as absent. The
    response is checked stripped of surrounding whitespace, as the release checked it (a trailing newline
    does not break "end with ..." or "wrap in quotes")."""
    from tulu_cli.rewards import release_profile

    name = constraint.get("func_name")
    if name not in IF_FUNCTIONS:
        raise ValueError(f"unknown func_name {name!r}")
    fn = IF_FUNCTIONS[name]
    prepare = str.strip
    if profile == release_profile.NAME:
        fn = release_profile.IF_FUNCTIONS.get(name, fn)
        prepare = release_profile.response_text
    wanted = fn.__code__.co_varnames[1 : fn.__code__.co_argcount]
    args = {key: value for key, value in constraint.items() if key != "func_name" and value is not None}
    if "original_prompt" in wanted and "original_prompt" not in args and prompt is not None:
        args["original_prompt"] = prompt
    missing = [key for key in wanted if key not in args]
    if missing:
        raise ValueError(f"{name}: missing argument(s) {', '.join(missing)}")
    call_args = {}
    for key in wanted:
        value = args[key]
        if isinstance(value, float) and value.is_integer() and _ARG_TYPES.get(key) is int:
            value = int(value)
        kind = _ARG_TYPES.get(key, object)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{name}: argument {key!r} has the wrong type {type(value).__name__}")
        call_args[key] = value
    if name == "verify_letter_frequency" and len(call_args["letter"]) != 1:
        raise ValueError(f"{name}: letter must be a single character")
    return lambda text: bool(fn(prepare(text), **call_args))
