"""One registry of verifiers keyed by a row's `dataset` value (case-insensitive).

A verifier is a callable `(response, ground_truth, options) -> float` returning a score in [0, 1]; it
raises `ValueError` on a malformed ground truth and `VerifyTimeout` when it gives up for lack of time.
New verifiers are added with `@register("name")`. `verify_batch` scores in worker processes (see
pool.py), which import the module of every registered verifier: define a verifier at module level of an
importable module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

DEFAULT_TIMEOUT_S = 5.0
# "default": the verifiers as fixed where the Tulu 3 release code was wrong; "tulu3_release": the release's
# own behaviour, function by function (release_profile.py), for exact reproductions.
PROFILES = ("default", "tulu3_release")


class VerifyTimeout(Exception):
    """A verifier ran out of its wall-clock budget; the row scores 0 and counts as timed out."""


@dataclass(frozen=True)
class VerifyOptions:
    loose: bool = False
    prompt: str | None = None
    # Wall-clock budget of the whole verification of one response.
    timeout_s: float = DEFAULT_TIMEOUT_S
    profile: str = "default"


Verifier = Callable[[str, str, VerifyOptions], float]

_VERIFIERS: dict[str, Verifier] = {}
_BUILTIN_PREFIX = "tulu_cli.rewards."


def register(name: str) -> Callable[[Verifier], Verifier]:
    """Decorator: register `fn` as the verifier for rows whose `dataset` is `name` (any case)."""

    def decorator(fn: Verifier) -> Verifier:
        _VERIFIERS[name.lower()] = fn
        return fn

    return decorator


# (before, after) callbacks around one-time start-up work; a pool worker stops its row clock meanwhile.
_warm_up_hooks: list[tuple[Callable[[], None], Callable[[], None]]] = []


def add_warm_up_hooks(before: Callable[[], None], after: Callable[[], None]) -> None:
    _warm_up_hooks.append((before, after))


@contextmanager
def warming_up() -> Iterator[None]:
    """Wrap a verifier's one-time start-up (loading profiles, starting a child process), which is not
    charged to the row that happens to trigger it."""
    for before, _ in _warm_up_hooks:
        before()
    try:
        yield
    finally:
        for _, after in _warm_up_hooks:
            after()


def plugin_modules() -> list[str]:
    """Modules (other than the built-in ones) whose import registers the current verifiers."""
    return sorted(
        {fn.__module__ for fn in _VERIFIERS.values() if not fn.__module__.startswith(_BUILTIN_PREFIX)}
        - {"__main__"}
    )


_builtins_loaded = False


def _load_builtins() -> None:
    # Imported for their `@register` side effect; done lazily so importing the registry stays cheap (and
    # once: every row asks).
    global _builtins_loaded
    if not _builtins_loaded:
        from tulu_cli.rewards import gsm8k, ifeval, math_answer, popqa  # noqa: F401

        _builtins_loaded = True


def known_datasets() -> list[str]:
    _load_builtins()
    return sorted(_VERIFIERS)


def get_verifier(dataset: str) -> Verifier:
    _load_builtins()
    if not isinstance(dataset, str):
        raise KeyError(f"dataset must be a string, got {type(dataset).__name__}")
    try:
        return _VERIFIERS[dataset.lower()]
    except KeyError:
        raise KeyError(
            f"no verifier for dataset {dataset!r}; known: {', '.join(sorted(_VERIFIERS))}"
        ) from None


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown verifier profile {profile!r}; known: {', '.join(PROFILES)}")
    return profile


def verify(
    dataset: str,
    response: str,
    ground_truth: str,
    *,
    loose: bool = False,
    prompt: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    profile: str = "default",
) -> float:
    """Score one response; 0 when the verifier runs past `timeout_s`, however it hangs (the row runs in
    the shared verifier pool, like every batch).

    Raises KeyError for an unknown dataset, ValueError for a bad ground truth or any other failure of the
    row (the verifier's error message).
    """
    get_verifier(dataset)
    if not isinstance(response, str):
        raise ValueError(f"response must be a string, got {type(response).__name__}")
    row = {"dataset": dataset, "response": response, "ground_truth": ground_truth}
    if prompt is not None:
        row["messages"] = [{"role": "user", "content": prompt}]
    result = verify_batch([row], loose=loose, timeout_s=timeout_s, profile=profile)[0]
    if result.error is not None and not result.timed_out:
        raise ValueError(result.error)
    return result.score


@dataclass(frozen=True)
class VerifyResult:
    score: float
    error: str | None = None
    # The verifier ran past its time limit (scored 0, and `error` says so).
    timed_out: bool = False


def timed_out_result(timeout_s: float) -> VerifyResult:
    return VerifyResult(0.0, f"timed out after {timeout_s:g}s", timed_out=True)


def prompt_from_messages(messages: object) -> str | None:
    """The last user turn of a chat: the request a "repeat the request" constraint refers to."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if (
            isinstance(message, dict)
            and message.get("role") == "user"
            and isinstance(message.get("content"), str)
        ):
            return message["content"]
    return None


