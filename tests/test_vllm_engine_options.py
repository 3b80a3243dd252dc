"""The in-process engine's constructor arguments across the admitted vLLM releases. vLLM does not run
here, so the classes below copy the keyword arguments of `vllm.LLM.__init__` that matter from each
release's `vllm/entrypoints/llm.py`: 0.32 has no `enable_extensible_kv_cache`, 0.34 has it (default
None, i.e. on where CUDA supports it)."""

from __future__ import annotations

import pytest

from tulu_cli.generation.vllm_backend import engine_options, engine_seed


class LLMOf032:
    def __init__(self, model: str, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 seed: int = 0, enable_sleep_mode: bool = False, **kwargs):
        pass


class LLMOf034:
    def __init__(self, model: str, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float | None = None,
                 seed: int = 0, enable_sleep_mode: bool = False, enable_extensible_kv_cache: bool | None = None,
                 **kwargs):
        pass


def test_colocated_engine_turns_off_the_extensible_kv_cache_only_where_vllm_has_it():
    assert engine_options(LLMOf032, colocated=True) == {"distributed_executor_backend": "external_launcher"}
    assert engine_options(LLMOf034, colocated=True) == {"distributed_executor_backend": "external_launcher",
                                                        "enable_extensible_kv_cache": False}


@pytest.mark.parametrize("llm_class", [LLMOf032, LLMOf034])
def test_an_engine_of_its_own_keeps_vllm_defaults(llm_class):
    # Eval and preference sampling own the GPU: the extensible cache's memory cap costs nothing there.
    assert engine_options(llm_class, colocated=False) == {}


def test_engine_seed_stays_inside_the_range_vllm_accepts():
    assert engine_seed(1234) == 1234
    assert engine_seed(2**32 - 1) == 2**32 - 1
    assert engine_seed(2**32 + 5) == 5
    assert engine_seed(-1) == 2**32 - 1
