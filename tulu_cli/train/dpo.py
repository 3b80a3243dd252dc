"""Preference tuning (run inside the launched job): setup -> train -> save.

Each micro-batch of pairs goes through the policy in one concatenated forward pass (chosen sides,
then rejected sides). The reference log-probs come from one pass of the starting policy before
training, cached on disk (`reference.mode=cached`), or from a frozen copy run every step (`online`,
for comparison); `simpo` needs none. The loss is the mean over the effective batch's pairs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from tulu_cli.config import assets_dir
from tulu_cli.data.encoded import record_data_report
from tulu_cli.data.preference_data import LOSS_TOKENS, prepare_preferences, sequence_tokens
from tulu_cli.entry import StageError, entrypoint
from tulu_cli.io import atomic_write_json
from tulu_cli.modeling import load_tokenizer
from tulu_cli.progress import track
from tulu_cli.publish.release import release_final
from tulu_cli.train.batching import read_rows
from tulu_cli.train.checkpoint import save_checkpoint, save_final
from tulu_cli.train.dpo_losses import LOSS_TYPES, REFERENCE_FREE, PreferenceLoss, preference_loss
from tulu_cli.train.loop import (
    backward_and_step,
    build_plan,
    is_due,
    plan_state,
    prepare_trainable,
    require_rows,
    resume_or_start,
)
from tulu_cli.train.pair_logprobs import dataset_logprobs, forward_pairs
from tulu_cli.train.runtime import all_reduce_sum, distributed_state, seed_everything

REFERENCE_MODES = ("cached", "online")


def main(cfg: DictConfig, run_dir: Path) -> None:
    # --- setup ---
    check_options(cfg)
    seed_everything(cfg.seed)
    train = cfg.train
    state = distributed_state()
    tokenizer = load_tokenizer(cfg.model, assets_dir())
    with state.main_process_first():
        pairs, eval_pairs = load_pairs(cfg, tokenizer, run_dir, state.is_main_process)
    plan = build_plan(len(pairs), train, state.num_processes, cfg.seed)
    trainable = prepare_trainable(cfg, tokenizer, plan, run_dir)
    accelerator, model, optimizer, scheduler = (trainable.accelerator, trainable.model, trainable.optimizer,
                                                trainable.scheduler)
    started = time.time()
    # Before a checkpoint is loaded: the model is still the starting policy.
    reference = build_reference(cfg, accelerator, model, tokenizer, pairs, eval_pairs)
    timings = {"reference_s": round(time.time() - started, 3), "reference_cached": bool(reference and reference.hit)}
    plan_record = plan_state(plan, reference_key=getattr(reference, "key", None))
    start_step, logger = resume_or_start(accelerator, cfg, run_dir, scheduler, plan.total_steps, plan_record)
    accelerator.print(f"training: {plan.total_steps} steps, {plan.accumulation_steps} micro-batches per step, "
                      f"{state.num_processes} rank(s), loss {cfg.loss.type}, reference {cfg.reference.mode}")

    # --- train ---
    model.train()
    window = Window()
    grad_norm = None
    train_started, eval_seconds = time.time(), 0.0
    for step in track(range(start_step, plan.total_steps), "dpo", plan.total_steps, completed=start_step):
        for rows in plan.micro_batches(step, accelerator.process_index):
            batch = read_rows(pairs, rows)
            with accelerator.accumulate(model):
                policy = forward_pairs(model, batch, tokenizer.pad_token_id, train.packing, accelerator.device)
                ref = reference.for_rows(rows, batch, accelerator.device) if reference else None
                result = compute_loss(cfg.loss, policy, ref)
                step_norm = backward_and_step(accelerator, model, optimizer, result.losses.mean(), train.max_grad_norm)
                grad_norm = grad_norm if step_norm is None else step_norm
            window.add(result, sequence_tokens(batch))
        scheduler.step()
        done = step + 1
        if is_due(done, train.log_every, plan.total_steps):
            logger.log(done, **window.metrics(accelerator), lr=scheduler.get_last_lr()[0],
                       grad_norm=float(grad_norm) if grad_norm is not None else None,
                       epoch=round(done / plan.steps_per_epoch, 3))
        if eval_pairs is not None and is_due(done, train.eval_every or plan.total_steps, plan.total_steps):
            eval_started = time.time()
            logger.log(done, **evaluate(cfg, accelerator, model, tokenizer, eval_pairs, reference))
            eval_seconds += time.time() - eval_started
        if is_due(done, cfg.checkpoint.every_steps, plan.total_steps):
            save_checkpoint(accelerator, run_dir, done, cfg.checkpoint.keep, scheduler,
                            extra={"plan": plan_record})
    timings.update(train_s=round(time.time() - train_started - eval_seconds, 3), eval_s=round(eval_seconds, 3),
                   steps=plan.total_steps - start_step)

    # --- save ---
    save_final(accelerator, model, tokenizer, run_dir)
    if accelerator.is_main_process:
        atomic_write_json(run_dir / "timings.json", timings)
    accelerator.print(f"saved {run_dir / 'final'}")
    release_final(accelerator, cfg, run_dir)
    accelerator.end_training()


def check_options(cfg: DictConfig) -> None:
    if not cfg.model.get("path"):
        raise StageError("model.path is not set: preference tuning starts from a trained model "
                         "(an SFT run's final/ directory or a hub id)")
    if cfg.loss.type not in LOSS_TYPES:
        raise StageError(f"loss.type must be one of {', '.join(LOSS_TYPES)}, got {cfg.loss.type!r}")
    if cfg.reference.mode not in REFERENCE_MODES:
        raise StageError(f"reference.mode must be one of {', '.join(REFERENCE_MODES)}, got {cfg.reference.mode!r}")
    if cfg.get("loss_tokens", "all_turns") not in LOSS_TOKENS:
        raise StageError(f"loss_tokens must be one of {', '.join(LOSS_TOKENS)}, got {cfg.loss_tokens!r}")


def load_pairs(cfg: DictConfig, tokenizer, run_dir: Path, main_process: bool) -> tuple[Any, Any]:
    """Encoded training pairs and held-out pairs (None without `data.eval`), as memory-mapped datasets;
    rejects files in the run dir."""
    length = cfg.train.max_seq_length
    loss_tokens = cfg.get("loss_tokens", "all_turns")
    pairs, report = prepare_preferences(cfg.data.train, cfg.data, length, tokenizer,
                                        run_dir / "rejects.jsonl" if main_process else None, loss_tokens)
    if main_process:
        print(f"data: {report.to_json()}", flush=True)
        record_data_report(run_dir, "train", report)
    require_rows(report)
    if not cfg.data.get("eval"):
        return pairs, None
    eval_pairs, eval_report = prepare_preferences(cfg.data.eval, cfg.data, length, tokenizer,
                                                  run_dir / "rejects_eval.jsonl" if main_process else None,
                                                  loss_tokens)
    if main_process:
        print(f"eval data: {eval_report.to_json()}", flush=True)
        record_data_report(run_dir, "eval", eval_report)
    require_rows(eval_report)
    return pairs, eval_pairs


def build_reference(cfg: DictConfig, accelerator, model, tokenizer, pairs, eval_pairs):
    """The reference of the run: cached log-probs, an online frozen model, or None (reference-free loss)."""
    from tulu_cli.train import reference as ref
    from tulu_cli.train.lora import REFERENCE_NOTE, starting_model

    if cfg.loss.type in REFERENCE_FREE:
        return None
    batch_size, pad_id, packing = cfg.reference.batch_size, tokenizer.pad_token_id, cfg.train.packing
    # With LoRA the starting policy is the trained model with its adapters off: no second copy.
    starting = starting_model(accelerator, model)
    if starting is not None:
        accelerator.print(REFERENCE_NOTE)
    if cfg.reference.mode == "online":
        from tulu_cli.modeling import load_model
        from tulu_cli.train.runtime import prepare_frozen

        frozen = starting or prepare_frozen(accelerator, load_model(cfg.model, tokenizer, cfg.seed))
        evaluation = (dataset_logprobs(accelerator, frozen, eval_pairs, batch_size, pad_id, packing)
                      if eval_pairs is not None else None)
        return ref.OnlineReference(frozen, evaluation, pad_id, packing, accelerator)
    root = ref.cache_dir(cfg.reference.cache_dir)
    identity = ref.model_identity(cfg.model, cfg.seed, cfg.launcher.mixed_precision)
    entries = {}
    for name, rows in (("train", pairs), ("eval", eval_pairs)):
        if rows is None:
            continue
        key = ref.cache_key(identity, rows, packing)
        meta = {"model": identity, "source": str(cfg.data[name]), "max_seq_length": cfg.train.max_seq_length}
        entries[name] = (key, *ref.cached_reference(accelerator, starting or model, rows, root, key, batch_size, pad_id,
                                                    packing, meta))
        accelerator.print(f"reference log-probs ({name}): {'loaded' if entries[name][2] else 'computed and stored'} "
                          f"{root / key}")
    key, train_logprobs, hit = entries["train"]
    return ref.CachedReference(train_logprobs, entries["eval"][1] if "eval" in entries else None, key, hit)


def compute_loss(loss_cfg: DictConfig, policy, reference) -> PreferenceLoss:
    return preference_loss(loss_cfg.type, policy, reference, float(loss_cfg.beta), float(loss_cfg.label_smoothing),
                           float(loss_cfg.simpo_gamma_beta_ratio))


def evaluate(cfg: DictConfig, accelerator, model, tokenizer, eval_pairs, reference) -> dict:
    """Loss and rewards of the current policy on the held-out pairs (`eval/...` metrics)."""
    policy = dataset_logprobs(accelerator, model, eval_pairs, cfg.reference.batch_size, tokenizer.pad_token_id,
                              cfg.train.packing)
    result = compute_loss(cfg.loss, policy, reference.evaluation if reference else None)
    window = Window()
    window.add(result, 0)
    return {f"eval/{name}": value for name, value in window.summary().items()}


class Window:
    """Sums of the per-pair loss and rewards since the last logged step (this rank's pairs)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums = {"loss": 0.0, "chosen": 0.0, "rejected": 0.0, "correct": 0.0, "pairs": 0.0, "tokens": 0.0}
        self.started = time.time()

    def add(self, result: PreferenceLoss, tokens: int) -> None:
        self.sums["loss"] += result.losses.detach().sum().item()
        self.sums["chosen"] += result.chosen_rewards.sum().item()
        self.sums["rejected"] += result.rejected_rewards.sum().item()
        self.sums["correct"] += (result.chosen_rewards > result.rejected_rewards).sum().item()
        self.sums["pairs"] += len(result.losses)
        self.sums["tokens"] += tokens

    def summary(self) -> dict:
        pairs = max(self.sums["pairs"], 1.0)
        chosen, rejected = self.sums["chosen"] / pairs, self.sums["rejected"] / pairs
        return {"loss": self.sums["loss"] / pairs, "rewards/chosen": chosen, "rewards/rejected": rejected,
                "rewards/margin": chosen - rejected, "rewards/accuracy": self.sums["correct"] / pairs}

    def metrics(self, accelerator) -> dict:
        """The window's metrics over all ranks, then a fresh window."""
        elapsed = time.time() - self.started
        self.sums = {name: all_reduce_sum(accelerator, value) for name, value in self.sums.items()}
        values = {**self.summary(), "tokens_per_s": self.sums["tokens"] / max(elapsed, 1e-9)}
        self.reset()
        return values


if __name__ == "__main__":
    entrypoint(main)
