"""Generative tasks: render each item's chat (with few-shot turns), generate, score with a verifier."""

from __future__ import annotations

from tulu_cli.eval.data import Item
from tulu_cli.eval.prompts import load_shots, render_chat, with_shots
from tulu_cli.eval.results import mean_metrics
from tulu_cli.eval.scoring import METRIC_WEIGHTS, score_responses
from tulu_cli.eval.tasks import TaskSpec
from tulu_cli.generation import SamplingConfig


def sampling_for(spec: TaskSpec, generation) -> SamplingConfig:
    """The task's own sampling settings, falling back to the config's `generation` defaults."""
    return SamplingConfig(
        max_new_tokens=int(spec.get("max_new_tokens", generation.max_new_tokens)),
        temperature=float(spec.get("temperature", generation.temperature)),
        top_p=float(spec.get("top_p", generation.top_p)),
        n=1,
        seed=int(generation.seed),
    )


def generate_in_length_order(backend, prompts: list[str], sampling: SamplingConfig) -> list:
    """One completion per prompt, in the prompts' order. Generating in length order keeps left padding
    (and wasted compute) small within a batch."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    generated = backend.generate([prompts[i] for i in order], sampling)
    completions = [None] * len(prompts)
    for position, index in enumerate(order):
        completions[index] = generated[position][0]
    return completions


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The answer up to the first stop string: what a generator that stops there would have returned."""
    cut = min((text.index(stop) for stop in stops if stop and stop in text), default=len(text))
    return text[:cut]


def run_generative(
    spec: TaskSpec, items: list[Item], backend, tokenizer, generation, profile: str = "default"
) -> tuple[dict, list[dict]]:
    """Return the task's metrics and one prediction row per item."""
    shots = load_shots(spec)
    template = spec.get("chat_template", "tulu")
    prompts = [render_chat(with_shots(shots.for_item(item.shot_group), item.messages), template, tokenizer)
               for item in items]
    completions = generate_in_length_order(backend, prompts, sampling_for(spec, generation))
    stops = list(spec.get("stop", []))
    responses = [cut_at_stop(completion.text, stops) for completion in completions]
    rows = score_responses(
        [(item.verifier, response, item.ground_truth, item.messages[-1]["content"])
         for item, response in zip(items, responses, strict=True)],
        profile,
    )  # fmt: skip
    predictions = []
    for item, prompt, completion, response, scores in zip(items, prompts, completions, responses, rows, strict=True):
        predictions.append({"task": spec.name, "id": item.id, "prompt": prompt, "response": response,
                            "finished": completion.finished, "ground_truth": item.ground_truth,
                            "verifier": item.verifier, "scores": scores})
    return mean_metrics(rows, METRIC_WEIGHTS), predictions
