"""The `ifeval` verifier: fraction of the listed instructions a response follows, strict or loose.

Ground truth forms accepted (a JSON string, or a Python-literal list as some releases store it):
- Tulu 3 RLVR release: `{"func_name": "verify_keywords", "keyword_list": [...], ...}`;
- IFEval rows: `{"instruction_id_list": [...], "kwargs": [{...}, ...]}` (also `instruction_id`);
- a list of such objects, scored together.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Callable
from typing import Any

from tulu_cli.rewards.if_functions import build_function_check
from tulu_cli.rewards.ifeval_checks import build_check
from tulu_cli.rewards.registry import VerifyOptions, register

Check = Callable[[str], bool]


def parse_ground_truth(ground_truth: str | dict | list) -> list[dict]:
    value: Any = ground_truth
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except RecursionError:
            raise ValueError("ground truth is nested too deeply") from None
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise ValueError("ground truth is not valid JSON") from None
    items = value if isinstance(value, list) else [value]
    constraints = []
    for item in items:
        if isinstance(item, str):
            item = parse_ground_truth(item)
            constraints.extend(item)
            continue
        if not isinstance(item, dict):
            raise ValueError(
                f"ground truth must be an object or a list of objects, got {type(item).__name__}"
            )
        constraints.append(item)
    if not constraints:
        raise ValueError("ground truth lists no constraint")
    return constraints


def build_checks(
    ground_truth: str | dict | list, prompt: str | None = None, profile: str = "default"
) -> list[Check]:
    checks: list[Check] = []
    for constraint in parse_ground_truth(ground_truth):
        if "func_name" in constraint:
            checks.append(build_function_check(constraint, prompt, profile))
            continue
        ids = constraint.get("instruction_id_list", constraint.get("instruction_id"))
        if isinstance(ids, str):
            ids = [ids]
        kwargs_list = constraint.get("kwargs")
        if kwargs_list is None:
            kwargs_list = [{} for _ in ids or []]
        if isinstance(kwargs_list, dict):
            kwargs_list = [kwargs_list]
        if (
            not isinstance(ids, list)
            or not ids
            or not isinstance(kwargs_list, list)
            or len(ids) != len(kwargs_list)
        ):
            raise ValueError(
                "an IFEval ground truth needs 'instruction_id_list' and 'kwargs' of the same length"
            )
        for instruction_id, kwargs in zip(ids, kwargs_list, strict=True):
            kwargs = dict(kwargs or {})
            if (
                instruction_id == "combination:repeat_prompt"
                and not kwargs.get("prompt_to_repeat")
                and prompt
            ):
                kwargs["prompt_to_repeat"] = prompt
            checks.append(build_check(instruction_id, kwargs))
    return checks


def loose_variants(response: str) -> list[str]:
    """The response as the IFEval loose metric tries it: first/last line dropped, `*` removed."""
    lines = response.split("\n")
    trimmed = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return [
        trimmed[0],
        trimmed[0].replace("*", ""),
        *trimmed[1:],
        *(text.replace("*", "") for text in trimmed[1:]),
    ]


def follows(check: Check, response: str, *, loose: bool = False) -> bool:
    candidates = loose_variants(response) if loose else [response]
    # An empty (or blank) response follows nothing, as in the reference.
    return any(candidate.strip() and check(candidate) for candidate in candidates)


# Ground truths longer than this are parsed every time rather than kept.
_MAX_CACHED_TRUTH_CHARS = 10_000


@functools.lru_cache(maxsize=1024)
def _cached_checks(ground_truth: str, prompt: str | None, profile: str) -> list[Check]:
    return build_checks(ground_truth, prompt, profile)


def score_ifeval(
    response: str,
    ground_truth: str | dict | list,
    *,
    loose: bool = False,
    prompt: str | None = None,
    profile: str = "default",
) -> float:
    # Rows share ground truths (the samples of one prompt, the constraints of a data set), and checks
    # hold no state, so the parsed checks of recent ground truths are reused.
    if isinstance(ground_truth, str) and len(ground_truth) <= _MAX_CACHED_TRUTH_CHARS:
        checks = _cached_checks(ground_truth, prompt, profile)
    else:
        checks = build_checks(ground_truth, prompt, profile)
    return sum(follows(check, response, loose=loose) for check in checks) / len(checks)


@register("ifeval")
def _verify_ifeval_row(response: str, ground_truth: str, options: VerifyOptions) -> float:
    return score_ifeval(
        response, ground_truth, loose=options.loose, prompt=options.prompt, profile=options.profile
    )
