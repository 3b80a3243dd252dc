"""PopQA: the response contains one of the accepted answers (PopQA's `possible_answers`, a JSON list of
strings), as written, lowercased or capitalised; the match OLMES scores PopQA's `exact_match` with."""

from __future__ import annotations

import json

from tulu_cli.rewards.registry import VerifyOptions, register


def accepted_answers(ground_truth: str) -> list[str]:
    """The answers of a ground truth; ValueError unless it is a JSON list of non-empty strings."""
    try:
        answers = json.loads(ground_truth)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError("a popqa ground truth must be a JSON list of answers (PopQA's possible_answers)") from None
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError("a popqa ground truth must be a non-empty JSON list of non-empty strings")
    return answers


@register("popqa")
def verify_popqa(response: str, ground_truth: str, options: VerifyOptions) -> float:
    return float(any(answer in response or answer.lower() in response or answer.capitalize() in response
                     for answer in accepted_answers(ground_truth)))
