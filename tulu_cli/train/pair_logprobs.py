"""Log-probs of preference pairs: one concatenated forward pass per micro-batch of pairs.

The micro-batch's chosen sides and rejected sides become one batch of 2N sequences (packed into one
row when packing is on), so the policy runs once per micro-batch, not once per side.
"""

from __future__ import annotations

import math

import torch

from tulu_cli.data.preference_data import pair_sequences
from tulu_cli.train.batching import collate, read_rows, sequence_index
from tulu_cli.train.dpo_losses import PairLogprobs
from tulu_cli.train.logprobs import sequence_logprobs


def forward_pairs(model, pairs: list[dict], pad_id: int, packing: bool, device) -> PairLogprobs:
    sequences = pair_sequences(pairs)
    batch = {key: value.to(device) for key, value in collate(sequences, pad_id, packing).items()}
    index = sequence_index(sequences, packing).to(device)
    sums, tokens = sequence_logprobs(model, batch, index, len(sequences))
    count = len(pairs)
    return PairLogprobs(sums[:count], sums[count:], tokens[:count], tokens[count:])


def dataset_logprobs(accelerator, model, pairs, batch_size: int, pad_id: int, packing: bool) -> PairLogprobs:
    """Log-probs of every pair of the dataset `pairs` (float64, on CPU, every rank gets all of them),
    without gradients. Pairs are read from the dataset one forward pass at a time.

    Each rank scores every world_size-th pair; every rank runs the same number of forward passes
    (a rank short of pairs repeats one and discards it), as sharded models (ZeRO-3) require.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = range(rank, len(pairs), world)
    passes = math.ceil(math.ceil(len(pairs) / world) / batch_size)
    values = torch.zeros(4, len(pairs), dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for number in range(passes):
            rows = list(mine[number * batch_size:(number + 1) * batch_size])
            scored = forward_pairs(model, read_rows(pairs, rows or [0]), pad_id, packing, accelerator.device)
            if rows:
                values[:, rows] = torch.stack([scored.chosen, scored.rejected, scored.chosen_tokens,
                                               scored.rejected_tokens]).double().cpu()
    model.train(was_training)
    if world > 1:
        values = accelerator.reduce(values.to(accelerator.device), reduction="sum").cpu()
    return PairLogprobs(*values)


def select(logprobs: PairLogprobs, rows: list[int], device) -> PairLogprobs:
    """The entries of `rows`, as float32 tensors on `device` (to pair with a micro-batch's policy log-probs)."""
    index = torch.tensor(rows, dtype=torch.long)
    return PairLogprobs(*(getattr(logprobs, name)[index].float().to(device)
                          for name in ("chosen", "rejected", "chosen_tokens", "rejected_tokens")))
