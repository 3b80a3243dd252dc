"""AlpacaEval 2 (`type: alpaca_eval`): the model answers AlpacaEval's instructions, an LLM judge on any
OpenAI-compatible endpoint compares each answer with the reference output (GPT-4 Turbo's), and the win
rate and length-controlled win rate follow (win_rate.py).

The judge is alpaca_eval's `weighted_alpaca_eval_gpt4_turbo` annotator, followed from alpaca_eval 0.6.6:
- prompt: its `alpaca_eval_clf.txt` (bundled), each placeholder replaced at its first occurrence in
  the order the template names them (`utils.make_prompts`), then split into chat messages at
  `<|im_start|>` (`utils.prompt_to_chatml`);
- order: output_1 is the reference, output_2 the model's, swapped for an instruction when
  `random.Random("is_switched_outputs" + instruction + "123")` picks True from [False, True]
  (`RandomSwitchTwoColumnsProcessor`, the annotator's seed 123); a swapped preference p becomes 3 - p;
- call: one token at temperature 1 with the top 5 log-probs (`completions_kwargs`);
- preference: 2 - P(m) / (P(m) + P(M)) from the first token's alternatives (`logprob_parser`,
  `is_binarize: false`; a token listed twice keeps its last log-prob); NaN when neither is listed;
- identical outputs are a draw (1.5) without a judge call.

Paid and slow work is kept in the task's work folder (the preference pipeline's store, `preferences/store.py`):
the model's outputs once generated, and each judge reply as it lands (journaled, then one finished shard).
A killed or failed run resumes there without generating again or resending a finished judge call. Both
folders are named by a fingerprint of what decides their content (the model and its sampling and prompts;
the judge's endpoint and model, its prompt and every call's messages), so a changed output or judge starts
new work instead of reusing a stale judgment.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from tulu_cli.config import assets_dir
from tulu_cli.data.row_files import Reject
from tulu_cli.data.sources import load_source, row_dict
from tulu_cli.eval.task_files import task_file
from tulu_cli.eval.tasks import TaskSpec
from tulu_cli.generation import SamplingConfig
from tulu_cli.preferences.store import ShardStore, fingerprint

SWITCH_SEED = 123
TOP_LOGPROBS = 5
FIRST_TOKEN, SECOND_TOKEN = "m", "M"
JUDGE_SAMPLING = SamplingConfig(max_new_tokens=1, temperature=1.0, top_p=1.0)
# What decides a judgment; timeouts, retries, concurrency and the key's variable do not.
JUDGE_IDENTITY = ("base_url", "model")


@dataclass(frozen=True)
class Instruction:
    position: int  # row of the eval file (the GLM's instruction index)
    instruction: str
    reference: str


def judge_template() -> str:
    return (assets_dir() / "alpaca_eval" / "alpaca_eval_clf.txt").read_text(encoding="utf-8")


def fill_template(template: str, values: dict[str, str]) -> str:
    """alpaca_eval's `make_prompts` for one example: each `{name}` replaced once, names in template order."""
    for name in Counter(re.findall(r"{([^ \s]+?)}", template)):
        template = template.replace("{" + name + "}", str(values[name]), 1)
    return template


def chatml_messages(prompt: str) -> list[dict]:
    """alpaca_eval's `prompt_to_chatml` (without its `system name=...` extension, which this prompt lacks)."""
    messages = []
    for part in prompt.strip().split("<|im_start|>")[1:]:
        role, _, rest = part.partition("\n")
        messages.append({"role": role.strip(), "content": rest.split("<|im_end|>", 1)[0].strip()})
    return messages


def is_switched(instruction: str) -> bool:
    return random.Random("is_switched_outputs" + instruction + str(SWITCH_SEED)).choices([False, True], k=1)[0]


def judge_messages(template: str, instruction: str, reference: str, output: str) -> list[dict]:
    first, second = (output, reference) if is_switched(instruction) else (reference, output)
    return chatml_messages(fill_template(template, {"instruction": instruction, "output_1": first,
                                                    "output_2": second}))


def preference_from_top_logprobs(top: tuple[tuple[str, float], ...]) -> float:
    """The preference in the judge's order (1: its first output, 2: its second), NaN when neither token is there."""
    found = {token: logprob for token, logprob in top if token in (FIRST_TOKEN, SECOND_TOKEN)}
    if not found:
        return math.nan
    first = found.get(FIRST_TOKEN, -math.inf)
    second = found.get(SECOND_TOKEN, -math.inf)
    peak = max(first, second)
    total = peak + math.log(math.exp(first - peak) + math.exp(second - peak))
    return 2 - math.exp(first - total)


def load_instructions(spec: TaskSpec) -> tuple[list[Instruction], list[Reject]]:
    """The eval set with its reference outputs (alpaca_eval's `alpaca_eval_gpt4_baseline.json` rows:
    instruction, output, generator, dataset)."""
    data = spec.settings["data"]
    loaded = load_source(str(task_file(data, f"tasks.{spec.name}.data")), max_rows=data.get("max_rows"))
    items, rejects = [], list(loaded.rejects)
    for index, example in enumerate(loaded.dataset):
        row = row_dict(example)
        bad = next((key for key in ("instruction", "output") if not isinstance(row.get(key), str)), None)
        if bad is None and not row["instruction"].strip():
            bad = "instruction"
        if bad is not None:
            rejects.append(Reject(loaded.row_file(index), loaded.row_number(index), bad, "bad_eval_row",
                                  f"field {bad!r} must be a string (a non-empty one for the instruction)",
                                  {k: row.get(k) for k in list(row)[:6]}))
            continue
        items.append(Instruction(position=index, instruction=row["instruction"], reference=row["output"]))
    return items, rejects


