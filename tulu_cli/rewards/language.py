"""Deterministic language detection with langdetect (its profiles ship with the package)."""

from __future__ import annotations

import threading

from langdetect import detector_factory
from langdetect.lang_detect_exception import LangDetectException

from tulu_cli.rewards.registry import warming_up

SEED = 0
_lock = threading.Lock()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of `text`, or None when langdetect finds no features to decide on."""
    with _lock:
        if detector_factory._factory is None:
            with warming_up():  # loading the profiles takes seconds, once per process
                detector_factory.init_factory()
        detector = detector_factory._factory.create()
    # A fixed seed makes the sampling inside langdetect, and so its answer, reproducible.
    detector.seed = SEED
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None
