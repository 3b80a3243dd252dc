"""vLLM engine inside this process (GPU nodes): plain generation (eval, preference data) and RLVR's
`colocate` mode, where every training rank owns an engine that shares its GPU with training.

Written against vLLM 0.31 (the `vllm` extra pins the range whose source was read: 0.30, 0.32, 0.33
and 0.34 make the same calls the same way) and imported only when this backend is built. The API
relied on, all of `vllm.entrypoints.llm.LLM` unless named otherwise:
- `LLM(model, tensor_parallel_size, gpu_memory_utilization, dtype, enable_prefix_caching,
  enable_sleep_mode, max_model_len, seed, distributed_executor_backend="external_launcher")`
  (`seed` in [0, 2**32) from 0.34 on, `vllm/config/model.py`): with
  the external launcher every torchrun/accelerate rank builds its own engine inside the existing
  torch.distributed world, `tensor_parallel_size` consecutive ranks forming one engine
  (`vllm.v1.executor.uniproc_executor.ExecutorWithExternalLauncher`; the same setting as TRL's
  colocate mode, `trl/generation/vllm_generation.py`);
- `LLM.generate([vllm.inputs.TokensPrompt(prompt_token_ids=...)], [vllm.SamplingParams(...), ...])`: token
  ids go in unchanged, so no BOS is added to what the learner scores; a list of sampling params is
  paired with the prompts one by one, which gives every prompt its own seed; `SamplingParams(prompt_logprobs=0)`
  gives each prompt token's log-prob (`RequestOutput.prompt_logprobs`, None at position 0);
- `LLM.sleep(level)` / `LLM.wake_up(tags=["weights"])` / `LLM.wake_up(tags=["kv_cache"])`: level 2
  frees weights and KV cache while the learner trains; weights are reloaded from the learner anyway;
- `llm.llm_engine.model_executor.driver_worker.model_runner.get_model().load_weights([(name, tensor)])`:
  the engine's own model (the in-process V1 engine the external launcher forces,
  `vllm.v1.engine.llm_engine.LLMEngine.model_executor`), which takes Hugging Face parameter names
  and shards each full tensor for its tensor-parallel rank;
- `LLM.reset_prefix_cache() -> bool` after every weight load while the KV cache is awake, so no cached
  prefix of the old policy is reused (`sleep` at level 1 or 2 discards the cache, prefixes included);
- `LLM(enable_extensible_kv_cache=False)` in colocate mode, where vLLM has the argument (0.34): its
  extensible KV cache, on by default on CUDA, caps torch's caching allocator for the whole process
  after warm-up (`vllm/v1/worker/extensible_kv_cache.py`, `set_torch_memory_limit`, through
  `torch.cuda.set_per_process_memory_fraction`) and lifts the cap only inside vLLM's own weight
  updates. Colocated, that process is also the learner, which would be held under the cap while the
  engine sleeps and so could not use the KV cache's memory for training.
"""

from __future__ import annotations

import inspect

from tulu_cli.generation.base import Completion, Prompts, SamplingConfig, prompt_token_ids, request_seeds


def import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise RuntimeError(
            "generation.backend=vllm needs vLLM on a GPU machine: pip install 'tulu-cli[vllm]' "
            "(on CPU use generation.backend=hf)"
        ) from exc
    return vllm


def engine_seed(seed: int) -> int:
    """The engine's own seed, inside the range vLLM 0.34 accepts ([0, 2**32))."""
    return seed % 2**32


def engine_options(llm_class, colocated: bool) -> dict:
    """The `LLM(...)` arguments that depend on the mode and on what this vLLM's `LLM` accepts: the
    external launcher when colocated, and there no extensible KV cache where vLLM has one (0.34)."""
    if not colocated:
        return {}
    options = {"distributed_executor_backend": "external_launcher"}
    if "enable_extensible_kv_cache" in inspect.signature(llm_class).parameters:
        options["enable_extensible_kv_cache"] = False
    return options


def per_prompt_sampling(sampling: SamplingConfig, count: int, stream: int = 0, seeded: bool = True) -> list[dict]:
    """`SamplingParams` arguments for each of `count` prompts: each with its own seed (`prompt_seeds`),
    or, unseeded or greedy, none (the engine's own generator, vLLM's batched sampling path)."""
    shared = {"n": sampling.n, "temperature": sampling.temperature, "top_p": sampling.top_p,
              "max_tokens": sampling.max_new_tokens, "skip_special_tokens": True}
    seeds = request_seeds(sampling, count, stream, seeded) or [None] * count
    return [{**shared, "seed": seed} for seed in seeds]


def sampling_params(sampling: SamplingConfig, count: int, stream: int = 0, seeded: bool = True) -> list:
    from vllm import SamplingParams

    return [SamplingParams(**arguments) for arguments in per_prompt_sampling(sampling, count, stream, seeded)]


