"""Token log-probabilities of labelled positions: the quantity SFT, DPO and RL losses are built from.

`labelled_logprobs` runs the model's output layer only at the positions that predict a label (the
response tokens of SFT rows and preference pairs): the prompt positions' logits, a [tokens, vocab]
matrix multiply in the forward pass and two in the backward pass, are never computed, and the logits
tensor shrinks with them (bf16 logits of 32k packed tokens x 128k vocabulary are 8.4 GB). The
log-softmax then runs over a chunk of positions at a time, in float32: a float32 copy of the whole
logits tensor is never built, neither in the forward pass nor in the backward pass, which recomputes
each chunk's softmax from the logits (kept in the model's dtype) instead of saving float32
activations.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from tulu_cli.data.chat import IGNORE_INDEX

# Logit entries per float32 chunk (64 MiB): ~130 positions of a 128k vocabulary.
CHUNK_ELEMENTS = 1 << 24


def forward_logits(model, batch: dict[str, torch.Tensor], **options) -> torch.Tensor:
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
    return model(**inputs, use_cache=False, **options).logits


def labelled_logprobs(model, batch: dict[str, torch.Tensor], labels: torch.Tensor | None = None,
                      temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_logprobs(forward_logits(model, batch), labels)` (labels default to `batch["labels"]`),
    with the output layer run only at the positions that predict a label (`LabelledColumns`)."""
    kept = LabelledColumns.of(batch["labels"] if labels is None else labels, keeps_chosen_logits(model))
    return kept.logprobs(forward_logits(model, batch, **kept.forward_kwargs()), temperature)


@dataclass
class LabelledColumns:
    """The sequence positions whose logits a loss needs: those where some row predicts a label.

    `forward_kwargs()` asks the model for those positions' logits only (transformers'
    `logits_to_keep`); `logprobs` and `entropy` read such logits, or every position's when `columns`
    is None, and give the same values either way.
    """

    next_labels: torch.Tensor  # [rows, positions - 1]: the label each position predicts
    columns: torch.Tensor | None  # the kept positions, ascending; None: every position

    @classmethod
    def of(cls, labels: torch.Tensor, keep: bool = True) -> LabelledColumns:
        next_labels = labels[:, 1:]
        columns = (next_labels != IGNORE_INDEX).any(0).nonzero().squeeze(1) if keep else None
        return cls(next_labels, columns)

    def forward_kwargs(self) -> dict:
        return {} if self.columns is None else {"logits_to_keep": self.columns}

    def targets(self) -> torch.Tensor:
        """The label each row of the logits predicts, [rows, logits positions]. All positions: the last
        one predicts nothing (padding the labels keeps the logits' flattened view a view, not a copy)."""
        if self.columns is None:
            return torch.nn.functional.pad(self.next_labels, (0, 1), value=IGNORE_INDEX)
        return self.next_labels.index_select(1, self.columns)

    def logprobs(self, logits: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-prob (float32) of each next token under softmax(logits / temperature), aligned to
        `labels[:, 1:]` (0 where no label), and the mask of positions that carry a label."""
        targets = self.targets()
        flat_targets = targets.reshape(-1)
        positions = (flat_targets != IGNORE_INDEX).nonzero().squeeze(1)
        flat_logits = logits.reshape(-1, logits.shape[-1])
        picked = _LabelLogprobs.apply(flat_logits, positions, flat_targets[positions], float(temperature))
        values = picked.new_zeros(flat_targets.shape[0]).index_copy(0, positions, picked).view(targets.shape)
        if self.columns is None:
            logprobs = values[:, :-1]
        else:
            logprobs = values.new_zeros(self.next_labels.shape).index_copy(1, self.columns, values)
        return logprobs, self.next_labels != IGNORE_INDEX

    def entropy(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Entropy of softmax(logits / temperature) at each labelled position, in row-major order."""
        return chunked_entropy(logits, self.targets() != IGNORE_INDEX, temperature)


@torch.no_grad()
def chunked_entropy(logits: torch.Tensor, where: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) at the True entries of `where` (shape logits.shape[:2]),
    in row-major order; float32, a chunk of positions at a time (no float32 copy of the whole logits)."""
    rows = where.reshape(-1).nonzero().squeeze(1)
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.empty(rows.shape[0], dtype=torch.float32, device=logits.device)
    step = chunk_rows(logits.shape[-1])
    for start in range(0, rows.shape[0], step):
        logprobs = torch.log_softmax(flat.index_select(0, rows[start : start + step]).float() / temperature, dim=-1)
        out[start : start + step] = -(logprobs.exp() * logprobs).sum(dim=-1)
    return out


def keeps_chosen_logits(model) -> bool:
    """Whether the causal LM under any wrappers (DDP, DeepSpeed, peft) takes `logits_to_keep` as a
    tensor of positions (transformers 4.50 and later)."""
    inner = model
    for _ in range(8):
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        elif isinstance(getattr(inner, "module", None), torch.nn.Module):
            inner = inner.module
        else:
            break
    try:
        parameter = inspect.signature(inner.forward).parameters.get("logits_to_keep")
    except (AttributeError, TypeError, ValueError):
        return False
    return parameter is not None and "Tensor" in str(parameter.annotation)


def token_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob (float32) of each next token under softmax(logits / temperature) for logits of every
    position, and a mask of the positions that carry a label.

    Both are aligned to `labels[:, 1:]`; masked positions have log-prob 0.
    """
    return LabelledColumns.of(labels, keep=False).logprobs(logits, temperature)


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


def sequence_logprobs(model, batch: dict[str, torch.Tensor],
                      index: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-prob of the labelled tokens of each of `count` sequences, and their token counts.

    `index` (same shape as `batch["labels"]`, from `batching.sequence_index`) names each position's
    sequence, so one forward pass over several sequences, packed or padded, yields one sum per sequence.
    """
    logprobs, mask = labelled_logprobs(model, batch)
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
