"""Per-prompt seeds for engines that seed each request (vLLM): vLLM samples a request's `n` children
with seeds `s .. s + n - 1`, so prompts of one call, consecutive calls and engines of one job must
get seeds whose windows never meet, and the same call must get the same seeds again."""

from __future__ import annotations

from tulu_cli.generation import SamplingConfig
from tulu_cli.generation.base import prompt_seeds
from tulu_cli.generation.vllm_backend import per_prompt_sampling

SAMPLES_PER_PROMPT = 64


def test_child_seed_windows_of_prompts_calls_and_engines_never_overlap():
    seeds = [seed for call in range(200) for stream in range(4) for seed in prompt_seeds(call, 128, stream)]
    assert len(seeds) == 200 * 4 * 128
    ordered = sorted(seeds)
    # Brute force over neighbours: every window [s, s + n) is disjoint from the next one.
    assert all(later - earlier >= SAMPLES_PER_PROMPT for earlier, later in zip(ordered, ordered[1:], strict=False))
    assert all(0 <= seed and seed + SAMPLES_PER_PROMPT < 2**63 for seed in seeds)


def test_seeds_are_reproducible_and_a_prefix_does_not_depend_on_the_count():
    assert prompt_seeds(7, 10) == prompt_seeds(7, 10)
    assert prompt_seeds(7, 10)[:4] == prompt_seeds(7, 4)
    assert prompt_seeds(7, 10) != prompt_seeds(8, 10)
    assert prompt_seeds(7, 10, stream=1) != prompt_seeds(7, 10)
    assert prompt_seeds(-3, 2) == prompt_seeds(-3, 2)


def test_the_in_process_engine_gets_one_sampling_params_per_prompt_each_with_its_seed():
    sampling = SamplingConfig(max_new_tokens=12, temperature=0.7, top_p=0.9, n=4, seed=11)
    arguments = per_prompt_sampling(sampling, 3, stream=2)
    assert [a["seed"] for a in arguments] == prompt_seeds(11, 3, 2)
    for a in arguments:
        assert {k: v for k, v in a.items() if k != "seed"} == {
            "n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 12, "skip_special_tokens": True}


def test_unseeded_or_greedy_sampling_leaves_the_seed_to_the_engine():
    arguments = per_prompt_sampling(SamplingConfig(n=2, seed=11), 3, seeded=False)
    assert [a["seed"] for a in arguments] == [None, None, None]
    greedy = per_prompt_sampling(SamplingConfig(temperature=0.0, seed=11), 2)
    assert [a["seed"] for a in greedy] == [None, None]
