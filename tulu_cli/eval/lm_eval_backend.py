"""lm-evaluation-harness as a backend: a task lm-eval has is run by `lm_eval.simple_evaluate` with the
settings of our config (shots, chat template, generation length, sampling), one call per task so that
each task keeps its own settings. The model is the one already loaded (HF) or a vLLM engine.

`metric` names an lm-eval result key as lm-eval prints it, `name,filter` (e.g.
`exact_match,flexible-extract`); a task that is an lm-eval group reports the group's aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tulu_cli.eval.tasks import TaskConfigError, TaskSpec


def build_lm(generation: Mapping[str, Any], model=None, tokenizer=None, model_path: str | None = None,
             batch_size: int = 8):
    """The lm-eval model: our in-memory HF model, or lm-eval's vLLM wrapper loading `model_path`."""
    if generation["backend"] == "hf":
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    if generation["backend"] == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        options = dict(generation.get("vllm") or {})
        return VLLM(pretrained=model_path, batch_size="auto", **options)
    raise TaskConfigError(f"generation.backend must be hf or vllm, got {generation['backend']!r}")


def lm_eval_arguments(spec: TaskSpec, generation: Mapping[str, Any], lm_eval_cfg: Mapping[str, Any],
                      seed: int) -> dict[str, Any]:
    """The keyword arguments of `simple_evaluate` that carry this task's settings."""
    gen_kwargs: dict[str, Any] = {}
    if spec.get("max_new_tokens"):
        gen_kwargs["max_gen_toks"] = int(spec.get("max_new_tokens"))
    temperature = float(spec.get("temperature", generation["temperature"]))
    gen_kwargs.update({"temperature": temperature, "do_sample": temperature > 0})
    if temperature > 0:
        gen_kwargs["top_p"] = float(spec.get("top_p", generation["top_p"]))
    gen_kwargs.update(dict(spec.get("gen_kwargs", {})))
    include = [str(p) for p in [*(lm_eval_cfg.get("include_path") or []), *(spec.get("include_path", []))]]
    limit = spec.get("limit", lm_eval_cfg.get("limit"))
    chat = spec.get("chat_template", "tulu")
    return {
        "tasks": [spec.settings["lm_eval_task"]],
        "num_fewshot": spec.settings.get("num_shots"),
        "apply_chat_template": chat != "none",
        "fewshot_as_multiturn": bool(spec.get("fewshot_as_multiturn", chat != "none")),
        "system_instruction": spec.get("system_prompt"),
        "gen_kwargs": gen_kwargs,
        "limit": limit,
        "include_path": include,
        "random_seed": seed,
        "numpy_random_seed": seed,
        "torch_random_seed": seed,
        "fewshot_random_seed": seed,
        "confirm_run_unsafe_code": bool(lm_eval_cfg.get("confirm_run_unsafe_code", False)),
    }


def run_lm_eval(spec: TaskSpec, lm, arguments: Mapping[str, Any], task_manager=None) -> tuple[dict, int, list[dict]]:
    """Run one task; return its metrics, item count and per-item predictions. `task_manager` defaults to
    lm-eval's tasks plus the include paths."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    arguments = dict(arguments)
    include = arguments.pop("include_path")
    task_manager = task_manager or TaskManager(include_path=include or None)
    output = lm_eval.simple_evaluate(model=lm, task_manager=task_manager, log_samples=True,
                                     bootstrap_iters=0, **arguments)
    if output is None:
        raise RuntimeError("lm-eval returned no results (non-main rank)")
    name = spec.settings["lm_eval_task"]
    results = output["results"]
    if name not in results:
        raise RuntimeError(f"lm-eval returned no result for {name!r} (got {', '.join(results)})")
    metrics = {key: float(value) for key, value in results[name].items()
               if isinstance(value, (int, float)) and "," in key and "_stderr" not in key}
    if spec.metric not in metrics:
        raise TaskConfigError(f"tasks.{spec.name}.metric {spec.metric!r} is not among lm-eval's results for "
                              f"{name}: {', '.join(metrics)}")
    counts = output.get("n-samples", {})
    n = sum(int(entry.get("effective", 0)) for entry in counts.values())
    predictions = [_prediction(spec.name, leaf, sample) for leaf, samples in output.get("samples", {}).items()
                   for sample in samples]
    return metrics, n, predictions


def _prediction(task: str, leaf: str, sample: Mapping[str, Any]) -> dict:
    scores = {key: value for key, value in sample.items()
              if key in sample.get("metrics", []) and isinstance(value, (int, float))}
    return {"task": task, "lm_eval_task": leaf, "id": sample.get("doc_id"), "filter": sample.get("filter"),
            "prompt": _first_text(sample.get("arguments")),
            "response": _first_text(sample.get("filtered_resps")), "raw_response": _first_text(sample.get("resps")),
            "ground_truth": sample.get("target"), "scores": scores}


def _first_text(value: Any) -> str | None:
    """The first string inside lm-eval's nested request/response containers."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        for element in value:
            text = _first_text(element)
            if text is not None:
                return text
    return None
