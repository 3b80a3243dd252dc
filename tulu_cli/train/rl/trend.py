"""Did RLVR raise the verified rate? First quarter of the logged rollout batches against the last.

The raw rate of a quarter mixes two things: how well the policy does, and which prompts the quarter
happened to draw. On a mix of datasets whose rates differ a lot (tiny task: IFEval ~0.85, GSM8K
~0.2), a quarter that drew more IFEval prompts reads higher with an unchanged policy; measured on
the tiny task, that moved quarters by up to 0.09 while the policy moved less. So next to the raw
rate this reports each dataset's rate per quarter (rollouts counted from `rollouts/NAME`) and the
rate standardised to the run's mix: each dataset's quarter rate weighted by its share of all the
run's rollouts, the same weights for both quarters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIX = "verified_rate/"


@dataclass
class QuarterTrend:
    first: float
    last: float
    # Each dataset's (first, last) rate; a dataset absent from a quarter has no entry.
    by_dataset: dict[str, tuple[float, float]] = field(default_factory=dict)
    # The rate at the run's dataset mix; None when a dataset is missing from either quarter or the
    # rows carry no rollout counts.
    standardised: tuple[float, float] | None = None
    rows_per_quarter: int = 0

    def describe(self) -> str:
        parts = [f"verified rate, first -> last quarter ({self.rows_per_quarter} batches each): "
                 f"{self.first:.3f} -> {self.last:.3f}"]
        if self.standardised is not None and len(self.by_dataset) > 1:
            parts.append(f"at the run's dataset mix {self.standardised[0]:.3f} -> {self.standardised[1]:.3f}")
        parts += [f"{name} {first:.3f} -> {last:.3f}" for name, (first, last) in sorted(self.by_dataset.items())]
        return "; ".join(parts)


def quarter_trend(rows: list[dict]) -> QuarterTrend | None:
    """The trend over `metrics.jsonl` rows of an RLVR run (None with no verified rate logged)."""
    rows = [row for row in rows if isinstance(row.get("verified_rate"), int | float)]
    if not rows:
        return None
    quarter = max(1, len(rows) // 4)
    first, last = rows[:quarter], rows[-quarter:]
    trend = QuarterTrend(first=mean(first, "verified_rate"), last=mean(last, "verified_rate"),
                         rows_per_quarter=quarter)
    datasets = sorted({key[len(PREFIX):] for row in rows for key in row if key.startswith(PREFIX)})
    shares = {name: sum(rollouts(row, name) for row in rows) for name in datasets}
    total = sum(shares.values())
    for name in datasets:
        early, late = dataset_rate(first, name), dataset_rate(last, name)
        if early is not None and late is not None:
            trend.by_dataset[name] = (early, late)
    counted = all(f"rollouts/{name}" in row for row in rows for name in datasets if f"{PREFIX}{name}" in row)
    if datasets and counted and total > 0 and len(trend.by_dataset) == len(datasets):
        trend.standardised = tuple(
            sum(shares[name] / total * trend.by_dataset[name][index] for name in datasets) for index in (0, 1))
    return trend


def mean(rows: list[dict], key: str) -> float:
    return sum(row[key] for row in rows) / len(rows)


def rollouts(row: dict, name: str) -> float:
    """Rollouts of dataset `name` in a row, logged as `rollouts/NAME`. Rows logged without that count
    weigh each batch that saw the dataset as one (and give no standardised rate: the mix is unknown)."""
    if f"{PREFIX}{name}" not in row:
        return 0.0
    return float(row.get(f"rollouts/{name}", 1.0))


def dataset_rate(rows: list[dict], name: str) -> float | None:
    weights = [rollouts(row, name) for row in rows]
    if sum(weights) == 0:
        return None
    return sum(weight * row[f"{PREFIX}{name}"] for weight, row in zip(weights, rows, strict=True) if weight) / sum(weights)
