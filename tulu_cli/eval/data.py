"""Reading a task's items from a local file or a hub dataset, with a field mapping from the config.

A row that cannot be used (missing field, wrong type, malformed ground truth) is set aside as a
`Reject` naming the file, the row and the field; the task is scored on the remaining items.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tulu_cli.data.sources import Reject, load_source, row_dict
from tulu_cli.data.validate import RowError, check_ground_truth
from tulu_cli.eval.tasks import TaskSpec

DEFAULT_GENERATIVE_FIELDS = {"id": "id", "prompt": "messages", "ground_truth": "ground_truth", "dataset": "dataset"}
DEFAULT_CHOICE_FIELDS = {"id": "id", "question": "question", "choices": "choices", "answer": "answer"}


@dataclass
class Item:
    """One scored unit: the chat to answer, and either a ground truth (generative) or choices (MC)."""

    id: str
    messages: list[dict]
    ground_truth: str | None = None
    verifier: str | None = None
    choices: list[str] = field(default_factory=list)
    answer: int | None = None
    # The row's `fewshot.skip_same` field: shots of the same group are left out of its prompt.
    shot_group: str | None = None


class RowProblem(Exception):
    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field


def load_items(spec: TaskSpec) -> tuple[list[Item], list[Reject]]:
    data = spec.settings["data"]
    loaded = load_source(str(data["path"]), split=data.get("split") or "test", config=data.get("config"),
                         revision=data.get("revision"), max_rows=data.get("max_rows"))
    build = _generative_item if spec.type == "generative" else _choice_item
    defaults = DEFAULT_GENERATIVE_FIELDS if spec.type == "generative" else DEFAULT_CHOICE_FIELDS
    fields = {**defaults, **(spec.settings.get("fields") or {})}
    items, rejects = [], list(loaded.rejects)
    for index, example in enumerate(loaded.dataset):
        row = row_dict(example)
        try:
            items.append(build(spec, row, fields, index))
        except RowProblem as problem:
            rejects.append(Reject(loaded.row_file(index), loaded.row_number(index), problem.field, "bad_eval_row",
                                  str(problem), {k: row.get(k) for k in list(row)[:8]}))
    return items, rejects


def prompt_messages(spec: TaskSpec, row: Mapping[str, Any], prompt_field: str) -> list[dict]:
    """The conversation to answer: a `messages` list (a final assistant turn dropped), or a text field,
    optionally formatted with `prompt_template` (a Python format string over the row's fields)."""
    template = spec.settings.get("prompt_template")
    if template:
        try:
            return [{"role": "user", "content": template.format(**row)}]
        except (KeyError, IndexError) as exc:
            raise RowProblem(str(exc), f"prompt_template refers to a field the row lacks: {exc}") from None
    value = row.get(prompt_field)
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and isinstance(
            m.get("content"), str) for m in value):
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if messages and messages[-1]["role"] == "user":
            return messages
    raise RowProblem(prompt_field, f"field {prompt_field!r} must be a non-empty text or a chat ending in a user turn")


def _generative_item(spec: TaskSpec, row: Mapping[str, Any], fields: dict, index: int) -> Item:
    messages = prompt_messages(spec, row, fields["prompt"])
    truth = row.get(fields["ground_truth"])
    if isinstance(truth, (int, float)) and not isinstance(truth, bool):
        truth = str(truth)
    if not isinstance(truth, str) or not truth.strip():
        raise RowProblem(fields["ground_truth"], f"field {fields['ground_truth']!r} must be a non-empty string")
    pattern = spec.settings.get("ground_truth_pattern")
    if pattern:
        match = re.search(pattern, truth, flags=re.S)
        if not match:
            raise RowProblem(fields["ground_truth"], f"ground truth does not match ground_truth_pattern {pattern!r}")
        truth = match.group(1).strip()
    verifier = spec.settings.get("verifier") or row.get(fields["dataset"])
    if not isinstance(verifier, str):
        raise RowProblem(fields["dataset"], "no verifier: set the task's `verifier` or give each row a `dataset`")
    _check_ground_truth(verifier, truth, fields["ground_truth"], messages)
    skip_same = (spec.settings.get("fewshot") or {}).get("skip_same") if spec.get("num_shots", 0) else None
    if skip_same and row.get(skip_same) is None:
        raise RowProblem(skip_same, f"field {skip_same!r} is needed to leave the item's own group out of its shots")
    return Item(id=str(row.get(fields["id"], index)), messages=messages, ground_truth=truth, verifier=verifier,
                shot_group=None if not skip_same else str(row[skip_same]))


def _check_ground_truth(verifier: str, truth: str, field_name: str, messages: list[dict]) -> None:
    from tulu_cli.rewards.registry import get_verifier

    try:
        get_verifier(verifier)
    except KeyError as exc:
        raise RowProblem("dataset", exc.args[0]) from None
    try:
        check_ground_truth(verifier, truth, messages, field_name)
    except RowError as error:
        raise RowProblem(error.field, f"malformed ground truth: {error.detail}") from None


def _choice_item(spec: TaskSpec, row: Mapping[str, Any], fields: dict, index: int) -> Item:
    choices = row.get(fields["choices"])
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, (str, int, float)) for c in choices):
        raise RowProblem(fields["choices"], f"field {fields['choices']!r} must be a list of at least two options")
    choices = [str(c) for c in choices]
    answer = row.get(fields["answer"])
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in string.ascii_uppercase:
        answer = string.ascii_uppercase.index(answer.strip().upper())
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise RowProblem(fields["answer"], f"field {fields['answer']!r} must be a choice index (0-{len(choices) - 1}) "
                                           "or letter")
    question_row = dict(row)
    question_row.setdefault("choices_block", _lettered(choices))
    if not spec.settings.get("prompt_template") and spec.get("choice_style", "text") == "letters":
        question_row["_question_with_choices"] = f"{row.get(fields['question'])}\n{_lettered(choices)}"
        messages = prompt_messages(spec, question_row, "_question_with_choices")
    else:
        messages = prompt_messages(spec, question_row, fields["question"])
    return Item(id=str(row.get(fields["id"], index)), messages=messages, choices=choices, answer=answer)


def _lettered(choices: list[str]) -> str:
    return "\n".join(f"{letter}. {choice}" for letter, choice in zip(string.ascii_uppercase, choices, strict=False))
