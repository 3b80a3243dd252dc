"""Chat models behind one call: a local model (hub name or path, through the generation backends) or an
OpenAI-compatible endpoint. Both answer a batch of requests and yield `(key, ChatReply)` as results land.

A model spec from config is either `{path, backend?, batch_size?}` (local) or
`{base_url, model, api_key_env?, timeout_s?, max_retries?, backoff_s?, concurrency?}` (endpoint); an
explicit `kind: local|openai` may say which.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

from tulu_cli.errors import StageError
from tulu_cli.generation import SamplingConfig
from tulu_cli.preferences.chat_api import ChatClient, ChatReply, EndpointConfig, RequestRejected
from tulu_cli.preferences.store import ShardStore

LOCAL_KEYS = {"kind", "path", "backend", "batch_size", "tensor_parallel_size", "gpu_memory_utilization", "dtype"}


@dataclass(frozen=True)
class ChatRequest:
    key: str
    messages: list[dict]
    seed: int | None  # per request (endpoints; None sends none); a local batch is seeded as a whole
    # A raw prompt sent instead of `messages` to an endpoint's completions route (no chat template).
    prompt: str | None = None


class LocalChatModel:
    """Generates with `build_backend` from the rendered chat prompt; loaded on first use."""

    # A local batch is one generate call, seeded as a whole: redoing part of it would change the
    # samples, so a killed batch is redone entirely rather than resumed request by request.
    resumable_calls = False

    def __init__(self, name: str, spec: dict, default_backend: str, default_batch_size: int):
        unknown = set(spec) - LOCAL_KEYS
        if unknown:
            raise StageError(f"model {name!r}: unknown keys {sorted(unknown)} (a local model takes "
                             f"{sorted(LOCAL_KEYS - {'kind'})})")
        if not spec.get("path"):
            raise StageError(f"model {name!r}: `path` (hub name or local directory) is required")
        self.name = name
        self.path = str(spec["path"])
        self.backend_kind = spec.get("backend") or default_backend
        self.batch_size = int(spec.get("batch_size") or default_batch_size)
        self.options = {k: spec[k] for k in ("tensor_parallel_size", "gpu_memory_utilization", "dtype") if k in spec}
        self._backend = None

    def _load(self):
        if self._backend is None:
            from tulu_cli.generation import build_backend

            try:
                self._backend = build_backend(self.backend_kind, model_path=self.path, batch_size=self.batch_size,
                                              **(self.options if self.backend_kind == "vllm" else {}))
            except (OSError, ValueError) as exc:
                raise StageError(f"model {self.name!r}: cannot load {self.path!r}: {exc}") from None
        return self._backend

    def _renderer(self, backend):
        """The model's own chat format: the tulu template for this project's models, else the tokenizer's."""
        from tulu_cli.data.chat import CHAT_TEMPLATE, render_prompt

        tokenizer = getattr(backend, "tokenizer", None)
        if tokenizer is None and hasattr(backend, "llm"):
            tokenizer = backend.llm.get_tokenizer()
        template = getattr(tokenizer, "chat_template", None)
        if not template or template == CHAT_TEMPLATE:
            return render_prompt
        return lambda messages: tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def complete(self, requests: list[ChatRequest], sampling: SamplingConfig, seed: int
                 ) -> Iterator[tuple[str, ChatReply]]:
        if not requests:
            return
        backend = self._load()
        render = self._renderer(backend)
        outputs = backend.generate([r.prompt if r.prompt is not None else render(r.messages) for r in requests],
                                   replace(sampling, n=1, seed=seed))
        for request, (completion, *_) in zip(requests, outputs, strict=True):
            yield request.key, ChatReply(text=completion.text, finished=completion.finished)

    def close(self) -> None:
        """Free the weights (the next local model of the pool needs the memory)."""
        self._backend = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


class EndpointChatModel:
    """One HTTP request per completion, `concurrency` in flight; results are yielded as they arrive."""

    resumable_calls = True

    def __init__(self, name: str, spec: dict):
        self.name = name
        self.concurrency = max(1, int(spec.get("concurrency") or 8))
        self.client = ChatClient(EndpointConfig.from_config(spec))

    def complete(self, requests: list[ChatRequest], sampling: SamplingConfig, seed: int,
                 top_logprobs: int | None = None) -> Iterator[tuple[str, ChatReply]]:
        def call(request: ChatRequest) -> tuple[str, ChatReply]:
            options = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                       "max_tokens": sampling.max_new_tokens, "seed": request.seed}
            try:
                if request.prompt is not None:
                    return request.key, self.client.complete_prompt(request.prompt, **options)
                return request.key, self.client.complete(request.messages, top_logprobs=top_logprobs, **options)
            except RequestRejected as exc:
                # This request's answer, kept like any other: its row is set aside with the reason, and a
                # rerun does not send it again.
                return request.key, ChatReply(text="", finished=False, error=str(exc))

        pending_requests = iter(requests)
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            running = {pool.submit(call, r) for r in itertools.islice(pending_requests, self.concurrency)}
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.exception() is not None:
                        failure = failure or future.exception()
                        continue
                    yield future.result()
                    following = None if failure else next(pending_requests, None)
                    if following is not None:
                        running.add(pool.submit(call, following))
        # After a failure no new call starts, but calls already in flight are collected (and paid
        # work kept by the caller) before the error surfaces.
        if failure is not None:
            raise failure

    def close(self) -> None:
        pass


def is_endpoint(spec: dict) -> bool:
    kind = spec.get("kind")
    if kind not in (None, "local", "openai"):
        raise StageError(f"model kind must be local or openai, got {kind!r}")
    return kind == "openai" or (kind is None and "base_url" in spec)


def build_chat_model(name: str, spec: dict, default_backend: str = "hf", default_batch_size: int = 32):
    spec = dict(spec)
    if is_endpoint(spec):
        return EndpointChatModel(name, spec)
    return LocalChatModel(name, spec, default_backend, default_batch_size)


def reply_record(reply: ChatReply) -> dict:
    """What the work store keeps of a reply: its text and finish, why the server refused it (if it did),
    and its log-probs when they were asked for."""
    record = {"text": reply.text, "finished": reply.finished}
    if reply.error is not None:
        record["error"] = reply.error
    if reply.logprobs is not None:
        record["logprobs"] = [{"token": t.token, "logprob": t.logprob, "top": [list(pair) for pair in t.top]}
                              for t in reply.logprobs]
    return record


def complete_shard(model, store: ShardStore, index: int, requests: list[ChatRequest], sampling: SamplingConfig,
                   seed: int, extra: dict | None = None, top_logprobs: int | None = None) -> list[dict]:
    """Answer `requests` as shard `index` of `store`: calls an endpoint already answered before a kill are
    taken from the shard's journal, new answers are journaled as they land, and the finished shard is written
    as rows `{key, **extra, **reply_record}` in request order (returned too). `top_logprobs` asks an endpoint
    for each token's log-probs and its most likely alternatives."""
    journal = store.journal(index)
    done = journal.load() if model.resumable_calls else {}
    asked = {} if top_logprobs is None else {"top_logprobs": top_logprobs}
    for key, reply in model.complete([r for r in requests if r.key not in done], sampling, seed, **asked):
        done[key] = reply_record(reply)
        if model.resumable_calls:
            journal.append(key, done[key])
    rows = [{"key": request.key, **(extra or {}), **done[request.key]} for request in requests]
    store.write(index, rows)
    return rows
