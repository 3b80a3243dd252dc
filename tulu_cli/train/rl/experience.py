"""From scored rollouts to training targets: log-probs of the sampling policy and the reference,
values, per-token rewards and advantages (no gradients).

PPO (Tulu 3): per-token reward -beta * k1, plus the sequence reward at the last token; GAE; whitened
advantages. GRPO (Tulu 3.1): each sample's group-normalised reward as the advantage of every token
(0 in a group whose rewards are all equal); the KL term is added to the loss instead. Zero-spread
groups stay in the loss (`zero_spread_groups: keep`, Tulu 3.1: their KL term still counts) or get
weight 0 (`skip`).

When each rollout sample goes into exactly one optimizer update, the first after sampling (one epoch,
one minibatch), that update's forward runs on the sampling weights: the sampling policy's log-probs
are the update's own, detached (TRL's GRPOTrainer does the same). The policy forward is then left
out here and the update fills in the old log-probs, KL and entropy (`Experience.old_from_update`);
the ratio is exactly 1 in value and its gradient is unchanged. PPO's per-token reward needs the
KL before the advantages, so PPO leaves the policy forward out only at beta 0 (values are still
computed here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tulu_cli.train.logprobs import LabelledColumns, labelled_logprobs
from tulu_cli.train.rl.advantages import gae, group_advantages, whiten
from tulu_cli.train.rl.kl import kl_estimate
from tulu_cli.train.rl.sequences import (
    build_batch,
    length_mask,
    response_positions,
    split_responses,
    to_response_matrix,
)


@dataclass
class Experience:
    prompts: list[list[int]]
    responses: list[list[int]]
    mask: torch.Tensor  # [N, R] response tokens
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor  # [N] 1 for trained sequences, 0 for skipped ones
    values: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    kl: torch.Tensor | None = None  # [N, R] KL estimate of the sampling policy to the reference
    spread: torch.Tensor | None = None  # [N] GRPO: whether the sample's group has any reward spread
    # old_logprobs, kl and entropy are zeros until the update's forward fills them in (module docstring).
    old_from_update: bool = False


def old_logprobs_from_update(algorithm: str, algo_cfg) -> bool:
    """Whether the update can take its own log-probs as the sampling policy's (module docstring): one
    epoch of one minibatch (its micro-batches accumulate into one optimizer step, so every forward of
    it sees the sampling weights), and nothing before the update needs them (PPO: beta 0)."""
    one_update = int(algo_cfg.epochs_per_rollout) == 1 and int(algo_cfg.minibatches_per_rollout) == 1
    return one_update and (algorithm == "grpo" or float(algo_cfg.beta) == 0.0)


@torch.no_grad()
def response_outputs(
    model,
    prompts,
    responses,
    pad_id: int,
    packing: bool,
    device,
    with_entropy: bool = False,
    temperature: float = 1.0,
    with_policy: bool = True,
):
    """(log-probs, values or None, entropy or None) of the responses, each [sequences, longest response];
    `with_policy=False`: the value model alone runs, log-probs and entropy are None."""
    batch = build_batch(prompts, responses, pad_id, packing, device)
    inputs = (batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"))
    lengths = [len(r) for r in responses]
    if not with_policy:
        _, values = model(*inputs, with_policy=False)
        return None, to_response_matrix(values[:, :-1], response_positions(batch["labels"]), lengths), None
    kept = LabelledColumns.of(batch["labels"])
    logits, values = model(*inputs, logits_to_keep=kept.columns)
    return gather_response(kept, logits, values, lengths, with_entropy, temperature)


def gather_response(
    kept: LabelledColumns, logits, values, lengths: list[int], with_entropy: bool = False, temperature: float = 1.0
):
    """Per-response tensors from one forward pass (logits at `kept`'s positions). Logits are divided by
    the sampling temperature, so log-probs and entropy are those of the distribution the responses were
    sampled from."""
    logprobs, positions = kept.logprobs(logits, temperature)
    response_logprobs = to_response_matrix(logprobs, positions, lengths)
    response_values = to_response_matrix(values[:, :-1], positions, lengths) if values is not None else None
    entropy = response_entropy(kept, logits, lengths, temperature) if with_entropy else None
    return response_logprobs, response_values, entropy


@torch.no_grad()
def response_entropy(kept: LabelledColumns, logits, lengths: list[int], temperature: float = 1.0) -> torch.Tensor:
    return split_responses(kept.entropy(logits, temperature), lengths)


@torch.no_grad()
def reference_logprobs(
    reference, prompts, responses, pad_id: int, packing: bool, device, temperature: float = 1.0
) -> torch.Tensor:
    batch = build_batch(prompts, responses, pad_id, packing, device)
    logprobs, _ = labelled_logprobs(reference, batch, temperature=temperature)
    return to_response_matrix(logprobs, response_positions(batch["labels"]), [len(r) for r in responses])


@torch.no_grad()
def make_experience(
    model,
    reference,
    prompts: list[list[int]],
    responses: list[list[int]],
    rewards: list[float],
    algorithm: str,
    algo_cfg,
    pad_id: int,
    packing: bool,
    micro_batch: int,
    device,
    temperature: float = 1.0,
    old_from_update: bool | None = None,
) -> Experience:
    """`old_from_update`: None decides from the schedule (`old_logprobs_from_update`); False always
    runs the policy forward here."""
    if old_from_update is None:
        old_from_update = old_logprobs_from_update(algorithm, algo_cfg)
    lengths = [len(response) for response in responses]
    mask = length_mask(lengths, device)
    experience = Experience(
        prompts,
        responses,
        mask,
        old_logprobs=torch.zeros(mask.shape, device=device),
        ref_logprobs=torch.zeros(mask.shape, device=device),
        advantages=torch.zeros(mask.shape, device=device),
        weights=torch.ones(len(responses), device=device),
        values=torch.zeros(mask.shape, device=device) if algorithm == "ppo" else None,
        entropy=torch.zeros(mask.shape, device=device),
        kl=torch.zeros(mask.shape, device=device),
        old_from_update=old_from_update,
    )
    for start in range(0, len(responses), micro_batch):
        stop = min(start + micro_batch, len(responses))
        chunk_prompts, chunk_responses = prompts[start:stop], responses[start:stop]
        ref = reference_logprobs(reference, chunk_prompts, chunk_responses, pad_id, packing, device, temperature)
        experience.ref_logprobs[start:stop, : ref.shape[1]] = ref
        if not old_from_update:
            policy_outputs(model, experience, list(range(start, stop)), algo_cfg, pad_id, packing, device, temperature)
        elif algorithm == "ppo":
            _, values, _ = response_outputs(
                model, chunk_prompts, chunk_responses, pad_id, packing, device, with_policy=False
            )
            experience.values[start:stop, : values.shape[1]] = values
    scores = torch.tensor(rewards, dtype=torch.float32, device=device)
    if algorithm == "ppo":
        values = experience.values * mask
        token_rewards = -float(algo_cfg.beta) * experience.kl
        last = torch.tensor(lengths, device=device) - 1
        token_rewards[torch.arange(len(lengths), device=device), last] += scores
        advantages, returns = gae(token_rewards, values, mask, float(algo_cfg.gamma), float(algo_cfg.lam))
        if algo_cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        experience.advantages, experience.values, experience.returns = advantages, values, returns
    else:
        advantages, spread = group_advantages(
            scores, int(algo_cfg.samples_per_prompt), unbiased_std=algo_cfg.group_std == "unbiased"
        )
        experience.advantages = advantages[:, None] * mask
        experience.spread = spread
        if algo_cfg.zero_spread_groups == "skip":
            experience.weights = spread.float()
    return experience


@torch.no_grad()
def policy_outputs(
    model, experience: Experience, rows: list[int], algo_cfg, pad_id: int, packing: bool, device, temperature: float
) -> None:
    """One no-grad forward of some experience sequences: their sampling log-probs, KL and entropy (and,
    for PPO, values) written into `experience`."""
    logprobs, values, entropy = response_outputs(
        model,
        [experience.prompts[i] for i in rows],
        [experience.responses[i] for i in rows],
        pad_id,
        packing,
        device,
        with_entropy=True,
        temperature=temperature,
    )
    record_policy_outputs(experience, rows, logprobs, entropy, algo_cfg)
    if values is not None:
        experience.values[rows, : values.shape[1]] = values


def record_policy_outputs(
    experience: Experience, rows: list[int], logprobs: torch.Tensor, entropy: torch.Tensor, algo_cfg
) -> None:
    """Write the sampling policy's (detached) log-probs of `rows`, their entropy and their KL estimate
    to the reference (the `kl` metric; PPO's per-token reward) into `experience`."""
    width = logprobs.shape[1]
    logprobs = logprobs.detach()
    experience.old_logprobs[rows, :width] = logprobs
    experience.entropy[rows, :width] = entropy
    kl = kl_estimate(
        algo_cfg.kl_estimator, logprobs, experience.ref_logprobs[rows, :width], algo_cfg.get("kl_log_ratio_clamp")
    )
    experience.kl[rows, :width] = kl * experience.mask[rows, :width]


def experience_stats(experience: Experience) -> dict[str, float]:
    """Sums over this rank's sequences (so ranks can add them): KL per token, entropy, lengths."""
    mask = experience.mask
    return {
        "kl_sum": float((experience.kl * mask).sum()),
        "entropy_sum": float((experience.entropy * mask).sum()),
        "tokens": float(mask.sum()),
        "sequences": float(len(experience.responses)),
        "kept_sequences": float(experience.weights.sum()),
        "zero_spread_sequences": float((~experience.spread).sum()) if experience.spread is not None else 0.0,
        "value_sum": float((experience.values * mask).sum()) if experience.values is not None else 0.0,
    }
