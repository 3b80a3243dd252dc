"""GSM8K: the answer after the last `####` (the dataset's answer format), else the last number of the
response, thousands separators dropped, equal in value to the ground truth ("18.00" is 18)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from tulu_cli.rewards import release_profile
from tulu_cli.rewards.registry import VerifyOptions, register

_THOUSANDS = re.compile(r"(\d),(\d)")
# The sign belongs to every number (the release pattern, `[-+]?\d*\.\d+|\d+`, reads "-1" as 1).
_NUMBER = re.compile(r"[-+]?(?:\d*\.\d+|\d+)")
_MARKER = "####"


def extract_last_number(response: str) -> str | None:
    numbers = _NUMBER.findall(_THOUSANDS.sub(r"\1\2", response))
    return numbers[-1] if numbers else None


def extract_answer(response: str) -> str | None:
    """The first number after the last `####`, when there is one there; else the last number."""
    marker = response.rfind(_MARKER)
    if marker >= 0:
        after = _NUMBER.search(_THOUSANDS.sub(r"\1\2", response[marker + len(_MARKER) :]))
        if after is not None:
            return after.group()
    return extract_last_number(response)


def _value(text: str) -> Decimal | None:
    try:
        return Decimal(_THOUSANDS.sub(r"\1\2", text.strip()))
    except InvalidOperation:
        return None


def gsm8k_equal(response: str, ground_truth: str) -> bool:
    answer = extract_answer(response)
    if answer is None:
        return False
    if answer.lower() == ground_truth.strip().lower():
        return True
    answer_value, truth_value = _value(answer), _value(ground_truth)
    return answer_value is not None and truth_value is not None and answer_value == truth_value


@register("gsm8k")
def verify_gsm8k(response: str, ground_truth: str, options: VerifyOptions) -> float:
    if options.profile == release_profile.NAME:
        return float(release_profile.gsm8k_equal(release_profile.response_text(response), ground_truth))
    return float(gsm8k_equal(response, ground_truth))
