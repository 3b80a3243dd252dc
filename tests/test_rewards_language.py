"""Our language detection gives langdetect's own answers (seed 0), on many kinds of text."""

from __future__ import annotations

import random

import pytest

from tulu_cli.rewards.language import detect_language

SAMPLES = [
    "The weather is lovely today and we are going to walk along the river with our friends.",
    "Le temps est magnifique aujourd'hui et nous allons nous promener le long de la rivière.",
    "El tiempo es precioso hoy y vamos a caminar por la orilla del río con nuestros amigos.",
    "Das Wetter ist heute wunderschön und wir gehen mit unseren Freunden am Fluss spazieren.",
    "Il tempo è bellissimo oggi e andremo a passeggiare lungo il fiume con i nostri amici.",
    "O tempo está lindo hoje e vamos passear ao longo do rio com os nossos amigos.",
    "Сегодня прекрасная погода, и мы пойдём гулять вдоль реки с друзьями.",
    "今日はとても良い天気なので、友達と川沿いを散歩します。",
    "今天天气很好，我们和朋友一起沿着河边散步。",
    "오늘 날씨가 정말 좋아서 친구들과 강변을 산책할 거예요.",
    "الطقس جميل اليوم وسنمشي على طول النهر مع أصدقائنا.",
    "Hôm nay thời tiết đẹp và chúng tôi sẽ đi dạo dọc bờ sông.",
    "Hôm nay thời tiết đẹp",  # combining marks (U+0300...) normalised for Vietnamese
    "Bugün hava çok güzel ve arkadaşlarımızla nehir boyunca yürüyeceğiz.",
    "THE WEATHER IS LOVELY TODAY AND WE ARE GOING TO WALK ALONG THE RIVER.",
    "Visit https://example.com/a?b=c or mail someone@example.org — then   spaces,,, and;;punctuation!!",
    "12345 678", "OK", "", "   ", "a", "Ab CD eF", "NASA and the USA signed it", "x" * 20_000,
    "Привет hello мир world 世界",
]  # fmt: skip


def _reference(text: str) -> str | None:
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    try:
        return detect(text)
    except LangDetectException:
        return None


def _random_texts(count: int) -> list[str]:
    rng = random.Random(5)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ éèçñüößøåłžčšπλДжЯ日本語中文한국ạảấ,.!?'\"-\n\u0301"
    texts = []
    for _ in range(count):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))) for _ in range(rng.randint(1, 30))]
        texts.append(" ".join(words))
    return texts


def _word_salads(count: int) -> list[str]:
    """Prose-like texts of 20-250 words drawn from the samples' words: one language, or a mixture, some in
    capitals. Mixtures keep the trials apart (all seven run, and long trials read past the draws read
    ahead); one-language texts let the trials stop early."""
    rng = random.Random(11)
    vocabularies = [sample.split() for sample in SAMPLES[:14]]
    texts = []
    for index in range(count):
        chosen = rng.sample(vocabularies, 1 if index % 2 else rng.randint(2, 3))
        words = [rng.choice(rng.choice(chosen)) for _ in range(rng.randint(20, 250))]
        text = " ".join(words)
        texts.append(text.upper() if index % 7 == 0 else text)
    return texts


@pytest.mark.parametrize(
    "texts", [SAMPLES, _random_texts(300), _word_salads(300)], ids=["samples", "random", "salads"]
)
def test_same_answers_as_langdetect(texts):
    saved = __import__("langdetect").DetectorFactory.seed
    try:
        for text in texts:
            assert detect_language(text) == _reference(text), repr(text[:80])
    finally:
        __import__("langdetect").DetectorFactory.seed = saved


def test_draws_are_the_random_module_draws():
    """The generator stream the trials read gives what `random.Random(0)`'s `choice` and `gauss` give."""
    from tulu_cli.rewards.language import SEED, _draws

    for n in (1, 2, 3, 7, 55, 100, 1000, 4097, 65537):
        generator = random.Random(SEED)
        expected = [generator.choice(range(n)) for _ in range(500)]
        values, after = _draws.choices(0, n, 4000)
        assert values[:500].tolist() == expected
        # The next word after the 500th draw is the generator's next output.
        assert int(_draws.upto(after[499] + 1)[after[499]]) == generator.getrandbits(32)
    for start in (0, 4, 123):
        generator = random.Random(SEED)
        for _ in range(start):
            generator.getrandbits(32)
        first, kept = _draws.gauss_pair(start)
        assert first == generator.gauss(0.0, 1.0)
        assert 0.0 + kept * 1.0 == generator.gauss(0.0, 1.0)
        assert int(_draws.upto(start + 5)[start + 4]) == generator.getrandbits(32)


def test_trials_stop_early_only_when_decided(monkeypatch):
    """Both ways through the trials occur on the salads: early stops and all seven trials."""
    from tulu_cli.rewards import language

    trials_run = []
    real_trial = language._trial

    def counting(*args):
        trials_run[-1] += 1
        return real_trial(*args)

    monkeypatch.setattr(language, "_trial", counting)
    for text in _word_salads(40):
        trials_run.append(0)
        language.detect_language(text)
    assert min(trials_run) < language.TRIALS and max(trials_run) == language.TRIALS


def test_profiles_are_langdetects_own():
    """The profile table built from the files is the one `DetectorFactory.load_profile` builds: same
    languages, same n-grams in the same order, same probabilities bit for bit."""
    import numpy as np
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    from tulu_cli.rewards.language import load_profiles

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    langs, row_of, table = load_profiles()
    assert langs == factory.langlist
    assert list(row_of) == list(factory.word_lang_prob_map) and list(row_of.values()) == list(range(len(row_of)))
    expected = np.array(list(factory.word_lang_prob_map.values()))
    assert table.dtype == expected.dtype and np.array_equal(table, expected)
