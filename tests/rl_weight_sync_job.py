"""A distributed learner job for the weight-sync tests, started like a stage (`python -m
tests.rl_weight_sync_job --run-dir DIR` under a launcher profile: torchrun DDP or accelerate ZeRO-3 on
CPU ranks); RUN_DIR/job.json names the model and the server.

Every rank trains the tiny policy one step (so its weights differ from the saved model), then:
- colocate: sends its weights to its own receiver, a real HF model behind the generation backend's
  `load_weights` interface, exactly as a colocated vLLM engine receives them;
- server (with --server): the main process pushes the weights to the HTTP server over the weight
  group, runs the log-prob check against it and samples from it with token-id prompts.
Each rank writes what it saw to RUN_DIR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tulu_cli.generation import SamplingConfig
from tulu_cli.generation.hf import HFBackend
from tulu_cli.generation.vllm_backend import gather_in_group
from tulu_cli.train.rl.engine_check import check_engine_logprobs
from tulu_cli.train.rl.models import PolicyAndValue
from tulu_cli.train.rl.weight_sync import iter_full_parameters, sync_rollout_weights
from tulu_cli.train.runtime import distributed_state, make_accelerator


class RecordingReceiver(HFBackend):
    """The HF backend as a weight receiver, noting per call how many pairs arrived and how many of the
    learner's ZeRO-3 parameters were gathered at that moment."""

    def __init__(self, model, tokenizer, learner_params):
        super().__init__(model, tokenizer)
        self.learner_params = learner_params
        self.pairs_per_call: list[int] = []
        self.most_gathered = 0

    def load_weights(self, weights) -> None:
        weights = list(weights)
        self.pairs_per_call.append(len(weights))
        gathered = sum(1 for p in self.learner_params if hasattr(p, "ds_id") and p.data.numel() > 0)
        self.most_gathered = max(self.most_gathered, gathered)
        super().load_weights(weights)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    out = Path(parser.parse_args().run_dir)
    job = json.loads((out / "job.json").read_text())
    from transformers import AutoModelForCausalLM, AutoTokenizer

    state = distributed_state()
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    # Loaded before the accelerator exists, so that under ZeRO-3 it is not partitioned (zero.Init).
    receiver_model = AutoModelForCausalLM.from_pretrained(job["model"])
    accelerator = make_accelerator(1, 2, None)
    model = PolicyAndValue(AutoModelForCausalLM.from_pretrained(job["model"]), None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator().manual_seed(11 + state.process_index)
    input_ids = torch.randint(3, len(tokenizer), (2, 12), generator=generator)
    logits, _ = model(input_ids)
    accelerator.backward(logits.float().logsumexp(-1).mean())
    optimizer.step()
    optimizer.zero_grad()

    policy = accelerator.unwrap_model(model).policy
    receiver = RecordingReceiver(receiver_model, tokenizer, list(policy.parameters()))
    sync_rollout_weights(accelerator, receiver, model)
    learner = {name: tensor.detach().clone() for name, tensor in iter_full_parameters(policy)}
    rank = state.process_index
    save_file(learner, str(out / f"learner_{rank}.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in receiver.model.named_parameters()},
              str(out / f"receiver_{rank}.safetensors"))
    report = {"world_size": state.num_processes, "pairs_per_call": receiver.pairs_per_call,
              "most_gathered": receiver.most_gathered, "parameters": len(learner),
              "zero3": any(hasattr(p, "ds_id") for p in policy.parameters())}

    # Colocated engines of tensor parallel size 2: both ranks run both ranks' prompts, each keeps its own.
    import torch.distributed as dist

    group, _ = dist.new_subgroups_by_enumeration([list(range(state.num_processes))])
    mine = [[rank, rank + 10], [rank + 20]]
    everyone, own = gather_in_group(mine, group)
    report["tp_group"] = {"prompts": everyone, "own": everyone[own] == mine}

    if job.get("server"):
        from tulu_cli.generation.vllm_server import VLLMServerBackend

        backend = (VLLMServerBackend([job["server"]], tokenizer, "127.0.0.1", job["group_port"], connect_timeout_s=30)
                   if accelerator.is_main_process else None)
        sync_rollout_weights(accelerator, backend, model)
        prompts = [tokenizer("<|user|>\nWhat is 2 + 3?\n<|assistant|>\n", add_special_tokens=False)["input_ids"],
                   tokenizer("<|user|>\nName a colour.\n<|assistant|>\n", add_special_tokens=False)["input_ids"]]
        agreement = check_engine_logprobs(accelerator, backend, model, prompts, tolerance=1e-4)
        if backend is not None:
            completions = backend.generate(prompts, SamplingConfig(max_new_tokens=5, temperature=1.0, n=2, seed=3))
            report["sent_prompts"] = prompts
            report["completions"] = [[c.token_ids for c in samples] for samples in completions]
            report["agreement"] = agreement.mean_abs_diff
    (out / f"report_{rank}.json").write_text(json.dumps(report))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
