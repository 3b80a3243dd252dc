"""Loop pieces every trainer shares: the batch plan, the prepared model/optimizer/schedule, resume,
one optimizer micro-step, and when a step is due for logging or a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tulu_cli.entry import StageError
from tulu_cli.runlog import MetricsLogger
from tulu_cli.tracking import start_trackers
from tulu_cli.train.batching import BatchPlan
from tulu_cli.train.checkpoint import (
    agreed_checkpoint,
    load_checkpoint,
    read_trainer_state,
    resolve_resume,
    set_aside_later_checkpoints,
)


def require_rows(report) -> None:
    """Stop with a clear message when a data report kept no rows."""
    if report.rows_kept == 0:
        raise StageError(f"no usable rows in {report.source} (set aside: {dict(report.rejected)}; see rejects.jsonl)")


def build_plan(rows: int, train: Any, world_size: int, seed: int) -> BatchPlan:
    try:
        return BatchPlan(rows, train.effective_batch_size, train.per_device_batch_size, world_size, train.epochs,
                         seed, train.max_steps)
    except ValueError as exc:
        raise StageError(str(exc)) from None


@dataclass
class Trainable:
    """The prepared pieces of a run: what `accelerator.prepare` returned, and the registered schedule."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any


def prepare_trainable(cfg: DictConfig, tokenizer, plan: BatchPlan, run_dir: Path) -> Trainable:
    """Load the starting model (with LoRA adapters when `model.lora` is on) and wrap it, its optimizer
    and schedule for the launched runtime."""
    from tulu_cli.tracking import accelerator_options
    from tulu_cli.train.lora import keep_trained_parameters_in_checkpoints, load_policy
    from tulu_cli.train.optim import build_optimizer, build_scheduler
    from tulu_cli.train.runtime import make_accelerator, report_partitioning

    accelerator = make_accelerator(plan.accumulation_steps, cfg.train.per_device_batch_size, cfg.train.max_grad_norm,
                                   accelerator_options(cfg.get("report_to"), run_dir))
    model = load_policy(cfg.model, tokenizer, cfg.seed)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, plan.total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    keep_trained_parameters_in_checkpoints(accelerator, model)
    report_partitioning(accelerator, model)
    return Trainable(accelerator, model, optimizer, scheduler)


def plan_state(plan: BatchPlan, **identity) -> dict:
    """What fixes which rows each step reads (and any `identity` of the trainer's, e.g. DPO's reference
    key, which hashes the pairs), stored in every checkpoint: a run resumed with other rows, another
    effective batch size or another seed would repeat or skip rows. The length (epochs, max_steps) is
    not part of it: a run may be resumed to go on for longer, its earlier steps unchanged."""
    return {"rows": plan.rows, "effective_batch_size": plan.effective_batch_size, "seed": plan.seed, **identity}


def resume_or_start(accelerator, cfg: DictConfig, run_dir: Path, scheduler, total_steps: int, plan: dict,
                    ) -> tuple[int, MetricsLogger]:
    """(first optimizer step to run, metrics logger): from the checkpoint `cfg.resume` names, else step 0.
    The run's trackers (`report_to`) start here and get what the logger logs.

    A checkpoint taken under another batch plan (other rows, effective batch size or seed) is refused,
    as is one past this run's last step (e.g. of a longer run in the same output_dir), rather than read
    as "already done". Checkpoints of this run directory later than the one resumed from are
    moved aside (see checkpoint.py).
    """
    resume = cfg.resume
    checkpoint = agreed_checkpoint(accelerator, resolve_resume(resume, run_dir), run_dir)
    start_step = 0
    if checkpoint is not None:
        state = read_trainer_state(checkpoint)
        start_step = state["step"]
        if start_step > total_steps:
            raise StageError(f"resume={resume}: {checkpoint} is at step {start_step}, past this run's "
                             f"{total_steps} steps: it belongs to a different run (overwrite=true starts "
                             f"this one afresh)")
        saved = state.get("plan")
        if saved is not None and saved != plan:
            changed = ", ".join(f"{key} {saved.get(key)} -> {plan.get(key)}" for key in sorted({*saved, *plan})
                                if saved.get(key) != plan.get(key))
            raise StageError(f"resume={resume}: {checkpoint} was taken under another batch plan ({changed}); "
                             f"resuming would repeat or skip rows (restore the settings, or overwrite=true "
                             f"to start afresh)")
        load_checkpoint(accelerator, checkpoint, scheduler)
        if accelerator.is_main_process:
            for moved in set_aside_later_checkpoints(run_dir, start_step):
                accelerator.print(f"checkpoint of the replaced run moved to {moved}")
        accelerator.wait_for_everyone()
        accelerator.print(f"resumed from {checkpoint} at step {start_step}")
    start_trackers(accelerator, OmegaConf.to_container(cfg, resolve=True), run_dir)
    return start_step, MetricsLogger(run_dir, resume_step=start_step if checkpoint is not None else None,
                                     trackers=accelerator if accelerator.log_with else None)


def backward_and_step(accelerator, model, optimizer, loss, max_grad_norm: float | None):
    """Backpropagate one micro-batch inside `accelerator.accumulate`; on the step's last micro-batch
    clip and return the gradient norm (else None). The optimizer only steps when gradients sync."""
    accelerator.backward(loss)
    grad_norm = None
    if accelerator.sync_gradients and max_grad_norm:
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    return grad_norm


def is_due(done: int, every: int, total: int) -> bool:
    """Whether optimizer step `done` (1-based) is a multiple of `every` or the last one."""
    return done % every == 0 or done == total
