"""The verifier registry: lookup, custom registration, batch scoring of good and malformed rows."""

from __future__ import annotations

import json

import pytest

from tulu_cli.rewards import known_datasets, register, registry, verify, verify_batch
from tulu_cli.rewards.registry import VerifyOptions


def test_builtin_datasets_case_insensitive():
    assert {"gsm8k", "math", "ifeval"} <= set(known_datasets())
    assert verify("GsM8k", "it is 4", "4") == 1.0


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(KeyError, match="gsm8k, ifeval, math"):
        verify("no_such_dataset", "x", "y")


# Registered at module level, so the worker processes of `verify_batch` import it as well.
@register("Exact_Echo")
def exact(response: str, ground_truth: str, options: VerifyOptions) -> float:
    return float(response.strip() == ground_truth) + (5.0 if options.loose else 0.0)


def test_custom_registration_reaches_verify_and_batch():
    assert verify("exact_echo", " yes ", "yes") == 1.0
    assert verify("EXACT_ECHO", "no", "yes") == 0.0
    assert verify("exact_echo", "no", "yes", loose=True) == 1.0  # clipped to [0, 1]
    rows = [{"dataset": "exact_echo", "ground_truth": "yes", "response": "yes"}]
    assert verify_batch(rows)[0].score == 1.0
    assert verify_batch(rows, loose=True, workers=2)[0].score == 1.0


def test_a_verifier_defined_inside_a_function_is_refused_with_a_message():
    @register("inner_echo")
    def inner(response: str, ground_truth: str, options: VerifyOptions) -> float:
        return 1.0

    try:
        # `verify` also scores in the worker pool (under its time limit), so it refuses it the same way.
        with pytest.raises(ValueError, match="module level"):
            verify("inner_echo", "x", "y")
        result = verify_batch([{"dataset": "inner_echo", "ground_truth": "y", "response": "x"}])[0]
        assert result.score == 0.0 and "module level" in result.error
    finally:
        registry._VERIFIERS.pop("inner_echo")


ROWS = [
    {"dataset": "gsm8k", "ground_truth": "42", "response": "so 42"},
    {"dataset": "math", "ground_truth": "\\frac{1}{2}", "response": "$\\boxed{0.5}$"},
    {
        "dataset": "ifeval",
        "ground_truth": json.dumps({"func_name": "validate_no_commas"}),
        "response": "a, b",
    },
    {
        "dataset": "ifeval",
        "ground_truth": json.dumps({"func_name": "validate_repeat_prompt"}),
        "response": "Repeat me. Done.",
        "messages": [{"role": "user", "content": "Repeat me."}, {"role": "assistant", "content": "x"}],
    },
    {"dataset": "unknown", "ground_truth": "1", "response": "1"},
    {"dataset": "gsm8k", "response": "1"},
    {"dataset": "ifeval", "ground_truth": "{broken", "response": "x"},
    {"dataset": "gsm8k", "ground_truth": "1", "response": 1},
    "not a row",
]


@pytest.mark.parametrize("workers", [None, 2])
def test_verify_batch_scores_and_reports_errors(workers):
    results = verify_batch(ROWS, workers=workers)
    assert [r.score for r in results] == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert [r.error is None for r in results] == [True, True, True, True, False, False, False, False, False]
    assert "dataset" in results[4].error and "unknown" in results[4].error
    assert "ground_truth" in results[5].error
    assert "ground_truth" in results[6].error
    assert "response" in results[7].error
