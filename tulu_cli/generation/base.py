"""The generation interface every consumer (RLVR rollouts, eval, preference data) uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample: `temperature=0` is greedy; `n` completions per prompt."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> SamplingConfig:
        fields = cls.__dataclass_fields__
        return cls(**{key: cfg[key] for key in fields if key in cfg and cfg[key] is not None})


@dataclass
class Completion:
    """One sampled continuation: its text, its token ids (including eos when it stopped) and whether
    it ended on eos (`finished=False` means it hit the length limit)."""

    text: str
    token_ids: list[int]
    finished: bool


Prompts = list[str] | list[list[int]]


def prompt_seeds(seed: int, count: int, stream: int = 0) -> list[int]:
    """One seed for each of `count` prompts sampled in one call with `seed`, for engines that seed each
    request (vLLM); `stream` tells apart engines that sample different prompts in the same call. vLLM
    draws a request's `n` samples with seeds `s, s + 1, ..., s + n - 1`
    (`vllm/v1/engine/parallel_sampling.py`), so one seed for every prompt would give every prompt the
    same random stream, and consecutive call seeds would share all but one of theirs. Seeds are
    spread over [0, 2**62) by numpy's `SeedSequence`: windows of any realistic `n` do not overlap in
    practice, and `s + n` stays inside vLLM's int64 seed field."""
    entropy = [seed % 2**63, stream % 2**63]
    return [int(value >> np.uint64(2)) for value in np.random.SeedSequence(entropy).generate_state(count, np.uint64)]


def request_seeds(sampling: SamplingConfig, count: int, stream: int = 0, seed_each_prompt: bool = True
                  ) -> list[int] | None:
    """The seeds of `count` prompts' requests (`prompt_seeds`), or None when requests go unseeded:
    greedy decoding draws nothing, and `seed_each_prompt=False` leaves the draws to the engine."""
    if not seed_each_prompt or sampling.temperature <= 0:
        return None
    return prompt_seeds(sampling.seed, count, stream)


def prompt_token_ids(prompts: Prompts, tokenizer) -> list[list[int]]:
    """Prompts as token ids. Text is encoded without special tokens: the rendered prompt already
    carries whatever its format needs, so an engine that added its own BOS would score a sequence
    the learner never sees. Token-id prompts pass through unchanged."""
    return [
        list(prompt) if not isinstance(prompt, str) else list(tokenizer.encode(prompt, add_special_tokens=False))
        for prompt in prompts
    ]


class GenerationBackend(Protocol):
    def generate(self, prompts: Prompts, sampling: SamplingConfig) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt: token ids (sent as they are), or text already rendered
        with the chat template (encoded without special tokens)."""

    def prompt_logprobs(self, prompts: list[list[int]]) -> list[list[float]]:
        """Log-prob of each prompt token after the first, under the engine's current weights."""

    def update_weights(self, metadata: list, named_params) -> None:
        """Load the learner's weights, one full (name, tensor) at a time (RL: after each policy update)."""


def build_backend(kind: str, *, model=None, tokenizer=None, model_path: str | None = None,
                  batch_size: int = 32, **options) -> GenerationBackend:
    """`hf`: generate with an in-memory model (the learner itself during RL). `vllm`: a vLLM engine
    loaded from `model_path` (imported only here, so CPU machines never need vLLM installed)."""
    if kind == "hf":
        from tulu_cli.generation.hf import HFBackend

        if model is None or tokenizer is None:
            model, tokenizer = _load_for_generation(model_path)
        return HFBackend(model, tokenizer, batch_size=batch_size, synced_gpus=options.get("synced_gpus", False))
    if kind == "vllm":
        from tulu_cli.generation.vllm_backend import VLLMBackend

        return VLLMBackend(model_path, tokenizer=tokenizer, **options)
    raise ValueError(f"generation backend must be hf or vllm, got {kind!r}")


def _load_for_generation(model_path: str | None):
    if not model_path:
        raise ValueError("generation: model_path is required when no model is passed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tulu_cli.modeling import NO_HUB_KERNELS

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, **NO_HUB_KERNELS)
    model.eval()
    return model, tokenizer
