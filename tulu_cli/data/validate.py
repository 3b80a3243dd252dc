"""Row validation with reasons. A bad row is counted and set aside, never silently dropped."""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")
# Content part types that hold text: chat completions (`text`) and the OpenAI Responses API.
TEXT_PART_TYPES = ("text", "input_text", "output_text")


class RowError(ValueError):
    """A row that cannot be used, with the field at fault and a short reason code."""

    def __init__(self, field: str, reason: str, detail: str):
        super().__init__(f"field `{field}`: {detail}")
        self.field = field
        self.reason = reason
        self.detail = detail


def parts_text(content: list, field: str) -> str:
    """OpenAI-style content parts (`[{"type": "text", "text": ...}, ...]`) as one text, the text parts
    joined by newlines as vLLM joins them; a part that is not text (an image, audio) raises RowError."""
    if not all(isinstance(part, dict) for part in content):
        raise RowError(field, "non_string_content", "must be a string or a list of content parts "
                       '({"type": "text", "text": ...})')
    texts = []
    for index, part in enumerate(content):
        where = f"{field}[{index}]"
        kind = part.get("type")
        if kind not in TEXT_PART_TYPES:
            raise RowError(f"{where}.type", "non_text_content",
                           f"a {kind!r} part cannot be trained on: only text parts ({', '.join(TEXT_PART_TYPES)}) are")
        text = part.get("text")
        if not isinstance(text, str):
            raise RowError(f"{where}.text", "non_string_content",
                           f"must be a string, got {type(text).__name__}")
        texts.append(text)
    return "\n".join(texts)


def _content_text(content: Any, field: str) -> Any:
    return parts_text(content, field) if isinstance(content, list) else content


