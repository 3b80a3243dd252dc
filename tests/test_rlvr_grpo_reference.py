"""GRPO as Tulu 3.1 ran it (the presets' defaults) and the loss aggregation modes, against hand values.

Tulu 3.1 (open-instruct grpo_vllm_thread_ray_gtrl.py): a truncated response scores 0, the group std
is unbiased, zero-spread groups stay in the loss (advantage 0, KL still counts), the k3 log-ratio is
clamped to +-40, and the loss is a token mean per micro-batch.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from tulu_cli.config import conf_dir
from tulu_cli.train.rl.data import PromptRow
from tulu_cli.train.rl.experience import make_experience
from tulu_cli.train.rl.kl import kl_estimate
from tulu_cli.train.rl.models import PolicyAndValue
from tulu_cli.train.rl.rewards import score_rollouts
from tulu_cli.train.rl.rollout import Rollout
from tulu_cli.train.rl.update import aggregate, micro_batch_loss, minibatch_denominator
from tulu_cli.train.sft import scaled_loss

CONF = conf_dir() / "rlvr"


def preset_section(preset: str, algorithm: str) -> dict:
    section = yaml.safe_load((CONF / "_base.yaml").read_text())[algorithm]
    section.update(yaml.safe_load((CONF / f"{preset}.yaml").read_text()).get(algorithm, {}))
    return section


@pytest.mark.parametrize("preset", ["_base", "grpo8b", "tiny"])
def test_grpo_presets_default_to_the_tulu_3_1_behaviours(preset):
    grpo = preset_section(preset, "grpo")
    assert grpo["non_stop_penalty"] == 0.0
    assert grpo["group_std"] == "unbiased"
    assert grpo["zero_spread_groups"] == "keep"
    assert grpo["kl_log_ratio_clamp"] == 40.0
    assert grpo["kl_estimator"] == "k3"


@pytest.mark.parametrize("preset", ["grpo8b", "llama8b", "llama70b"])
def test_published_presets_aggregate_the_loss_as_the_reference_did(preset):
    algorithm = "grpo" if preset == "grpo8b" else "ppo"
    assert preset_section(preset, algorithm)["loss_aggregation"] == "micro_batch_mean"


def test_a_truncated_response_scores_zero():
    row = PromptRow([{"role": "user", "content": "2 + 3?"}], "p", [1], "5", "gsm8k")
    rollouts = [
        Rollout(row, [5, 1], "2 + 3 = 5\n#### 5", True),
        Rollout(row, [5, 5], "2 + 3 = 5\n#### 5", False),  # right, but cut at the length limit
        Rollout(row, [6, 1], "#### 6", True),
    ]
    penalty = preset_section("grpo8b", "grpo")["non_stop_penalty"]
    scores = score_rollouts(rollouts, verifier_reward=10.0, non_stop_penalty=penalty, timeout_s=2.0)
    assert scores.rewards == [10.0, 0.0, 0.0]
    # The named alternative: no penalty, the verifier's score stands.
    assert score_rollouts(rollouts, 10.0, None, 2.0).rewards == [10.0, 10.0, 0.0]


def test_the_k3_log_ratio_is_clamped():
    logprobs = torch.tensor([-1.0, -100.0, -2.0])
    ref = torch.tensor([-51.0, -5.0, -2.5])  # log-ratios 50, -95, 0.5
    clamped = kl_estimate("k3", logprobs, ref, 40.0)
    expected = [math.expm1(-40) + 40, math.expm1(40) - 40, math.expm1(-0.5) + 0.5]
    torch.testing.assert_close(clamped, torch.tensor(expected))
    # Unclamped (kl_log_ratio_clamp: null), exp(95) overflows float32 to inf.
    assert torch.isinf(kl_estimate("k3", logprobs, ref, None)[1])
    # Gradient is cut where the clamp bites, as with torch.clamp in the reference.
    logprobs.requires_grad_(True)
    kl_estimate("k3", logprobs, ref, 40.0).sum().backward()
    assert logprobs.grad[0] == 0 and logprobs.grad[1] == 0 and logprobs.grad[2] != 0


@pytest.mark.parametrize("zero_spread_groups", ["keep", "skip"])
def test_zero_spread_groups_keep_their_kl_term(tiny_model_factory, zero_spread_groups):
    """Group 1 (rewards 10, 0) has spread; group 2 (0, 0) has none: advantage 0, and with `keep`
    its KL term still gives a loss and a gradient; with `skip` it has neither."""
    grpo = OmegaConf.create({**preset_section("tiny", "grpo"), "samples_per_prompt": 2})
    grpo.zero_spread_groups = zero_spread_groups
    policy = PolicyAndValue(tiny_model_factory(seed=1), None)
    reference = tiny_model_factory(seed=2).eval()
    prompts = [[5, 6, 7]] * 2 + [[8, 9]] * 2
    responses = [[10, 11, 12], [13, 14], [15, 16, 17], [18]]
    experience = make_experience(
        policy, reference, prompts, responses, [10.0, 0.0, 0.0, 0.0], "grpo", grpo, 0, False, 4, "cpu"
    )
    assert experience.advantages[0, 0] > 0 > experience.advantages[1, 0]
    assert torch.all(experience.advantages[2:] == 0)
    assert experience.spread.tolist() == [True, True, False, False]
    terms = micro_batch_loss(policy, experience, [2, 3], "grpo", grpo, False, 0, "cpu", 1.0, "micro_batch_mean")
    if zero_spread_groups == "keep":
        assert experience.weights.tolist() == [1.0, 1.0, 1.0, 1.0]
        # Policy term 0 (advantage 0); the loss is beta x the token mean of k3 over the 4 tokens.
        assert terms["policy_loss"] == 0 and terms["trained_tokens"] == 4
        assert terms["aggregated"] > 0
        torch.testing.assert_close(terms["aggregated"].detach(), 0.01 * terms["kl_loss"] / 4)
        terms["aggregated"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    else:
        assert experience.weights.tolist() == [1.0, 1.0, 0.0, 0.0]
        assert terms["trained_tokens"] == 0 and terms["aggregated"] == 0


def minibatch_loss(aggregation: str, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The minibatch loss the update optimises: each micro-batch's scaled loss, divided by the
    accumulation count (as accelerate does), summed; one rank."""
    weights = [weight for _, weight in micro_batches]
    tokens = float(sum(weight.sum() for weight in weights))
    sequences = float(sum((weight.sum(1) > 0).sum() for weight in weights))
    count = len(micro_batches)
    denominator = minibatch_denominator(aggregation, count, tokens, sequences)
    return sum(
        float(scaled_loss(aggregate(loss, weight, aggregation), "mean", denominator, 1, count)) / count
        for loss, weight in micro_batches
    )


def test_loss_aggregation_modes_match_hand_computation():
    # Micro-batch A: sequences of 1 and 3 tokens; micro-batch B: one sequence of 2 tokens and a
    # skipped (weight 0) one.
    a = (torch.tensor([[4.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), torch.tensor([[1.0, 0, 0], [1, 1, 1]]))
    b = (torch.tensor([[6.0, 10.0, 0.0], [7.0, 7.0, 7.0]]), torch.tensor([[1.0, 1, 0], [0, 0, 0]]))
    # Every token alike: (4 + 1 + 2 + 3 + 6 + 10) / 6.
    assert minibatch_loss("token_mean", [a, b]) == pytest.approx(26 / 6)
    # Every sequence alike: (4 + 2 + 8) / 3.
    assert minibatch_loss("sequence_mean", [a, b]) == pytest.approx(14 / 3)
    # Every micro-batch alike (the reference): (10 / 4 + 16 / 2) / 2.
    assert minibatch_loss("micro_batch_mean", [a, b]) == pytest.approx((2.5 + 8) / 2)
    with pytest.raises(ValueError, match="loss_aggregation"):
        aggregate(*a, "mean")
