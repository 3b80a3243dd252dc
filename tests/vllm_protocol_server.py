"""A real HTTP server on 127.0.0.1 speaking the routes of vLLM 0.31's own server that RLVR's server mode
uses, in front of a tiny Hugging Face model (tests only; vLLM needs a GPU).

Mirrors, from vLLM's source: `POST /v1/completions` (token-id prompts, `n`, `seed`, `return_token_ids`,
`prompt_logprobs`; choices prompt-major), `GET /get_world_size`, `GET /health`, the dev-mode weight
routes (`/init_weight_transfer_engine` joins the group at `rank_offset` and blocks until the learner
joins; `/update_weights` needs `/start_weight_update` first and receives each announced parameter by
one broadcast, then `load_weights([(name, tensor)])`, as `NCCLWeightTransferEngine.receive_weights`
does unpacked), `/reset_prefix_cache` (`success: false` while blocks are held) and
`/server_info?config_format=json` (its `vllm_config.weight_transfer_config`). The group is gloo over
the same TCPStore rendezvous, and the stand-in declares that as its transfer backend.
"""

from __future__ import annotations

import datetime
import threading

import torch

from tests.local_http_server import LocalJSONServer
from tulu_cli.generation import SamplingConfig
from tulu_cli.generation.hf import HFBackend

# Sampling seeds torch's global generator, which every stand-in in this process shares: requests are
# answered one at a time, across servers too.
SAMPLING_LOCK = threading.Lock()


class VLLMProtocolServer(LocalJSONServer):
    def __init__(self, model, tokenizer):
        super().__init__()
        self.backend = HFBackend(model, tokenizer, batch_size=8)
        self.tokenizer = tokenizer
        self.prompts_received: list[list[int]] = []
        self.loads: list[str] = []  # parameter names, in the order they were loaded
        self.prefix_cache_resets = 0
        self.group = None
        self.updating = False
        # What `--weight-transfer-config` would give a real server; `gloo` is this stand-in's own.
        self.weight_transfer_config: dict | None = {"backend": "gloo"}
        # How many of the next prefix-cache resets answer `success: false` (blocks still held).
        self.refused_prefix_cache_resets = 0
        # When set, `/update_weights` fails with this message before receiving anything, as a real
        # server does when its weight transfer was never configured.
        self.update_failure: str | None = None
        self.completion_requests: list[dict] = []

    # --- routes ---
    def completions(self, body: dict) -> dict:
        self.completion_requests.append({key: value for key, value in body.items() if key != "prompt"})
        prompts = body["prompt"]
        if prompts and isinstance(prompts[0], int):
            prompts = [prompts]
        with SAMPLING_LOCK:
            self.prompts_received.extend(list(p) for p in prompts)
            if body.get("prompt_logprobs") is not None:
                rows = self.backend.prompt_logprobs(prompts)
                choices = []
                for ids, row in zip(prompts, rows, strict=True):
                    logprobs = [{str(t): {"logprob": lp, "rank": 1}} for t, lp in zip(ids[1:], row, strict=True)]
                    choices.append({"index": len(choices), "text": "", "finish_reason": "length",
                                    "prompt_token_ids": ids, "prompt_logprobs": [None, *logprobs]})
                return {"choices": choices}
            n = int(body.get("n", 1))
            sampling = SamplingConfig(max_new_tokens=int(body.get("max_tokens", 16)),
                                      temperature=float(body.get("temperature", 1.0)),
                                      top_p=float(body.get("top_p", 1.0)), n=n, seed=int(body.get("seed") or 0))
            outputs = self.backend.generate(prompts, sampling)
        choices = []
        for ids, samples in zip(prompts, outputs, strict=True):
            for sample in samples:
                choices.append({"index": len(choices), "text": sample.text, "token_ids": sample.token_ids,
                                "prompt_token_ids": ids, "finish_reason": "stop" if sample.finished else "length"})
        return {"choices": choices}

    def init_weight_transfer_engine(self, body: dict) -> dict:
        info = body["init_info"]
        timeout = datetime.timedelta(seconds=120)
        store = torch.distributed.TCPStore(info["master_address"], int(info["master_port"]), int(info["world_size"]),
                                           is_master=False, timeout=timeout)
        self.group = torch.distributed.ProcessGroupGloo(store, int(info["rank_offset"]), int(info["world_size"]),
                                                        timeout)
        return {"message": "Weight transfer initialized"}

    def update_weights(self, body: dict) -> dict:
        if not self.updating:
            raise RuntimeError("start_weight_update must be called before update_weights.")
        if self.update_failure:
            raise RuntimeError(self.update_failure)
        info = body["update_info"]
        for name, dtype, shape in zip(info["names"], info["dtype_names"], info["shapes"], strict=True):
            weight = torch.empty(shape, dtype=getattr(torch, dtype))
            self.group.broadcast(weight, 0).wait()
            self.backend.load_weights([(name, weight)])
            self.loads.append(name)
        return {"message": "Weights updated"}

    def route(self, method: str, path: str, body: dict | None) -> tuple[int, dict, dict[str, str]]:
        try:
            return 200, self.answer(method, path, body), {}
        except KeyError:
            return 404, {"detail": "Not Found"}, {}
        except Exception as error:  # noqa: BLE001 - the client must see server-side failures
            return 500, {"error": repr(error)}, {}

    def answer(self, method: str, path: str, body: dict | None) -> dict:
        if method == "GET" and path == "/health":
            return {}
        if method == "GET" and path == "/get_world_size":
            return {"world_size": 1}
        if method == "GET" and path == "/server_info?config_format=json":
            return {"vllm_config": {"weight_transfer_config": self.weight_transfer_config}}
        if method == "POST" and path == "/v1/completions":
            return self.completions(body)
        if method == "POST" and path == "/init_weight_transfer_engine":
            return self.init_weight_transfer_engine(body)
        if method == "POST" and path == "/start_weight_update":
            self.updating = True
            return {"message": "Weight update started"}
        if method == "POST" and path == "/update_weights":
            return self.update_weights(body)
        if method == "POST" and path == "/finish_weight_update":
            self.updating = False
            return {"message": "Weight update finished"}
        if method == "POST" and path == "/reset_prefix_cache":
            if self.refused_prefix_cache_resets:
                self.refused_prefix_cache_resets -= 1
                return {"success": False}
            self.prefix_cache_resets += 1
            return {"success": True}
        raise KeyError(path)
