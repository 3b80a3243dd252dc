"""Few-shot prompts: shots become earlier user/assistant turns of the chat (the "few-shot as multi-turn"
form OLMES uses for chat models), rendered with the task's chat template."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tulu_cli.data.chat import render_prompt
from tulu_cli.data.sources import load_source, row_dict
from tulu_cli.eval.data import RowProblem, prompt_messages
from tulu_cli.eval.tasks import TaskConfigError, TaskSpec


@dataclass(frozen=True)
class Shots:
    """A task's few-shot source in its order: (question, answer, group) rows, where the group is the row's
    `fewshot.skip_same` field (None without it), and how many shots an item gets."""

    count: int
    rows: list[tuple[str, str, str | None]]

    def for_item(self, group: str | None = None) -> list[tuple[str, str]]:
        """The first `count` (question, answer) shots, leaving out those of the item's own group."""
        return [(question, answer) for question, answer, shot_group in self.rows
                if group is None or shot_group != group][:self.count]


def load_shots(spec: TaskSpec) -> Shots:
    """The task's few-shot source, used in its order (fixed, not sampled, so every run sees the same prompt).
    With `fewshot.skip_same: FIELD` an item gets the first `num_shots` shots whose FIELD differs from its
    own (OLMES's PopQA: the shots of the other relations), so the whole source is read."""
    count = int(spec.get("num_shots", 0))
    if count == 0:
        return Shots(0, [])
    fewshot = spec.get("fewshot", {})
    fields = {"prompt": "question", "answer": "answer", **(fewshot.get("fields") or {})}
    skip_same = fewshot.get("skip_same")
    if fewshot.get("examples"):
        rows = list(fewshot["examples"])
    elif fewshot.get("path"):
        loaded = load_source(str(fewshot["path"]), split=fewshot.get("split") or "train",
                             config=fewshot.get("config"), revision=fewshot.get("revision"),
                             max_rows=None if skip_same else count)
        rows = [row_dict(example) for example in loaded.dataset]
    else:
        raise TaskConfigError(f"tasks.{spec.name}: num_shots={count} needs fewshot.examples or fewshot.path")
    if not skip_same:
        rows = rows[:count]
    shots = []
    for number, row in enumerate(rows, start=1):
        try:
            question = prompt_messages(spec, row, fields["prompt"])[-1]["content"]
        except RowProblem as problem:
            raise TaskConfigError(f"tasks.{spec.name}.fewshot row {number}: {problem}") from None
        answer = row.get(fields["answer"])
        if not isinstance(answer, str) or not answer.strip():
            raise TaskConfigError(f"tasks.{spec.name}.fewshot row {number}: field {fields['answer']!r} "
                                  "must be a non-empty string")
        shots.append((question, answer, None if not skip_same else str(row.get(skip_same))))
    groups = Counter(group for _, _, group in shots)
    usable = len(shots) - (max(groups.values()) if skip_same else 0)
    if usable < count:
        raise TaskConfigError(f"tasks.{spec.name}: num_shots={count} but the few-shot source has {len(shots)} rows"
                              + (f", {usable} once an item's own {skip_same!r} is left out" if skip_same else ""))
    return Shots(count, shots)


def with_shots(shots: list[tuple[str, str]], messages: list[dict]) -> list[dict]:
    """Insert the shots as turns after any leading system message and before the item's own turns."""
    head = [m for m in messages[:1] if m["role"] == "system"]
    turns = [turn for question, answer in shots
             for turn in ({"role": "user", "content": question}, {"role": "assistant", "content": answer})]
    return head + turns + messages[len(head):]


def render_chat(messages: list[dict], chat_template: str, tokenizer=None) -> str:
    """The text the model continues: `tulu` (the project's format), `tokenizer` (the model's own
    template) or `none` (plain text, turns separated by blank lines, for base-model style prompting)."""
    if chat_template == "tulu":
        return render_prompt(messages)
    if chat_template == "tokenizer":
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if chat_template == "none":
        if messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        blocks, pending = [], []
        for message in messages:
            pending.append(message["content"])
            if message["role"] == "assistant":
                blocks.append("\n".join(pending))
                pending = []
        return "\n\n".join([*blocks, "\n".join(pending)]) + "\n"
    raise TaskConfigError(f"chat_template must be tulu, tokenizer or none, got {chat_template!r}")
