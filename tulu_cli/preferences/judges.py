"""Judges rate each completion; a rating is a dict of aspect -> score, and its mean ranks completions.

- `llm`: an LLM (endpoint or local model) rates helpfulness, honesty, instruction following and
  truthfulness 1-5 against a rubric from config, UltraFeedback-style, answering one `aspect: score`
  line per aspect. A reply missing an aspect or out of range is unparsable: it is counted and asked
  again (a new seed) up to `max_attempts`; after that the completion stays unrated, never guessed.
- `verifier`: the RLVR verifiers score completions of prompts with a ground truth (1 verified, 0 not).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tulu_cli.errors import StageError
from tulu_cli.generation import SamplingConfig
from tulu_cli.preferences.models import ChatRequest
from tulu_cli.preferences.prompts import Prompt
from tulu_cli.preferences.store import CallJournal

JUDGE_KINDS = ("llm", "verifier")


@dataclass(frozen=True)
class JudgeItem:
    key: str
    prompt: Prompt
    response: str


@dataclass
class Judgement:
    ratings: dict[str, float] | None = None
    attempts: int = 0
    unparsable: int = 0
    error: str | None = None
    replies: list[str] = field(default_factory=list)  # every raw judge reply, parsable or not

    @property
    def mean(self) -> float | None:
        return sum(self.ratings.values()) / len(self.ratings) if self.ratings else None

    def to_json(self) -> dict:
        return {"ratings": self.ratings, "mean": self.mean, "attempts": self.attempts,
                "unparsable": self.unparsable, "error": self.error, "replies": self.replies}


def _conversation_text(messages: list[dict]) -> str:
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def parse_ratings(reply: str, aspects: list[str], low: int, high: int) -> dict[str, float] | None:
    """`aspect: score` for every aspect, else None. The last such line counts (a judge may reason first);
    `**bold**`, list markers and `4/5` are tolerated."""
    ratings = {}
    for aspect in aspects:
        pattern = rf"(?im)^[\s*#>-]*{re.escape(aspect)}[\s*]*[:=][\s*]*(\d+)(?:\.0+)?(?:\s*/\s*\d+)?\**\s*$"
        scores = re.findall(pattern, reply)
        if not scores or not low <= int(scores[-1]) <= high:
            return None
        ratings[aspect] = float(scores[-1])
    return ratings


class LLMJudge:
    def __init__(self, cfg: dict, model):
        self.model = model
        self.aspects: dict[str, str] = dict(cfg.get("aspects") or {})
        if not self.aspects:
            raise StageError("judge.aspects: an LLM judge needs at least one aspect with its rubric")
        self.low, self.high = int(cfg.get("scale", [1, 5])[0]), int(cfg.get("scale", [1, 5])[1])
        self.system = str(cfg.get("system") or "")
        self.template = str(cfg.get("template") or "")
        for placeholder in ("{conversation}", "{response}", "{aspects}", "{format}"):
            if placeholder not in self.template:
                raise StageError(f"judge.template must contain {placeholder}")
        self.max_attempts = max(1, int(cfg.get("max_attempts", 3)))
        self.sampling = SamplingConfig(max_new_tokens=int(cfg.get("max_new_tokens", 256)),
                                       temperature=float(cfg.get("temperature", 0.0)), top_p=1.0)
        self.retry_sampling = SamplingConfig(max_new_tokens=self.sampling.max_new_tokens,
                                             temperature=float(cfg.get("retry_temperature", 0.7)), top_p=1.0)

    def messages(self, item: JudgeItem) -> list[dict]:
        aspects = "\n".join(f"- {name}: {rubric.strip()}" for name, rubric in self.aspects.items())
        answer_format = "\n".join(f"{name}: <{self.low}-{self.high}>" for name in self.aspects)
        user = (self.template.replace("{aspects}", aspects).replace("{format}", answer_format)
                .replace("{conversation}", _conversation_text(item.prompt.messages))
                .replace("{response}", item.response))
        return ([{"role": "system", "content": self.system}] if self.system else []) + [{"role": "user", "content": user}]

    def judge(self, items: list[JudgeItem], seed: int, journal: CallJournal) -> dict[str, Judgement]:
        judgements = {item.key: Judgement() for item in items}
        done = journal.load() if self.model.resumable_calls else {}
        pending = list(items)
        for attempt in range(self.max_attempts):
            if not pending:
                break
            sampling = self.sampling if attempt == 0 else self.retry_sampling
            calls = {f"{item.key}@{attempt}": item for item in pending}
            replies = {key: done[key] for key in calls if key in done}
            requests = [ChatRequest(key, self.messages(item), seed=seed + 7919 * attempt + index)
                        for index, (key, item) in enumerate(calls.items()) if key not in replies]
            for key, reply in self.model.complete(requests, sampling, seed + 7919 * attempt):
                replies[key] = {"text": reply.text, **({"error": reply.error} if reply.error else {})}
                if self.model.resumable_calls:
                    journal.append(key, replies[key])
            still_pending = []
            for key, item in calls.items():
                judgement = judgements[item.key]
                judgement.attempts += 1
                if replies[key].get("error"):
                    # The server refused this judging request (e.g. too long): asking again gets the same.
                    judgement.error = replies[key]["error"]
                    continue
                judgement.replies.append(replies[key]["text"])
                judgement.ratings = parse_ratings(replies[key]["text"], list(self.aspects), self.low, self.high)
                if judgement.ratings is None:
                    judgement.unparsable += 1
                    still_pending.append(item)
            pending = still_pending
        for item in pending:
            judgements[item.key].error = f"unparsable after {self.max_attempts} attempt(s)"
        return judgements


class VerifierJudge:
    """Scores with the RLVR verifiers; a prompt without `ground_truth`/`dataset` cannot be judged."""

    resumable_calls = False

    def __init__(self, cfg: dict):
        self.loose = bool(cfg.get("loose", False))
        self.timeout_s = float(cfg.get("timeout_s", 5.0))
        self.workers = cfg.get("workers")

    def judge(self, items: list[JudgeItem], seed: int, journal: CallJournal) -> dict[str, Judgement]:
        from tulu_cli.rewards.registry import verify_batch

        judgements: dict[str, Judgement] = {}
        rows, keys = [], []
        for item in items:
            if item.prompt.ground_truth is None or item.prompt.dataset is None:
                judgements[item.key] = Judgement(error="no ground_truth/dataset for the verifier judge")
                continue
            rows.append({"dataset": item.prompt.dataset, "ground_truth": item.prompt.ground_truth,
                         "response": item.response, "messages": item.prompt.messages})
            keys.append(item.key)
        results = verify_batch(rows, loose=self.loose, timeout_s=self.timeout_s, workers=self.workers)
        for key, result in zip(keys, results, strict=True):
            judgements[key] = (Judgement(error=result.error, attempts=1) if result.error
                               else Judgement(ratings={"verified": result.score}, attempts=1))
        return judgements


def tie_reason(judge_kind: str) -> Callable[[float], str]:
    """How a prompt whose completions all rate the same is counted when skipped."""
    if judge_kind == "verifier":
        return lambda mean: "all_verified" if mean >= 1.0 else ("none_verified" if mean <= 0.0 else "all_tied")
    return lambda mean: "all_tied"
