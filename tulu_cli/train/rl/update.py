"""The optimisation phase of one rollout batch: `epochs` passes, each split into `minibatches`
optimizer updates, each accumulated over micro-batches of `per_device_batch_size` sequences.

Per-token loss: PPO: clipped policy loss + value_coef * clipped value loss; GRPO: clipped policy loss +
beta * KL. `loss_aggregation` reduces it over the trained (weight 1) response tokens of a minibatch:
- `micro_batch_mean`: each micro-batch's token mean, averaged over micro-batches and ranks: the
  reference code's `masked_mean` per micro-batch, averaged by DeepSpeed's gradient accumulation and
  data parallelism (open-instruct ppo_vllm_thread_ray_gtrl.py, Dec 2024, and
  grpo_vllm_thread_ray_gtrl.py, Feb 2025);
- `token_mean`: one mean over every trained token of the minibatch, counted across ranks and
  micro-batches (every token weighs the same; TRL's `bnpo` over the whole minibatch);
- `sequence_mean`: each sequence's token mean, averaged over the minibatch's trained sequences (every
  sequence weighs the same; the GRPO paper's form, TRL's `grpo` loss type).

With one epoch of one minibatch, an experience may leave its old log-probs to the update
(`Experience.old_from_update`): each micro-batch's forward, on the sampling weights, records them.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from tulu_cli.train.logprobs import LabelledColumns
from tulu_cli.train.loop import backward_and_step
from tulu_cli.train.rl.experience import (
    Experience,
    gather_response,
    policy_outputs,
    record_policy_outputs,
    response_entropy,
)
from tulu_cli.train.rl.kl import kl_estimate
from tulu_cli.train.rl.losses import clipped_policy_loss, clipped_value_loss
from tulu_cli.train.rl.sequences import build_batch
from tulu_cli.train.runtime import all_reduce_sum
from tulu_cli.train.sft import scaled_loss

LOSS_AGGREGATIONS = ("micro_batch_mean", "token_mean", "sequence_mean")


def update_policy(
    accelerator,
    model,
    optimizer,
    scheduler,
    experience: Experience,
    algorithm: str,
    algo_cfg,
    train_cfg,
    pad_id: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    train_policy: bool = True,
) -> dict[str, float]:
    """Run the updates; return sums over trained tokens (loss terms, clipped tokens) and update counts.

    `train_policy=False` (PPO's value warm-up) trains the value model alone: the policy term is kept
    in the graph at weight 0, so every parameter still takes part in the backward pass (DDP, ZeRO)
    and the policy's zero gradients leave it unchanged (AdamW with weight decay 0, as every RLVR
    preset has).
    """
    count = len(experience.responses)
    epochs, minibatches = int(algo_cfg.epochs_per_rollout), int(algo_cfg.minibatches_per_rollout)
    if experience.old_from_update and epochs * minibatches != 1:
        raise ValueError("old log-probs can come from the update only with one epoch of one minibatch")
    minibatch = count // minibatches
    micro = int(train_cfg.per_device_batch_size)
    accumulation = minibatch // micro
    aggregation = algo_cfg.loss_aggregation
    if aggregation not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_aggregation must be one of {', '.join(LOSS_AGGREGATIONS)}, got {aggregation!r}")
    totals: dict[str, float] = defaultdict(float)
    totals["policy_trained"] = float(train_policy)
    # Every row reports its algorithm's loss terms, even when all updates of a batch were skipped.
    for key in ("value_loss", "value_clipped_tokens") if algorithm == "ppo" else ("kl_loss",):
        totals[key] = 0.0
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, count, minibatch):
            indices = order[start : start + minibatch]
            lengths = experience.mask[indices].sum(1) * experience.weights[indices]
            global_tokens, global_sequences = (
                all_reduce_sum(accelerator, float(value)) for value in (lengths.sum(), (lengths > 0).sum())
            )
            if global_tokens == 0:
                # Nothing to learn from (every GRPO group was skipped): no update, same schedule.
                if experience.old_from_update:
                    # No update forward either: the KL and entropy metrics need one.
                    for offset in range(0, minibatch, micro):
                        policy_outputs(
                            model,
                            experience,
                            indices[offset : offset + micro],
                            algo_cfg,
                            pad_id,
                            train_cfg.packing,
                            accelerator.device,
                            temperature,
                        )
                scheduler.step()
                totals["skipped_updates"] += 1
                continue
            denominator = minibatch_denominator(
                aggregation, accumulation * accelerator.num_processes, global_tokens, global_sequences
            )
            for offset in range(0, minibatch, micro):
                chunk = indices[offset : offset + micro]
                with accelerator.accumulate(model):
                    terms = micro_batch_loss(
                        model,
                        experience,
                        chunk,
                        algorithm,
                        algo_cfg,
                        train_cfg.packing,
                        pad_id,
                        accelerator.device,
                        temperature,
                        aggregation,
                        1.0 if train_policy else 0.0,
                    )
                    loss = scaled_loss(
                        terms.pop("aggregated"), "mean", denominator, accelerator.num_processes, accumulation
                    )
                    grad_norm = backward_and_step(
                        accelerator, model, optimizer, loss, train_cfg.max_grad_norm
                    )
                if grad_norm is not None:
                    totals["grad_norm"] += float(grad_norm)
                for key, value in terms.items():
                    totals[key] += float(value.detach())
            scheduler.step()
            totals["updates"] += 1
    return dict(totals)


def micro_batch_loss(
    model,
    experience: Experience,
    indices: list[int],
    algorithm: str,
    algo_cfg,
    packing: bool,
    pad_id: int,
    device,
    temperature: float = 1.0,
    aggregation: str = "token_mean",
    policy_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Loss terms of some experience sequences, summed over their trained tokens (for the metrics), and
    `aggregated`: the micro-batch's share of the minibatch loss under `aggregation`, before the
    minibatch's denominator (it carries the gradient)."""
    prompts = [experience.prompts[i] for i in indices]
    responses = [experience.responses[i] for i in indices]
    batch = build_batch(prompts, responses, pad_id, packing, device)
    kept = LabelledColumns.of(batch["labels"])
    logits, values = model(batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"),
                           logits_to_keep=kept.columns)
    lengths = [len(r) for r in responses]
    logprobs, new_values, _ = gather_response(kept, logits, values, lengths, temperature=temperature)
    width = logprobs.shape[1]
    rows = torch.tensor(indices, device=device)
    if experience.old_from_update:
        # This forward runs on the sampling weights: its log-probs are the old ones (ratio 1).
        entropy = response_entropy(kept, logits, lengths, temperature)
        record_policy_outputs(experience, indices, logprobs, entropy, algo_cfg)
    weight = (experience.mask[rows, :width] * experience.weights[rows, None]).float()
    policy_loss, clipped = clipped_policy_loss(
        logprobs,
        experience.old_logprobs[rows, :width],
        experience.advantages[rows, :width],
        float(algo_cfg.clip),
    )
    terms = {
        "policy_loss": (policy_loss * weight).sum(),
        "clipped_tokens": (clipped * weight).sum(),
        "trained_tokens": weight.sum(),
    }
    per_token = policy_weight * policy_loss
    if algorithm == "ppo":
        value_loss, value_clipped = clipped_value_loss(
            new_values,
            experience.values[rows, :width],
            experience.returns[rows, :width],
            float(algo_cfg.value_clip),
        )
        terms["value_loss"] = (value_loss * weight).sum()
        terms["value_clipped_tokens"] = (value_clipped * weight).sum()
        per_token = per_token + float(algo_cfg.value_coef) * value_loss
    else:
        kl = kl_estimate(
            algo_cfg.kl_estimator,
            logprobs,
            experience.ref_logprobs[rows, :width],
            algo_cfg.get("kl_log_ratio_clamp"),
        )
        terms["kl_loss"] = (kl * weight).sum()
        per_token = per_token + float(algo_cfg.beta) * kl
    terms["loss"] = (per_token * weight).sum()
    aggregated = aggregate(per_token, weight, aggregation)
    return {"aggregated": aggregated, **{key: value.detach() for key, value in terms.items()}}


def minibatch_denominator(aggregation: str, micro_batches: int, tokens: float, sequences: float) -> float:
    """What the sum of a minibatch's `aggregate` values (over all its micro-batches and ranks) is
    divided by to give the minibatch loss."""
    return {"micro_batch_mean": float(micro_batches), "token_mean": tokens, "sequence_mean": sequences}[
        aggregation
    ]


def aggregate(per_token: torch.Tensor, weight: torch.Tensor, aggregation: str) -> torch.Tensor:
    """A micro-batch's [sequences, positions] loss reduced as `aggregation` needs it (module docstring)."""
    weighted = per_token * weight
    if aggregation == "micro_batch_mean":
        return weighted.sum() / weight.sum().clamp(min=1)
    if aggregation == "token_mean":
        return weighted.sum()
    if aggregation == "sequence_mean":
        return (weighted.sum(1) / weight.sum(1).clamp(min=1)).sum()
    raise ValueError(f"loss_aggregation must be one of {', '.join(LOSS_AGGREGATIONS)}, got {aggregation!r}")
