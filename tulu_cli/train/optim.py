"""Optimizer and learning-rate schedule built from the `optim` config."""

from __future__ import annotations

import math
from typing import Any

import torch


def build_optimizer(model: torch.nn.Module, optim_cfg: Any) -> torch.optim.Optimizer:
    """AdamW; weight decay is not applied to biases and norm weights."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        # A ZeRO-3 parameter's local tensor is an empty 1-D shard; its real shape is `ds_shape`.
        ndim = len(getattr(parameter, "ds_shape", parameter.shape))
        (no_decay if ndim < 2 or "norm" in name else decay).append(parameter)
    # Empty groups are left out: DeepSpeed drops them, which would leave the schedule with one too many.
    groups = [group for group in ({"params": decay, "weight_decay": float(optim_cfg["weight_decay"])},
                                  {"params": no_decay, "weight_decay": 0.0}) if group["params"]]
    return torch.optim.AdamW(groups, lr=float(optim_cfg["lr"]), betas=tuple(optim_cfg.get("betas", (0.9, 0.999))),
                             eps=float(optim_cfg.get("eps", 1e-8)))


def build_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: Any, total_steps: int):
    from transformers import get_scheduler

    warmup = math.ceil(float(optim_cfg.get("warmup_ratio", 0.0)) * total_steps)
    return get_scheduler(optim_cfg.get("scheduler", "linear"), optimizer, num_warmup_steps=warmup,
                         num_training_steps=total_steps)
