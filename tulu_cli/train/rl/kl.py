"""Per-token estimators of KL(pi || ref) from log-probs of tokens sampled from pi, as functions of the
log-ratio r = log pi - log ref."""

from __future__ import annotations

import torch


def k1_of_log_ratio(log_ratio: torch.Tensor) -> torch.Tensor:
    """k1 = r: unbiased, high variance, can be negative (Tulu 3 PPO's per-token reward)."""
    return log_ratio


def k3_of_log_ratio(log_ratio: torch.Tensor) -> torch.Tensor:
    """k3 = exp(-r) - 1 + r: unbiased and never negative (GRPO's loss term)."""
    return torch.expm1(-log_ratio) + log_ratio


ESTIMATORS = {"k1": k1_of_log_ratio, "k3": k3_of_log_ratio}


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return k1_of_log_ratio(logprobs - ref_logprobs)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return k3_of_log_ratio(logprobs - ref_logprobs)


def kl_estimate(
    name: str, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, log_ratio_clamp: float | None = None
) -> torch.Tensor:
    """The estimator `name`, with the log-ratio bounded first to +-`log_ratio_clamp` when one is given:
    Tulu 3.1's GRPO clamped it to +-40 before k3 (open-instruct grpo_vllm_thread_ray_gtrl.py), so a
    token far from the reference cannot overflow exp() into an inf loss."""
    if name not in ESTIMATORS:
        raise ValueError(f"kl estimator must be one of {', '.join(ESTIMATORS)}, got {name!r}")
    log_ratio = logprobs - ref_logprobs
    if log_ratio_clamp is not None:
        log_ratio = log_ratio.clamp(-float(log_ratio_clamp), float(log_ratio_clamp))
    return ESTIMATORS[name](log_ratio)