def completions_of(output) -> list[Completion]:
    """A `vllm.RequestOutput`'s samples; `finish_reason == "stop"` means it ended on eos (its id is kept)."""
    return [Completion(text=choice.text, token_ids=list(choice.token_ids), finished=choice.finish_reason == "stop")
            for choice in output.outputs]


class VLLMBackend:
    """One engine in this process. With `colocated=True` it joins the training job's world (one engine
    per `tensor_parallel_size` ranks) and `generate` must be called by every rank."""

    def __init__(self, model_path: str | None, tokenizer=None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, dtype: str = "bfloat16", enable_prefix_caching: bool = True,
                 enable_sleep_mode: bool = False, sleep_level: int = 2, max_model_len: int | None = None,
                 seed: int = 0, colocated: bool = False, tp_group=None, seed_each_prompt: bool = True):
        vllm = import_vllm()
        if not model_path:
            raise ValueError("generation.backend=vllm needs a model path to load")
        self.llm = vllm.LLM(model=model_path, tokenizer=model_path, tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                            enable_prefix_caching=enable_prefix_caching, enable_sleep_mode=enable_sleep_mode,
                            max_model_len=max_model_len, seed=engine_seed(seed),
                            **engine_options(vllm.LLM, colocated))
        self.tokenizer = tokenizer or self.llm.get_tokenizer()
        # Engines of one training job differ in this seed and sample different prompts in one call.
        self.seed = seed
        self.seed_each_prompt = seed_each_prompt
        self.sleep_level = sleep_level if enable_sleep_mode else 0
        self.tp_group = tp_group
        # Memory the engine released (`sleep`) and has not taken back yet: "weights", "kv_cache".
        self.sleeping: set[str] = set()
        # Sleep level 2 discards the weights: sampling after it needs a weight load first.
        self.weights_lost = False

    def generate(self, prompts: Prompts, sampling: SamplingConfig) -> list[list[Completion]]:
        from vllm.inputs import TokensPrompt

        ids = prompt_token_ids(prompts, self.tokenizer)
        group_ids, mine = gather_in_group(ids, self.tp_group)
        self._wake()
        # One `SamplingParams` per prompt (`LLM.generate` pairs a list with the prompts one by one).
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in group_ids],
                                    sampling_params(sampling, len(group_ids), self.seed, self.seed_each_prompt),
                                    use_tqdm=False)
        self._sleep()
        return [completions_of(output) for output in outputs][mine]

    def prompt_logprobs(self, prompts: list[list[int]]) -> list[list[float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._wake()
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                                    SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        # Left awake: the check runs between a weight load and the next sampling pass, which sleeps.
        return [[entry[token].logprob for token, entry in zip(ids[1:], output.prompt_logprobs[1:], strict=True)]
                for ids, output in zip(prompts, outputs, strict=True)]

    def update_weights(self, metadata, named_params) -> None:
        from tulu_cli.train.rl.weight_sync import load_parameter_by_parameter

        if "weights" in self.sleeping:
            self.llm.wake_up(tags=["weights"])
            self.sleeping.discard("weights")
        load_parameter_by_parameter(self.engine_model(), named_params)
        self.weights_lost = False
        # A sleeping KV cache was discarded with everything cached in it; an awake one is reset, which
        # vLLM refuses (returns False) while blocks are still held.
        if "kv_cache" not in self.sleeping and not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight load (blocks still held): "
                               "prefixes cached under the old weights could be reused")

    def engine_model(self):
        executor = getattr(self.llm.llm_engine, "model_executor", None)
        if executor is None:
            raise RuntimeError("weights can be loaded only into an engine running in this process "
                               "(colocate mode, external launcher)")
        return executor.driver_worker.model_runner.get_model()

    def _wake(self) -> None:
        if self.weights_lost:
            raise RuntimeError("the vLLM engine slept at level 2 and lost its weights: load weights before sampling")
        if self.sleeping:
            self.llm.wake_up(tags=sorted(self.sleeping))
            self.sleeping.clear()

    def _sleep(self) -> None:
        if self.sleep_level:
            self.llm.sleep(level=self.sleep_level)
            self.sleeping = {"weights", "kv_cache"}
            self.weights_lost = self.sleep_level == 2


def gather_in_group(ids: list[list[int]], group) -> tuple[list[list[int]], slice]:
    """Ranks of one tensor-parallel engine must run the same prompts: every rank of `group` gets all
    their prompts (in rank order) and the slice that is its own."""
    if group is None:
        return ids, slice(0, len(ids))
    import torch.distributed as dist

    gathered: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, ids, group=group)
    start = sum(len(part) for part in gathered[: dist.get_rank(group)])
    return [p for part in gathered for p in part], slice(start, start + len(ids))
