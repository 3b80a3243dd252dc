"""`tulu eval` (run inside the launched job): setup -> run each task -> write results.

The model is `model.path` (a stage run's `final` directory, any model directory, or a hub id) or,
with no path, a fresh model from `model.init` (an untrained baseline). Each task runs through its
type's runner; a task that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tulu_cli.config import assets_dir
from tulu_cli.entry import StageError, entrypoint
from tulu_cli.eval.models import EvalModel, run_label
from tulu_cli.eval.results import (
    TaskResult,
    print_results,
    write_predictions,
    write_rejects,
    write_results,
)
from tulu_cli.eval.tasks import (
    RAN_WITH,
    TaskConfigError,
    TaskSpec,
    config_hash,
    select_tasks,
    settings_summary,
)
from tulu_cli.publish.card import record_eval
from tulu_cli.runlog import MetricsLogger, is_main_process


def main(cfg: DictConfig, run_dir: Path) -> None:
    # --- setup ---
    resolved = OmegaConf.to_container(cfg, resolve=True)
    try:
        specs = select_tasks(resolved["tasks"], resolved.get("only"))
    except TaskConfigError as exc:
        raise StageError(str(exc)) from None
    model = EvalModel(resolved["model"], resolved["generation"], assets_dir(), seed=int(cfg.seed))
    label = resolved.get("label") or run_label(resolved["model"])
    fingerprint = config_hash({k: v for k, v in resolved.items() if k not in ("output_dir", "dry_run", "only")})
    logger = MetricsLogger(run_dir)

    # --- evaluate ---
    results, predictions, rejects = [], [], []
    for step, spec in enumerate(specs, start=1):
        started = time.time()
        result, task_predictions, task_rejects = run_task(spec, model, resolved, run_dir / "work" / spec.name)
        result.seconds = round(time.time() - started, 2)
        results.append(result)
        predictions += task_predictions
        rejects += [{"task": spec.name, **reject.to_json()} for reject in task_rejects]
        logger.log(step, task=spec.name, status=result.status, metric=result.metric, value=result.value,
                   n=result.n, seconds=result.seconds)

    # --- report ---
    write_predictions(run_dir, predictions)
    write_rejects(run_dir, rejects)
    document = write_results(run_dir, results, suite=str(resolved.get("suite")), label=label,
                             model=model.describe(), config_hash=fingerprint)
    print_results(document)
    if is_main_process():
        update_model_card(resolved["model"].get("path"), run_dir, document)
    failed = [r for r in results if r.status == "error"]
    if failed:
        raise StageError("task(s) failed: " + "; ".join(f"{r.task}: {r.detail}" for r in failed))


def update_model_card(model_path: str | None, run_dir: Path, document: dict) -> None:
    """Add these results to the card of the model when it is a tulu run's final/. The results stand on
    their own: a card that cannot be written (a read-only model folder) is reported, not a failure."""
    try:
        card = record_eval(model_path, run_dir, document)
    except (OSError, StageError) as exc:
        print(f"model card of {model_path} not updated: {exc}", flush=True)
        return
    if card is not None:
        print(f"model card updated with these results: {card}", flush=True)


def run_task(spec: TaskSpec, model: EvalModel, resolved: dict, work: Path) -> tuple[TaskResult, list[dict], list]:
    """Run one task; errors become a result with status `error` so a long suite keeps going. `work` is the
    task's folder for work a rerun in the same run directory picks up (AlpacaEval's outputs and judge calls)."""
    summary = settings_summary(spec)
    result = TaskResult(task=spec.name, type=spec.type, metric=spec.metric, value=None, n=0,
                        settings=spec.settings, settings_hash=spec.settings_hash,
                        ran_with={key: summary[key] for key in RAN_WITH},
                        olmes={"id": summary["olmes"], "setting": summary["olmes setting"]})
    if spec.type == "external":
        result.status, result.detail = "not_run", str(spec.settings["reason"])
        return result, [], []
    try:
        metrics, n, predictions, rejects = _run(spec, model, resolved, work)
    except Exception as exc:  # noqa: BLE001 - recorded per task; the stage fails at the end
        result.status, result.detail = "error", f"{type(exc).__name__}: {exc}"
        return result, [], []
    if spec.metric not in metrics:
        result.status = "error"
        result.detail = f"metric {spec.metric!r} not produced (have: {', '.join(metrics) or 'none'})"
    result.metrics, result.n, result.rejected = metrics, n, len(rejects)
    result.value = metrics.get(spec.metric)
    if n == 0 and result.status == "ok":
        result.status, result.detail = "error", "no usable items (see rejects.jsonl)"
    return result, predictions, rejects


def _run(spec: TaskSpec, model: EvalModel, resolved: dict, work: Path) -> tuple[dict, int, list[dict], list]:
    from tulu_cli.generation import SamplingConfig

    if spec.type == "lm_eval":
        from tulu_cli.eval.lm_eval_backend import lm_eval_arguments, run_lm_eval

        arguments = lm_eval_arguments(spec, resolved["generation"], resolved["lm_eval"], int(resolved["seed"]))
        metrics, n, predictions = run_lm_eval(spec, model.lm_eval_model(resolved["lm_eval"]["batch_size"]), arguments)
        return metrics, n, predictions, []
    if spec.type == "alpaca_eval":
        from tulu_cli.eval.alpaca_eval import run_alpaca_eval

        return run_alpaca_eval(spec, model, SamplingConfig.from_config(resolved["generation"]), work)
    if spec.type == "safety":
        from tulu_cli.eval.safety import run_safety

        return run_safety(spec, model.backend(), model.tokenizer, SamplingConfig.from_config(resolved["generation"]))
    from tulu_cli.eval.data import load_items

    items, rejects = load_items(spec)
    if not items:
        return {}, 0, [], rejects
    if spec.type == "generative":
        from tulu_cli.eval.generative import run_generative

        generation = SamplingConfig.from_config(resolved["generation"])
        profile = str((resolved.get("verifier") or {}).get("profile", "default"))
        metrics, predictions = run_generative(spec, items, model.backend(), model.tokenizer, generation, profile)
    else:
        from tulu_cli.eval.multiple_choice import run_multiple_choice

        hf_model, tokenizer = model.hf()
        metrics, predictions = run_multiple_choice(spec, items, hf_model, tokenizer,
                                                   int(resolved["generation"]["batch_size"]))
    return metrics, len(items), predictions, rejects


if __name__ == "__main__":
    entrypoint(main)
