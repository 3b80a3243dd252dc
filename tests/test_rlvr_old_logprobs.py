"""With one update per rollout batch the experience phase runs no policy forward for the old
log-probs (the update's own, detached, stand in), and the update's loss, gradients and metrics are
those of the path that runs it; with more updates per batch (or PPO's KL reward) the forward stays."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from tests.test_rlvr_grpo_reference import preset_section
from tulu_cli.train.rl.experience import experience_stats, make_experience
from tulu_cli.train.rl.models import PolicyAndValue, ValueModel
from tulu_cli.train.rl.update import update_policy

# 4 prompts x 2 samples of unequal lengths, 2 micro-batches of 4.
PROMPTS = [[5, 6, 7]] * 2 + [[8, 9]] * 2 + [[20, 21, 22, 23]] * 2 + [[30]] * 2
RESPONSES = [[10, 11, 12], [13, 14], [15, 16, 17, 18], [19], [40, 41], [42, 43, 44], [50], [51, 52, 53, 54, 55]]
SPREAD_REWARDS = [10.0, 0.0, 0.0, 10.0, 10.0, 10.0, 0.0, 10.0]
MICRO = 4


def section(algorithm: str, **overrides):
    return OmegaConf.create({**preset_section("tiny", algorithm), "samples_per_prompt": 2, **overrides})


def policy_and_value(tiny_model_factory, algorithm: str) -> PolicyAndValue:
    value = None
    if algorithm == "ppo":
        backbone = tiny_model_factory(seed=4).model
        torch.manual_seed(5)
        value = ValueModel(backbone, torch.nn.Linear(backbone.config.hidden_size, 1, bias=False))
    return PolicyAndValue(tiny_model_factory(seed=1), value)


def counting_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def run_batch(tiny_model_factory, algorithm: str, algo, rewards: list[float], old_from_update: bool | None) -> dict:
    """Experience and one update of the batch; policy forwards per phase, totals, stats, gradients."""
    model = policy_and_value(tiny_model_factory, algorithm)
    reference = tiny_model_factory(seed=2).eval()
    forwards = counting_forwards(model.policy)
    value_forwards = counting_forwards(model.value) if model.value is not None else [0]
    experience = make_experience(model, reference, PROMPTS, RESPONSES, rewards, algorithm, algo, 0, False, MICRO,
                                 "cpu", 0.7, old_from_update)
    experience_forwards, forwards[0] = forwards[0], 0
    gradients = {}
    for name, parameter in model.named_parameters():
        parameter.register_post_accumulate_grad_hook(
            lambda p, name=name: gradients.__setitem__(name, p.grad.detach().clone()))
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=len(PROMPTS) // MICRO)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    train = OmegaConf.create({"per_device_batch_size": MICRO, "packing": False, "max_grad_norm": 1.0})
    totals = update_policy(accelerator, model, optimizer, scheduler, experience, algorithm, algo, train, 0,
                           torch.Generator().manual_seed(0), 0.7)
    return {"experience_forwards": experience_forwards, "update_forwards": forwards[0], "totals": totals,
            "value_forwards": value_forwards[0],
            "stats": experience_stats(experience), "old": experience.old_logprobs, "gradients": gradients,
            "from_update": experience.old_from_update}


@pytest.mark.parametrize(
    ("algorithm", "overrides", "rewards"),
    [
        ("grpo", {}, SPREAD_REWARDS),
        # PPO's per-token reward needs no KL at beta 0: only the value model runs before the update.
        ("ppo", {"beta": 0.0, "value_warmup_steps": 0}, SPREAD_REWARDS),
        # Every group skipped: no update forward, so one no-grad forward still gives the KL and entropy.
        ("grpo", {"zero_spread_groups": "skip"}, [10.0] * 8),
    ],
    ids=["grpo", "ppo_beta0", "grpo_all_skipped"],
)
def test_one_update_per_batch_takes_old_logprobs_from_the_update(tiny_model_factory, algorithm, overrides, rewards):
    algo = section(algorithm, **overrides)
    skipped = run_batch(tiny_model_factory, algorithm, algo, rewards, None)
    forced = run_batch(tiny_model_factory, algorithm, algo, rewards, False)
    micro_batches = len(PROMPTS) // MICRO
    all_skipped = "zero_spread_groups" in overrides
    assert skipped["from_update"] and not forced["from_update"]
    assert skipped["experience_forwards"] == 0 and forced["experience_forwards"] == micro_batches
    # The update's forward per micro-batch; with every group skipped, only the metrics forward.
    assert skipped["update_forwards"] == micro_batches
    assert forced["update_forwards"] == (0 if all_skipped else micro_batches)
    if algorithm == "ppo":
        assert skipped["value_forwards"] == forced["value_forwards"] == 2 * micro_batches
    torch.testing.assert_close(skipped["old"], forced["old"], rtol=1e-5, atol=1e-6)
    assert skipped["stats"] == pytest.approx(forced["stats"], rel=1e-5, abs=1e-6)
    assert skipped["totals"] == pytest.approx(forced["totals"], rel=1e-5, abs=1e-7)
    assert set(skipped["gradients"]) == set(forced["gradients"])
    if all_skipped:
        assert skipped["totals"]["skipped_updates"] == 1 and not skipped["gradients"]
        return
    assert skipped["totals"]["updates"] == 1 and skipped["stats"]["kl_sum"] != 0
    assert skipped["totals"]["clipped_tokens"] == 0 and skipped["totals"]["policy_loss"] != 0
    for name, gradient in forced["gradients"].items():
        torch.testing.assert_close(skipped["gradients"][name], gradient, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize(
    ("algorithm", "overrides"),
    [
        ("grpo", {"minibatches_per_rollout": 2}),
        ("grpo", {"epochs_per_rollout": 2}),
        # The tiny preset's PPO: one update per batch, but the KL enters the per-token reward.
        ("ppo", {}),
    ],
    ids=["grpo_2_minibatches", "grpo_2_epochs", "ppo_kl_reward"],
)
def test_schedules_that_reuse_a_batch_keep_the_policy_forward(tiny_model_factory, algorithm, overrides):
    algo = section(algorithm, **overrides)
    model = policy_and_value(tiny_model_factory, algorithm)
    forwards = counting_forwards(model.policy)
    experience = make_experience(model, tiny_model_factory(seed=2).eval(), PROMPTS, RESPONSES, SPREAD_REWARDS,
                                 algorithm, algo, 0, False, MICRO, "cpu", 0.7)
    assert not experience.old_from_update
    assert forwards[0] == len(PROMPTS) // MICRO
    assert torch.all(experience.old_logprobs[experience.mask] < 0)
