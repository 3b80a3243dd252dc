"""The 25 IFEval instruction checkers, keyed by instruction id.

Semantics follow lm-evaluation-harness's IFEval task (itself the google-research release) so scores are
comparable with the benchmark; where that code is odd, the oddity is kept and commented. Differences:
a missing or invalid argument is an error here, where the reference draws a random value; and an
argument (keyword, forbidden word, postscript marker, section splitter) is matched as literal text, where
the reference compiles it as a regular expression (`(a+)+$` would hang it). On the benchmark's own
arguments, plain words, the two agree. Every check runs in time linear in the response.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tulu_cli.rewards.language import detect_language
from tulu_cli.rewards.spans import lazy_spans, widest_span
from tulu_cli.rewards.text_split import count_words, split_sentences, treebank_sentence_words

Check = Callable[[str], bool]
RELATIONS = ("less than", "at least")
CONSTRAINED_RESPONSE_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _arg(kwargs: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = kwargs.get(name)
    if value is None:
        raise ValueError(f"missing argument {name!r}")
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"argument {name!r} has the wrong type {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"argument {name!r} is empty")
    return value


def _count(kwargs: Mapping[str, Any], name: str) -> int:
    value = _arg(kwargs, name, int)
    if value < 0:
        raise ValueError(f"argument {name!r} must be >= 0")
    return value


def _relation(kwargs: Mapping[str, Any], name: str) -> str:
    value = _arg(kwargs, name, str)
    if value not in RELATIONS:
        raise ValueError(f"argument {name!r} must be one of {RELATIONS}, got {value!r}")
    return value


def _compare(actual: int, relation: str, threshold: int) -> bool:
    return actual < threshold if relation == "less than" else actual >= threshold


def _words(kwargs: Mapping[str, Any], name: str) -> list[str]:
    value = _arg(kwargs, name, (list, tuple))
    if not value or not all(isinstance(word, str) for word in value):
        raise ValueError(f"argument {name!r} must be a non-empty list of strings")
    return list(value)


def _english_case(text: str, is_case: Callable[[str], bool]) -> bool:
    if not is_case(text):
        return False
    language = detect_language(text)
    # The reference counts text langdetect cannot classify (no letters) as English.
    return language is None or language == "en"


def keywords_existence(kwargs: Mapping[str, Any]) -> Check:
    # Substrings in any case, as the reference's `re.search(keyword, text, re.IGNORECASE)` on words.
    keywords = [keyword.lower() for keyword in _words(kwargs, "keywords")]
    return lambda text: all(keyword in text.lower() for keyword in keywords)


def keywords_frequency(kwargs: Mapping[str, Any]) -> Check:
    # Non-overlapping substring occurrences in any case, not whole words, as in the reference.
    keyword = _arg(kwargs, "keyword", str).strip().lower()
    frequency, relation = _count(kwargs, "frequency"), _relation(kwargs, "relation")
    return lambda text: _compare(text.lower().count(keyword), relation, frequency)


def keywords_forbidden_words(kwargs: Mapping[str, Any]) -> Check:
    patterns = [
        re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE) for word in _words(kwargs, "forbidden_words")
    ]
    return lambda text: not any(pattern.search(text) for pattern in patterns)


def keywords_letter_frequency(kwargs: Mapping[str, Any]) -> Check:
    letter = _arg(kwargs, "letter", str).strip().lower()
    if len(letter) != 1 or not "a" <= letter <= "z":
        raise ValueError(f"argument 'letter' must be one ASCII letter, got {letter!r}")
    frequency, relation = _count(kwargs, "let_frequency"), _relation(kwargs, "let_relation")
    return lambda text: _compare(text.lower().count(letter), relation, frequency)


def language_response_language(kwargs: Mapping[str, Any]) -> Check:
    language = _arg(kwargs, "language", str)

    def check(text: str) -> bool:
        detected = detect_language(text)
        # An undecidable text passes, as in the reference.
        return detected is None or detected == language

    return check


def _at_least(items: Iterator[Any], threshold: int) -> bool:
    """Whether `items` yields `threshold` items, drawing no more than that."""
    return sum(1 for _ in itertools.islice(items, threshold)) >= threshold


def length_number_sentences(kwargs: Mapping[str, Any]) -> Check:
    threshold, relation = _count(kwargs, "num_sentences"), _relation(kwargs, "relation")
    # Both relations compare with the threshold, so counting stops there (a long response stays cheap).
    return lambda text: _at_least(split_sentences(text), threshold) == (relation == "at least")


def length_number_paragraphs(kwargs: Mapping[str, Any]) -> Check:
    expected = _count(kwargs, "num_paragraphs")

    def check(text: str) -> bool:
        paragraphs = re.split(r"\s?\*\*\*\s?", text)
        count = len(paragraphs)
        for index, paragraph in enumerate(paragraphs):
            if not paragraph.strip():
                if index in (0, len(paragraphs) - 1):
                    count -= 1
                else:
                    return False
        return count == expected

    return check


def length_number_words(kwargs: Mapping[str, Any]) -> Check:
    threshold, relation = _count(kwargs, "num_words"), _relation(kwargs, "relation")
    return lambda text: _compare(count_words(text), relation, threshold)


def length_nth_paragraph_first_word(kwargs: Mapping[str, Any]) -> Check:
    expected = _count(kwargs, "num_paragraphs")
    nth = _count(kwargs, "nth_paragraph")
    if not 1 <= nth <= expected:
        raise ValueError("argument 'nth_paragraph' must be between 1 and 'num_paragraphs'")
    first_word = _arg(kwargs, "first_word", str).lower()

    def check(text: str) -> bool:
        paragraphs = text.split("\n\n")
        count = sum(1 for paragraph in paragraphs if paragraph.strip())
        # The reference indexes the raw split (empty paragraphs included) but bounds the index by the
        # count of non-empty ones.
        if nth > count:
            return False
        paragraph = paragraphs[nth - 1].strip()
        if not paragraph:
            return False
        word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
        found = ""
        for char in word:
            if char in {".", ",", "?", "!", "'", '"'}:
                break
            found += char.lower()
        return count == expected and found == first_word

    return check


def content_number_placeholders(kwargs: Mapping[str, Any]) -> Check:
    minimum = _count(kwargs, "num_placeholders")
    # The reference's `re.findall(r"\[.*?\]", text)`.
    return lambda text: _at_least(lazy_spans(text, "[", "]"), minimum)


def content_postscript(kwargs: Mapping[str, Any]) -> Check:
    marker = _arg(kwargs, "postscript_marker", str).strip()
    # The reference searches `\s*MARKER.*$` (multiline) in the lower-cased text; the leading `\s*` and
    # trailing `.*$` match anywhere (and make the search quadratic on blank text), so MARKER alone decides.
    if marker == "P.P.S":
        compiled = re.compile(r"p\.\s?p\.\s?s")
    elif marker == "P.S.":
        compiled = re.compile(r"p\.\s?s\.")
    else:
        compiled = re.compile(re.escape(marker.lower()))
    return lambda text: compiled.search(text.lower()) is not None


def format_number_bullet_lists(kwargs: Mapping[str, Any]) -> Check:
    expected = _count(kwargs, "num_bullets")

    def check(text: str) -> bool:
        stars = re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)
        dashes = re.findall(r"^\s*-.*$", text, flags=re.MULTILINE)
        return len(stars) + len(dashes) == expected

    return check


def format_constrained_response(kwargs: Mapping[str, Any]) -> Check:
    return lambda text: any(option in text.strip() for option in CONSTRAINED_RESPONSE_OPTIONS)


def format_number_highlighted_sections(kwargs: Mapping[str, Any]) -> Check:
    minimum = _count(kwargs, "num_highlights")

    def check(text: str) -> bool:
        single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
        # lm-eval also counts **bold** spans, on top of the *single* matches found inside them.
        double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h[2:-2].strip()]
        return len(single) + len(double) >= minimum

    return check


def format_multiple_sections(kwargs: Mapping[str, Any]) -> Check:
    splitter = _arg(kwargs, "section_spliter", str).strip()
    minimum = _count(kwargs, "num_sections")
    pattern = re.compile(r"\s?" + re.escape(splitter) + r"\s?\d+\s?")
    return lambda text: len(pattern.split(text)) - 1 >= minimum


def format_json_format(kwargs: Mapping[str, Any]) -> Check:
    def check(text: str) -> bool:
        text = text.strip()
        for fence in ("```json", "```Json", "```JSON", "```"):
            text = text.removeprefix(fence)
        text = text.removesuffix("```").strip()
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            # Nesting deeper than the parser's recursion limit counts as not JSON.
            return False
        return True

    return check


def _titles(text: str) -> Iterator[str]:
    """The matches of the reference's `re.findall(r"<<[^\n]+>>", text)`: one per line at most."""
    for line in text.split("\n"):
        span = widest_span(line, "<<", ">>", min_inner=1)
        if span is not None:
            yield line[span[0] : span[1]]


