"""A client of vLLM's own HTTP server, for RLVR's `server` mode: generation runs on dedicated GPUs in
separate `vllm serve` processes (tensor parallel inside each), and the learner pushes its weights to
them after every update. Standard library only on the HTTP side.

The servers are started with (vLLM 0.31, see the README's RLVR section):
    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --tensor-parallel-size 4 --port 8000 \
        --weight-transfer-config '{"backend": "nccl"}'
as `trl vllm-serve` does (trl/scripts/vllm_serve.py). The routes used, from vLLM 0.31's source:
- `POST /v1/completions` (vllm/entrypoints/openai/completion/protocol.py `CompletionRequest`):
  `prompt` as lists of token ids (no BOS added), `n`, `temperature`, `top_p`, `max_tokens`, `seed`,
  `return_token_ids` (each choice then carries `token_ids`, eos included); `prompt_logprobs: 0` with
  `max_tokens: 1` for the log-prob check (`choices[i].prompt_logprobs[j][str(token)]["logprob"]`);
- `GET /get_world_size` and `POST /init_weight_transfer_engine`, `/start_weight_update`,
  `/update_weights`, `/finish_weight_update` (vllm/entrypoints/serve/dev/rlhf/api_router.py, dev
  mode): the workers join a process group with the learner's main process as rank 0
  (`vllm.distributed.weight_transfer.nccl_common.worker_init_process_group`, rank
  `rank_offset + worker rank`) and, with `packed: false`, receive each parameter of the announced
  `names`/`dtype_names`/`shapes` by one broadcast and load it with `model.load_weights([(name, w)])`
  (`NCCLWeightTransferEngine.receive_weights`);
- `POST /reset_prefix_cache` (vllm/entrypoints/serve/dev/cache/api_router.py) after each load.
On GPUs the learner's end of the group is vLLM's own (`nccl_common.trainer_init`, a
`PyNcclCommunicator`); on a CPU learner it is a gloo group over the same TCPStore rendezvous.
"""

from __future__ import annotations

import datetime
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import torch

from tulu_cli.generation.base import Completion, Prompts, SamplingConfig, prompt_token_ids


class ServerError(RuntimeError):
    pass


class WeightChannel:
    """The learner's end (rank 0) of the group the servers' workers joined: one broadcast per tensor."""

    def __init__(self, address: str, port: int, world_size: int, device: torch.device, timeout_s: float):
        self.device = device
        if device.type == "cuda":
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
                 tensor_parallel_size: int | None = None):
        if not urls:
            raise ValueError("generation.vllm.mode=server needs generation.vllm.servers (base URLs of `vllm serve`)")
        self.urls = [url.rstrip("/") for url in urls]
        self.tokenizer = tokenizer
        self.group_address = group_address
        self.group_port = int(group_port)
        self.device = torch.device(device)
        self.timeout_s = timeout_s
        self.channel: WeightChannel | None = None
        for url in self.urls:
            self._wait_until_up(url, connect_timeout_s)
        self.world_sizes = [int(self._request(url, "get_world_size")["world_size"]) for url in self.urls]
        if tensor_parallel_size and any(size != tensor_parallel_size for size in self.world_sizes):
            raise ServerError(f"servers {self.urls} run {self.world_sizes} workers each; the config says "
                              f"server_tensor_parallel_size={tensor_parallel_size}")

    # --- generation ---
    def generate(self, prompts: Prompts, sampling: SamplingConfig) -> list[list[Completion]]:
        ids = prompt_token_ids(prompts, self.tokenizer)
        body = {"n": sampling.n, "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "seed": sampling.seed, "return_token_ids": True,
                "skip_special_tokens": True}
        answers = self._per_server(ids, lambda url, part: self._request(url, "v1/completions",
                                                                        {**body, "prompt": part}))
        results = []
        for part, answer in answers:
            choices = answer["choices"]
            if len(choices) != len(part) * sampling.n:
                raise ServerError(f"asked for {len(part)} prompts x {sampling.n}, got {len(choices)} completions")
            for index in range(len(part)):
                mine = choices[index * sampling.n:(index + 1) * sampling.n]
                results.append([Completion(text=c["text"], token_ids=list(c["token_ids"]),
                                           finished=c["finish_reason"] == "stop") for c in mine])
        return results

    def prompt_logprobs(self, prompts: list[list[int]]) -> list[list[float]]:
        body = {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}
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
            sent = 0
            for (name, tensor), meta in zip(named_params, metadata, strict=True):
                if name != meta.name or tuple(tensor.shape) != tuple(meta.shape):
                    raise ServerError(f"parameter {name} {tuple(tensor.shape)} does not match its announcement "
                                      f"{meta.name} {tuple(meta.shape)}")
                self.channel.send(tensor)
                sent += 1
            for future in pending:
                future.result()
        for url in self.urls:
            self._request(url, "finish_weight_update", {})
            self._request(url, "reset_prefix_cache", {})

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
                                         self.timeout_s)
            for future in pending:
                future.result()

    # --- HTTP ---
    def _per_server(self, prompts: list[list[int]], call) -> list[tuple[list[list[int]], dict]]:
        size = -(-len(prompts) // len(self.urls))
        parts = [(url, prompts[i * size:(i + 1) * size]) for i, url in enumerate(self.urls)]
        parts = [(url, part) for url, part in parts if part]
        with ThreadPoolExecutor(max_workers=len(parts) or 1) as pool:
            answers = list(pool.map(lambda item: call(*item), parts))
        return [(part, answer) for (_, part), answer in zip(parts, answers, strict=True)]

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
