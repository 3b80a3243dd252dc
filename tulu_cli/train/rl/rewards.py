"""Sequence rewards from the verifiers: `verifier_reward` x score, and a penalty (replacing the
score, as in the reference PPO) for responses that hit the length limit without an eos."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tulu_cli.rewards.registry import verify_batch
from tulu_cli.train.rl.rollout import Rollout


@dataclass
class Scores:
    verified: list[float]  # verifier score in [0, 1] per rollout
    rewards: list[float]
    errors: int  # rollouts whose row could not be verified (counted, scored 0)
    timeouts: int  # rollouts whose verifier ran past the time limit (counted, scored 0)


def score_rollouts(
    rollouts: list[Rollout],
    verifier_reward: float,
    non_stop_penalty: float | None,
    timeout_s: float,
    workers: int = 1,
    profile: str = "default",
) -> Scores:
    rows = [
        {
            "dataset": r.row.dataset,
            "ground_truth": r.row.ground_truth,
            "response": r.text,
            "messages": r.row.messages,
        }
        for r in rollouts
    ]
    # Each row's whole verification runs within `timeout_s` in the verifier pool's worker processes, so
    # one adversarial response can neither stall nor crash the rollout loop.
    results = verify_batch(rows, timeout_s=timeout_s, workers=workers, profile=profile)
    verified = [result.score for result in results]
    rewards = [
        sequence_reward(score, r.finished, verifier_reward, non_stop_penalty)
        for score, r in zip(verified, rollouts, strict=True)
    ]
    timeouts = sum(result.timed_out for result in results)
    return Scores(verified, rewards, sum(result.error is not None for result in results) - timeouts, timeouts)


def sequence_reward(
    score: float, finished: bool, verifier_reward: float, non_stop_penalty: float | None
) -> float:
    if not finished and non_stop_penalty is not None:
        return float(non_stop_penalty)
    return verifier_reward * score


def per_dataset_stats(rollouts: list[Rollout], scores: Scores) -> dict[str, tuple[float, float, int]]:
    """dataset -> (sum of rewards, sum of verifier scores, rollouts): sums, so ranks can add them up."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for rollout, reward, score in zip(rollouts, scores.rewards, scores.verified, strict=True):
        entry = totals[rollout.row.dataset.lower()]
        entry[0] += reward
        entry[1] += score
        entry[2] += 1
    return {name: (values[0], values[1], int(values[2])) for name, values in sorted(totals.items())}
