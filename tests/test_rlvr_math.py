"""RLVR arithmetic against hand computation: GAE, whitening, group advantages, KL estimators,
clipped policy and value losses, and the non-stop penalty."""

from __future__ import annotations

import math

import pytest
import torch

from tulu_cli.train.rl.advantages import gae, group_advantages, whiten
from tulu_cli.train.rl.data import PromptRow
from tulu_cli.train.rl.kl import kl_k1, kl_k3
from tulu_cli.train.rl.losses import clipped_policy_loss, clipped_value_loss
from tulu_cli.train.rl.rewards import per_dataset_stats, score_rollouts, sequence_reward
from tulu_cli.train.rl.rollout import Rollout


def test_gae_matches_hand_computation_and_ignores_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 9.0]])  # 5.0 and 9.0 sit on padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # Row 1: deltas 0.7, 0.9*0.3-0.4=-0.13, 0.9*0.4-0.5=-0.14; A = delta + 0.45 * A_next.
    # Row 2: the episode ends at position 1, so V_2 counts as 0: deltas 2-0.5=1.5, 0.9*0.5-1=-0.55.
    expected = torch.tensor(
        [[-0.14 + 0.45 * (-0.13 + 0.45 * 0.7), -0.13 + 0.45 * 0.7, 0.7], [-0.55 + 0.45 * 1.5, 1.5, 0.0]]
    )
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 0.0]]))


def test_gae_with_gamma_one_lambda_one_is_return_minus_value():
    rewards = torch.tensor([[0.1, -0.2, 3.0]])
    values = torch.tensor([[1.0, 2.0, 0.5]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[2.9, 2.8, 3.0]]))
    torch.testing.assert_close(advantages, returns - values)


def test_whiten_uses_only_masked_entries():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(whiten(values, mask), torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-6, rtol=0)


def test_group_advantages_use_the_unbiased_std_and_zero_zero_spread_groups():
    scores = torch.tensor([10.0, 0.0, 0.0, 10.0, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0, 3.0])
    advantages, spread = group_advantages(scores, group_size=4)
    # Group 1: mean 5, unbiased std sqrt(100/3). Group 2: all equal -> 0. Group 3: mean 0.75,
    # unbiased std sqrt((3 * 0.75^2 + 2.25^2) / 3) = 1.5.
    std1 = math.sqrt(100 / 3)
    expected = torch.tensor(
        [5 / std1, -5 / std1, -5 / std1, 5 / std1, 0.0, 0.0, 0.0, 0.0, -0.5, -0.5, -0.5, 1.5]
    )
    torch.testing.assert_close(advantages, expected)
    assert spread.tolist() == [True] * 4 + [False] * 4 + [True] * 4
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(6), group_size=4)
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.zeros(4), group_size=1)


def test_group_advantages_with_the_population_std():
    scores = torch.tensor([10.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 3.0])
    advantages, _ = group_advantages(scores, group_size=4, unbiased_std=False)
    std2 = math.sqrt((3 * 0.75**2 + 2.25**2) / 4)
    expected = torch.tensor([1.0, -1.0, -1.0, 1.0, -0.75 / std2, -0.75 / std2, -0.75 / std2, 2.25 / std2])
    torch.testing.assert_close(advantages, expected)


def test_kl_estimators_match_hand_values_and_the_true_kl():
    logp, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([math.log(2)]))
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([0.5 - 1 + math.log(2)]))
    torch.testing.assert_close(kl_k3(ref, ref), torch.zeros(1))
    # Both are unbiased estimates of KL(p || q) from samples of p; k3 is never negative.
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp_s, logq_s = p.log()[samples], q.log()[samples]
    true_kl = float((p * (p / q).log()).sum())
    assert abs(float(kl_k1(logp_s, logq_s).mean()) - true_kl) < 0.01
    assert abs(float(kl_k3(logp_s, logq_s).mean()) - true_kl) < 0.01
    assert float(kl_k3(logp_s, logq_s).min()) >= 0


def test_clipped_policy_loss_matches_hand_computation():
    old = torch.zeros(4)
    new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    advantages = torch.tensor([2.0, -2.0, 2.0, -2.0])
    loss, clipped = clipped_policy_loss(new, old, advantages, clip=0.2)
    # ratio 1.5, A=2: max(-3, -2.4); A=-2: max(3, 2.4); ratio 0.5, A=2: max(-1, -1.6); A=-2: max(1, 1.6).
    torch.testing.assert_close(loss, torch.tensor([-2.4, 3.0, -1.0, 1.6]))
    assert clipped.tolist() == [1.0, 0.0, 0.0, 1.0]
    # The clipped tokens carry no gradient.
    new = new.clone().requires_grad_(True)
    clipped_policy_loss(new, old, advantages, clip=0.2)[0].sum().backward()
    assert new.grad[0] == 0 and new.grad[3] == 0 and new.grad[1] != 0 and new.grad[2] != 0


def test_clipped_value_loss_matches_hand_computation():
    values = torch.tensor([1.0, 0.6])
    old = torch.tensor([0.5, 0.5])
    returns = torch.tensor([2.0, 0.0])
    loss, clipped = clipped_value_loss(values, old, returns, clip=0.2)
    # Row 1: clipped prediction 0.7 -> 0.5 * max(1, 1.69). Row 2: inside the range -> 0.5 * 0.36.
    torch.testing.assert_close(loss, torch.tensor([0.845, 0.18]))
    assert clipped.tolist() == [1.0, 0.0]


def test_non_stop_penalty_replaces_the_verifier_reward():
    assert sequence_reward(1.0, True, 10.0, -10.0) == 10.0
    assert sequence_reward(0.0, True, 10.0, -10.0) == 0.0
    assert sequence_reward(1.0, False, 10.0, -10.0) == -10.0
    assert sequence_reward(1.0, False, 10.0, None) == 10.0
    assert sequence_reward(0.5, True, 10.0, None) == 5.0


def test_score_rollouts_runs_the_verifiers_and_reports_per_dataset():
    math_row = PromptRow([{"role": "user", "content": "2 + 3?"}], "p", [1], "5", "gsm8k")
    if_row = PromptRow(
        [{"role": "user", "content": "say hi in lowercase"}],
        "p",
        [1],
        '{"func_name": "validate_lowercase"}',
        "ifeval",
    )
    rollouts = [
        Rollout(math_row, [5, 1], "2 + 3 = 5\n#### 5", True),
        Rollout(math_row, [5, 5], "2 + 3 = 5\n#### 5", False),  # right, but hit the length limit
        Rollout(math_row, [6, 1], "#### 6", True),
        Rollout(if_row, [7, 1], "hi there", True),
    ]
    scores = score_rollouts(rollouts, verifier_reward=10.0, non_stop_penalty=-10.0, timeout_s=2.0)
    assert scores.verified == [1.0, 1.0, 0.0, 1.0]
    assert scores.rewards == [10.0, -10.0, 0.0, 10.0]
    assert scores.errors == 0
    assert per_dataset_stats(rollouts, scores) == {"gsm8k": (0.0, 2.0, 3), "ifeval": (10.0, 1.0, 1)}