def check_messages(messages: Any, field: str = "messages") -> list[dict]:
    """Return `messages` if it is a usable conversation, else raise RowError naming the problem.

    Rules: a non-empty list of {role, content}; roles system|user|assistant; content a non-empty
    string (or a list of text parts, returned joined into one string); an optional leading system turn,
    then user and assistant alternating from a user turn.
    """
    if messages is None:
        raise RowError(field, "missing_field", "missing")
    if not isinstance(messages, list) or not messages:
        raise RowError(field, "empty_conversation", "must be a non-empty list of messages")
    expected = "user"
    converted = list(messages)
    for index, message in enumerate(messages):
        where = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise RowError(where, "bad_message", "must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):
            content = parts_text(content, f"{where}.content")
            converted[index] = {**message, "content": content}
        if role not in ROLES:
            raise RowError(f"{where}.role", "unknown_role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if content is None:
            raise RowError(f"{where}.content", "missing_field", "missing")
        if not isinstance(content, str):
            raise RowError(f"{where}.content", "non_string_content", f"must be a string, got {type(content).__name__}")
        if not content.strip():
            raise RowError(f"{where}.content", "empty_content", "is empty")
        if role == "system":
            if index != 0:
                raise RowError(f"{where}.role", "turn_order", "a system message may only come first")
            continue
        if role != expected:
            raise RowError(f"{where}.role", "turn_order", f"expected a {expected} turn, got {role}")
        expected = "assistant" if role == "user" else "user"
    return converted


def check_assistant_last(messages: list[dict], field: str = "messages") -> None:
    if messages[-1]["role"] != "assistant":
        raise RowError(field, "no_assistant_turn", "must end with an assistant turn")


def _check_text(value: Any, field: str) -> str:
    if value is None:
        raise RowError(field, "missing_field", "missing")
    if not isinstance(value, str):
        raise RowError(field, "non_string_content", f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(field, "empty_content", "is empty")
    return value


def check_preference(chosen: Any, rejected: Any, prompt: Any = None) -> tuple[list[dict], list[dict]]:
    """Return (chosen, rejected) if they form a usable preference pair, else raise RowError.

    Both must be conversations ending with an assistant turn and identical before it (same prompt).
    An optional `prompt` must agree with them: as a string it must be the content of one of the shared
    user turns (the public mixtures store the first one), as a list it must equal the shared turns.
    """
    chosen = check_messages(chosen, "chosen")
    check_assistant_last(chosen, "chosen")
    rejected = check_messages(rejected, "rejected")
    check_assistant_last(rejected, "rejected")
    shared = [(m["role"], m["content"]) for m in chosen[:-1]]
    if shared != [(m["role"], m["content"]) for m in rejected[:-1]]:
        raise RowError("rejected", "prompt_mismatch", "chosen and rejected differ before their final assistant turn")
    if prompt is None:
        return chosen, rejected
    if isinstance(prompt, list):
        given = [(m.get("role"), _content_text(m.get("content"), f"prompt[{i}].content")) if isinstance(m, dict)
                 else m for i, m in enumerate(prompt)]
        if given != shared:
            raise RowError("prompt", "prompt_mismatch", "differs from the turns shared by chosen and rejected")
        return chosen, rejected
    prompt = _check_text(prompt, "prompt")
    if prompt.strip() not in {content.strip() for role, content in shared if role == "user"}:
        raise RowError("prompt", "prompt_mismatch", "is not a user turn of chosen and rejected")
    return chosen, rejected


def check_verifiable(messages: Any, ground_truth: Any, dataset: Any,
                     known_verifiers: set[str] | None = None) -> list[dict]:
    """Return `messages` if the row is usable for RL with verifiable rewards, else raise RowError.

    `messages` is the prompt (a final assistant turn is allowed and ignored by the trainer);
    `ground_truth` and `dataset` (the verifier key, any case) must be non-empty strings, and the
    verifier must be in `known_verifiers` when that is given.
    """
    messages = check_messages(messages)
    _check_text(ground_truth, "ground_truth")
    _check_text(dataset, "dataset")
    if known_verifiers is not None and dataset.lower() not in known_verifiers:
        raise RowError("dataset", "unknown_verifier",
                       f"no verifier for {dataset!r} (known: {', '.join(sorted(known_verifiers))})")
    check_ground_truth(dataset, ground_truth, messages)
    return messages


def check_ground_truth(dataset: str, ground_truth: str, messages: list[dict] | None,
                       field: str = "ground_truth") -> None:
    """Raise RowError when the verifier of `dataset` can never score `ground_truth`, so that the row is set
    aside now rather than trained on at reward 0: an `ifeval` ground truth is parsed into its checks the
    way the verifier parses it (valid JSON, known functions and instructions, their arguments), a `popqa`
    one must be a JSON list of answers."""
    if dataset.lower() == "popqa":
        from tulu_cli.rewards.popqa import accepted_answers

        try:
            accepted_answers(ground_truth)
        except ValueError as exc:
            raise RowError(field, "bad_ground_truth", str(exc)) from None
        return
    if dataset.lower() != "ifeval":
        return
    from tulu_cli.rewards.ifeval import build_checks
    from tulu_cli.rewards.registry import prompt_from_messages

    try:
        build_checks(ground_truth, prompt_from_messages(messages))
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise RowError(field, "bad_ground_truth", f"the ifeval verifier cannot use it: {exc}") from None


def check_same_prompt(first: list[dict], second: list[dict], fields: tuple[str, str] = ("chosen", "rejected")) -> None:
    """Two conversations that must share everything but their final message (a preference pair)."""
    if len(first) != len(second):
        raise RowError(fields[1], "prompt_mismatch",
                       f"has {len(second)} messages but `{fields[0]}` has {len(first)}; only the last may differ")
    for index, (a, b) in enumerate(zip(first[:-1], second[:-1], strict=True)):
        if a["role"] != b["role"] or a["content"] != b["content"]:
            raise RowError(f"{fields[1]}[{index}]", "prompt_mismatch",
                           f"differs from `{fields[0]}[{index}]`; only the last message may differ")
