"""The verifier pool: every row within its wall-clock limit, however the verifier hangs or dies."""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from tulu_cli.rewards import register, verify_batch
from tulu_cli.rewards.pool import VerifierPool
from tulu_cli.rewards.registry import VerifyOptions, row_task


# Test verifiers, at module level so the worker processes import them too.
@register("test_c_regex_hang")
def c_regex_hang(response: str, ground_truth: str, options: VerifyOptions) -> float:
    # A catastrophic backtracking search inside the C regex engine: no signal or thread can stop it.
    return float(re.match(r"(a|aa)+c", "a" * 60) is not None) if response == "hang" else 1.0


@register("test_python_loop_hang")
def python_loop_hang(response: str, ground_truth: str, options: VerifyOptions) -> float:
    while response == "hang":
        pass
    return 1.0


@register("test_worker_dies")
def worker_dies(response: str, ground_truth: str, options: VerifyOptions) -> float:
    if response == "die":
        os._exit(3)
    return 1.0


def rows(dataset: str, responses: list[str]) -> list[dict]:
    return [{"dataset": dataset, "ground_truth": "", "response": response} for response in responses]


@pytest.mark.parametrize("dataset", ["test_c_regex_hang", "test_python_loop_hang"])
def test_a_hung_verifier_scores_zero_within_the_limit_and_the_rest_are_scored(dataset):
    batch = rows(dataset, ["ok", "hang", "ok", "ok", "hang", "ok"])
    with VerifierPool(workers=2) as pool:
        started = time.monotonic()
        results = list(pool.run_rows(map(row_task, batch), loose=False, timeout_s=1.0))
        elapsed = time.monotonic() - started
        assert [r.score for r in results] == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
        assert [r.timed_out for r in results] == [False, True, False, False, True, False]
        assert results[1].error == "timed out after 1s"
        assert pool.replaced == 2
        assert 1.0 <= pool.slowest_row_s < 3.0
        # Two hangs on two workers, in parallel or one after the other; never the minutes they would take.
        assert elapsed < 20.0
        # The replacement workers keep scoring.
        assert [r.score for r in pool.run_rows(map(row_task, rows(dataset, ["ok"] * 3)), loose=False,
                                               timeout_s=1.0)] == [1.0] * 3  # fmt: skip


def test_a_worker_that_dies_fails_only_its_row():
    results = verify_batch(rows("test_worker_dies", ["ok", "die", "ok"]), timeout_s=5.0)
    assert [r.score for r in results] == [1.0, 0.0, 1.0]
    assert "died" in results[1].error and not results[1].timed_out


def test_symbolic_timeout_is_counted_as_a_timeout():
    runaway = {"dataset": "math", "ground_truth": "3", "response": r"$\boxed{9^{9^{9^{9}}}}$"}
    result = verify_batch([runaway], timeout_s=1.0)[0]
    assert result.score == 0.0 and result.timed_out


@pytest.mark.parametrize(
    "row",
    [
        # The first row that needs sympy starts the symbolic child (seconds on a busy machine).
        {"dataset": "math", "ground_truth": r"\sqrt{12}", "response": r"$\boxed{2\sqrt{3}}$"},
        # The first language check loads langdetect's profiles (seconds as well).
        {"dataset": "ifeval", "ground_truth": json.dumps({"func_name": "validate_response_language",
                                                          "language": "en"}),
         "response": "The weather is lovely today and we are going to walk along the river."},
    ],
    ids=["sympy", "langdetect"],
)
def test_one_time_start_up_work_is_not_charged_to_the_row(row):
    with VerifierPool(workers=1) as pool:
        result = next(pool.run_rows([row_task(row)], loose=False, timeout_s=1.5))
    assert result.score == 1.0 and not result.timed_out


def test_results_keep_input_order_across_chunks_and_workers():
    batch = [{"dataset": "gsm8k", "ground_truth": str(i % 7), "response": f"so {i % 5}"} for i in range(1000)]
    results = verify_batch(batch, workers=2)
    assert [r.score for r in results] == [float(i % 7 == i % 5) for i in range(1000)]
