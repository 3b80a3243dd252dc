"""Text normalisation shared by the training and the evaluation side of decontamination.

`normalize(text)` applies, in order:

1. Unicode NFKC: compatibility forms fold to their plain equivalents (full-width letters and digits,
   ligatures such as "ﬁ", superscripts), and a base letter plus combining accent composes to one
   character, so "e" + U+0301 and "é" are the same word.
2. `str.casefold()` (a stricter lowercase: "ß" -> "ss", final sigma -> sigma), then NFKC again for the
   rare characters whose case fold is not NFKC-normal.
3. Every Unicode punctuation character (general category P*) and every control character (Cc)
   becomes a space; invisible format characters (Cf: soft hyphen, zero-width space/joiner, BOM)
   are deleted, so they never split or glue words. Symbols (S*: "+", "=", "$", "^") are content and
   are kept.
4. CJK ideographs, kana and CJK compatibility ideographs are written without spaces, so each such
   character becomes its own word (the usual character-level treatment); a Chinese or Japanese
   prompt then produces character n-grams. Hangul is left as is because Korean separates words
   with spaces. Other scripts that do not use spaces (Thai, Lao, Khmer, Myanmar) are not segmented:
   a run of such text is one word.
5. Whitespace (any Unicode whitespace) is collapsed to single spaces and trimmed.

Accents are kept: "résumé" and "resume" are different words, since stripping diacritics conflates
distinct words in many languages.

`word_array(texts)` gives the same words for many texts at once as one Arrow array: ASCII texts (for
which steps 1, 2 and 4 reduce to ASCII lowercasing) go through a byte translation table in one pass
over the joined bytes, the others through `normalize` first.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa

__all__ = ["SEPARATOR", "normalize", "word_array", "words"]

# Word placed after each text by `word_array`; a control character, so never a normalised word.
SEPARATOR = "\x01"

# Code point ranges whose characters each become a separate word.
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),  # iteration mark, closing mark, ideographic zero
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x20000, 0x3134F),  # CJK extensions B-G and compatibility supplement
)


def _is_cjk(code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


class _FoldTable(dict):
    """`str.translate` table filled lazily: each code point is classified once, then cached."""

    def __missing__(self, code: int) -> int | str | None:
        char = chr(code)
        category = unicodedata.category(char)
        value: int | str | None
        if category[0] == "P" or category == "Cc":
            value = " "
        elif category == "Cf":
            value = None
        elif _is_cjk(code):
            value = f" {char} "
        else:
            value = code
        self[code] = value
        return value


_FOLD = _FoldTable()


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return text.translate(_FOLD)


def words(text: str) -> list[str]:
    """The normalised words of `text` (see the module docstring)."""
    return _fold(text).split()


def normalize(text: str) -> str:
    """`text` normalised to space-separated words: `normalize(t) == " ".join(words(t))`."""
    return " ".join(_fold(text).split())


def _ascii_table() -> bytes:
    """Byte translation doing `normalize` on ASCII: lowercase, punctuation and controls to spaces.

    Bytes >= 0x80 (parts of UTF-8 sequences) and the separator byte are left as they are.
    """
    table = bytearray(range(256))
    for code in range(128):
        char = chr(code)
        if unicodedata.category(char)[0] == "P" or unicodedata.category(char) == "Cc":
            table[code] = ord(" ")
        else:
            table[code] = ord(char.lower())
    table[ord(SEPARATOR)] = ord(SEPARATOR)
    return bytes(table)


_ASCII_TABLE = _ascii_table()
_SPACE = ord(" ")


def word_array(texts: list[str]) -> tuple[pa.Array, np.ndarray]:
    """The normalised words of all `texts`, each text followed by the word `SEPARATOR`.

    Returns the words (an Arrow string array; large_string past 2 GiB of text) and `text_start` (int64 [len(texts) + 1]): the words of
    text t are `words[text_start[t]:text_start[t + 1] - 1]`, followed by the separator.
    Equal to concatenating `words(t) + [SEPARATOR]` over the texts.
    """
    if not texts:
        return pa.array([], type=pa.string()), np.zeros(1, dtype=np.int64)
    parts = texts if all(map(str.isascii, texts)) else [t if t.isascii() else normalize(t) for t in texts]
    glue = f" {SEPARATOR} "
    joined_text = glue.join(parts) + glue
    if joined_text.count(SEPARATOR) != len(parts):  # raw ASCII text held the separator: a control, a space
        joined_text = glue.join(part.replace(SEPARATOR, " ") for part in parts) + glue
    joined = joined_text.encode("utf-8").translate(_ASCII_TABLE)
    data = np.frombuffer(joined, dtype=np.uint8)
    is_char = data != _SPACE
    edge = np.diff(is_char.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    lengths = np.flatnonzero(edge == -1) - starts
    chars = data[is_char]
    large = chars.shape[0] >= 2**31  # past int32 offsets
    offsets = np.zeros(starts.shape[0] + 1, dtype=np.int64 if large else np.int32)
    np.cumsum(lengths, out=offsets[1:])
    array_type = pa.LargeStringArray if large else pa.StringArray
    words_arr = array_type.from_buffers(starts.shape[0], pa.py_buffer(offsets), pa.py_buffer(chars))
    is_separator = (lengths == 1) & (data[starts] == ord(SEPARATOR))
    text_start = np.zeros(len(texts) + 1, dtype=np.int64)
    text_start[1:] = np.flatnonzero(is_separator) + 1
    return words_arr, text_start
