"""Rollouts: prompts -> sampled responses through the generation backend, in prompt-major order
(the `n` samples of a prompt are consecutive, which GRPO's groups rely on)."""

from __future__ import annotations

from dataclasses import dataclass

from tulu_cli.generation import GenerationBackend, SamplingConfig
from tulu_cli.train.rl.data import PromptRow


@dataclass
class Rollout:
    row: PromptRow
    response_ids: list[int]
    text: str
    # False when the response hit the length limit without an eos.
    finished: bool


def generate_rollouts(
    backend: GenerationBackend, rows: list[PromptRow], sampling: SamplingConfig
) -> list[Rollout]:
    # Token ids, exactly those the learner scores (an engine given text would add its own BOS).
    completions = backend.generate([row.prompt_ids for row in rows], sampling)
    rollouts = []
    for row, samples in zip(rows, completions, strict=True):
        for sample in samples:
            rollouts.append(Rollout(row, list(sample.token_ids), sample.text, sample.finished))
    return rollouts


def samples_on_every_rank(gen_cfg) -> bool:
    """Colocated vLLM engines sample each rank's own prompts; otherwise the main process samples all."""
    return gen_cfg.backend == "vllm" and gen_cfg.vllm.mode == "colocate"


def build_rollout_backend(
    gen_cfg, accelerator, model, tokenizer, model_path: str, max_model_len: int, seed: int = 0
) -> GenerationBackend | None:
    """This rank's generation backend, or None where this rank does not generate.

    `hf`: the main process samples with the learner's own policy; when the policy is sharded (ZeRO-3)
    every rank does, in lockstep (`synced_gpus`), since each forward pass needs every rank's part of
    the weights. `vllm` + `colocate`: an engine on
    every rank (one per `tensor_parallel_size` ranks), loaded from `model_path` and kept current by
    `weight_sync.sync_rollout_weights`. `vllm` + `server`: the main process talks to `vllm serve`
    processes on other GPUs and pushes the weights to them.
    """
    from tulu_cli.generation import build_backend
    from tulu_cli.train.runtime import is_zero3

    if gen_cfg.backend == "hf":
        sharded = is_zero3()
        if not accelerator.is_main_process and not sharded:
            return None
        return build_backend(
            "hf",
            model=accelerator.unwrap_model(model).policy,
            tokenizer=tokenizer,
            batch_size=gen_cfg.batch_size,
            synced_gpus=sharded,
        )
    if gen_cfg.backend != "vllm":
        raise ValueError(f"generation.backend must be hf or vllm, got {gen_cfg.backend!r}")
    vllm_cfg = gen_cfg.vllm
    if vllm_cfg.mode == "server":
        if not accelerator.is_main_process:
            return None
        from tulu_cli.generation.vllm_server import VLLMServerBackend

        return VLLMServerBackend(
            list(vllm_cfg.servers or []),
            tokenizer,
            vllm_cfg.group_address,
            vllm_cfg.group_port,
            device=accelerator.device,
            timeout_s=float(vllm_cfg.timeout_s),
            connect_timeout_s=float(vllm_cfg.connect_timeout_s),
            tensor_parallel_size=int(vllm_cfg.server_tensor_parallel_size),
            seed_each_prompt=bool(vllm_cfg.get("seed_each_prompt", True)),
        )
    if vllm_cfg.mode != "colocate":
        raise ValueError(f"generation.vllm.mode must be colocate or server, got {vllm_cfg.mode!r}")
    return build_colocated_engine(vllm_cfg, accelerator, tokenizer, model_path, max_model_len, seed)


def build_colocated_engine(vllm_cfg, accelerator, tokenizer, model_path: str, max_model_len: int, seed: int):
    """An engine on this rank inside the training world (vLLM's external launcher, as TRL's colocate
    mode): `tensor_parallel_size` consecutive ranks share one engine and run the same prompts."""
    import os

    from tulu_cli.generation.vllm_backend import VLLMBackend

    tp = int(vllm_cfg.tensor_parallel_size)
    if accelerator.num_processes % tp:
        raise ValueError(f"generation.vllm.tensor_parallel_size={tp} must divide the {accelerator.num_processes} ranks")
    tp_group = None
    if tp > 1:
        import torch.distributed as dist

        tp_group, _ = dist.new_subgroups_by_enumeration(
            [list(range(start, start + tp)) for start in range(0, accelerator.num_processes, tp)]
        )
    # The external launcher reads the world from the environment (torchrun sets it; accelerate too).
    os.environ.setdefault("RANK", str(accelerator.process_index))
    os.environ.setdefault("LOCAL_RANK", str(accelerator.local_process_index))
    os.environ.setdefault("WORLD_SIZE", str(accelerator.num_processes))
    backend = VLLMBackend(
        model_path,
        tokenizer=tokenizer,
        tensor_parallel_size=tp,
        gpu_memory_utilization=float(vllm_cfg.gpu_memory_utilization),
        dtype=vllm_cfg.dtype,
        enable_prefix_caching=bool(vllm_cfg.enable_prefix_caching),
        enable_sleep_mode=bool(vllm_cfg.sleep_level),
        sleep_level=int(vllm_cfg.sleep_level or 0),
        max_model_len=int(vllm_cfg.max_model_len or max_model_len),
        seed=seed + accelerator.process_index // tp,
        seed_each_prompt=bool(vllm_cfg.get("seed_each_prompt", True)),
        colocated=True,
        tp_group=tp_group,
    )
    accelerator.wait_for_everyone()
    return backend


def rollouts_for_all_ranks(
    accelerator,
    backend: GenerationBackend | None,
    rows_per_rank: list[list[PromptRow]],
    sampling: SamplingConfig,
    every_rank: bool = False,
) -> list[Rollout]:
    """This rank's rollouts: sampled here (`every_rank`: colocated engines), or by the main process for
    every rank's prompts in one call and scattered. A sharded HF policy (`synced_gpus`) samples the
    whole batch on every rank in lockstep, with the run's seed, and each rank keeps its share: the same
    samples as the main process would draw, whatever the number of ranks."""
    if every_rank or accelerator.num_processes == 1:
        return generate_rollouts(backend, rows_per_rank[accelerator.process_index], sampling)
    if getattr(backend, "synced_gpus", False):
        flat = generate_rollouts(backend, [row for rows in rows_per_rank for row in rows], sampling)
        start = sum(len(rows) for rows in rows_per_rank[: accelerator.process_index]) * sampling.n
        return flat[start : start + len(rows_per_rank[accelerator.process_index]) * sampling.n]
    from accelerate.utils import broadcast_object_list

    shared: list = [None]
    if accelerator.is_main_process:
        flat = generate_rollouts(backend, [row for rows in rows_per_rank for row in rows], sampling)
        per_rank, start = [], 0
        for rows in rows_per_rank:
            count = len(rows) * sampling.n
            per_rank.append([(r.response_ids, r.text, r.finished) for r in flat[start : start + count]])
            start += count
        shared = [per_rank]
    broadcast_object_list(shared, from_process=0)
    mine = shared[0][accelerator.process_index]
    rows = [row for row in rows_per_rank[accelerator.process_index] for _ in range(sampling.n)]
    return [Rollout(row, ids, text, finished) for row, (ids, text, finished) in zip(rows, mine, strict=True)]
