"""Token log-probabilities of labelled positions: the quantity SFT, DPO and RL losses are built from."""

from __future__ import annotations

import torch

from tulu_cli.data.chat import IGNORE_INDEX


def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
    return model(**inputs, use_cache=False).logits


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next token and a mask of the positions that carry a label.

    Both are aligned to `labels[:, 1:]`; masked positions have log-prob 0.
    """
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    logits = logits[:, :-1].float()
    safe = shifted_labels.masked_fill(~mask, 0)
    picked = torch.gather(logits, 2, safe.unsqueeze(-1)).squeeze(-1)
    logprobs = picked - torch.logsumexp(logits, dim=-1)
    return logprobs * mask, mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor,
                      index: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of the labelled tokens of each of `count` sequences, and their token counts.

    `index` (same shape as `labels`, from `batching.sequence_index`) names each position's sequence,
    so one forward pass over several sequences, packed or padded, yields one sum per sequence.
    """
    logprobs, mask = token_logprobs(logits, labels)
    owner = index[:, 1:].reshape(-1)
    sums = torch.zeros(count, dtype=logprobs.dtype, device=logprobs.device).index_add(0, owner, logprobs.reshape(-1))
    tokens = torch.zeros(count, dtype=logprobs.dtype, device=logprobs.device).index_add(
        0, owner, mask.reshape(-1).to(logprobs.dtype))
    return sums, tokens


@torch.no_grad()
def prompt_token_logprobs(model, prompts: list[list[int]], device) -> list[list[float]]:
    """A causal LM's log-prob of each token after the first of each prompt, one prompt per forward pass
    (under ZeRO-3 every rank must call this with the same prompts)."""
    result = []
    for ids in prompts:
        input_ids = torch.tensor([ids], device=device)
        logprobs, _ = token_logprobs(forward_logits(model, {"input_ids": input_ids}), input_ids)
        result.append(logprobs[0].tolist())
    return result
