"""MATH verifier: recipe extraction (boxed, Minerva, last $...$, whole output), then string or sympy match."""

from __future__ import annotations

import time

from tulu_cli.rewards import release_profile, symbolic
from tulu_cli.rewards.math_normalize import candidate_answers, hendrycks_equal
from tulu_cli.rewards.registry import DEFAULT_TIMEOUT_S, VerifyOptions, register


def verify_math(
    response: str,
    ground_truth: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    use_math_verify: bool = False,
    profile: str = "default",
) -> float:
    """1.0 when an extracted answer matches `ground_truth`; all symbolic work shares `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    if use_math_verify:
        return float(symbolic.math_verify_equal(ground_truth, response, timeout_s))
    if profile == release_profile.NAME:
        response = release_profile.response_text(response)
        candidates = release_profile.math_candidates(response)
    else:
        candidates = candidate_answers(response)
    if any(hendrycks_equal(answer, ground_truth) for answer in candidates):
        return 1.0
    for answer in candidates:
        if symbolic.sympy_equal(answer, ground_truth, deadline - time.monotonic()):
            return 1.0
    return 0.0


@register("math")
def _verify_math_row(response: str, ground_truth: str, options: VerifyOptions) -> float:
    return verify_math(response, ground_truth, timeout_s=options.timeout_s, profile=options.profile)
