"""The verifier time limit inside RLVR: a response past `rollout.verify_timeout_s` scores 0, is counted in
`verify_timeouts`, and training goes on."""

from __future__ import annotations

import json
import time

from tests.conftest import run_tulu
from tulu_cli.runlog import read_metrics
from tulu_cli.train.rl.data import PromptRow
from tulu_cli.train.rl.rewards import score_rollouts
from tulu_cli.train.rl.rollout import Rollout

# Checking a response against this many language constraints takes seconds whatever the response says.
SLOW_GROUND_TRUTH = json.dumps([{"func_name": "validate_response_language", "language": "en"}] * 4000)


def test_an_adversarial_response_scores_zero_within_the_limit_and_is_counted():
    math_row = PromptRow([{"role": "user", "content": "Compute it."}], "p", [1], "3", "math")
    gsm_row = PromptRow([{"role": "user", "content": "2 + 3?"}], "p", [1], "5", "gsm8k")
    rollouts = [
        Rollout(gsm_row, [5, 1], "so 5", True),
        # sympy would evaluate this power for hours.
        Rollout(math_row, [6, 1], r"Hence $\boxed{9^{9^{9^{9}}}}$.", True),
        Rollout(gsm_row, [7, 1], "so 4", True),
    ]
    started = time.monotonic()
    scores = score_rollouts(rollouts, verifier_reward=10.0, non_stop_penalty=-10.0, timeout_s=1.0)
    assert time.monotonic() - started < 30.0  # includes starting the verifier and sympy processes
    assert scores.verified == [1.0, 0.0, 0.0]
    assert scores.rewards == [10.0, 0.0, 0.0]
    assert (scores.timeouts, scores.errors) == (1, 0)


def test_rlvr_run_goes_on_past_verifier_timeouts(tmp_path, start_model):
    rows = [
        {"messages": [{"role": "user", "content": "Eli has 17 stamps. Eli gives away 2. How many are left?"}],
         "ground_truth": "15", "dataset": "gsm8k"},
        {"messages": [{"role": "user", "content": "Write a sentence about a frog."}],
         "ground_truth": SLOW_GROUND_TRUTH, "dataset": "ifeval"},
        {"messages": [{"role": "user", "content": "Eli has 29 pens. Eli gives away 9. How many are left?"}],
         "ground_truth": "20", "dataset": "gsm8k"},
        {"messages": [{"role": "user", "content": "Write a sentence about a lion."}],
         "ground_truth": SLOW_GROUND_TRUTH, "dataset": "ifeval"},
    ]  # fmt: skip
    data = tmp_path / "rlvr.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    run_dir = tmp_path / "run"
    run_tulu(
        "rlvr", "conf=tiny", "algorithm=grpo", "grpo.prompts_per_rollout=4", "grpo.samples_per_prompt=2",
        "train.per_device_batch_size=4", "rollout.response_length=12", "rollout.verify_timeout_s=0.5",
        "train.max_steps=2", f"data.train={data}", f"model.path={start_model}", f"output_dir={run_dir}",
    )  # fmt: skip
    metrics = read_metrics(run_dir)
    assert [row["step"] for row in metrics] == [1, 2]
    # Every sampled answer to the two slow prompts (4 per step) times out unless it is blank, which
    # the ifeval checks reject without running.
    timeouts = [row["verify_timeouts"] for row in metrics]
    assert all(0 <= count <= 4 for count in timeouts) and sum(timeouts) >= 1, timeouts
    assert all(row["verify_errors"] == 0 for row in metrics)
    assert (run_dir / "final" / "config.json").exists()
