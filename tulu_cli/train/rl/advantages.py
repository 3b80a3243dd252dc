"""Advantages: GAE over response tokens (PPO) and group-normalised sequence scores (GRPO).

Per-token tensors are [sequences, response positions] with the response left-aligned and a mask
marking its tokens; values and rewards must be zero outside the mask.
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns (advantages, returns = advantages + values).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, with V and A
    zero after the last response token (the episode ends there).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (masked-out entries become 0)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(variance + eps) * mask.to(values.dtype)


def group_advantages(
    scores: torch.Tensor, group_size: int, unbiased_std: bool = True, eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score - group mean) / (group std + eps) for consecutive groups of `group_size` samples of one
    prompt, and a mask of the samples whose group has any spread (the others' advantage is exactly 0).

    Tulu 3.1 (open-instruct grpo_vllm_thread_ray_gtrl.py, Feb 2025) used torch's default, the
    unbiased std (ddof 1), as does TRL's GRPOTrainer; `unbiased_std=False` gives the population std.
    """
    if scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size}")
    if unbiased_std and group_size < 2:
        raise ValueError("the unbiased group std needs at least 2 samples per prompt")
    grouped = scores.view(-1, group_size).to(torch.float64)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, unbiased=unbiased_std, keepdim=True)
    spread = (grouped.max(dim=1, keepdim=True).values > grouped.min(dim=1, keepdim=True).values).expand_as(
        grouped
    )
    advantages = ((grouped - mean) / (std + eps) * spread).to(scores.dtype)
    return advantages.reshape(-1), spread.reshape(-1)
