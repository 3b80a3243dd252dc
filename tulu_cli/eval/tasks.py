"""Task definitions: the settings of one evaluation task, read from the `tasks` section of an eval config.

Task types:
- `generative`: prompt -> generated answer scored by the project's verifiers (gsm8k, math, ifeval).
- `multiple_choice`: each choice scored by the model's log-likelihood (MMLU-style).
- `lm_eval`: run by lm-evaluation-harness under its task name, with our settings passed in.
- `alpaca_eval`: AlpacaEval 2, the model's answers judged against reference outputs by an LLM judge on an
  OpenAI-compatible endpoint (alpaca_eval.py).
- `safety`: Ai2's safety-eval sets, the model's answers labelled by the WildGuard classifier on an
  OpenAI-compatible endpoint, averaged as Tulu 3 reported them (safety.py).
- `external`: listed with its reference settings, but no backend here can run it (e.g. LLM-judged).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TASK_TYPES = ("generative", "multiple_choice", "lm_eval", "alpaca_eval", "safety", "external")
CHAT_TEMPLATES = ("tulu", "tokenizer", "none")


class TaskConfigError(ValueError):
    """A task's settings are unusable; the message names the task and the field."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    type: str
    # The number reported for the task (a key of the task's metrics).
    metric: str
    settings: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key, default)
        return default if value is None else value

    @property
    def settings_hash(self) -> str:
        """Identifies the settings, so a comparison can flag runs whose task settings drifted."""
        return config_hash(self.settings)


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_task(name: str, settings: Mapping[str, Any]) -> TaskSpec:
    settings = dict(settings)
    kind = settings.get("type")
    if kind not in TASK_TYPES:
        raise TaskConfigError(f"tasks.{name}.type must be one of {', '.join(TASK_TYPES)}, got {kind!r}")
    metric = settings.get("metric")
    if not metric:
        raise TaskConfigError(f"tasks.{name}.metric is required (the metric reported for the task)")
    template = settings.get("chat_template", "tulu")
    if template not in CHAT_TEMPLATES:
        raise TaskConfigError(f"tasks.{name}.chat_template must be one of {', '.join(CHAT_TEMPLATES)}, got {template!r}")
    required = {"generative": ("data",), "multiple_choice": ("data",), "lm_eval": ("lm_eval_task",),
                "alpaca_eval": ("data", "glm_data", "judge"), "safety": ("sets", "classifier"),
                "external": ("reason",)}[kind]
    for key in required:
        if not settings.get(key):
            raise TaskConfigError(f"tasks.{name}.{key} is required for a {kind} task")
    if kind == "alpaca_eval" and not isinstance(settings["judge"], Mapping):
        raise TaskConfigError(f"tasks.{name}.judge must be an endpoint: {{base_url, model, api_key_env}}")
    if kind == "safety":
        from tulu_cli.eval.safety import check_sets

        if not isinstance(settings["classifier"], Mapping):
            raise TaskConfigError(f"tasks.{name}.classifier must be an endpoint: {{base_url, model}}")
        check_sets(name, settings["sets"])
    if kind in ("generative", "multiple_choice", "alpaca_eval") and not (settings["data"] or {}).get("path"):
        raise TaskConfigError(f"tasks.{name}.data.path is required (a local file or a hub dataset id)")
    return TaskSpec(name=name, type=kind, metric=str(metric), settings=settings)


def select_tasks(tasks: Mapping[str, Any], only: list[str] | None) -> list[TaskSpec]:
    """The tasks to run, in config order; `only` picks a subset by name."""
    if not tasks:
        raise TaskConfigError("the eval config has no tasks (add some under `tasks:`)")
    if only:
        unknown = [name for name in only if name not in tasks]
        if unknown:
            raise TaskConfigError(f"only: unknown task(s) {', '.join(unknown)}; known: {', '.join(tasks)}")
    names = [name for name in tasks if not only or name in only]
    return [parse_task(name, tasks[name]) for name in names]


# alpaca_eval's annotator and GLM that tasks of type alpaca_eval follow (alpaca_eval.py, win_rate.py).
ALPACA_EVAL_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
ALPACA_EVAL_GLM = "length_controlled_v1"
RAN_WITH = ("runner", "shots", "metric", "decoding", "max tokens", "chat template")


def settings_summary(spec: TaskSpec) -> dict[str, str]:
    """The settings a reader compares across papers, as short strings (dry-run table, reports); the
    `RAN_WITH` ones describe how the task runs here, `olmes`/`olmes setting` how OLMES ran it."""
    s = spec.settings
    # `prompt_shots`: shots built into the task's own prompt (lm-eval's TruthfulQA), not added by us.
    shots = s.get("num_shots") or s.get("prompt_shots") or 0
    cot = " CoT" if s.get("chain_of_thought") else ""
    max_tokens = s.get("max_new_tokens")
    if spec.type == "lm_eval":
        runner = f"lm-eval: {s['lm_eval_task']}"
    elif spec.type == "alpaca_eval":
        judge = s["judge"].get("model") or "?"
        runner = f"alpaca-eval: {ALPACA_EVAL_ANNOTATOR} judged by {judge}, {ALPACA_EVAL_GLM}"
    elif spec.type == "safety":
        classifier = s["classifier"].get("model") or "?"
        runner = f"safety-eval: {', '.join(s['sets'])} labelled by {classifier} (WildGuard format), set average"
    elif spec.type == "external":
        runner = "external (not run here)"
    else:
        runner = spec.type + (f" ({s['verifier']})" if s.get("verifier") else "")
    return {
        "task": spec.name,
        "olmes": str(s.get("olmes_id") or "-"),
        "olmes setting": str(s.get("olmes_setting") or "-"),
        "runner": runner,
        "shots": f"{shots}{cot}",
        "metric": spec.metric + (f" (reference: {s['reference']})" if s.get("reference") else ""),
        "decoding": (f"sampled, temperature {s['temperature']}, top-p {s.get('top_p', 1.0)}"
                     if s.get("temperature") else "the suite's"),
        "max tokens": str(max_tokens) if max_tokens else "-",
        "chat template": str(s.get("chat_template", "tulu")),
        "notes": str(s.get("reason") or ""),
    }
