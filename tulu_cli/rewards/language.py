"""Deterministic language detection: langdetect's algorithm and profiles (shipped with the package), run
faster with the same answers.

langdetect (`Detector.detect` with seed 0, as the IFEval reference seeds it) spends ~10 ms a call in
per-character Python and 55-language Python loops. Here the same steps run with cached per-word n-grams
and numpy: the same n-gram list in the same order, the same random draws, the same float operations in
the same order (elementwise, so numpy rounds as Python does), hence the same answer;
tests/test_rewards_language.py checks it against langdetect itself.
"""

from __future__ import annotations

import random
import re
import threading

import numpy as np
from langdetect import detector_factory
from langdetect.detector import Detector
from langdetect.language import Language
from langdetect.utils.ngram import NGram

from tulu_cli.rewards.registry import warming_up

SEED = 0
_lock = threading.Lock()
_MAX_CACHED_WORDS = 200_000
_MAX_TEXT_LENGTH = 10_000  # Detector.max_text_length
_SPACES = re.compile(" {2,}")
# The character classes `Detector.cleaning_text` counts: "A" to "z", and U+0300 and above outside the
# Latin Extended Additional block (U+1E00-U+1EFF).
_LATIN = re.compile("[A-z]")
_NON_LATIN = re.compile("[\u0300-\u1dff\u1f00-\U0010ffff]")
_TOKEN = re.compile("[^ ]+ ?")


class _Profiles:
    """langdetect's profiles as arrays, and caches of normalised characters and per-word n-grams."""

    def __init__(self) -> None:
        with warming_up():  # loading the profiles takes seconds, once per process
            detector_factory.init_factory()
        factory = detector_factory._factory
        self.langs: list[str] = list(factory.langlist)
        self.word_probs = factory.word_lang_prob_map
        self.chars = _NormalizedChars()
        self.words: dict[str, list[str]] = {}

    def word_ngrams(self, token: str) -> list[str]:
        """`Detector._extract_ngrams` over one word (and the space after it, when there is one), starting
        from the fresh buffer every word starts with."""
        grams = self.words.get(token)
        if grams is not None:
            return grams
        grams, buffer, capital_word = [], " ", False
        for char in token:
            last = buffer[-1]
            if last == " ":
                buffer, capital_word = " ", False
            elif len(buffer) >= NGram.N_GRAM:
                buffer = buffer[1:]
            buffer += char
            if char.isupper():
                capital_word = capital_word or last.isupper()
            else:
                capital_word = False
            if capital_word:
                continue
            for n in range(1, min(NGram.N_GRAM, len(buffer)) + 1):
                gram = buffer[-n:]
                if gram != " " and gram in self.word_probs:
                    grams.append(gram)
        if len(self.words) >= _MAX_CACHED_WORDS:
            self.words.clear()
        self.words[token] = grams
        return grams


class _NormalizedChars(dict):
    """A `str.translate` table computing `NGram.normalize` once per distinct character."""

    def __missing__(self, codepoint: int) -> str:
        value = self[codepoint] = NGram.normalize(chr(codepoint))
        return value


_profiles: _Profiles | None = None


def _prepared_text(text: str) -> str:
    """`Detector.append` then `Detector.cleaning_text`."""
    text = Detector.URL_RE.sub(" ", text)
    text = Detector.MAIL_RE.sub(" ", text)
    text = NGram.normalize_vi(text)
    text = _SPACES.sub(" ", text[:_MAX_TEXT_LENGTH])
    if not text.isascii() and len(_LATIN.findall(text)) * 2 < len(_NON_LATIN.findall(text)):
        text = _LATIN.sub("", text)
    return text


def _ngrams(profiles: _Profiles, text: str) -> list[str]:
    normalized = text.translate(profiles.chars)
    grams: list[str] = []
    for match in _TOKEN.finditer(normalized):
        grams += profiles.word_ngrams(match.group())
    return grams


def _language_probabilities(profiles: _Profiles, grams: list[str]) -> list[float]:
    """`Detector._detect_block` after the n-grams: seeded trials until the probabilities converge.

    The reference multiplies in one draw at a time, in a Python loop over the languages, and normalises
    after draws 1, 6, 11, ...; here the draws between two normalisations are multiplied in one numpy
    reduction, row after row, so every element sees the same operations in the same order.
    """
    count = len(profiles.langs)
    unique = {gram: row for row, gram in enumerate(dict.fromkeys(grams))}
    matrix = np.array([profiles.word_probs[gram] for gram in unique], dtype=np.float64)
    rows_of = [unique[gram] for gram in grams]
    draw = random.Random()
    draw.seed(SEED)
    positions = range(len(grams))
    total = np.zeros(count)
    for _ in range(7):  # Detector.n_trial
        prob = np.full(count, 1.0 / count)
        alpha = Detector.ALPHA_DEFAULT + draw.gauss(0.0, 1.0) * Detector.ALPHA_WIDTH
        weight = alpha / Detector.BASE_FREQ
        step, block = 0, 1
        while True:
            picked = [rows_of[draw.choice(positions)] for _ in range(block)]
            factors = np.vstack([prob[None, :], weight + matrix[picked]])
            prob = np.multiply.reduce(factors, axis=0)  # ((prob * f1) * f2) ..., row after row
            step += block
            prob /= sum(prob.tolist())  # Python's left-to-right sum, as the reference
            if prob.max() > Detector.CONV_THRESHOLD or step - 1 >= Detector.ITERATION_LIMIT:
                break
            block = 5
        total += prob / 7
    return total.tolist()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of `text` as langdetect (seed 0) detects it, or None when it finds no features."""
    global _profiles
    with _lock:
        if _profiles is None:
            _profiles = _Profiles()
        profiles = _profiles
        grams = _ngrams(profiles, _prepared_text(text))
    if not grams:
        return None
    probabilities = _language_probabilities(profiles, grams)
    ranked = sorted(
        (Language(lang, p) for lang, p in zip(profiles.langs, probabilities, strict=True)
         if p > Detector.PROB_THRESHOLD),
        reverse=True,
    )  # fmt: skip
    return ranked[0].lang if ranked else Detector.UNKNOWN_LANG
