"""A minimal client of the OpenAI chat-completions protocol (any compatible server), standard library only;
`complete_prompt` sends a raw prompt to the completions route of the same server instead.

With `top_logprobs=k` a request asks for the log-probabilities of each generated token and of its k most
likely alternatives (`logprobs: true, top_logprobs: k`), which LLM judges that read a preference from
the probability of a token need (AlpacaEval 2).

Rate limits (429), server errors (5xx), timeouts and dropped connections are retried with exponential
backoff (honouring a numeric `Retry-After`, capped); other HTTP errors fail at once. Every request has
a bounded timeout, and the API key is read from an environment variable named in config.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tulu_cli.errors import StageError

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
# Statuses by which a server refuses one request, not every request: a prompt too long for the
# context, a content filter, a value out of range. Sending it again gets the same answer.
REQUEST_REJECTED_STATUS = frozenset({400, 413, 422})


# `json.loads` joins an escaped surrogate pair into one character: any surrogate left is a lone one.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(value: Any) -> Any:
    """A decoded reply with every lone surrogate (a `\\ud800` escape with no partner, which a server
    may send for a token that is part of a character) replaced by U+FFFD, as a UTF-8 decoder replaces
    an invalid byte: such a string could not be stored, written as UTF-8 or hashed."""
    if isinstance(value, str):
        return LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [valid_unicode(item) for item in value]
    if isinstance(value, dict):
        return {valid_unicode(key): valid_unicode(item) for key, item in value.items()}
    return value


class ApiError(StageError):
    """A request that failed for good (non-retryable status, or retries exhausted)."""


class RequestRejected(ApiError):
    """The server refused this one request (a status in REQUEST_REJECTED_STATUS)."""


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to call: `base_url` up to and including `/v1`, the served `model` name."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    @classmethod
    def from_config(cls, spec: dict) -> EndpointConfig:
        fields = cls.__dataclass_fields__
        unknown = set(spec) - set(fields) - {"kind", "concurrency"}
        if unknown:
            raise StageError(f"endpoint {spec.get('model')!r}: unknown keys {sorted(unknown)}")
        for key in ("base_url", "model"):
            if not spec.get(key):
                raise StageError(f"an OpenAI-compatible endpoint needs `{key}`")
        return cls(**{key: spec[key] for key in fields if spec.get(key) is not None})


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token: its text, its log-probability, and the top alternatives as the server listed
    them ((token, log-prob) pairs, most likely first; two entries may share a text)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ChatReply:
    text: str
    finished: bool  # finish_reason == "stop" (False: cut at max_tokens)
    # One entry per generated token when log-probs were asked for (None otherwise).
    logprobs: tuple[TokenLogprobs, ...] | None = None
    # Why the server refused the request (`RequestRejected`); the text is then empty.
    error: str | None = None


class ChatClient:
    def __init__(self, config: EndpointConfig, sleep=time.sleep):
        self.config = config
        self._sleep = sleep
        self.retries = 0  # retried attempts over this client's life (reported in the summary)
        self.api_key = None
        if config.api_key_env:
            self.api_key = os.environ.get(config.api_key_env)
            if not self.api_key:
                raise StageError(f"endpoint {config.base_url}: environment variable {config.api_key_env} "
                                 "(the API key) is not set")

    def complete(self, messages: list[dict], *, temperature: float, top_p: float, max_tokens: int,
                 seed: int | None = None, top_logprobs: int | None = None) -> ChatReply:
        body = self._body({"messages": messages}, temperature, top_p, max_tokens, seed)
        if top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = int(top_logprobs)
        payload = self._post("/chat/completions", body)
        try:
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
            logprobs = None if top_logprobs is None else parse_logprobs(choice)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ApiError(f"{self.config.base_url}: unexpected response shape ({exc!r}): {str(payload)[:300]}") from None
        return ChatReply(text=text, finished=choice.get("finish_reason") == "stop", logprobs=logprobs)

    def complete_prompt(self, prompt: str, *, temperature: float, top_p: float, max_tokens: int,
                        seed: int | None = None) -> ChatReply:
        """A completion of a raw prompt (the `/completions` route, no chat template applied by the server):
        for a model prompted in its own format, such as the WildGuard classifier."""
        payload = self._post("/completions", self._body({"prompt": prompt}, temperature, top_p, max_tokens, seed))
        try:
            choice = payload["choices"][0]
            text = choice["text"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise ApiError(f"{self.config.base_url}: unexpected response shape ({exc!r}): {str(payload)[:300]}") from None
        return ChatReply(text=text, finished=choice.get("finish_reason") == "stop")

    def _body(self, inputs: dict, temperature: float, top_p: float, max_tokens: int, seed: int | None) -> dict:
        body = {"model": self.config.model, **inputs, "temperature": temperature, "top_p": top_p,
                "max_tokens": max_tokens, "n": 1}
        if seed is not None:
            body["seed"] = seed
        return body

    def _post(self, path: str, body: dict) -> dict:
        url = self.config.base_url.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode("utf-8")
        last_error = ""
        for attempt in range(self.config.max_retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            retry_after = None
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    return valid_unicode(json.loads(response.read().decode("utf-8")))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                if exc.code in REQUEST_REJECTED_STATUS:
                    raise RequestRejected(f"{url}: HTTP {exc.code}: {detail}") from None
                if exc.code not in RETRYABLE_STATUS:
                    raise ApiError(f"{url}: HTTP {exc.code}: {detail}") from None
                last_error = f"HTTP {exc.code}: {detail}"
                retry_after = _seconds(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            except json.JSONDecodeError as exc:
                last_error = f"invalid JSON in response: {exc}"
            if attempt == self.config.max_retries:
                break
            self.retries += 1
            self._sleep(self._delay(attempt, retry_after))
        raise ApiError(f"{url}: giving up after {self.config.max_retries + 1} attempts; last error: {last_error}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = self.config.backoff_s * (2 ** attempt) * (1 + 0.25 * random.random())  # jitter spreads clients
        if retry_after is not None:
            backoff = max(backoff, retry_after)
        return min(backoff, self.config.max_backoff_s)


def parse_logprobs(choice: dict) -> tuple[TokenLogprobs, ...]:
    """The `logprobs.content` list of a chat-completion choice (OpenAI's shape, which vLLM's server also
    returns); a reply without it, or with a malformed entry, is an error (the caller asked for log-probs)."""
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        raise ValueError("the reply has no logprobs.content (does the server support `logprobs`?)")
    tokens = []
    for position, entry in enumerate(content):
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise ValueError(f"logprobs.content[{position}] has no token")
        top = tuple((str(alternative["token"]), float(alternative["logprob"]))
                    for alternative in entry.get("top_logprobs") or [])
        tokens.append(TokenLogprobs(token=entry["token"], logprob=float(entry["logprob"]), top=top))
    return tuple(tokens)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
