"""Deterministic language detection: langdetect's algorithm and profiles (shipped with the package), run
faster with the same answers.

langdetect (`Detector.detect` with seed 0, as the IFEval reference seeds it) spends ~10 ms a call in
per-character Python and 55-language Python loops. Here the same steps run with cached per-word n-grams,
the profiles as one numpy table, and the random draws read from the generator's precomputed output: the
same n-gram list in the same order, the same random draws, the same float operations in the same order
(elementwise, so numpy rounds as Python does), hence the same answer; tests/test_rewards_language.py
checks it against langdetect itself.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import threading

import numpy as np
from langdetect.detector import Detector
from langdetect.detector_factory import PROFILES_DIRECTORY
from langdetect.language import Language
from langdetect.utils.ngram import NGram

from tulu_cli.rewards.registry import warming_up

SEED = 0
TRIALS = 7  # Detector.n_trial
_lock = threading.Lock()
_MAX_CACHED_WORDS = 200_000
_MAX_TEXT_LENGTH = 10_000  # Detector.max_text_length
_SPACES = re.compile(" {2,}")
# The character classes `Detector.cleaning_text` counts: "A" to "z", and U+0300 and above outside the
# Latin Extended Additional block (U+1E00-U+1EFF).
_LATIN = re.compile("[A-z]")
_NON_LATIN = re.compile("[\u0300-\u1dff\u1f00-\U0010ffff]")
# Draws are read ahead in blocks of this many words of generator output.
_READ_AHEAD_WORDS = 256
# Far above the rounding error of summing seven probabilities, far below any real lead.
_MARGIN = 1e-9


def load_profiles(directory: str = PROFILES_DIRECTORY) -> tuple[list[str], dict[str, int], np.ndarray]:
    """`DetectorFactory.load_profile(directory)` as arrays, built without its per-entry Python loop: the
    languages (in its order, that of `os.listdir`), the row of every n-gram (in its `word_lang_prob_map`
    order) and the table of probabilities (n-gram x language: `freq / n_words[len - 1]` for n-grams of 1
    to 3 characters, else 0)."""
    profiles = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if not name.startswith(".") and os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                profiles.append(json.load(handle))
    grams = dict.fromkeys(itertools.chain.from_iterable(profile["freq"] for profile in profiles))
    row_of = {gram: row for row, gram in enumerate(grams)}
    table = np.zeros((len(row_of), len(profiles)))
    for column, profile in enumerate(profiles):
        freq = profile["freq"]
        rows = np.fromiter(map(row_of.__getitem__, freq), dtype=np.intp, count=len(freq))
        lengths = np.fromiter(map(len, freq), dtype=np.intp, count=len(freq))
        counts = np.fromiter(freq.values(), dtype=np.float64, count=len(freq))
        kept = (lengths >= 1) & (lengths <= NGram.N_GRAM)
        n_words = np.asarray(profile["n_words"], dtype=np.float64)[lengths[kept] - 1]
        table[rows[kept], column] = counts[kept] / n_words
    return [profile["name"] for profile in profiles], row_of, table


class _Profiles:
    """langdetect's profiles as one array (a row per n-gram), and caches of normalised characters and
    per-word n-gram rows."""

    def __init__(self) -> None:
        with warming_up():  # loading the profiles takes a fraction of a second, once per process
            self.langs, self.row_of, self.table = load_profiles()
        self.chars = _NormalizedChars()
        self.words = _WordNgrams(self.row_of)


class _WordNgrams(dict):
    """The profile rows of `Detector._extract_ngrams` over one word (and the space after it, when there
    is one), starting from the fresh buffer every word starts with; computed once per distinct word."""

    def __init__(self, row_of: dict[str, int]) -> None:
        super().__init__()
        self.row_of = row_of

    def __missing__(self, token: str) -> list[int]:
        rows, buffer, capital_word = [], " ", False
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
                if gram != " ":
                    row = self.row_of.get(gram)
                    if row is not None:
                        rows.append(row)
        if len(self) >= _MAX_CACHED_WORDS:
            self.clear()
        self[token] = rows
        return rows


class _NormalizedChars(dict):
    """A `str.translate` table computing `NGram.normalize` once per distinct character."""

    def __missing__(self, codepoint: int) -> str:
        value = self[codepoint] = NGram.normalize(chr(codepoint))
        return value


class _Draws:
    """The 32-bit outputs of `random.Random(SEED)`, in order, grown on demand: every text reseeds the
    generator, so every text reads the same stream. `random()`, `gauss()` and `choice()` are rebuilt on
    it exactly as CPython's `random` module builds them (tests check them against the module)."""

    def __init__(self) -> None:
        self._generator = random.Random(SEED)
        self.words = np.empty(0, dtype=np.uint32)

    def upto(self, end: int) -> np.ndarray:
        if end > len(self.words):
            count = max(end - len(self.words), len(self.words), 1 << 16)
            fresh = np.fromiter(
                (self._generator.getrandbits(32) for _ in range(count)), dtype=np.uint32, count=count
            )
            self.words = np.concatenate([self.words, fresh])
        return self.words

    def uniform(self, position: int) -> float:
        """`random()` from the two words at `position`."""
        words = self.upto(position + 2)
        high, low = int(words[position]) >> 5, int(words[position + 1]) >> 6
        return (high * 67108864.0 + low) * (1.0 / 9007199254740992.0)

    def gauss_pair(self, position: int) -> tuple[float, float]:
        """The value `gauss(0.0, 1.0)` returns from the four words at `position`, and the one it keeps
        for its next call."""
        x2pi = self.uniform(position) * (2.0 * math.pi)
        g2rad = math.sqrt(-2.0 * math.log(1.0 - self.uniform(position + 2)))
        return 0.0 + math.cos(x2pi) * g2rad * 1.0, math.sin(x2pi) * g2rad

    def choices(self, position: int, n: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """`choice(range(n))` draws from `position` on, reading at most `limit` words: the values, and
        the position after each draw. `_randbelow` takes the top `n.bit_length()` bits of a word and
        rejects values of `n` and above."""
        words = self.upto(position + limit)[position : position + limit]
        values = (words >> np.uint32(32 - n.bit_length())).astype(np.intp)
        accepted = np.flatnonzero(values < n)
        return values[accepted], position + accepted + 1


_profiles: _Profiles | None = None
_draws = _Draws()


def _prepared_text(text: str) -> str:
    """`Detector.append` then `Detector.cleaning_text`."""
    text = Detector.URL_RE.sub(" ", text)
    text = Detector.MAIL_RE.sub(" ", text)
    text = NGram.normalize_vi(text)
    text = _SPACES.sub(" ", text[:_MAX_TEXT_LENGTH])
    if not text.isascii() and len(_LATIN.findall(text)) * 2 < len(_NON_LATIN.findall(text)):
        text = _LATIN.sub("", text)
    return text


def _ngram_rows(profiles: _Profiles, text: str) -> np.ndarray:
    words = text.translate(profiles.chars).split(" ")
    # The tokens `[^ ]+ ?` matches: every word with the space after it, the last one without.
    tokens = [word + " " for word in words[:-1] if word]
    if words[-1]:
        tokens.append(words[-1])
    return np.fromiter(itertools.chain.from_iterable(map(profiles.words.__getitem__, tokens)), dtype=np.intp)


def _trial(table: np.ndarray, rows: np.ndarray, weight: float, position: int) -> tuple[np.ndarray, int]:
    """One trial of `Detector._detect_block` from generator position `position`: its probabilities and
    the position after its last draw.

    The reference multiplies in one drawn n-gram at a time, in a Python loop over the languages, and
    normalises after draws 1, 6, 11, ...; here the draws between two normalisations are multiplied in one
    numpy reduction whose first row is the current probabilities, so every element sees the same
    operations in the same order.
    """
    count = table.shape[1]
    prob = np.empty(count)
    done, block, start = 0, 1, 0
    drawn = after = np.empty(0, dtype=np.intp)
    current = np.full(count, 1.0 / count)
    while True:
        # Draws not yet multiplied in, then those of the next words of the stream.
        more, more_after = _draws.choices(position, len(rows), _READ_AHEAD_WORDS)
        position += _READ_AHEAD_WORDS
        drawn, after = np.concatenate([drawn[start:], more]), np.concatenate([after[start:], more_after])
        # factors[k + 1] multiplies in draw k; factors[k] holds the probabilities before it.
        factors = np.empty((len(drawn) + 1, count))
        factors[0] = current
        np.add(weight, table[rows[drawn]], out=factors[1:])
        start = 0
        while start + block <= len(drawn):
            np.multiply.reduce(factors[start : start + block + 1], axis=0, out=prob)
            start += block
            done += block
            values = prob.tolist()
            total = sum(values)  # Python's left-to-right sum, as the reference
            current = np.divide(prob, total, out=factors[start])
            # Division rounds monotonically, so the largest quotient is the largest value's quotient.
            if max(values) / total > Detector.CONV_THRESHOLD or done - 1 >= Detector.ITERATION_LIMIT:
                return current.copy(), int(after[start - 1])
            block = 5
        current = current.copy()


def _language(profiles: _Profiles, rows: np.ndarray) -> str:
    """`Detector._detect_block` after the n-grams (seeded trials until the probabilities converge, the
    mean over the trials), then `Detector.detect`'s pick of the most probable language.

    The trials stop early once the leader cannot be overtaken: each trial adds at most 1/7 to any
    language, so a lead larger than that times the trials left (and a margin far above rounding) decides.
    """
    total = np.zeros(len(profiles.langs))
    position, kept_gauss = 0, None
    for trial in range(1, TRIALS + 1):
        if kept_gauss is None:
            gauss, kept_gauss = _draws.gauss_pair(position)
            position += 4
        else:
            gauss, kept_gauss = 0.0 + kept_gauss * 1.0, None
        alpha = Detector.ALPHA_DEFAULT + gauss * Detector.ALPHA_WIDTH
        prob, position = _trial(profiles.table, rows, alpha / Detector.BASE_FREQ, position)
        total += prob / TRIALS
        if trial < TRIALS:
            leader, runner_up = np.argsort(total)[:-3:-1]
            lead = total[leader] - total[runner_up]
            if total[leader] > Detector.PROB_THRESHOLD and lead > (TRIALS - trial) / TRIALS + _MARGIN:
                return profiles.langs[leader]
    ranked = sorted(
        (Language(lang, p) for lang, p in zip(profiles.langs, total.tolist(), strict=True)
         if p > Detector.PROB_THRESHOLD),
        reverse=True,
    )  # fmt: skip
    return ranked[0].lang if ranked else Detector.UNKNOWN_LANG


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of `text` as langdetect (seed 0) detects it, or None when it finds no features."""
    global _profiles
    with _lock:
        if _profiles is None:
            _profiles = _Profiles()
        rows = _ngram_rows(_profiles, _prepared_text(text))
        return _language(_profiles, rows) if len(rows) else None
