"""Prompts for preference data: a data mix (conf/data/ style) read and validated by the curate mix builder.

`kind: sft` takes conversations (e.g. the SFT mix, reused as in Tulu 3) and drops the final assistant
turn; `kind: rlvr` takes prompts with `ground_truth`/`dataset` (for the verifier judge). Rows the mix
builder sets aside are returned as rejects (file, row, field, reason).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tulu_cli.curate.build import MixResult, ProgressFactory, build_mix
from tulu_cli.curate.dataset_dir import take_rows
from tulu_cli.errors import StageError

PROMPT_KINDS = ("sft", "rlvr")
# Prompts read at a time when all of them are walked in order.
READ_ROWS = 1024


@dataclass(frozen=True)
class Prompt:
    id: str  # unique within the run (a repeated source row gets a `#N` suffix)
    source: str
    messages: list[dict]  # ends with a user turn
    ground_truth: str | None = None
    dataset: str | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "source": self.source, "messages": self.messages,
                "ground_truth": self.ground_truth, "dataset": self.dataset}


def _without_final_answer(messages: list[dict]) -> list[dict]:
    end = len(messages)
    while end and messages[end - 1]["role"] == "assistant":
        end -= 1
    return [{"role": m["role"], "content": m["content"]} for m in messages[:end]]


class PromptSet:
    """The mix's prompts in mix order, read from the memory-mapped mix a slice at a time: a run over
    many prompts holds one shard of them as Python objects, never all."""

    def __init__(self, mix: MixResult):
        self.mix = mix  # keeps the mix's files (a temporary folder) alive
        ids = take_rows(mix.rows.select(["id"]), mix.order).column("id").combine_chunks()
        self.ids = _unique_ids(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, start: int, stop: int) -> list[Prompt]:
        rows = take_rows(self.mix.rows, self.mix.order[start:stop]).to_pylist()
        # Validated conversations alternate from a user turn, so each prompt ends with a user turn.
        return [Prompt(id=uid, source=row["source"], messages=_without_final_answer(row["messages"]),
                       ground_truth=row.get("ground_truth"), dataset=row.get("dataset"))
                for uid, row in zip(self.ids[start:stop].to_pylist(), rows, strict=True)]

    def shards(self, size: int) -> int:
        return -(-len(self) // size)

    def shard(self, index: int, size: int) -> list[Prompt]:
        return self.read(index * size, min((index + 1) * size, len(self)))

    def __iter__(self) -> Iterator[Prompt]:
        for index in range(self.shards(READ_ROWS)):
            yield from self.shard(index, READ_ROWS)


def _unique_ids(ids: pa.Array) -> pa.Array:
    """Each row's id, the second and later rows of an id suffixed `#2`, `#3`, ... in mix order."""
    codes = pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.ones(len(codes), bool)
    starts[1:] = codes[order][1:] != codes[order][:-1]
    position = np.arange(len(codes))
    occurrence = np.empty(len(codes), np.int64)
    occurrence[order] = position - np.maximum.accumulate(np.where(starts, position, 0)) + 1
    suffixed = pc.binary_join_element_wise(ids, pa.array(occurrence.astype(str)), "#")
    return pc.if_else(pa.array(occurrence == 1), ids, suffixed)


def load_prompts(mix: dict, seed: int, progress: ProgressFactory) -> tuple[PromptSet, MixResult]:
    kind = mix.get("kind", "sft")
    if kind not in PROMPT_KINDS:
        raise StageError(f"prompts: kind must be one of {', '.join(PROMPT_KINDS)}, got {kind!r}")
    try:
        result = build_mix("prompts", mix, int(mix.get("seed", seed)), progress)
    except ValueError as exc:
        raise StageError(f"prompts: {exc}") from None
    return PromptSet(result), result
