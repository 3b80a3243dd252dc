"""Prompt + response sequences as model inputs, and per-token outputs as [sequences, response position]
tensors with the response left-aligned (what advantages and losses work on).

Sequences go through the shared `collate` (padding-free packing or right padding) with labels on the
response tokens only, so `LabelledColumns` picks out exactly the response positions.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from tulu_cli.data.chat import IGNORE_INDEX
from tulu_cli.train.batching import collate


def build_batch(
    prompts: list[list[int]], responses: list[list[int]], pad_id: int, packing: bool, device
) -> dict[str, torch.Tensor]:
    examples = [
        {"input_ids": prompt + response, "labels": [IGNORE_INDEX] * len(prompt) + response}
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    return {key: value.to(device) for key, value in collate(examples, pad_id, packing).items()}


def response_positions(labels: torch.Tensor) -> torch.Tensor:
    """Mask over `labels[:, 1:]` (token_logprobs' alignment) of the positions predicting a response token."""
    return labels[:, 1:] != IGNORE_INDEX


def to_response_matrix(
    per_position: torch.Tensor, positions: torch.Tensor, lengths: list[int]
) -> torch.Tensor:
    """Gather the response entries of a [rows, positions] tensor into [sequences, max length], zero padded.

    Works for packed and padded batches alike: row-major order visits each sequence's response tokens
    in order, one sequence after the other.
    """
    return split_responses(per_position[positions], lengths)


def split_responses(flat: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Consecutive per-token entries of sequences of `lengths` tokens as [sequences, longest], zero padded."""
    return pad_sequence(list(torch.split(flat, lengths)), batch_first=True)


def length_mask(lengths: list[int], device=None) -> torch.Tensor:
    width = max(lengths)
    return torch.arange(width, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
