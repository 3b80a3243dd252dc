"""Chat requests answered shard by shard through the preference pipeline's resumable work store, and the
persona-driven prompt requests and their parsing.

Each persona gets `per_persona` requests (the skill's template with `{persona}` filled in, each with its own
seed, so N samples of one template give N different prompts). A generated prompt is the reply stripped
of surrounding whitespace and of a leading label such as "Problem:"; a reply cut at the token limit, or
shorter than `min_words`, is set aside with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from tulu_cli.errors import StageError
from tulu_cli.generation import SamplingConfig
from tulu_cli.preferences.models import ChatRequest, complete_shard
from tulu_cli.preferences.store import ShardStore, derived_seed
from tulu_cli.progress import progress_bars
from tulu_cli.synthesis.personas import Persona


def answer_in_shards(
    label: str,
    build_model: Callable[[], object],
    shards: Iterable[list[ChatRequest]],
    count: int,
    sampling: SamplingConfig,
    store: ShardStore,
    seed: int,
) -> Iterator[list[dict]]:
    """The replies `{key, text, finished}` of each of the `count` shards of requests, a shard at a time.
    Finished shards are read back, not redone, and the model is built only if some shard is still to do."""
    model = None
    try:
        with progress_bars() as new_bar:
            advance = new_bar(label, count)
            for index, requests in enumerate(shards):
                if store.done(index):
                    rows = store.read(index)
                else:
                    model = model or build_model()
                    rows = complete_shard(
                        model, store, index, requests, sampling, derived_seed(seed, label, index)
                    )
                yield rows
                advance(1)
    finally:
        if model is not None:
            model.close()


@dataclass(frozen=True)
class PromptTemplate:
    template: str
    per_persona: int = 1
    system: str | None = None
    strip_prefixes: list[str] = field(default_factory=list)
    min_words: int = 3
    keep_unfinished: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> PromptTemplate:
        unknown = set(cfg) - {
            "template",
            "per_persona",
            "system",
            "strip_prefixes",
            "min_words",
            "keep_unfinished",
        }
        if unknown:
            raise StageError(f"prompt_generation: unknown keys {sorted(unknown)}")
        template = str(cfg.get("template") or "")
        if "{persona}" not in template:
            raise StageError("prompt_generation.template must contain {persona} (where the persona goes)")
        per_persona = int(cfg.get("per_persona", 1))
        if per_persona < 1:
            raise StageError(f"prompt_generation.per_persona must be >= 1, got {per_persona}")
        return cls(
            template,
            per_persona,
            cfg.get("system") or None,
            list(cfg.get("strip_prefixes") or []),
            int(cfg.get("min_words", 3)),
            bool(cfg.get("keep_unfinished", False)),
        )

    def messages(self, persona: Persona) -> list[dict]:
        user = {"role": "user", "content": self.template.replace("{persona}", persona.text)}
        return [{"role": "system", "content": self.system}, user] if self.system else [user]

    def requests(self, persona: Persona, seed: int) -> list[ChatRequest]:
        return [
            ChatRequest(
                f"{persona.id}/{n}", self.messages(persona), derived_seed(seed, "prompt", persona.id, n)
            )
            for n in range(self.per_persona)
        ]

    def parse(self, text: str, finished: bool) -> str | tuple[str, str]:
        """The prompt in a reply, or (reason, detail) when the reply gives none."""
        if not finished and not self.keep_unfinished:
            return "unfinished", "the reply hit the token limit"
        prompt = text.strip()
        for prefix in self.strip_prefixes:
            if prompt.lower().startswith(prefix.lower()):
                prompt = prompt[len(prefix) :].strip()
                break
        if len(prompt.split()) < self.min_words:
            return "too_short", f"{len(prompt.split())} words (min_words={self.min_words})"
        return prompt
