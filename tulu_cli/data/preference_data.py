"""Preference pairs: validate chosen/rejected conversations, tokenise both with the chat template.

Row schema (the Tulu 3 preference mixtures): `chosen` and `rejected` are message lists that share
every message but the last (an assistant response); an optional `prompt` (a string or a message
list) supplies the shared turns when `chosen`/`rejected` hold only the responses.

Which tokens carry labels (and so enter the log-probs of the loss), `loss_tokens`:
- `all_turns` (the reference, open-instruct's Tulu 3 DPO): each side is encoded like an SFT
  conversation, so every assistant turn is labelled, the shared earlier ones included. With a summed
  loss (`dpo`) the shared turns cancel between the sides; with averaged log-probs (`dpo_norm`) they
  change the averages.
- `last_turn`: only the final assistant response, the turn in which the sides differ.
Each side is truncated to `max_length`; a pair with a side that has no labelled token left is set
aside (reason `no_trainable_tokens`), a pair whose responses are identical carries no preference and
is set aside too (`identical_responses`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tulu_cli.data.chat import IGNORE_INDEX, tokenize_conversation
from tulu_cli.data.encoded import NO_ERROR, DataReport, encode_source, error_fields, token_features
from tulu_cli.data.sources import row_dict
from tulu_cli.data.validate import RowError, check_assistant_last, check_messages, check_same_prompt

SIDES = ("chosen", "rejected")
LOSS_TOKENS = ("all_turns", "last_turn")
COLUMNS = ["chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"]


def pair_conversations(row: dict) -> tuple[list[dict], list[dict]]:
    """The full chosen and rejected conversations of a row, validated; raises RowError."""
    prompt = _prompt_messages(row.get("prompt"))
    sides = []
    for side in SIDES:
        messages = row.get(side)
        if prompt and isinstance(messages, list) and messages and isinstance(messages[0], dict) \
                and messages[0].get("role") == "assistant":
            messages = prompt + messages
        messages = check_messages(messages, side)
        check_assistant_last(messages, side)
        sides.append(messages)
    chosen, rejected = sides
    check_same_prompt(chosen, rejected)
    if chosen[-1]["content"] == rejected[-1]["content"]:
        raise RowError("rejected", "identical_responses", "the chosen and rejected responses are identical")
    return chosen, rejected


def _prompt_messages(prompt: Any) -> list[dict]:
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        return check_messages(prompt, "prompt")
    return []


def encode_preference_example(example: dict, tokenizer, max_length: int, loss_tokens: str = "all_turns") -> dict:
    """Tokenised chosen/rejected sides, or the reason the pair cannot be used (`error_*` set)."""
    if loss_tokens not in LOSS_TOKENS:
        raise ValueError(f"loss_tokens must be one of {', '.join(LOSS_TOKENS)}, got {loss_tokens!r}")
    try:
        conversations = pair_conversations(row_dict(example))
        encoded = {}
        truncated = False
        for side, messages in zip(SIDES, conversations, strict=True):
            tokens = tokenize_conversation(tokenizer, messages, max_length,
                                           last_turn_only=loss_tokens == "last_turn")
            if all(label == IGNORE_INDEX for label in tokens.labels[1:]):
                raise RowError(side, "no_trainable_tokens",
                               f"no response token left within max_seq_length={max_length}")
            encoded[f"{side}_input_ids"] = tokens.input_ids
            encoded[f"{side}_labels"] = tokens.labels
            truncated = truncated or tokens.truncated
    except RowError as error:
        return {**{column: [] for column in COLUMNS}, "truncated": False, **error_fields(error)}
    return {**encoded, "truncated": truncated, **NO_ERROR}


def prepare_preferences(source: str, data_cfg: Any, max_length: int, tokenizer,
                        rejects_path: Path | None, loss_tokens: str = "all_turns") -> tuple[Any, DataReport]:
    """Encoded pairs of `source` (a memory-mapped dataset of COLUMNS) and the report; rejects go to
    `rejects_path`. Read a micro-batch of pairs with `batching.read_rows`."""
    fn_kwargs = {"tokenizer": tokenizer, "max_length": max_length, "loss_tokens": loss_tokens}
    return encode_source(source, data_cfg, encode_preference_example, fn_kwargs, token_features(COLUMNS), rejects_path)


def pair_sequences(pairs: list[dict]) -> list[dict]:
    """The {input_ids, labels} rows of a micro-batch of pairs: all chosen sides, then all rejected sides.

    This is the order of the one concatenated forward pass; `split_pairs` undoes it.
    """
    return [{"input_ids": pair[f"{side}_input_ids"], "labels": pair[f"{side}_labels"]}
            for side in SIDES for pair in pairs]


def sequence_tokens(pairs: list[dict]) -> int:
    """Tokens of both sides of `pairs` (what one forward pass processes)."""
    return sum(len(pair["chosen_input_ids"]) + len(pair["rejected_input_ids"]) for pair in pairs)
