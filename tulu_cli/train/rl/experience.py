"""From scored rollouts to training targets: log-probs of the sampling policy and the reference,
values, per-token rewards and advantages (no gradients).

PPO (Tulu 3): per-token reward -beta * k1, plus the sequence reward at the last token; GAE; whitened
advantages. GRPO (Tulu 3.1): each sample's group-normalised reward as the advantage of every token
(0 in a group whose rewards are all equal); the KL term is added to the loss instead. Zero-spread
groups stay in the loss (`zero_spread_groups: keep`, Tulu 3.1: their KL term still counts) or get
weight 0 (`skip`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tulu_cli.train.logprobs import token_logprobs
from tulu_cli.train.rl.advantages import gae, group_advantages, whiten
from tulu_cli.train.rl.kl import kl_estimate
from tulu_cli.train.rl.sequences import (
    build_batch,
    length_mask,
    response_positions,
    split_responses,
    to_response_matrix,
    token_entropy,
)


@dataclass
class Experience:
    prompts: list[list[int]]
    responses: list[list[int]]
    mask: torch.Tensor  # [N, R] response tokens
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor  # [N] 1 for trained sequences, 0 for skipped ones
    values: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    kl: torch.Tensor | None = None  # [N, R] KL estimate of the sampling policy to the reference
    spread: torch.Tensor | None = None  # [N] GRPO: whether the sample's group has any reward spread


@torch.no_grad()
def response_outputs(
    model,
    prompts,
    responses,
    pad_id: int,
    packing: bool,
    device,
    with_entropy: bool = False,
    temperature: float = 1.0,
):
    """(log-probs, values or None, entropy or None) of the responses, each [sequences, longest response]."""
    batch = build_batch(prompts, responses, pad_id, packing, device)
    logits, values = model(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"))
    return gather_response(
        batch["labels"], logits, values, [len(r) for r in responses], with_entropy, temperature
    )


def gather_response(
    labels, logits, values, lengths: list[int], with_entropy: bool = False, temperature: float = 1.0
):
    """Per-response tensors from one forward pass. Logits are divided by the sampling temperature, so
    log-probs and entropy are those of the distribution the responses were sampled from."""
    logprobs, _ = token_logprobs(logits, labels, temperature)
    positions = response_positions(labels)
    response_logprobs = to_response_matrix(logprobs, positions, lengths)
    response_values = to_response_matrix(values[:, :-1], positions, lengths) if values is not None else None
    entropy = None
    if with_entropy:
        entropy = split_responses(token_entropy(logits, positions, temperature), lengths)
    return response_logprobs, response_values, entropy


@torch.no_grad()
def reference_logprobs(
    reference, prompts, responses, pad_id: int, packing: bool, device, temperature: float = 1.0
) -> torch.Tensor:
    batch = build_batch(prompts, responses, pad_id, packing, device)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
    logits = reference(**inputs, use_cache=False).logits
    logprobs, _ = token_logprobs(logits, batch["labels"], temperature)
    return to_response_matrix(logprobs, response_positions(batch["labels"]), [len(r) for r in responses])


def pad_columns(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    return torch.cat([torch.nn.functional.pad(part, (0, width - part.shape[1])) for part in parts])


@torch.no_grad()
def make_experience(
    model,
    reference,
    prompts: list[list[int]],
    responses: list[list[int]],
    rewards: list[float],
    algorithm: str,
    algo_cfg,
    pad_id: int,
    packing: bool,
    micro_batch: int,
    device,
    temperature: float = 1.0,
) -> Experience:
    lengths = [len(response) for response in responses]
    width = max(lengths)
    logprob_parts, value_parts, entropy_parts, ref_parts = [], [], [], []
    for start in range(0, len(responses), micro_batch):
        chunk_prompts, chunk_responses = (
            prompts[start : start + micro_batch],
            responses[start : start + micro_batch],
        )
        logprobs, values, entropy = response_outputs(
            model,
            chunk_prompts,
            chunk_responses,
            pad_id,
            packing,
            device,
            with_entropy=True,
            temperature=temperature,
        )
        logprob_parts.append(logprobs)
        entropy_parts.append(entropy)
        if values is not None:
            value_parts.append(values)
        ref_parts.append(
            reference_logprobs(
                reference, chunk_prompts, chunk_responses, pad_id, packing, device, temperature
            )
        )
    mask = length_mask(lengths, device)
    old_logprobs, ref_logprobs = pad_columns(logprob_parts, width), pad_columns(ref_parts, width)
    kl = kl_estimate(algo_cfg.kl_estimator, old_logprobs, ref_logprobs, algo_cfg.get("kl_log_ratio_clamp")) * mask
    scores = torch.tensor(rewards, dtype=torch.float32, device=device)
    experience = Experience(
        prompts,
        responses,
        mask,
        old_logprobs,
        ref_logprobs,
        advantages=torch.zeros_like(kl),
        weights=torch.ones(len(responses), device=device),
        entropy=pad_columns(entropy_parts, width),
        kl=kl,
    )
    if algorithm == "ppo":
        values = pad_columns(value_parts, width) * mask
        token_rewards = -float(algo_cfg.beta) * kl
        last = torch.tensor(lengths, device=device) - 1
        token_rewards[torch.arange(len(lengths), device=device), last] += scores
        advantages, returns = gae(token_rewards, values, mask, float(algo_cfg.gamma), float(algo_cfg.lam))
        if algo_cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        experience.advantages, experience.values, experience.returns = advantages, values, returns
    else:
        advantages, spread = group_advantages(
            scores, int(algo_cfg.samples_per_prompt), unbiased_std=algo_cfg.group_std == "unbiased"
        )
        experience.advantages = advantages[:, None] * mask
        experience.spread = spread
        if algo_cfg.zero_spread_groups == "skip":
            experience.weights = spread.float()
    return experience


def experience_stats(experience: Experience) -> dict[str, float]:
    """Sums over this rank's sequences (so ranks can add them): KL per token, entropy, lengths."""
    mask = experience.mask
    return {
        "kl_sum": float((experience.kl * mask).sum()),
        "entropy_sum": float((experience.entropy * mask).sum()),
        "tokens": float(mask.sum()),
        "sequences": float(len(experience.responses)),
        "kept_sequences": float(experience.weights.sum()),
        "zero_spread_sequences": float((~experience.spread).sum()) if experience.spread is not None else 0.0,
        "value_sum": float((experience.values * mask).sum()) if experience.values is not None else 0.0,
    }
