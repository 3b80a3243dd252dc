"""The verified-rate trend of an RLVR run (`tulu_cli/train/rl/trend.py`), on rows worked out by hand:
a policy that does not change but draws a different dataset mix reads as a rise in the raw rate and
as flat at the run's mix; a real rise shows in both."""

from __future__ import annotations

import pytest

from tulu_cli.train.rl.trend import quarter_trend


def batch(step: int, math_rollouts: int, if_rollouts: int, math_rate: float, if_rate: float) -> dict:
    count = math_rollouts + if_rollouts
    row = {"step": step, "verified_rate": (math_rollouts * math_rate + if_rollouts * if_rate) / count}
    for name, rollouts, rate in (("gsm8k", math_rollouts, math_rate), ("ifeval", if_rollouts, if_rate)):
        if rollouts:
            row[f"verified_rate/{name}"] = rate
            row[f"rollouts/{name}"] = rollouts
    return row


def test_a_change_of_mix_alone_is_flat_at_the_runs_mix():
    # 8 batches of 8: the first two draw 6 GSM8K + 2 IFEval, the last two 2 + 6; rates never change.
    rows = [batch(1, 6, 2, 0.25, 0.75), batch(2, 6, 2, 0.25, 0.75),
            *[batch(step, 4, 4, 0.25, 0.75) for step in range(3, 7)],
            batch(7, 2, 6, 0.25, 0.75), batch(8, 2, 6, 0.25, 0.75)]
    trend = quarter_trend(rows)
    assert trend.rows_per_quarter == 2
    assert (trend.first, trend.last) == pytest.approx((0.375, 0.625))
    assert trend.by_dataset == {"gsm8k": pytest.approx((0.25, 0.25)), "ifeval": pytest.approx((0.75, 0.75))}
    # Over the run: 32 GSM8K and 32 IFEval rollouts, so the mix weighs each 1/2.
    assert trend.standardised == pytest.approx((0.5, 0.5))
    assert "at the run's dataset mix 0.500 -> 0.500" in trend.describe()


def test_a_real_rise_shows_in_every_reading():
    rows = [batch(1, 3, 1, 0.2, 0.6), batch(2, 2, 2, 0.2, 0.6), batch(3, 1, 3, 0.4, 1.0), batch(4, 2, 2, 0.5, 0.9)]
    trend = quarter_trend(rows)
    assert trend.rows_per_quarter == 1
    assert (trend.first, trend.last) == pytest.approx((0.3, 0.7))
    # Mix over the run: 8 GSM8K, 8 IFEval rollouts.
    assert trend.standardised == pytest.approx((0.5 * 0.2 + 0.5 * 0.6, 0.5 * 0.5 + 0.5 * 0.9))


def test_quarter_rates_weigh_batches_by_their_rollouts():
    # Quarter of 2 batches: GSM8K 1 rollout at 0.0 and 3 at 1.0 -> 0.75, not the batch mean 0.5.
    rows = [batch(1, 1, 3, 0.0, 0.5), batch(2, 3, 1, 1.0, 0.5), *[batch(s, 2, 2, 0.5, 0.5) for s in range(3, 9)]]
    assert quarter_trend(rows).by_dataset["gsm8k"][0] == pytest.approx(0.75)


def test_rows_without_rollout_counts_give_no_standardised_rate():
    rows = [{key: value for key, value in batch(step, 2, 2, 0.2, 0.8).items() if not key.startswith("rollouts/")}
            for step in range(1, 5)]
    trend = quarter_trend(rows)
    assert trend.standardised is None
    assert trend.by_dataset == {"gsm8k": pytest.approx((0.2, 0.2)), "ifeval": pytest.approx((0.8, 0.8))}
    assert "dataset mix" not in trend.describe()


def test_a_dataset_missing_from_a_quarter_gives_no_standardised_rate():
    rows = [batch(1, 4, 0, 0.2, 0.0), *[batch(step, 2, 2, 0.2, 0.8) for step in range(2, 5)]]
    trend = quarter_trend(rows)
    assert "ifeval" not in trend.by_dataset and trend.standardised is None


def test_no_verified_rate_no_trend():
    assert quarter_trend([{"step": 1, "loss": 0.1}]) is None
