"""RLVR data: rows with `messages`, `ground_truth` and `dataset`, validated with reasons.

The prompt is `messages` minus a final assistant turn, rendered with the chat format's generation
prompt. A row is set aside (rejects.jsonl) when its conversation is malformed, its ground truth is
not a string or not one its verifier can parse (an `ifeval` constraint that is not valid JSON or names
an unknown function), no verifier is registered for its `dataset`, or its prompt exceeds the prompt
budget.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tulu_cli.data.chat import render_prompt
from tulu_cli.data.encoded import NO_ERROR, DataReport, encode_source, error_fields, token_features
from tulu_cli.data.sources import row_dict
from tulu_cli.data.validate import RowError, check_ground_truth, check_messages
from tulu_cli.rewards.registry import get_verifier, known_datasets
from tulu_cli.train.batching import read_rows


@dataclass(frozen=True)
class PromptRow:
    messages: list[dict]
    prompt: str
    prompt_ids: list[int]
    ground_truth: str
    dataset: str


def check_rlvr_row(row: dict, tokenizer, max_prompt_length: int) -> PromptRow:
    """The usable prompt of `row`, or RowError naming the field at fault."""
    messages = check_messages(row.get("messages"))
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        raise RowError("messages", "no_user_turn", "needs a user turn to answer")
    truth = row.get("ground_truth")
    if truth is None:
        raise RowError("ground_truth", "missing_field", "missing")
    if not isinstance(truth, str):
        raise RowError(
            "ground_truth", "non_string_ground_truth", f"must be a string, got {type(truth).__name__}"
        )
    dataset = row.get("dataset")
    if not isinstance(dataset, str):
        raise RowError("dataset", "missing_field", "missing or not a string")
    try:
        get_verifier(dataset)
    except KeyError as exc:
        raise RowError("dataset", "unknown_dataset", str(exc.args[0])) from None
    check_ground_truth(dataset, truth, messages)
    prompt = render_prompt(messages)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) > max_prompt_length:
        raise RowError(
            "messages",
            "prompt_too_long",
            f"prompt has {len(prompt_ids)} tokens, more than max_prompt_length={max_prompt_length}",
        )
    return PromptRow(messages, prompt, prompt_ids, truth, dataset)


def encode_rlvr_example(example: dict, tokenizer, max_prompt_length: int, verifiers: tuple[str, ...]) -> dict:
    """The prompt columns of a row, or the reason it cannot be used (`error_*` set).

    `verifiers` (the registered dataset names) is an option so that the cache key covers it.
    """
    try:
        row = check_rlvr_row(row_dict(example), tokenizer, max_prompt_length)
    except RowError as error:
        return {"messages": "", "prompt": "", "prompt_ids": [], "ground_truth": "", "dataset": "",
                "truncated": False, **error_fields(error)}
    return {"messages": json.dumps(row.messages, ensure_ascii=False), "prompt": row.prompt,
            "prompt_ids": row.prompt_ids, "ground_truth": row.ground_truth, "dataset": row.dataset,
            "truncated": False, **NO_ERROR}


def prompt_rows(dataset: Any, indices: Sequence[int]) -> list[PromptRow]:
    """Prompt rows `indices` of a prepared dataset (only these rows are read)."""
    return [PromptRow(json.loads(row["messages"]), row["prompt"], row["prompt_ids"], row["ground_truth"],
                      row["dataset"]) for row in read_rows(dataset, indices)]


def prepare_rlvr(
    data_cfg: Any, tokenizer, max_prompt_length: int, run_dir: Path, main_process: bool = True
) -> tuple[Any, DataReport]:
    """Usable prompt rows (a memory-mapped dataset; read them with `prompt_rows`) and a report;
    rejects go to RUN_DIR/rejects.jsonl."""
    import datasets

    features = {"messages": datasets.Value("string"), "prompt": datasets.Value("string"),
                **token_features(["prompt_ids"]), "ground_truth": datasets.Value("string"),
                "dataset": datasets.Value("string")}
    options = {"tokenizer": tokenizer, "max_prompt_length": max_prompt_length,
               "verifiers": tuple(sorted(known_datasets()))}
    return encode_source(str(data_cfg["train"]), data_cfg, encode_rlvr_example, options, features,
                         run_dir / "rejects.jsonl" if main_process else None)
