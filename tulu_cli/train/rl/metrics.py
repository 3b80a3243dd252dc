"""One metrics row per logged rollout batch, summed over ranks before averaging."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tulu_cli.train.rl.rewards import Scores
from tulu_cli.train.rl.rollout import Rollout
from tulu_cli.train.runtime import all_reduce_sum


@dataclass
class PhaseTimes:
    """Seconds of one rollout batch's phases on this rank, in the order they run."""

    generation_s: float
    scoring_s: float
    experience_s: float  # log-probs of the policy and reference, values, advantages
    update_s: float
    weight_sync_s: float  # weights to a separate generation engine, its first check (~0 with the hf backend)

    @property
    def total_s(self) -> float:
        return sum(asdict(self).values())


def step_metrics(
    accelerator,
    rollouts: list[Rollout],
    scores: Scores,
    datasets: dict[str, tuple[float, float, int]],
    experience: dict[str, float],
    totals: dict[str, float],
    times: PhaseTimes,
    lr: float,
    episodes: int,
) -> dict:
    def total(value: float) -> float:
        return all_reduce_sum(accelerator, value)

    count = total(len(rollouts))
    tokens = total(experience["tokens"])
    trained = total(totals.get("trained_tokens", 0.0))
    row = {
        "loss": total(totals.get("loss", 0.0)) / max(trained, 1.0),
        "verified_rate": total(sum(scores.verified)) / count,
        "reward": total(sum(scores.rewards)) / count,
    }
    for name, (reward, verified, rollouts_of_dataset) in merged_datasets(accelerator, datasets).items():
        row[f"verified_rate/{name}"] = verified / rollouts_of_dataset
        row[f"reward/{name}"] = reward / rollouts_of_dataset
        row[f"rollouts/{name}"] = rollouts_of_dataset
    row.update(
        {
            "kl": total(experience["kl_sum"]) / max(tokens, 1.0),
            "entropy": total(experience["entropy_sum"]) / max(tokens, 1.0),
            "response_length": tokens / count,
            "stop_rate": total(sum(r.finished for r in rollouts)) / count,
            "policy_loss": total(totals.get("policy_loss", 0.0)) / max(trained, 1.0),
            "clip_fraction": total(totals.get("clipped_tokens", 0.0)) / max(trained, 1.0),
        }
    )
    if "value_loss" in totals:
        row["value_loss"] = total(totals["value_loss"]) / max(trained, 1.0)
        row["value_clip_fraction"] = total(totals["value_clipped_tokens"]) / max(trained, 1.0)
        row["value_mean"] = total(experience["value_sum"]) / max(tokens, 1.0)
        # 0 during PPO's value warm-up (the value model trains alone).
        row["policy_trained"] = totals.get("policy_trained", 1.0)
    if "kl_loss" in totals:
        row["kl_loss"] = total(totals["kl_loss"]) / max(trained, 1.0)
    row["skipped_fraction"] = 1.0 - total(experience["kept_sequences"]) / count
    row["zero_spread_fraction"] = total(experience["zero_spread_sequences"]) / count
    row["updates"] = totals.get("updates", 0.0)
    row["skipped_updates"] = totals.get("skipped_updates", 0.0)
    row["lr"] = lr
    row["episodes"] = episodes
    row["verify_errors"] = total(scores.errors)
    row["verify_timeouts"] = total(scores.timeouts)
    row.update(asdict(times))
    row["training_s"] = times.total_s - times.generation_s
    row["generation_time_share"] = times.generation_s / max(times.total_s, 1e-9)
    row["training_time_share"] = 1.0 - row["generation_time_share"]
    return row


def merged_datasets(accelerator, datasets: dict[str, tuple[float, float, int]]) -> dict[str, list[float]]:
    if accelerator.num_processes == 1:
        return {name: list(values) for name, values in datasets.items()}
    from accelerate.utils import gather_object

    merged: dict[str, list[float]] = {}
    for rank_stats in gather_object([datasets]):
        for name, values in rank_stats.items():
            entry = merged.setdefault(name, [0.0, 0.0, 0])
            for index, value in enumerate(values):
                entry[index] += value
    return dict(sorted(merged.items()))
