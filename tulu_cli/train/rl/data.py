"""RLVR data: rows with `messages`, `ground_truth` and `dataset`, validated with reasons.

The prompt is `messages` minus a final assistant turn, rendered with the chat format's generation
prompt. A row is set aside (rejects.jsonl) when its conversation is malformed, its ground truth is
not a string or not one its verifier can parse (an `ifeval` constraint that is not valid JSON or names
an unknown function), no verifier is registered for its `dataset`, or its prompt exceeds the prompt
budget.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tulu_cli.data.chat import render_prompt
from tulu_cli.data.encoded import DataReport, write_rejects
from tulu_cli.data.sources import Reject, load_source, row_dict
from tulu_cli.data.validate import RowError, check_ground_truth, check_messages
from tulu_cli.rewards.registry import get_verifier


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


def prepare_rlvr(
    data_cfg: Any, tokenizer, max_prompt_length: int, run_dir: Path, main_process: bool = True
) -> tuple[list[PromptRow], DataReport]:
    """Usable prompt rows and a report; rejects go to RUN_DIR/rejects.jsonl."""
    loaded = load_source(
        data_cfg["train"],
        data_cfg.get("split", "train"),
        data_cfg.get("config"),
        data_cfg.get("revision"),
        data_cfg.get("max_rows"),
    )
    report = DataReport(source=str(data_cfg["train"]), rows_read=len(loaded.dataset) + len(loaded.rejects))
    rows: list[PromptRow] = []
    rejects = list(loaded.rejects)
    for index, example in enumerate(loaded.dataset):
        row = row_dict(example)
        try:
            rows.append(check_rlvr_row(row, tokenizer, max_prompt_length))
        except RowError as error:
            rejects.append(
                Reject(loaded.row_file(index), loaded.row_number(index), error.field, error.reason, error.detail, row)
            )
    report.rows_kept = len(rows)
    report.rejected = Counter(reject.reason for reject in rejects)
    if main_process:
        write_rejects(run_dir / "rejects.jsonl", rejects)
    return rows, report
