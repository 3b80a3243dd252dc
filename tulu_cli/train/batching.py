"""Which rows each rank trains on at each optimizer step, and how a micro-batch becomes tensors.

The order is a seeded permutation per epoch, so the position in training is just the optimizer
step: resuming at step k replays exactly the batches an uninterrupted run would have seen. Rows
stay in their memory-mapped dataset; `read_rows` reads only a micro-batch's rows into Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from tulu_cli.data.chat import IGNORE_INDEX
from tulu_cli.validate_config import batch_multiple_error


@dataclass(frozen=True)
class BatchPlan:
    rows: int
    effective_batch_size: int
    per_device_batch_size: int
    world_size: int
    epochs: int
    seed: int
    max_steps: int | None = None

    def __post_init__(self):
        split_error = batch_multiple_error(self.effective_batch_size, self.per_device_batch_size, self.world_size)
        if split_error:
            raise ValueError(split_error)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{self.rows} rows are fewer than one effective batch ({self.effective_batch_size})")

    @property
    def accumulation_steps(self) -> int:
        return self.effective_batch_size // (self.per_device_batch_size * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.rows // self.effective_batch_size

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return min(total, self.max_steps) if self.max_steps is not None else total

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """Row indices of this rank's micro-batches for optimizer step `step` (0-based)."""
        order = epoch_order(self.rows, self.seed + self.epoch_of(step))
        start = (step % self.steps_per_epoch) * self.effective_batch_size
        rows = order[start:start + self.effective_batch_size].tolist()
        mine = rows[rank::self.world_size]
        size = self.per_device_batch_size
        return [mine[i:i + size] for i in range(0, len(mine), size)]


@lru_cache(maxsize=1)
def epoch_order(rows: int, seed: int) -> torch.Tensor:
    """The seeded permutation of one epoch (an int64 tensor, computed once per epoch, not per step)."""
    return torch.randperm(rows, generator=torch.Generator().manual_seed(seed))


def read_rows(dataset: Any, indices: Sequence[int]) -> list[dict]:
    """Rows `indices` of `dataset` (a datasets.Dataset, read from its Arrow buffers) as dicts."""
    if not len(indices):
        return []
    columns = dataset[list(indices)]
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*(columns[name] for name in names), strict=True)]


def collate(examples: list[dict], pad_id: int, packing: bool) -> dict[str, torch.Tensor]:
    """Tensors for one micro-batch of {input_ids, labels} rows.

    packing=True concatenates the rows into one row with position ids restarting at each row
    (padding-free; attention stays inside each row). packing=False right-pads to the longest row.
    """
    if packing:
        input_ids, labels, positions = [], [], []
        for example in examples:
            ids = list(example["input_ids"])
            row_labels = list(example["labels"])
            row_labels[0] = IGNORE_INDEX  # never predict a row's first token from the previous row
            input_ids += ids
            labels += row_labels
            positions += range(len(ids))
        return {"input_ids": torch.tensor([input_ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions])}
    longest = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example["input_ids"])
        input_ids[row, :length] = torch.tensor(example["input_ids"])
        labels[row, :length] = torch.tensor(example["labels"])
        attention[row, :length] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def count_trainable(examples: list[dict]) -> int:
    """Tokens that carry a loss (labels after the shift by one)."""
    return sum(sum(1 for label in example["labels"][1:] if label != IGNORE_INDEX) for example in examples)


def sequence_index(examples: list[dict], packing: bool) -> torch.Tensor:
    """Which example each position of `collate`'s output belongs to, in its (rows, length) shape.

    Padding positions get the index of their row's example; they carry no label, so sums ignore them.
    """
    if packing:
        return torch.tensor([[index for index, example in enumerate(examples) for _ in example["input_ids"]]])
    longest = max(len(example["input_ids"]) for example in examples)
    return torch.arange(len(examples)).unsqueeze(1).expand(len(examples), longest)
