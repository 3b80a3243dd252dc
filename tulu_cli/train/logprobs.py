"""Token log-probabilities of labelled positions: the quantity SFT, DPO and RL losses are built from.

The log-softmax runs over a chunk of positions at a time, in float32, and only at labelled positions:
a float32 copy of the whole logits tensor (32k packed tokens x 128k vocabulary = 16.8 GB) is never
built, neither in the forward pass nor in the backward pass, which recomputes each chunk's softmax
from the logits (kept in the model's dtype) instead of saving float32 activations.
"""

from __future__ import annotations

import torch

from tulu_cli.data.chat import IGNORE_INDEX

# Logit entries per float32 chunk (64 MiB): ~130 positions of a 128k vocabulary.
CHUNK_ELEMENTS = 1 << 24


def forward_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
    return model(**inputs, use_cache=False).logits


def token_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob (float32) of each next token under softmax(logits / temperature), and a mask of the
    positions that carry a label.

    Both are aligned to `labels[:, 1:]`; masked positions have log-prob 0.
    """
    mask = labels[:, 1:] != IGNORE_INDEX
    # Position t predicts labels[t + 1]; the last position predicts nothing. Working on the whole
    # (contiguous) logits tensor keeps the flattened view a view, not a copy.
    next_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    flat_logits = logits.reshape(-1, logits.shape[-1])
    positions = (next_labels.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)
    picked = _LabelLogprobs.apply(flat_logits, positions, next_labels.reshape(-1)[positions], float(temperature))
    logprobs = picked.new_zeros(flat_logits.shape[0]).index_copy(0, positions, picked)
    return logprobs.view(labels.shape)[:, :-1], mask


def chunk_rows(vocab_size: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(vocab_size, 1))


class _LabelLogprobs(torch.autograd.Function):
    """log softmax(logits[p] / T)[label_p] for the rows `positions` of [rows, vocab] logits, chunk by chunk."""

    @staticmethod
    def forward(ctx, logits, positions, targets, temperature):
        out = torch.empty(positions.shape[0], dtype=torch.float32, device=logits.device)
        step = chunk_rows(logits.shape[-1])
        for start in range(0, positions.shape[0], step):
            part = logits.index_select(0, positions[start : start + step]).float()
            if temperature != 1.0:
                part = part / temperature
            chosen = part.gather(1, targets[start : start + step, None]).squeeze(1)
            out[start : start + step] = chosen - torch.logsumexp(part, dim=-1)
        ctx.save_for_backward(logits, positions, targets)
        ctx.temperature = temperature
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, positions, targets = ctx.saved_tensors
        temperature = ctx.temperature
        # d/dz log softmax(z / T)[y] = (onehot(y) - softmax(z / T)) / T
        grad = torch.zeros_like(logits)
        step = chunk_rows(logits.shape[-1])
        for start in range(0, positions.shape[0], step):
            rows = positions[start : start + step]
            weight = grad_out[start : start + step, None].float()
            part = logits.index_select(0, rows).float()
            if temperature != 1.0:
                part = part / temperature
            part = torch.softmax(part, dim=-1).mul_(-weight)
            part.scatter_add_(1, targets[start : start + step, None], weight)
            if temperature != 1.0:
                part.div_(temperature)
            grad.index_copy_(0, rows, part.to(grad.dtype))
        return grad, None, None, None


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