def judge(spec: TaskSpec, items: list[Instruction], outputs: list[str], work: Path
          ) -> tuple[list[float], dict[int, dict]]:
    """Preferences (1: reference better, 2: model better) in item order, and each call's record by position.
    Calls are keyed by their messages; replies already in `work` are not asked for again."""
    from tulu_cli.preferences.models import ChatRequest, EndpointChatModel, complete_shard

    template = judge_template()
    requests: dict[str, ChatRequest] = {}
    call_of: dict[int, str] = {}
    for item, output in zip(items, outputs, strict=True):
        if output == item.reference:
            continue
        messages = judge_messages(template, item.instruction, item.reference, output)
        key = call_of[item.position] = fingerprint(messages)
        requests.setdefault(key, ChatRequest(key=key, messages=messages, seed=None))
    identity = {name: spec.settings["judge"].get(name) for name in JUDGE_IDENTITY}
    store = ShardStore(work / "judgements" / fingerprint({"judge": identity, "sampling": asdict(JUDGE_SAMPLING),
                                                          "top_logprobs": TOP_LOGPROBS, "calls": sorted(requests)}),
                       {"judge": identity, "calls": len(requests)})
    if store.done(0):
        rows = store.read(0)
    else:
        judged_by = EndpointChatModel(f"{spec.name} judge", dict(spec.settings["judge"]))
        rows = complete_shard(judged_by, store, 0, list(requests.values()), JUDGE_SAMPLING, seed=0,
                              top_logprobs=TOP_LOGPROBS)
    replies = {row["key"]: row for row in rows}
    records = {}
    for position, key in call_of.items():
        reply = replies[key]
        top = [tuple(pair) for pair in reply["logprobs"][0]["top"]] if reply["logprobs"] else []
        records[position] = {"judge_reply": reply["text"], "judge_top_logprobs": [list(pair) for pair in top],
                             "judge_preference": preference_from_top_logprobs(tuple(top)),
                             # A judging request the server refused: no preference (counted as not judged).
                             **({"judge_error": reply["error"]} if reply.get("error") else {})}
    preferences = []
    for item in items:
        if item.position not in records:
            preferences.append(1.5)
            continue
        raw = records[item.position]["judge_preference"]
        preferences.append(3 - raw if is_switched(item.instruction) else raw)
    return preferences, records


def generate_outputs(spec: TaskSpec, model, generation: SamplingConfig, prompts: list[str], work: Path) -> list[str]:
    """The model's answer to each prompt, generated once: a rerun reads them from `work` without loading
    the model."""
    from tulu_cli.eval.generative import generate_in_length_order, sampling_for

    sampling = sampling_for(spec, generation)
    made_by = {"model": model.model_cfg, "generation": model.generation, "sampling": asdict(sampling)}
    store = ShardStore(work / "generations" / fingerprint({**made_by, "prompts": prompts}),
                       {**made_by, "prompts": len(prompts)})
    if not store.done(0):
        completions = generate_in_length_order(model.backend(), prompts, sampling)
        store.write(0, [{"key": str(index), "output": c.text} for index, c in enumerate(completions)])
    return [row["output"] for row in store.read(0)]


def run_alpaca_eval(spec: TaskSpec, model, generation: SamplingConfig, work: Path
                    ) -> tuple[dict, int, list[dict], list[Reject]]:
    from tulu_cli.eval.prompts import render_chat
    from tulu_cli.eval.win_rate import length_controlled_win_rate, load_gamed_baselines, win_rates

    items, rejects = load_instructions(spec)
    if not items:
        return {}, 0, [], rejects
    gamed = load_gamed_baselines(task_file(spec.settings["glm_data"], f"tasks.{spec.name}.glm_data"))
    template = spec.get("chat_template", "tulu")
    prompts = [render_chat([{"role": "user", "content": item.instruction}], template, model.tokenizer)
               for item in items]
    outputs = generate_outputs(spec, model, generation, prompts, work)
    preferences, records = judge(spec, items, outputs, work)
    metrics = win_rates(preferences)
    metrics.update(length_controlled_win_rate(preferences, [len(item.reference) for item in items],
                                              [len(output) for output in outputs],
                                              [item.position for item in items], gamed))
    metrics["judged"] = sum(not math.isnan(p) for p in preferences) / len(preferences)
    predictions = [{"task": spec.name, "id": item.position, "instruction": item.instruction, "output": output,
                    "reference": item.reference, "switched": is_switched(item.instruction),
                    "preference": None if math.isnan(preference) else preference,
                    **records.get(item.position, {})}
                   for item, output, preference in zip(items, outputs, preferences, strict=True)]
    for row in predictions:
        if isinstance(row.get("judge_preference"), float) and math.isnan(row["judge_preference"]):
            row["judge_preference"] = None
    return metrics, len(items), predictions, rejects
