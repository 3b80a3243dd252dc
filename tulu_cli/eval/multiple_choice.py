"""Multiple-choice tasks scored by log-likelihood (MMLU-style): the prompt is the question (with
lettered options when `choice_style: letters`), each continuation is an option (its text, or its
letter), and the model's pick is the option of highest log-probability.

`acc` compares summed log-probabilities; `acc_norm` divides by the option's length in characters
(lm-eval's length normalisation), which matters when options differ in length.
"""

from __future__ import annotations

import string

import torch

from tulu_cli.data.chat import IGNORE_INDEX
from tulu_cli.eval.data import Item
from tulu_cli.eval.prompts import load_shots, render_chat, with_shots
from tulu_cli.eval.results import mean_metrics
from tulu_cli.eval.tasks import TaskSpec
from tulu_cli.train.logprobs import labelled_logprobs


def run_multiple_choice(spec: TaskSpec, items: list[Item], model, tokenizer, batch_size: int) -> tuple[dict, list[dict]]:
    shots = load_shots(spec)
    template = spec.get("chat_template", "tulu")
    letters = spec.get("choice_style", "text") == "letters"
    # A chat template ends the prompt with the assistant header; plain prompts take a leading space.
    separator = "" if template != "none" else " "
    requests, owners = [], []
    contexts = []
    for index, item in enumerate(items):
        context = render_chat(with_shots(shots.for_item(), item.messages), template, tokenizer)
        contexts.append(context)
        for choice_index, choice in enumerate(item.choices):
            option = string.ascii_uppercase[choice_index] if letters else choice
            requests.append((context, separator + option))
            owners.append(index)
    logprobs = continuation_logprobs(model, tokenizer, requests, batch_size)
    per_item: list[list[float]] = [[] for _ in items]
    for index, value in zip(owners, logprobs, strict=True):
        per_item[index].append(value)
    rows, predictions = [], []
    for item, context, scores in zip(items, contexts, per_item, strict=True):
        lengths = [len(string.ascii_uppercase[i]) if letters else max(len(c), 1) for i, c in enumerate(item.choices)]
        pick = max(range(len(scores)), key=scores.__getitem__)
        pick_norm = max(range(len(scores)), key=lambda i: scores[i] / lengths[i])
        row = {"acc": float(pick == item.answer), "acc_norm": float(pick_norm == item.answer)}
        rows.append(row)
        predictions.append({"task": spec.name, "id": item.id, "prompt": context, "choices": item.choices,
                            "answer": item.answer, "logprobs": scores, "pick": pick, "pick_norm": pick_norm,
                            "scores": row})
    return mean_metrics(rows), predictions


@torch.no_grad()
def continuation_logprobs(model, tokenizer, requests: list[tuple[str, str]], batch_size: int) -> list[float]:
    """Summed log-probability of each continuation given its context. Context and continuation are
    tokenised separately so the scored tokens are exactly the continuation's."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = [(tokenizer(ctx, add_special_tokens=False)["input_ids"],
                tokenizer(cont, add_special_tokens=False)["input_ids"]) for ctx, cont in requests]
    results = [0.0] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]) - len(encoded[i][1]))
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(encoded[i][0]) + len(encoded[i][1]) for i in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, index in enumerate(chunk):
                context, continuation = encoded[index]
                ids = context + continuation
                input_ids[row, :len(ids)] = torch.tensor(ids)
                attention[row, :len(ids)] = 1
                labels[row, len(context):len(ids)] = torch.tensor(continuation)
            batch = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
            logprobs, _ = labelled_logprobs(model, batch, labels.to(device))
            for row, index in enumerate(chunk):
                results[index] = float(logprobs[row].sum())
    finally:
        model.train(was_training)
    return results
