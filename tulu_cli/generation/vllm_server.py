"""A client of vLLM's own HTTP server, for RLVR's `server` mode: generation runs on dedicated GPUs in
separate `vllm serve` processes (tensor parallel inside each), and the learner pushes its weights to
them after every update. Standard library only on the HTTP side.

The servers are started with (vLLM 0.30 to 0.34, see the README's RLVR section):
    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --tensor-parallel-size 4 --port 8000 \
        --weight-transfer-config '{"backend": "nccl"}'
as `trl vllm-serve` does (trl/scripts/vllm_serve.py). The routes used, from vLLM 0.31's source:
- `POST /v1/completions` (vllm/entrypoints/openai/completion/protocol.py `CompletionRequest`):
  `prompt` as lists of token ids (no BOS added), `n`, `temperature`, `top_p`, `max_tokens`, `seed`
  (one per request: with `seed_each_prompt` each sampled prompt gets its own request; without, no
  seed and one request per server), `return_token_ids` (each choice then carries `token_ids`, eos
  included); `prompt_logprobs: 0` with
  `max_tokens: 1` for the log-prob check (`choices[i].prompt_logprobs[j][str(token)]["logprob"]`).
  `top_k`, `min_p` and the repetition/presence/frequency penalties are sent at their neutral values:
  the server fills fields a request leaves unset from the model's `generation_config.json`
  (`--generation-config auto`, the default; on 0.31 the presence and frequency penalties too), which
  the in-process engine's `SamplingParams` and the reference's sampling never do;
- `GET /server_info?config_format=json` (vllm/entrypoints/serve/dev/server_info/api_router.py), once:
  `vllm_config.weight_transfer_config` must be set (`--weight-transfer-config`), with the `nccl`
  backend, which needs the learner's main process on a CUDA device;
- `GET /get_world_size` and `POST /init_weight_transfer_engine`, `/start_weight_update`,
  `/update_weights`, `/finish_weight_update` (vllm/entrypoints/serve/dev/rlhf/api_router.py, from 0.32
  vllm/entrypoints/rl/online/api_router.py with the same bodies; dev mode; 0.34's optional
  `update_info.src`, the sending rank of the group, defaults to 0, the learner): the workers join a
  process group with the learner's main process as rank 0
  (`vllm.distributed.weight_transfer.nccl_common.worker_init_process_group`, rank
  `rank_offset + worker rank`) and, with `packed: false`, receive each parameter of the announced
  `names`/`dtype_names`/`shapes` by one broadcast and load it with `model.load_weights([(name, w)])`
  (`NCCLWeightTransferEngine.receive_weights`);
- `POST /reset_prefix_cache` (vllm/entrypoints/serve/dev/cache/api_router.py) after each load; it
  answers `{"success": false}` while blocks are still held, and is retried.
The learner's end of the group is vLLM's own (`nccl_common.trainer_init`, a `PyNcclCommunicator`).
The tests' stand-in server (a tiny Hugging Face model on CPU) declares the weight-transfer backend
`gloo`, which no vLLM release has: the learner then joins a gloo group over the same TCPStore
rendezvous.
"""

from __future__ import annotations

import datetime
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

import torch

from tulu_cli.generation.base import Completion, Prompts, SamplingConfig, prompt_token_ids, request_seeds
from tulu_cli.train.rl.weight_sync import dtype_name


class ServerError(RuntimeError):
    pass


# Sampling fields `vllm serve` would otherwise fill from the model's generation config.
NEUTRAL_SAMPLING = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                    "frequency_penalty": 0.0}
# Weight-transfer backends the learner can join: vLLM's NCCL one, and the tests' CPU stand-in.
TRANSFER_BACKENDS = ("nccl", "gloo")
PREFIX_CACHE_RESET_TRIES = 5
# Completion requests the learner keeps open per server: enough to fill a server's batch.
REQUESTS_IN_FLIGHT = 64
# Seconds the learner waits, before its first broadcast, for a server refusing the update to say so.
SERVER_FAILURE_GRACE_S = 0.2


class WeightChannel:
    """The learner's end (rank 0) of the group the servers' workers joined: one broadcast per tensor."""

    def __init__(self, address: str, port: int, world_size: int, device: torch.device, timeout_s: float,
                 backend: str = "nccl"):
        self.device = device
        if backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_common import trainer_init

            torch.cuda.set_device(device)
            self.communicator = trainer_init(
                {"master_address": address, "master_port": port, "world_size": world_size})
            self.group = None
        else:
            import torch.distributed as dist

            timeout = datetime.timedelta(seconds=timeout_s)
            store = dist.TCPStore(address, port, world_size, is_master=True, timeout=timeout)
            self.group = dist.ProcessGroupGloo(store, 0, world_size, timeout)
            self.communicator = None

    def send(self, tensor: torch.Tensor) -> None:
        tensor = tensor.to(self.device).contiguous()
        if self.communicator is not None:
            self.communicator.broadcast(tensor, src=0, stream=torch.cuda.current_stream())
        else:
            self.group.broadcast(tensor, 0).wait()


