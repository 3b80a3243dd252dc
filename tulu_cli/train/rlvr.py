"""Reinforcement learning with verifiable rewards (run inside the launched job):
setup -> loop of (rollout -> score -> experience -> update -> sync weights) -> save.

`algorithm=ppo` (Tulu 3): value model, k1 KL penalty in the per-token reward, verifier reward at the
last token, GAE, whitened advantages, several clipped-PPO epochs per rollout batch.
`algorithm=grpo` (Tulu 3.1): several samples per prompt, group-normalised advantages (unbiased
group std), truncated responses scored 0, zero-spread groups kept, clamped k3 KL in the loss. The
section of the config named by `algorithm` holds its values (and the named alternatives).
One optimizer step of the plan is one rollout batch (its prompts come from the shared BatchPlan, so
resuming at step k samples the same prompts an uninterrupted run would have).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from tulu_cli.config import assets_dir
from tulu_cli.data.encoded import record_data_report
from tulu_cli.entry import entrypoint
from tulu_cli.errors import StageError
from tulu_cli.generation import SamplingConfig
from tulu_cli.modeling import load_model, load_tokenizer
from tulu_cli.progress import track
from tulu_cli.publish.release import release_final
from tulu_cli.runlog import read_metrics
from tulu_cli.tracking import accelerator_options
from tulu_cli.train.batching import BatchPlan
from tulu_cli.train.checkpoint import save_checkpoint, save_final
from tulu_cli.train.loop import is_due, plan_state, require_rows, resume_or_start
from tulu_cli.train.lora import (
    REFERENCE_NOTE,
    keep_trained_parameters_in_checkpoints,
    load_policy,
    starting_model,
)
from tulu_cli.train.optim import build_optimizer, build_scheduler
from tulu_cli.train.rl.data import prepare_rlvr, prompt_rows
from tulu_cli.train.rl.engine_check import check_engine_logprobs
from tulu_cli.train.rl.experience import experience_stats, make_experience, old_logprobs_from_update
from tulu_cli.train.rl.kl import ESTIMATORS
from tulu_cli.train.rl.metrics import PhaseTimes, step_metrics
from tulu_cli.train.rl.models import PolicyAndValue, load_value_model
from tulu_cli.train.rl.rewards import per_dataset_stats, score_rollouts
from tulu_cli.train.rl.rollout import build_rollout_backend, rollouts_for_all_ranks, samples_on_every_rank
from tulu_cli.train.rl.trend import quarter_trend
from tulu_cli.train.rl.update import LOSS_AGGREGATIONS, update_policy
from tulu_cli.train.rl.weight_sync import sync_rollout_weights
from tulu_cli.train.runtime import (
    distributed_state,
    make_accelerator,
    prepare_frozen,
    report_partitioning,
    seed_everything,
)
from tulu_cli.validate_config import rollout_split_error

ALGORITHMS = ("ppo", "grpo")


def main(cfg: DictConfig, run_dir: Path) -> None:
    # --- setup ---
    seed_everything(cfg.seed)
    algorithm, algo, train, rollout = cfg.algorithm, cfg.get(cfg.algorithm), cfg.train, cfg.rollout
    if algorithm not in ALGORITHMS or algo is None:
        raise StageError(
            f"algorithm must be one of {', '.join(ALGORITHMS)} (with a config section of that name), "
            f"got {algorithm!r}"
        )
    check_algorithm_options(algorithm, algo)
    if not cfg.model.path:
        raise StageError(
            "rlvr starts from a trained policy: set model.path (an SFT or DPO `final/` dir or hub id)"
        )
    state = distributed_state()
    tokenizer = load_tokenizer(cfg.model, assets_dir())
    with state.main_process_first():
        rows, report = prepare_rlvr(
            cfg.data, tokenizer, rollout.max_prompt_length, run_dir, state.is_main_process
        )
    if state.is_main_process:
        print(f"data: {report.to_json()}", flush=True)
        record_data_report(run_dir, "train", report)
    require_rows(report)
    plan, accumulation = rollout_plan(len(rows), algorithm, algo, train, state.num_processes, cfg.seed)
    accelerator = make_accelerator(accumulation, train.per_device_batch_size, train.max_grad_norm,
                                   accelerator_options(cfg.get("report_to"), run_dir))
    value = load_value_model(cfg.model, algo.reward_model_path, tokenizer) if algorithm == "ppo" else None
    # With LoRA only the policy gets adapters; PPO's value model is trained in full.
    model = PolicyAndValue(load_policy(cfg.model, tokenizer, cfg.seed), value)
    optimizer = build_optimizer(model, cfg.optim)
    updates_per_rollout = int(algo.epochs_per_rollout) * int(algo.minibatches_per_rollout)
    scheduler = build_scheduler(optimizer, cfg.optim, plan.total_steps * updates_per_rollout)
    model, optimizer = accelerator.prepare(model, optimizer)
    keep_trained_parameters_in_checkpoints(accelerator, model)
    report_partitioning(accelerator, model)
    # The reference is the starting policy: with LoRA the policy with its adapters off, else reloaded
    # from model.path; a checkpoint needs no copy of it.
    reference = starting_model(accelerator, model, part="policy")
    if reference is None:
        reference = prepare_frozen(accelerator, load_model(cfg.model, tokenizer, cfg.seed))
    else:
        accelerator.print(REFERENCE_NOTE)
    plan_record = plan_state(plan)
    start_step, logger = resume_or_start(accelerator, cfg, run_dir, scheduler, plan.total_steps, plan_record)
    try:
        backend = build_rollout_backend(
            cfg.generation,
            accelerator,
            model,
            tokenizer,
            cfg.model.path,
            int(rollout.max_prompt_length) + int(rollout.response_length),
            cfg.seed,
        )
    except (ValueError, RuntimeError) as exc:
        raise StageError(str(exc)) from None
    # The hf backend samples with the learner itself; an engine gets the weights after each update.
    separate_engine = cfg.generation.backend != "hf"
    every_rank = samples_on_every_rank(cfg.generation)
    check = cfg.generation.get("logprob_check") or {}
    if start_step and separate_engine:
        sync_rollout_weights(accelerator, backend, model)
    samples = int(algo.samples_per_prompt)
    # PPO's value warm-up: the first rollout batches train the value model alone (see conf/rlvr/tiny.yaml).
    warmup = int(algo.get("value_warmup_steps") or 0) if algorithm == "ppo" else 0
    accelerator.print(
        f"{algorithm}: {plan.total_steps} rollout batches of {algo.prompts_per_rollout} prompts x "
        f"{samples} samples, {updates_per_rollout} updates each, {state.num_processes} rank(s); old "
        f"log-probs from {'the update' if old_logprobs_from_update(algorithm, algo) else 'a policy forward'}"
    )

    # --- loop: rollout -> score -> update ---
    model.train()
    generator = torch.Generator()
    steps = range(start_step, plan.total_steps)
    for step in track(steps, f"rlvr ({algorithm})", plan.total_steps, completed=start_step):
        started = time.time()
        generator.manual_seed(cfg.seed * 100_003 + step)
        rows_per_rank = [
            prompt_rows(rows, plan.micro_batches(step, rank)[0]) for rank in range(state.num_processes)
        ]
        sampling = SamplingConfig(
            max_new_tokens=rollout.response_length,
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            n=samples,
            seed=cfg.seed + step,
        )
        rollouts = rollouts_for_all_ranks(accelerator, backend, rows_per_rank, sampling, every_rank)
        generated = time.time()
        scores = score_rollouts(
            rollouts,
            float(rollout.verifier_reward),
            algo.non_stop_penalty,
            float(rollout.verify_timeout_s),
            int(rollout.verify_workers),
            str((cfg.get("verifier") or {}).get("profile", "default")),
        )
        scored = time.time()
        experience = make_experience(
            model,
            reference,
            [r.row.prompt_ids for r in rollouts],
            [r.response_ids for r in rollouts],
            scores.rewards,
            algorithm,
            algo,
            tokenizer.pad_token_id,
            train.packing,
            int(train.per_device_batch_size),
            accelerator.device,
            float(rollout.temperature),
        )
        experienced = time.time()
        totals = update_policy(
            accelerator,
            model,
            optimizer,
            scheduler,
            experience,
            algorithm,
            algo,
            train,
            tokenizer.pad_token_id,
            generator,
            float(rollout.temperature),
            train_policy=step >= warmup,
        )
        updated = time.time()
        if separate_engine:
            sync_rollout_weights(accelerator, backend, model)
            if step == start_step and check.get("prompts"):
                check_engine_logprobs(
                    accelerator,
                    backend,
                    model,
                    [row.prompt_ids for row in prompt_rows(rows, range(min(len(rows), int(check.prompts))))],
                    float(check.tolerance),
                    check.on_mismatch,
                )
        finished = time.time()
        done = step + 1
        if is_due(done, train.log_every, plan.total_steps):
            logger.log(
                done,
                **step_metrics(
                    accelerator,
                    rollouts,
                    scores,
                    per_dataset_stats(rollouts, scores),
                    experience_stats(experience),
                    totals,
                    PhaseTimes(generation_s=generated - started, scoring_s=scored - generated,
                               experience_s=experienced - scored, update_s=updated - experienced,
                               weight_sync_s=finished - updated),
                    lr=scheduler.get_last_lr()[0],
                    episodes=done * plan.effective_batch_size * samples,
                ),
            )
        if is_due(done, cfg.checkpoint.every_steps, plan.total_steps):
            save_checkpoint(accelerator, run_dir, done, cfg.checkpoint.keep, scheduler,
                            extra={"plan": plan_record})

    trend = quarter_trend(read_metrics(run_dir)) if accelerator.is_main_process else None
    if trend is not None:
        accelerator.print(trend.describe())
    # --- save ---
    save_final(accelerator, model, tokenizer, run_dir, part="policy")
    accelerator.print(f"saved {run_dir / 'final'}")
    release_final(accelerator, cfg, run_dir)
    accelerator.end_training()


def check_algorithm_options(algorithm: str, algo) -> None:
    """Fail before any model loads when an option names no known choice."""
    choices = {"loss_aggregation": LOSS_AGGREGATIONS, "kl_estimator": tuple(ESTIMATORS)}
    if algorithm == "grpo":
        choices.update(group_std=("unbiased", "population"), zero_spread_groups=("keep", "skip"))
    for key, allowed in choices.items():
        if algo.get(key) not in allowed:
            raise StageError(f"{algorithm}.{key} must be one of {', '.join(allowed)}, got {algo.get(key)!r}")


def rollout_plan(prompt_count: int, section: str, algo, train, world_size: int, seed: int) -> tuple[BatchPlan, int]:
    """(prompt plan: one step = one rollout batch, micro-batches accumulated per optimizer update).

    The run lasts `train.episodes` sampled responses (capped by `train.max_steps` rollout batches).
    `section` names the algorithm's config section, for messages.
    """
    prompts, samples = int(algo.prompts_per_rollout), int(algo.samples_per_prompt)
    minibatches, micro = int(algo.minibatches_per_rollout), int(train.per_device_batch_size)
    split_error = rollout_split_error(section, prompts, samples, minibatches, micro, world_size)
    if split_error:
        raise StageError(split_error)
    local = prompts // world_size * samples
    if prompt_count < prompts:
        raise StageError(f"{prompt_count} usable prompts are fewer than prompts_per_rollout={prompts}")
    wanted = max(1, int(train.episodes) // (prompts * samples))
    if train.max_steps is not None:
        wanted = min(wanted, int(train.max_steps))
    epochs = math.ceil(wanted / (prompt_count // prompts))
    plan = BatchPlan(prompt_count, prompts, prompts // world_size, world_size, epochs, seed, wanted)
    return plan, local // minibatches // micro


if __name__ == "__main__":
    entrypoint(main)
