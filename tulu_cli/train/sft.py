"""Supervised fine-tuning (run inside the launched job): setup -> train -> save.

Loss on every assistant turn's content and eos. `loss_reduction=sum` (Tulu 3) sums token losses and
averages over the effective batch's micro-batches, as the reference code's DeepSpeed runs did, so
every token weighs the same; `mean` divides by the effective batch's trainable-token count, counted
across gradient accumulation and ranks, so it is the true per-token mean of the whole batch.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from tulu_cli.config import assets_dir
from tulu_cli.data.encoded import record_data_report
from tulu_cli.data.sft_data import prepare_sft
from tulu_cli.entry import StageError, entrypoint
from tulu_cli.io import atomic_write_json
from tulu_cli.modeling import load_tokenizer
from tulu_cli.progress import track
from tulu_cli.publish.release import release_final
from tulu_cli.train.batching import collate, count_trainable, read_rows
from tulu_cli.train.checkpoint import save_checkpoint, save_final
from tulu_cli.train.logprobs import labelled_logprobs
from tulu_cli.train.loop import (
    backward_and_step,
    build_plan,
    is_due,
    plan_state,
    prepare_trainable,
    require_rows,
    resume_or_start,
)
from tulu_cli.train.runtime import all_reduce_sum, distributed_state, seed_everything, true_on_every_rank


def main(cfg: DictConfig, run_dir: Path) -> None:
    # --- setup ---
    seed_everything(cfg.seed)
    train = cfg.train
    state = distributed_state()
    tokenizer = load_tokenizer(cfg.model, assets_dir())
    with state.main_process_first():
        dataset, report = prepare_sft(cfg.data, train.max_seq_length, tokenizer, run_dir, state.is_main_process)
    if state.is_main_process:
        print(f"data: {report.to_json()}", flush=True)
        record_data_report(run_dir, "train", report)
    require_rows(report)
    plan = build_plan(len(dataset), train, state.num_processes, cfg.seed)
    trainable = prepare_trainable(cfg, tokenizer, plan, run_dir)
    accelerator, model, optimizer, scheduler = (trainable.accelerator, trainable.model, trainable.optimizer,
                                                trainable.scheduler)
    plan_record = plan_state(plan)
    start_step, logger = resume_or_start(accelerator, cfg, run_dir, scheduler, plan.total_steps, plan_record)
    # A freshly initialised model is kept as `initial/`: the untrained baseline of a comparison. The ranks
    # look before any of them can have written it.
    if cfg.model.get("init") and not cfg.model.get("path") and true_on_every_rank(
            accelerator, not (run_dir / "initial").exists()):
        save_final(accelerator, model, tokenizer, run_dir, name="initial")
    accelerator.print(f"training: {plan.total_steps} steps, {plan.accumulation_steps} micro-batches per step, "
                      f"{state.num_processes} rank(s)")

    # --- train ---
    model.train()
    window_loss = window_tokens = 0.0
    grad_norm = None
    window_start = train_started = time.time()
    checkpoint_seconds = 0.0
    # Every input token the forward passes process (no padding when packed), for throughput figures.
    input_tokens = 0
    for step in track(range(start_step, plan.total_steps), "sft", plan.total_steps, completed=start_step):
        micro_batches = [read_rows(dataset, rows) for rows in plan.micro_batches(step, accelerator.process_index)]
        local_tokens = sum(count_trainable(batch) for batch in micro_batches)
        input_tokens += sum(len(row["input_ids"]) for batch in micro_batches for row in batch)
        global_tokens = all_reduce_sum(accelerator, local_tokens)
        step_loss_sum = 0.0
        for batch_rows in micro_batches:
            with accelerator.accumulate(model):
                batch = {k: v.to(accelerator.device) for k, v in collate(
                    batch_rows, tokenizer.pad_token_id, train.packing).items()}
                logprobs, _ = labelled_logprobs(model, batch)
                loss_sum = -logprobs.sum()
                loss = scaled_loss(loss_sum, train.loss_reduction, global_tokens, accelerator.num_processes,
                                   plan.accumulation_steps)
                step_norm = backward_and_step(accelerator, model, optimizer, loss, train.max_grad_norm)
                grad_norm = grad_norm if step_norm is None else step_norm
            step_loss_sum += loss_sum.item()
        scheduler.step()
        window_loss += all_reduce_sum(accelerator, step_loss_sum)
        window_tokens += global_tokens
        done = step + 1
        if is_due(done, train.log_every, plan.total_steps):
            elapsed = time.time() - window_start
            logger.log(done, loss=window_loss / max(window_tokens, 1), lr=scheduler.get_last_lr()[0],
                       grad_norm=float(grad_norm) if train.max_grad_norm else None,
                       epoch=round(done / plan.steps_per_epoch, 3), tokens_per_s=window_tokens / max(elapsed, 1e-9))
            window_loss = window_tokens = 0.0
            window_start = time.time()
        if is_due(done, cfg.checkpoint.every_steps, plan.total_steps):
            checkpoint_started = time.time()
            save_checkpoint(accelerator, run_dir, done, cfg.checkpoint.keep, scheduler,
                            extra={"plan": plan_record})
            checkpoint_seconds += time.time() - checkpoint_started
    timings = {"train_s": round(time.time() - train_started - checkpoint_seconds, 3),
               "checkpoint_s": round(checkpoint_seconds, 3), "steps": plan.total_steps - start_step,
               "input_tokens": int(all_reduce_sum(accelerator, input_tokens))}

    # --- save ---
    save_final(accelerator, model, tokenizer, run_dir)
    if accelerator.is_main_process:
        atomic_write_json(run_dir / "timings.json", timings)
    accelerator.print(f"saved {run_dir / 'final'}")
    release_final(accelerator, cfg, run_dir)
    accelerator.end_training()


def scaled_loss(loss_sum, reduction: str, global_tokens: float, world_size: int, accumulation_steps: int):
    """The loss to backpropagate for one micro-batch.

    accelerate divides by `accumulation_steps` and data parallelism averages over ranks, so the
    gradient of the step is sum(scaled) / (accumulation_steps * world_size); this undoes that for `mean`.
    """
    if reduction == "sum":
        return loss_sum
    if reduction == "mean":
        return loss_sum * (accumulation_steps * world_size / max(global_tokens, 1.0))
    raise StageError(f"train.loss_reduction must be sum or mean, got {reduction!r}")


if __name__ == "__main__":
    entrypoint(main)
