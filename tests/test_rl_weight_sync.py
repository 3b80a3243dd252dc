"""Generation for RLVR on GPUs, tested for real on CPU: parameter-by-parameter weight sync across 2
ranks (each rank's own receiver, as colocated engines; and an HTTP server speaking vLLM's routes,
as server mode), token-id prompts without a second BOS, and the engine/learner log-prob check."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import CONF, ROOT, free_port
from tests.vllm_protocol_server import VLLMProtocolServer
from tulu_cli.errors import StageError
from tulu_cli.generation import SamplingConfig
from tulu_cli.generation.hf import HFBackend
from tulu_cli.modeling import BOS


def run_learner_job(launcher_name: str, start_model, out, server_url: str | None = None, group_port: int = 0):
    """The sync job on 2 CPU ranks, started by a launcher profile as a stage would be."""
    from omegaconf import OmegaConf

    from tulu_cli import launch

    launcher = OmegaConf.to_container(OmegaConf.load(CONF / "launcher" / f"{launcher_name}.yaml"))
    launcher["main_port"] = free_port()
    (out / "job.json").write_text(json.dumps({"model": str(start_model), "server": server_url,
                                              "group_port": group_port}))
    launch.write_launcher_files(launcher, out)
    command = launch.build_command(launcher, "tests.rl_weight_sync_job", out)
    env = {**launch.launch_env(launcher), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads((out / f"report_{rank}.json").read_text()) for rank in (0, 1)]


# ZeRO-3 on 2 CPU ranks where the project has the profile, else 2 DDP ranks.
LAUNCHER = "cpu_zero3" if (CONF / "launcher" / "cpu_zero3.yaml").exists() else "cpu_ddp2"


def test_two_ranks_send_weights_parameter_by_parameter_to_receivers_and_a_server(tmp_path, start_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(start_model)
    with VLLMProtocolServer(AutoModelForCausalLM.from_pretrained(start_model), tokenizer) as server:
        reports = run_learner_job(LAUNCHER, start_model, tmp_path, server.url, free_port())
        served = {name: p.detach().clone() for name, p in server.backend.model.named_parameters()}

    start = dict(AutoModelForCausalLM.from_pretrained(start_model).named_parameters())
    learner = load_file(str(tmp_path / "learner_0.safetensors"))
    assert any(not torch.equal(learner[name], start[name]) for name in learner), "the update changed nothing"
    for rank, report in enumerate(reports):
        assert report["world_size"] == 2 and report["zero3"] == (LAUNCHER == "cpu_zero3")
        # One (name, tensor) pair per load call, one call per parameter.
        assert report["pairs_per_call"] == [1] * report["parameters"] == [1] * len(learner)
        # Under ZeRO-3 only the parameter being sent is gathered while it is loaded.
        assert report["most_gathered"] == (1 if report["zero3"] else 0)
        received = load_file(str(tmp_path / f"receiver_{rank}.safetensors"))
        mine = load_file(str(tmp_path / f"learner_{rank}.safetensors"))
        for name, tensor in mine.items():
            assert torch.equal(received[name], tensor), (rank, name)
    # The server got every parameter once, in order, bit-equal, and reset its prefix cache after.
    assert server.loads == list(start)
    assert server.prefix_cache_resets == 1
    for name, tensor in learner.items():
        assert torch.equal(served[name], tensor), name
    for report in reports:
        assert report["tp_group"] == {"prompts": [[0, 10], [20], [1, 11], [21]], "own": True}
    main = reports[0]
    assert main["agreement"] < 1e-4
    # The prompts arrived as the learner's token ids, for the check and for sampling alike.
    # The check's request keeps the prompts' order; sampling sends one request per prompt, concurrently.
    sent = main["sent_prompts"]
    assert server.prompts_received[:len(sent)] == sent
    assert sorted(server.prompts_received[len(sent):]) == sorted(sent)
    assert all(len(samples) == 2 for samples in main["completions"])


def test_rollout_prompts_are_the_learners_token_ids_with_no_bos_added(tiny_tokenizer, tiny_model_factory):
    """With a tokenizer that, like Llama 3's, prepends BOS when encoding text with special tokens (what
    an engine does with a text prompt), the backend still receives exactly the learner's ids."""
    from tokenizers import processors

    from tulu_cli.train.rl.data import check_rlvr_row
    from tulu_cli.train.rl.rollout import generate_rollouts

    tokenizer = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer.__class__.from_str(
        tiny_tokenizer.backend_tokenizer.to_str()), bos_token=BOS, eos_token=tiny_tokenizer.eos_token,
        pad_token=tiny_tokenizer.pad_token)
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, bos)])
    row = check_rlvr_row({"messages": [{"role": "user", "content": "What is 4 + 5?"}], "ground_truth": "9",
                          "dataset": "gsm8k"}, tokenizer, 128)
    assert tokenizer(row.prompt)["input_ids"] == [bos, *row.prompt_ids]  # the text path's extra BOS

    model = tiny_model_factory(seed=1)
    seen: list[list[int]] = []

    def record_prefill(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            seen.extend(ids.tolist())

    handle = model.register_forward_pre_hook(record_prefill, with_kwargs=True)
    try:
        rollouts = generate_rollouts(HFBackend(model, tokenizer), [row],
                                     SamplingConfig(max_new_tokens=3, temperature=1.0, n=1, seed=0))
        # A text prompt that carries its BOS (a template with `{{ bos_token }}`) keeps exactly one.
        HFBackend(model, tokenizer).generate([BOS + row.prompt], SamplingConfig(max_new_tokens=2, n=1))
    finally:
        handle.remove()
    assert len(rollouts) == 1
    assert seen[0] == row.prompt_ids and bos not in seen[0]
    assert seen[1] == [bos, *row.prompt_ids] and seen[1].count(bos) == 1


def test_logprob_check_fails_when_the_engine_holds_other_weights(tiny_tokenizer, tiny_model_factory):
    from accelerate import Accelerator

    from tulu_cli.train.rl.engine_check import check_engine_logprobs
    from tulu_cli.train.rl.models import PolicyAndValue

    accelerator = Accelerator(cpu=True)
    learner = PolicyAndValue(tiny_model_factory(seed=1), None)
    prompts = [tiny_tokenizer("<|user|>\nWhat is 2 + 2?\n<|assistant|>\n", add_special_tokens=False)["input_ids"]]
    same = check_engine_logprobs(accelerator, HFBackend(tiny_model_factory(seed=1), tiny_tokenizer), learner,
                                 prompts, tolerance=1e-5)
    assert same.mean_abs_diff < 1e-6 and same.tokens == len(prompts[0]) - 1
    with pytest.raises(StageError, match="log-prob check failed"):
        check_engine_logprobs(accelerator, HFBackend(tiny_model_factory(seed=2), tiny_tokenizer), learner,
                              prompts, tolerance=0.05)
    with pytest.warns(UserWarning, match="log-prob check failed"):
        check_engine_logprobs(accelerator, HFBackend(tiny_model_factory(seed=2), tiny_tokenizer), learner,
                              prompts, tolerance=0.05, on_mismatch="warn")


@pytest.mark.parametrize("preset, mode, lines", [
    ("llama8b", "server", ["training: 1 node(s), 7 GPU ranks",
                           "1 server(s) x tensor parallel size 1 = 1 dedicated GPU(s) beside the training ranks on their node",
                           "GPUs in all: 8"]),
    ("llama70b", "server", ["training: 5 node(s), 40 GPU ranks",
                            "2 server(s) x tensor parallel size 4 = 8 dedicated GPU(s) on 1 node(s) of their own",
                            "GPUs in all: 48"]),
    ("grpo8b", "colocate", ["training: 1 node(s), 8 GPU ranks",
                            "8 engine(s) of tensor parallel size 1 on the same 8 GPUs"]),
])
def test_dry_run_shows_the_pinned_vllm_mode_and_a_layout_that_fits_8_gpu_nodes(tmp_path, preset, mode, lines):
    import tomllib

    import yaml

    from tests.conftest import run_tulu
    from tulu_cli.train.rl.layout import VLLM_REQUIREMENT

    result = run_tulu("rlvr", f"conf={preset}", f"output_dir={tmp_path}", "--dry-run")
    assert f"vLLM ({VLLM_REQUIREMENT}), mode {mode}" in result.stdout
    for line in lines:
        assert line in result.stdout, result.stdout[-2000:]
    assert "problem:" not in result.stdout
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["generation"]["vllm"]["mode"] == mode
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["vllm"] == [VLLM_REQUIREMENT]


def test_rlvr_samples_from_a_server_and_sends_it_every_update(tmp_path, start_model):
    """`tulu rlvr` in server mode end to end: rollouts come from the server, the weights go to it after
    every update, the log-prob check passes after the first sync, and the server ends with the final policy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import run_tulu
    from tests.test_rlvr_run import QUICK

    tokenizer = AutoTokenizer.from_pretrained(start_model)
    with VLLMProtocolServer(AutoModelForCausalLM.from_pretrained(start_model), tokenizer) as server:
        result = run_tulu("rlvr", *QUICK, "algorithm=grpo", "train.max_steps=2", f"model.path={start_model}",
                          f"output_dir={tmp_path}", "generation.backend=vllm", "generation.vllm.mode=server",
                          f"generation.vllm.servers=[{server.url}]", f"generation.vllm.group_port={free_port()}",
                          "generation.logprob_check.tolerance=1e-4")
        served = {name: p.detach().clone() for name, p in server.backend.model.named_parameters()}
    assert "log-prob check passed" in result.stdout
    names = [name for name, _ in AutoModelForCausalLM.from_pretrained(start_model).named_parameters()]
    assert server.loads == names * 2 and server.prefix_cache_resets == 2
    final = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "final").named_parameters())
    for name in names:
        assert torch.equal(served[name], final[name]), name
    # 2 rollout batches of 4 prompts (sent as token ids), then the check's 4 prompts.
    assert len(server.prompts_received) == 12
    assert all(BOS not in tokenizer.convert_ids_to_tokens(ids) for ids in server.prompts_received)