def format_title(kwargs: Mapping[str, Any]) -> Check:
    return lambda text: any(title.lstrip("<").rstrip(">").strip() for title in _titles(text))


def combination_two_responses(kwargs: Mapping[str, Any]) -> Check:
    def check(text: str) -> bool:
        parts = text.split("******")
        answers = []
        for index, part in enumerate(parts):
            if part.strip():
                answers.append(part)
            elif index not in (0, len(parts) - 1):
                return False
        return len(answers) == 2 and answers[0].strip() != answers[1].strip()

    return check


def combination_repeat_prompt(kwargs: Mapping[str, Any]) -> Check:
    prompt = kwargs.get("prompt_to_repeat")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("missing argument 'prompt_to_repeat'")
    expected = prompt.strip().lower()
    return lambda text: text.strip().lower().startswith(expected)


def startend_end_checker(kwargs: Mapping[str, Any]) -> Check:
    phrase = _arg(kwargs, "end_phrase", str).strip().lower()
    return lambda text: text.strip().strip('"').lower().endswith(phrase)


def startend_quotation(kwargs: Mapping[str, Any]) -> Check:
    def check(text: str) -> bool:
        text = text.strip()
        return len(text) > 1 and text[0] == '"' and text[-1] == '"'

    return check


_ASCII_UPPER = re.compile("[A-Z]")


