"""RLVR's client of `vllm serve` (server mode) against a real HTTP server on 127.0.0.1 that speaks
vLLM 0.31's routes: the weight-transfer setup is checked before training, sampling fields the server
would fill from the model's generation config are sent explicitly, a refused prefix-cache reset is
retried, and a server that fails before receiving weights surfaces its error."""

from __future__ import annotations

import pytest

from tests.conftest import free_port
from tests.vllm_protocol_server import VLLMProtocolServer
from tulu_cli.generation import SamplingConfig
from tulu_cli.generation.vllm_server import NEUTRAL_SAMPLING, ServerError, VLLMServerBackend
from tulu_cli.train.rl.weight_sync import iter_full_parameters, parameter_metadata


@pytest.fixture
def server(tiny_model_factory, tiny_tokenizer):
    with VLLMProtocolServer(tiny_model_factory(seed=1), tiny_tokenizer) as running:
        yield running


def client(server, tokenizer, timeout_s: float = 60) -> VLLMServerBackend:
    return VLLMServerBackend([server.url], tokenizer, "127.0.0.1", free_port(), connect_timeout_s=30,
                             timeout_s=timeout_s)


def send_weights(backend: VLLMServerBackend, model) -> None:
    backend.update_weights(parameter_metadata(model), iter_full_parameters(model))


def test_a_server_without_a_weight_transfer_config_is_refused_before_training(server, tiny_tokenizer):
    server.weight_transfer_config = None
    with pytest.raises(ServerError, match="--weight-transfer-config"):
        client(server, tiny_tokenizer)


def test_an_nccl_server_needs_the_learner_on_a_cuda_device(server, tiny_tokenizer):
    server.weight_transfer_config = {"backend": "nccl"}
    with pytest.raises(ServerError, match="needs a CUDA device; it runs on cpu"):
        client(server, tiny_tokenizer)
    server.weight_transfer_config = {"backend": "nccl_m2n"}
    with pytest.raises(ServerError, match="weight-transfer backends"):
        client(server, tiny_tokenizer)


def test_sampling_fields_the_server_would_fill_are_sent_neutral(server, tiny_tokenizer):
    backend = client(server, tiny_tokenizer)
    prompt = tiny_tokenizer("What is 2 + 2?", add_special_tokens=False)["input_ids"]
    backend.generate([prompt], SamplingConfig(max_new_tokens=3, temperature=0.7, n=2, seed=5))
    backend.prompt_logprobs([prompt])
    sampled, scored = server.completion_requests
    for body in (sampled, scored):
        assert {key: body[key] for key in NEUTRAL_SAMPLING} == NEUTRAL_SAMPLING
    assert NEUTRAL_SAMPLING == {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                                "frequency_penalty": 0.0}
    assert (sampled["temperature"], sampled["n"], sampled["max_tokens"]) == (0.7, 2, 3)


def test_a_refused_prefix_cache_reset_is_retried_and_then_fails_clearly(server, tiny_tokenizer, tiny_model_factory):
    backend = client(server, tiny_tokenizer)
    learner = tiny_model_factory(seed=2)
    server.refused_prefix_cache_resets = 2
    send_weights(backend, learner)
    assert server.prefix_cache_resets == 1 and server.refused_prefix_cache_resets == 0
    assert server.loads == [name for name, _ in learner.named_parameters()]
    server.refused_prefix_cache_resets = 100
    with pytest.raises(ServerError, match="kept refusing to reset its prefix cache"):
        send_weights(backend, learner)


def test_a_server_failing_before_it_receives_raises_its_error(server, tiny_tokenizer, tiny_model_factory):
    # A short group timeout bounds the test if the failure arrives only after the first send began.
    backend = client(server, tiny_tokenizer, timeout_s=15)
    learner = tiny_model_factory(seed=2)
    send_weights(backend, learner)  # the group is up
    server.update_failure = "Weight transfer not configured"
    with pytest.raises(ServerError, match="Weight transfer not configured"):
        send_weights(backend, learner)


def test_each_prompt_is_its_own_request_with_its_own_seed_and_answers_keep_prompt_order(
        tiny_model_factory, tiny_tokenizer):
    from tulu_cli.generation.base import prompt_seeds
    from tulu_cli.generation.hf import HFBackend

    prompts = [tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
               for text in ("What is 2 + 2?", "Name a color.", "Count to three.", "Say hi.", "What is 5 - 1?")]
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, n=2, seed=9)
    with VLLMProtocolServer(tiny_model_factory(seed=1), tiny_tokenizer) as first, \
            VLLMProtocolServer(tiny_model_factory(seed=1), tiny_tokenizer) as second:
        backend = VLLMServerBackend([first.url, second.url], tiny_tokenizer, "127.0.0.1", free_port(),
                                    connect_timeout_s=30, timeout_s=60)
        completions = backend.generate(prompts, sampling)
        again = backend.generate(prompts, sampling)
        requests = first.completion_requests + second.completion_requests
    seeds = prompt_seeds(9, len(prompts))
    assert len(requests) == 2 * len(prompts) and sorted(r["seed"] for r in requests) == sorted(seeds * 2)
    # Blocks of prompts per server: 3 to the first, 2 to the second.
    assert len(first.completion_requests) == 6 and len(second.completion_requests) == 4
    # Each prompt's samples are what the same model draws for that prompt alone with its seed.
    alone = HFBackend(tiny_model_factory(seed=1), tiny_tokenizer, batch_size=8)
    for prompt, seed, samples in zip(prompts, seeds, completions, strict=True):
        expected = alone.generate([prompt], SamplingConfig(max_new_tokens=6, temperature=1.0, n=2, seed=seed))[0]
        assert [s.token_ids for s in samples] == [s.token_ids for s in expected]
    assert [[s.token_ids for s in row] for row in again] == [[s.token_ids for s in row] for row in completions]


def test_unseeded_or_greedy_sampling_sends_one_request_per_server_without_a_seed(tiny_model_factory, tiny_tokenizer):
    prompts = [tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
               for text in ("What is 2 + 2?", "Name a color.", "Count to three.")]
    with VLLMProtocolServer(tiny_model_factory(seed=1), tiny_tokenizer) as first, \
            VLLMProtocolServer(tiny_model_factory(seed=1), tiny_tokenizer) as second:
        backend = VLLMServerBackend([first.url, second.url], tiny_tokenizer, "127.0.0.1", free_port(),
                                    connect_timeout_s=30, timeout_s=60, seed_each_prompt=False)
        completions = backend.generate(prompts, SamplingConfig(max_new_tokens=4, temperature=1.0, n=3, seed=9))
        # Greedy decoding needs no seed either, whatever the setting.
        backend.seed_each_prompt = True
        backend.generate(prompts, SamplingConfig(max_new_tokens=4, temperature=0.0, seed=9))
        assert [len(r) for r in (first.completion_requests, second.completion_requests)] == [2, 2]
        assert all("seed" not in r for r in first.completion_requests + second.completion_requests)
        assert first.prompts_received == prompts[:2] * 2 and second.prompts_received == prompts[2:] * 2
    assert [len(samples) for samples in completions] == [3, 3, 3]