class VLLMServerBackend:
    """Prompts are split evenly over the servers and sent concurrently; weights go to all of them at
    once (one group holding the learner and every worker of every server)."""

    def __init__(self, urls: list[str], tokenizer, group_address: str, group_port: int,
                 device: torch.device | str = "cpu", timeout_s: float = 600.0, connect_timeout_s: float = 600.0,
                 tensor_parallel_size: int | None = None, seed_each_prompt: bool = True):
        if not urls:
            raise ValueError("generation.vllm.mode=server needs generation.vllm.servers (base URLs of `vllm serve`)")
        self.urls = [url.rstrip("/") for url in urls]
        self.tokenizer = tokenizer
        self.group_address = group_address
        self.group_port = int(group_port)
        self.device = torch.device(device)
        self.timeout_s = timeout_s
        self.seed_each_prompt = seed_each_prompt
        self.channel: WeightChannel | None = None
        for url in self.urls:
            self._wait_until_up(url, connect_timeout_s)
        self.world_sizes = [int(self._request(url, "get_world_size")["world_size"]) for url in self.urls]
        if tensor_parallel_size and any(size != tensor_parallel_size for size in self.world_sizes):
            raise ServerError(f"servers {self.urls} run {self.world_sizes} workers each; the config says "
                              f"server_tensor_parallel_size={tensor_parallel_size}")
        self.transfer_backend = self._transfer_backend()

    def _transfer_backend(self) -> str:
        """The servers' weight-transfer backend, checked before any training: a server started without
        `--weight-transfer-config` would fail only at the first sync, and a learner that cannot join
        the backend's group would wait there until the rendezvous timed out."""
        backends = set()
        for url in self.urls:
            config = self._request(url, "server_info?config_format=json").get("vllm_config") or {}
            transfer = config.get("weight_transfer_config") if isinstance(config, dict) else None
            if not transfer:
                raise ServerError(f"{url} was started without a weight-transfer config: RLVR sends the policy's "
                                  "weights to it after every update; start it with "
                                  "--weight-transfer-config '{\"backend\": \"nccl\"}'")
            backends.add(transfer.get("backend"))
        if len(backends) != 1 or not backends <= set(TRANSFER_BACKENDS):
            raise ServerError(f"servers {self.urls} use weight-transfer backends {sorted(map(str, backends))}; "
                              "the learner joins one `nccl` group with all of them")
        backend = backends.pop()
        if backend == "nccl" and self.device.type != "cuda":
            raise ServerError(f"the servers receive weights over NCCL, so the learner's main process needs a "
                              f"CUDA device; it runs on {self.device}")
        return backend

    # --- generation ---
    def generate(self, prompts: Prompts, sampling: SamplingConfig) -> list[list[Completion]]:
        ids = prompt_token_ids(prompts, self.tokenizer)
        body = {"n": sampling.n, "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "return_token_ids": True, "skip_special_tokens": True, **NEUTRAL_SAMPLING}
        seeds = request_seeds(sampling, len(ids), seed_each_prompt=self.seed_each_prompt)
        if seeds is not None:
            # A completion request has one seed for all its prompts, so each prompt goes in its own
            # request with its own seed; the server batches concurrent requests.
            answers = self._per_prompt(ids, lambda url, index: self._request(
                url, "v1/completions", {**body, "prompt": [ids[index]], "seed": seeds[index]}))
            parts = [[prompt] for prompt in ids]
        else:
            per_server = self._per_server(ids, lambda url, part: self._request(
                url, "v1/completions", {**body, "prompt": part}))
            parts, answers = [part for part, _ in per_server], [answer for _, answer in per_server]
        results = []
        for part, answer in zip(parts, answers, strict=True):
            choices = answer["choices"]
            if len(choices) != len(part) * sampling.n:
                raise ServerError(f"asked for {len(part)} prompts x {sampling.n}, got {len(choices)} completions")
            for index in range(len(part)):
                results.append([Completion(text=c["text"], token_ids=list(c["token_ids"]),
                                           finished=c["finish_reason"] == "stop")
                                for c in choices[index * sampling.n:(index + 1) * sampling.n]])
        return results

    def prompt_logprobs(self, prompts: list[list[int]]) -> list[list[float]]:
        body = {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0, **NEUTRAL_SAMPLING}
        answers = self._per_server([list(p) for p in prompts],
                                   lambda url, part: self._request(url, "v1/completions", {**body, "prompt": part}))
        result = []
        for part, answer in answers:
            for ids, choice in zip(part, answer["choices"], strict=True):
                positions = choice["prompt_logprobs"][1:]
                result.append([entry[str(token)]["logprob"] for token, entry in zip(ids[1:], positions, strict=True)])
        return result

    # --- weights ---
    def update_weights(self, metadata, named_params) -> None:
        if self.channel is None:
            self._open_channel()
        update_info = {"names": [m.name for m in metadata], "dtype_names": [m.dtype for m in metadata],
                       "shapes": [list(m.shape) for m in metadata]}
        for url in self.urls:
            self._request(url, "start_weight_update", {})
        # The workers block in the broadcasts while their request is handled, so the requests run
        # beside the sending loop.
        with ThreadPoolExecutor(max_workers=len(self.urls)) as pool:
            pending = [pool.submit(self._request, url, "update_weights", {"update_info": update_info})
                       for url in self.urls]
            # A server that fails before its workers reach the broadcasts (an update it refuses) leaves
            # the sender waiting for receivers that never come, until the group's timeout: its answer,
            # usually back within this grace, is raised instead; after a send timeout too.
            wait(pending, timeout=SERVER_FAILURE_GRACE_S, return_when=FIRST_EXCEPTION)
            try:
                for (name, tensor), meta in zip(named_params, metadata, strict=True):
                    if (name, tuple(tensor.shape), dtype_name(tensor)) != (meta.name, tuple(meta.shape), meta.dtype):
                        raise ServerError(f"parameter {name} {tuple(tensor.shape)} {dtype_name(tensor)} does not "
                                          f"match its announcement {meta.name} {tuple(meta.shape)} {meta.dtype}")
                    raise_server_failures(pending)
                    self.channel.send(tensor)
            except RuntimeError as error:
                raise_server_failures(pending, cause=error)
                raise
            for future in pending:
                future.result()
        for url in self.urls:
            self._request(url, "finish_weight_update", {})
            self._reset_prefix_cache(url)

    def _reset_prefix_cache(self, url: str) -> None:
        """No prefix cached under the old weights may be reused. vLLM refuses the reset while blocks
        are still held (in-flight requests finishing), so it is retried for a while."""
        for attempt in range(PREFIX_CACHE_RESET_TRIES):
            if self._request(url, "reset_prefix_cache", {}).get("success", True):
                return
            time.sleep(0.2 * 2 ** attempt)
        raise ServerError(f"{url} kept refusing to reset its prefix cache after a weight load "
                          f"({PREFIX_CACHE_RESET_TRIES} tries): blocks are still held")

    def _open_channel(self) -> None:
        world_size = 1 + sum(self.world_sizes)
        offsets = [1 + sum(self.world_sizes[:i]) for i in range(len(self.urls))]
        init = {"master_address": self.group_address, "master_port": self.group_port, "world_size": world_size,
                "packed": False}
        # Each server blocks in the rendezvous while its request is handled.
        with ThreadPoolExecutor(max_workers=len(self.urls)) as pool:
            pending = [pool.submit(self._request, url, "init_weight_transfer_engine",
                                   {"init_info": {**init, "rank_offset": offset}})
                       for url, offset in zip(self.urls, offsets, strict=True)]
            self.channel = WeightChannel(self.group_address, self.group_port, world_size, self.device,
                                         self.timeout_s, self.transfer_backend)
            for future in pending:
                future.result()

    # --- HTTP ---
    def _block_size(self, count: int) -> int:
        """Prompts per server: `count` prompts are split evenly over the servers, in contiguous blocks."""
        return -(-count // len(self.urls))

    def _per_server(self, prompts: list[list[int]], call) -> list[tuple[list[list[int]], dict]]:
        size = self._block_size(len(prompts))
        parts = [(url, prompts[i * size:(i + 1) * size]) for i, url in enumerate(self.urls)]
        parts = [(url, part) for url, part in parts if part]
        with ThreadPoolExecutor(max_workers=len(parts) or 1) as pool:
            answers = list(pool.map(lambda item: call(*item), parts))
        return [(part, answer) for (_, part), answer in zip(parts, answers, strict=True)]

    def _per_prompt(self, prompts: list[list[int]], call) -> list[dict]:
        """`call(url, index)` for every prompt, concurrently, in prompt order, each prompt to the server
        `_per_server` would send it to."""
        size = self._block_size(len(prompts))
        with ThreadPoolExecutor(max_workers=max(1, min(len(prompts), REQUESTS_IN_FLIGHT * len(self.urls)))) as pool:
            return list(pool.map(lambda index: call(self.urls[index // size], index), range(len(prompts))))

    def _request(self, url: str, route: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{url}/{route}", data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            hint = " (start the server with VLLM_SERVER_DEV_MODE=1)" if error.code == 404 else ""
            raise ServerError(f"{url}/{route}: HTTP {error.code}{hint}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise ServerError(f"{url}/{route}: {error}") from None
        return json.loads(text) if text.strip() else {}

    def _wait_until_up(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=10):
                    return
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                if time.monotonic() > deadline:
                    raise ServerError(f"no vLLM server answered at {url}/health within {timeout_s:.0f}s: {error}"
                                      ) from None
                time.sleep(2.0)


def raise_server_failures(requests: list[Future], cause: BaseException | None = None) -> None:
    """Raise the error of any finished request; with `cause` (a failed send), wait briefly for the
    servers' answers first, since the one that failed explains the send's failure."""
    if cause is not None:
        wait(requests, timeout=SERVER_FAILURE_GRACE_S * 25, return_when=FIRST_EXCEPTION)
    for request in requests:
        if request.done() and request.exception() is not None:
            raise request.exception() from cause
