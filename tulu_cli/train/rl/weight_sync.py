"""Sending the learner's weights to the generation engine, one full parameter at a time.

Under ZeRO-3 each rank holds a shard of every parameter; a parameter is gathered, handed over and
released before the next one is gathered (`deepspeed.zero.GatheredParameters([param])`), so no rank
ever holds more than one full parameter beyond its shard, as in the reference PPO/GRPO code and TRL's
`VLLMGeneration._iter_named_params`. Gathering is a collective: every rank walks the parameters in
the same order, also the ranks that send nothing (server mode: only the main process talks to the
servers). The receiving side is anything with vLLM's model interface,
`load_weights(Iterable[tuple[name, tensor]])`, or a backend's `update_weights(metadata, params)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParamMeta:
    """What a receiver must allocate before a parameter arrives: vLLM's weight-transfer update info
    carries exactly these (`names`, `dtype_names` like "bfloat16", `shapes`)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def dtype_name(tensor: torch.Tensor) -> str:
    """A dtype as the weight-transfer routes name it (`torch.bfloat16` -> "bfloat16")."""
    return str(tensor.dtype).removeprefix("torch.")


def _is_partitioned(param: torch.nn.Parameter) -> bool:
    return hasattr(param, "ds_id")


def parameter_metadata(module: torch.nn.Module) -> list[ParamMeta]:
    """Name, dtype and full shape of every parameter, read without gathering (`ds_shape` under ZeRO-3)."""
    return [
        ParamMeta(
            name,
            dtype_name(param),
            tuple(param.ds_shape if _is_partitioned(param) else param.shape),
        )
        for name, param in module.named_parameters()
    ]


def iter_full_parameters(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for each parameter in `named_parameters()` order (tied weights once).

    A ZeRO-3 parameter is full only while the consumer handles it: take what you need before asking
    for the next one. Every rank must exhaust this iterator (the gathers are collectives).
    """
    for name, param in module.named_parameters():
        if _is_partitioned(param):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                yield name, param.data
        else:
            yield name, param.data


def load_parameter_by_parameter(target, named_params: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Feed `target.load_weights` (vLLM's model interface) one parameter per call; returns the count."""
    count = 0
    for name, tensor in named_params:
        target.load_weights([(name, tensor)])
        count += 1
    return count


def sync_rollout_weights(accelerator, backend, model) -> None:
    """Send the updated policy to the generation engine(s): every rank walks the parameters (gathering
    each under ZeRO-3); a rank that owns an engine or a server connection hands each one over."""
    from tulu_cli.train.lora import is_lora_model, merged_tensors

    policy = accelerator.unwrap_model(model).policy
    if is_lora_model(policy):
        # The engine holds the plain model: it gets the weights with the adapters merged in (LoRA never
        # runs under ZeRO-3, so nothing is gathered). The metadata pass merges once more, to size them.
        metadata = [ParamMeta(name, dtype_name(tensor), tuple(tensor.shape))
                    for name, tensor in merged_tensors(policy)]
        params = merged_tensors(policy)
    else:
        metadata = parameter_metadata(policy)
        params = iter_full_parameters(policy)
    if backend is not None:
        backend.update_weights(metadata, params)
    # Whatever the backend left unread is still gathered here, so no rank waits on another.
    for _ in params:
        pass
    accelerator.wait_for_everyone()
