"""The distributed runtime of a trainer: accelerate (DDP on CPU/GPU, DeepSpeed when launched with it)."""

from __future__ import annotations

import random
import sys

import numpy as np
import torch


def distributed_state():
    """The process's place in the job (rank, world size). Created before the Accelerator so data
    can be prepared first; honours ACCELERATE_USE_CPU like the Accelerator does, which turns a
    torchrun world on CPU into one gloo group instead of separate single-process worlds."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU")
    return PartialState(cpu=cpu, **deepspeed_backend(cpu))


def deepspeed_backend(cpu: bool) -> dict:
    """The process-group backend to name when DeepSpeed runs without an accelerator.

    accelerate leaves the backend unset on a machine with no GPU, lets DeepSpeed create the (gloo)
    group, and then, having recorded no backend, reports a world of one on every rank. Naming `gloo`
    makes it read the rank and world size of the group DeepSpeed joined.
    """
    import torch
    from accelerate.utils import parse_flag_from_env

    if cpu or not parse_flag_from_env("ACCELERATE_USE_DEEPSPEED") or torch.cuda.is_available():
        return {}
    return {"backend": "gloo"}


def make_accelerator(accumulation_steps: int, per_device_batch_size: int, max_grad_norm: float | None,
                     options: dict | None = None):
    """An Accelerator that accumulates `accumulation_steps` micro-batches per optimizer step (`options`:
    more Accelerator arguments, e.g. the trackers of `tracking.accelerator_options`).

    When launched with DeepSpeed, the batch values the DeepSpeed config leaves as "auto" are filled
    here, because no dataloader is passed through `prepare` for accelerate to infer them from.
    """
    from accelerate import Accelerator

    accelerator = Accelerator(gradient_accumulation_steps=accumulation_steps, **(options or {}))
    config = deepspeed_config()
    if config is not None:
        config["train_micro_batch_size_per_gpu"] = per_device_batch_size
        config["gradient_accumulation_steps"] = accumulation_steps
        config["train_batch_size"] = per_device_batch_size * accumulation_steps * accelerator.num_processes
        config["gradient_clipping"] = max_grad_norm if max_grad_norm else 0.0
    return accelerator


def deepspeed_config() -> dict | None:
    """The run's DeepSpeed config (its "auto" values filled once the Accelerator exists); None without DeepSpeed."""
    from accelerate.state import AcceleratorState

    plugin = AcceleratorState().deepspeed_plugin
    return None if plugin is None else plugin.deepspeed_config


def is_zero3() -> bool:
    """Whether parameters are partitioned across ranks (DeepSpeed ZeRO stage 3)."""
    config = deepspeed_config()
    return config is not None and config.get("zero_optimization", {}).get("stage") == 3


def report_partitioning(accelerator, model, name: str = "model") -> None:
    """Print, from every rank, how many parameter elements the rank holds against the model's size.

    Under ZeRO-3 (`zero3` counts the parameters it manages) a parameter's full size is `ds_numel`
    and the rank keeps only its partition (`ds_tensor`; `partitioned` counts the parameters of which
    the rank holds less than all); otherwise every rank holds every element.
    """
    count = sharded = partitioned = full = local = 0
    for param in model.parameters():
        count += 1
        if hasattr(param, "ds_numel"):
            sharded += 1
            full += param.ds_numel
            local += param.ds_tensor.numel()
            partitioned += param.ds_tensor.numel() < param.ds_numel
        else:
            full += param.numel()
            local += param.numel()
    print_whole_line(f"partitioning ({name}): rank={accelerator.process_index} world={accelerator.num_processes} "
                     f"params={count} zero3={sharded} partitioned={partitioned} full_numel={full} local_numel={local}")


def print_whole_line(text: str) -> None:
    """Print from one of several ranks that share the stage's output pipe: the text and its newline in
    one write, so that another rank's line cannot land between them."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def prepare_frozen(accelerator, model):
    """A frozen model for inference next to the trained one (a reference policy): on the device, or,
    under DeepSpeed, an inference engine with the training run's ZeRO stage, so a ZeRO-3 run shards
    it too and every forward pass gathers one module at a time."""
    model.eval()
    model.requires_grad_(False)
    config = deepspeed_config()
    if config is None:
        return model.to(accelerator.device)
    import deepspeed

    zero = config.get("zero_optimization", {})
    threshold = zero.get("stage3_param_persistence_threshold")
    inference_config = {
        "train_micro_batch_size_per_gpu": config["train_micro_batch_size_per_gpu"],
        "bf16": config.get("bf16", {"enabled": False}),
        "fp16": config.get("fp16", {"enabled": False}),
        "zero_optimization": {
            "stage": 3 if zero.get("stage") == 3 else 0,
            "stage3_param_persistence_threshold": threshold if isinstance(threshold, int) else 10_000,
        },
    }
    engine, *_ = deepspeed.initialize(model=model, config=inference_config)
    engine.eval()
    return engine


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def true_on_every_rank(accelerator, condition: bool) -> bool:
    """Whether `condition` holds on every rank; every rank gets the same answer. Branch on this, not on a
    rank's own view, before a collective: a rank that sees a file another rank has just written would
    otherwise skip the collective the others wait in."""
    return all_reduce_sum(accelerator, bool(condition)) == accelerator.num_processes


def main_process_number(accelerator, value: int) -> int:
    """The main process's `value`, on every rank (one all-reduce): for what the main process decides and
    every rank must follow, e.g. which checkpoint to resume from."""
    return int(all_reduce_sum(accelerator, value if accelerator.is_main_process else 0))


def all_reduce_sum(accelerator, value: float) -> float:
    """Sum a number over all ranks (every rank gets the total)."""
    if accelerator.num_processes == 1:
        return float(value)
    tensor = torch.tensor([float(value)], device=accelerator.device, dtype=torch.float64)
    return float(accelerator.reduce(tensor, reduction="sum").item())
