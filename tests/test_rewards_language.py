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


@pytest.mark.parametrize("texts", [SAMPLES, _random_texts(300)], ids=["samples", "random"])
def test_same_answers_as_langdetect(texts):
    saved = __import__("langdetect").DetectorFactory.seed
    try:
        for text in texts:
            assert detect_language(text) == _reference(text), repr(text[:80])
    finally:
        __import__("langdetect").DetectorFactory.seed = saved
