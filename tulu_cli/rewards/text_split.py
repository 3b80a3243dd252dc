"""Sentence and word splitting with no downloaded data.

`split_sentences` reproduces the decisions of NLTK's Punkt sentence tokenizer with empty parameters (no
learned abbreviations, collocations, sentence starters or orthographic statistics); on text without
abbreviations that is how the trained English model splits as well. `treebank_words` reproduces NLTK's
`word_tokenize` (Punkt sentences, then the improved Treebank rules).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator

# ---- Punkt -------------------------------------------------------------------------------------------
_NON_WORD = r"(?:[)\";}\]\*:@\'\({\[\u2018\u2019\u201c\u201d\xab\xbb?!])"
_MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_START = r"[^\(\"\`{\[:;&\#\*@\)}\]\-,]"
_PUNKT_WORD = re.compile(
    rf"({_MULTI_CHAR}"
    rf"|(?={_WORD_START})\S+?(?=\s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR}))"
    r"|\S)"
)
_PERIOD_CONTEXT = re.compile(rf"[.?!](?=(?P<after_tok>{_NON_WORD}|\s+(?P<next_tok>\S+)))")
_REALIGN = re.compile(r'["\')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)', re.MULTILINE)
_NUMERIC = re.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_INITIAL = re.compile(r"[^\W\d]\.$")
_ELLIPSIS = re.compile(r"\.\.+$")
_INTERNAL_PUNCTUATION = (";", ":", ",", ".", "!", "?")


def _punkt_tokens(text: str) -> list[str]:
    return [token for line in text.split("\n") if line.strip() for token in _PUNKT_WORD.findall(line)]


def _breaks_after(token: str, following: str) -> bool:
    """Whether Punkt (with empty parameters) ends a sentence after `token`, given the next token."""
    if token in (".", "?", "!"):
        return True
    if _ELLIPSIS.match(token) or not token.endswith(".") or token.endswith(".."):
        return False
    if _INITIAL.match(token) or _NUMERIC.match(token.lower()):
        # The orthographic heuristic: with no statistics only a lower-case word or punctuation after a
        # number says "no break"; after an initial, a capitalised word also says "no break".
        if following in _INTERNAL_PUNCTUATION or following[0].islower():
            return False
        if _INITIAL.match(token) and following[0].isupper():
            return False
    return True


def _contains_break(context: str) -> bool:
    tokens = _punkt_tokens(context)
    return any(_breaks_after(token, following) for token, following in zip(tokens, tokens[1:], strict=False))


def _end_contexts(text: str) -> Iterator[tuple[re.Match[str], str]]:
    previous_slice = slice(0, 0)
    previous_match = None
    for match in _PERIOD_CONTEXT.finditer(text):
        before = text[previous_slice.stop : match.start()]
        last_space = max(map(before.rfind, string.whitespace))
        start = last_space + previous_slice.stop + 1 if last_space > 0 else previous_slice.start
        word_slice = slice(start, match.start())
        if previous_match and previous_slice.stop <= word_slice.start:
            yield (
                previous_match,
                text[previous_slice] + previous_match.group() + previous_match.group("after_tok"),
            )
        previous_match = match
        previous_slice = word_slice
    if previous_match:
        yield (
            previous_match,
            text[previous_slice] + previous_match.group() + previous_match.group("after_tok"),
        )


def _sentence_slices(text: str) -> Iterator[slice]:
    last_break = 0
    for match, context in _end_contexts(text):
        if _contains_break(context):
            yield slice(last_break, match.end())
            last_break = match.start("next_tok") if match.group("next_tok") else match.end()
    yield slice(last_break, len(text.rstrip()))


def _realigned(text: str, slices: Iterator[slice]) -> Iterator[slice]:
    # Closing quotes and brackets after a sentence end belong to that sentence.
    realign = 0
    previous = None
    for current in slices:
        if previous is not None:
            first = slice(previous.start + realign, previous.stop)
            match = _REALIGN.match(text[current])
            if match:
                yield slice(first.start, current.start + len(match.group(0).rstrip()))
                realign = match.end()
            else:
                realign = 0
                if text[first]:
                    yield first
        previous = current
    if previous is not None:
        last = slice(previous.start + realign, previous.stop)
        if text[last]:
            yield last


def split_sentences(text: str) -> Iterator[str]:
    """The sentences, lazily: a caller that needs only the first few does not split the whole text."""
    return (text[piece] for piece in _realigned(text, _sentence_slices(text)))


def count_sentences(text: str) -> int:
    return sum(1 for _ in split_sentences(text))


# ---- Words -------------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


_STARTING_QUOTES = (
    (re.compile("([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
)
_PUNCTUATION = (
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*+)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
)
_ENDING_QUOTES = (
    (re.compile("([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
)
_CONTRACTIONS = tuple(
    re.compile(pattern)
    for pattern in (
        r"(?i)\b(can)(?#X)(not)\b",
        r"(?i)\b(d)(?#X)('ye)\b",
        r"(?i)\b(gim)(?#X)(me)\b",
        r"(?i)\b(gon)(?#X)(na)\b",
        r"(?i)\b(got)(?#X)(ta)\b",
        r"(?i)\b(lem)(?#X)(me)\b",
        r"(?i)\b(more)(?#X)('n)\b",
        r"(?i)\b(wan)(?#X)(na)(?=\s)",
        r"(?i) ('t)(?#X)(is)\b",
        r"(?i) ('t)(?#X)(was)\b",
    )
)


def treebank_sentence_words(sentence: str) -> list[str]:
    for pattern, replacement in _STARTING_QUOTES + _PUNCTUATION:
        sentence = pattern.sub(replacement, sentence)
    sentence = f" {sentence} "
    for pattern, replacement in _ENDING_QUOTES:
        sentence = pattern.sub(replacement, sentence)
    for pattern in _CONTRACTIONS:
        sentence = pattern.sub(r" \1 \2 ", sentence)
    return sentence.split()


def treebank_words(text: str) -> list[str]:
    return [word for sentence in split_sentences(text) for word in treebank_sentence_words(sentence)]