def _has_upper(text: str) -> bool:
    """Whether a character of `text` is upper case (`str.islower` is true only when none is)."""
    if text.isascii():
        return _ASCII_UPPER.search(text) is not None
    return not text.islower() and any(char.isupper() for char in text)


def _may_hold_capital_word(sentence: str) -> bool:
    """False only when no Treebank token of `sentence` can be all capitals: no upper-case letter after the
    first character, and a capital first letter followed by a lower-case one. Tokenisation splits
    between two letters only in contractions, and of those only "n't" can leave one capital alone."""
    text = sentence.lstrip()
    if "n't" in text.lower() or _has_upper(text[1:]):
        return True
    return text[:1].isupper() and not text[1:2].islower()


def _capital_words(text: str) -> Iterator[str]:
    """The all-capital words of NLTK's `word_tokenize(text)`, tokenising only the sentences that may
    hold one (most sentences only start with a capital)."""
    for sentence in split_sentences(text):
        if _may_hold_capital_word(sentence):
            yield from (word for word in treebank_sentence_words(sentence) if word.isupper())


def change_case_capital_word_frequency(kwargs: Mapping[str, Any]) -> Check:
    frequency, relation = _count(kwargs, "capital_frequency"), _relation(kwargs, "capital_relation")
    return lambda text: _at_least(_capital_words(text), frequency) == (relation == "at least")


def change_case_english_capital(kwargs: Mapping[str, Any]) -> Check:
    return lambda text: _english_case(text, str.isupper)


def change_case_english_lowercase(kwargs: Mapping[str, Any]) -> Check:
    return lambda text: _english_case(text, str.islower)


def punctuation_no_comma(kwargs: Mapping[str, Any]) -> Check:
    return lambda text: "," not in text


CHECKS: dict[str, Callable[[Mapping[str, Any]], Check]] = {
    "keywords:existence": keywords_existence,
    "keywords:frequency": keywords_frequency,
    "keywords:forbidden_words": keywords_forbidden_words,
    "keywords:letter_frequency": keywords_letter_frequency,
    "language:response_language": language_response_language,
    "length_constraints:number_sentences": length_number_sentences,
    "length_constraints:number_paragraphs": length_number_paragraphs,
    "length_constraints:number_words": length_number_words,
    "length_constraints:nth_paragraph_first_word": length_nth_paragraph_first_word,
    "detectable_content:number_placeholders": content_number_placeholders,
    "detectable_content:postscript": content_postscript,
    "detectable_format:number_bullet_lists": format_number_bullet_lists,
    "detectable_format:constrained_response": format_constrained_response,
    "detectable_format:number_highlighted_sections": format_number_highlighted_sections,
    "detectable_format:multiple_sections": format_multiple_sections,
    "detectable_format:json_format": format_json_format,
    "detectable_format:title": format_title,
    "combination:two_responses": combination_two_responses,
    "combination:repeat_prompt": combination_repeat_prompt,
    "startend:end_checker": startend_end_checker,
    "startend:quotation": startend_quotation,
    "change_case:capital_word_frequency": change_case_capital_word_frequency,
    "change_case:english_capital": change_case_english_capital,
    "change_case:english_lowercase": change_case_english_lowercase,
    "punctuation:no_comma": punctuation_no_comma,
}


def build_check(instruction_id: str, kwargs: Mapping[str, Any] | None) -> Check:
    """The checker for one instruction; `None` values in `kwargs` count as absent."""
    try:
        builder = CHECKS[instruction_id]
    except KeyError:
        raise ValueError(f"unknown instruction id {instruction_id!r}") from None
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ValueError(f"kwargs of {instruction_id!r} must be an object")
    present = {key: value for key, value in (kwargs or {}).items() if value is not None}
    try:
        return builder(present)
    except ValueError as exc:
        raise ValueError(f"{instruction_id}: {exc}") from None