Task = list  # [dataset, response, ground_truth, prompt or None]: what a worker process scores


def row_task(row: object) -> Task | VerifyResult:
    """The strings a verifier needs from `row`, or the error (naming the field) that stops it."""
    if not isinstance(row, dict):
        return VerifyResult(0.0, f"row is a {type(row).__name__}, expected a JSON object")
    for field in ("dataset", "ground_truth", "response"):
        if row.get(field) is None:
            return VerifyResult(0.0, f"missing field {field!r}")
        if not isinstance(row[field], str):
            return VerifyResult(0.0, f"field {field!r} must be a string, got {type(row[field]).__name__}")
    try:
        verifier = get_verifier(row["dataset"])
    except KeyError as exc:
        return VerifyResult(0.0, f"field 'dataset': {exc.args[0]}")
    if "<locals>" in verifier.__qualname__ or verifier.__module__ == "__main__":
        return VerifyResult(
            0.0,
            f"field 'dataset': the verifier of {row['dataset']!r} cannot be loaded by a worker process: "
            "define it at module level of an importable module",
        )
    return [row["dataset"], row["response"], row["ground_truth"], prompt_from_messages(row.get("messages"))]


def score_task(task: Task, *, loose: bool, timeout_s: float, profile: str = "default") -> VerifyResult:
    """Run the verifier of one task; every failure of the row becomes `error` with score 0."""
    dataset, response, ground_truth, prompt = task
    try:
        verifier = get_verifier(dataset)
    except KeyError as exc:
        return VerifyResult(0.0, f"field 'dataset': {exc.args[0]}")
    options = VerifyOptions(loose=loose, prompt=prompt, timeout_s=timeout_s, profile=profile)
    try:
        score = float(verifier(response, ground_truth, options))
    except VerifyTimeout:
        return timed_out_result(timeout_s)
    except (ValueError, TypeError, KeyError) as exc:
        return VerifyResult(0.0, f"field 'ground_truth': {exc}")
    except RecursionError:
        return VerifyResult(0.0, "the row is nested too deeply to verify")
    except Exception as exc:  # one bad row must not stop a batch: report it on the row
        return VerifyResult(0.0, f"verifier failed: {type(exc).__name__}: {exc}")
    return VerifyResult(min(1.0, max(0.0, score)), None)


def verify_row(
    row: object, *, loose: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S, profile: str = "default"
) -> VerifyResult:
    """Score one row in this process, with no hard time limit (a pool worker runs this; other callers
    use `verify_batch`); every problem with the row becomes `error` and score 0."""
    task = row_task(row)
    if isinstance(task, VerifyResult):
        return task
    return score_task(task, loose=loose, timeout_s=timeout_s, profile=profile)


def verify_batch(
    rows: Iterable[object],
    *,
    loose: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    profile: str = "default",
) -> list[VerifyResult]:
    """Score `rows` in order in `workers` worker processes (default 1), each row within `timeout_s`.

    A row whose verifier runs past the limit, however it hangs, scores 0 with `timed_out` set.
    """
    from tulu_cli.rewards.pool import shared_pool

    check_profile(profile)
    tasks = (row_task(row) for row in rows)
    return list(shared_pool(workers or 1).run_rows(tasks, loose=loose, timeout_s=timeout_s, profile=profile))
