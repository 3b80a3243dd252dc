"""SFT data: read a source, validate each conversation, tokenise with label masks, set bad rows aside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tulu_cli.data.chat import IGNORE_INDEX, tokenize_conversation
from tulu_cli.data.encoded import (
    NO_ERROR,
    DataReport,
    encode_source,
    error_fields,
    token_features,
)
from tulu_cli.data.sources import row_dict
from tulu_cli.data.validate import RowError, check_assistant_last, check_messages

__all__ = ["DataReport", "encode_sft_example", "prepare_sft"]


def encode_sft_example(example: dict, tokenizer, max_length: int) -> dict:
    """Tokenised row, or the reason it cannot be used (`error_*` fields set, ids empty)."""
    row = row_dict(example)
    try:
        messages = check_messages(row.get("messages"))
        check_assistant_last(messages)
        encoded = tokenize_conversation(tokenizer, messages, max_length)
        if all(label == IGNORE_INDEX for label in encoded.labels):
            raise RowError("messages", "no_trainable_tokens",
                           f"no assistant token left within max_seq_length={max_length}")
    except RowError as error:
        return {"input_ids": [], "labels": [], "truncated": False, **error_fields(error)}
    return {"input_ids": encoded.input_ids, "labels": encoded.labels, "truncated": encoded.truncated, **NO_ERROR}


def prepare_sft(data_cfg: Any, max_length: int, tokenizer, run_dir: Path, main_process: bool = True):
    """Return (memory-mapped dataset with input_ids/labels, DataReport); rejects go to RUN_DIR/rejects.jsonl."""
    return encode_source(str(data_cfg["train"]), data_cfg, encode_sft_example,
                         {"tokenizer": tokenizer, "max_length": max_length}, token_features(["input_ids", "labels"]),
                         run_dir / "rejects.jsonl" if main_process else None)
