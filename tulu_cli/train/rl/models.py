"""The models of RLVR: the policy (and, for PPO, a value model) trained together, and the frozen reference.

Policy and value model sit in one module with one optimizer, so one `accelerator.prepare` (DDP or
DeepSpeed) and one checkpoint cover both, and the PPO loss `policy + value_coef * value` is one
backward pass, as in the reference PPO code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tulu_cli.modeling import NO_HUB_KERNELS, attention_implementation, cover_tokenizer
from tulu_cli.train.logprobs import keeps_chosen_logits


class ValueModel(nn.Module):
    """A transformer backbone with a scalar head: the value of the state before each next token."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return self.head(hidden).squeeze(-1).float()


def load_value_model(model_cfg: Mapping[str, Any], reward_model_path: str | None, tokenizer) -> ValueModel:
    """From a reward model (its backbone and score head) when a path is given, else from the policy's
    weights with a new scalar head."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    dtype = getattr(torch, model_cfg.get("dtype") or "float32")
    attention = attention_implementation(model_cfg.get("attn_implementation", "sdpa"))
    if reward_model_path:
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            reward_model_path, num_labels=1, dtype=dtype, attn_implementation=attention, **NO_HUB_KERNELS
        )
        backbone = getattr(reward_model, reward_model.base_model_prefix)
        head = reward_model.score
    else:
        backbone = AutoModel.from_pretrained(
            model_cfg["path"], revision=model_cfg.get("revision"), dtype=dtype, attn_implementation=attention,
            **NO_HUB_KERNELS,
        )
        hidden = backbone.config.hidden_size
        # The backbone's own dtype, which under ZeRO-3 is that of its partitions (bf16 on GPU profiles), not
        # `dtype`: DeepSpeed packs every parameter of the model into one flat buffer of a single dtype.
        head = nn.Linear(hidden, 1, bias=False, dtype=next(backbone.parameters()).dtype)
        nn.init.normal_(head.weight, std=1 / math.sqrt(hidden + 1))
    cover_tokenizer(backbone, tokenizer)
    if model_cfg.get("gradient_checkpointing"):
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return ValueModel(backbone, head)


class PolicyAndValue(nn.Module):
    """Forward returns (policy logits, values or None); `with_policy=False` runs the value model alone
    (logits None)."""

    def __init__(self, policy: nn.Module, value: ValueModel | None):
        super().__init__()
        self.policy = policy
        self.value = value
        self.policy_keeps_chosen_logits = keeps_chosen_logits(policy)
        # accelerate sizes DeepSpeed's "auto" buckets from `model.config.hidden_size`.
        self.config = policy.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, with_policy: bool = True,
                logits_to_keep: torch.Tensor | None = None):
        """`logits_to_keep`: the positions whose logits to return (all when None); values cover every
        position."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        logits = self.policy_logits(inputs, logits_to_keep) if with_policy else None
        values = self.value(**inputs) if self.value is not None else None
        return logits, values

    def policy_logits(self, inputs: dict, logits_to_keep: torch.Tensor | None) -> torch.Tensor:
        if logits_to_keep is None or not self.policy_keeps_chosen_logits:
            logits = self.policy(**inputs, use_cache=False).logits
            return logits if logits_to_keep is None else logits.index_select(1, logits_to_keep)
        return self.policy(**inputs, use_cache=False, logits_to_keep=logits_to_keep).logits
