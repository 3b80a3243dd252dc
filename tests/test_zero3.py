"""DeepSpeed ZeRO-3 for real on 2 CPU ranks (`launcher=cpu_zero3`): SFT, DPO (cached and online
reference) and RLVR (GRPO, PPO with a value head, HF generation from the sharded policy) each run in
one 2-rank world with every parameter partitioned (read from the line each job logs at startup),
reach the weights a `cpu_ddp2` run of the same steps reaches, and write full weights to `final/`;
an SFT run killed after a checkpoint resumes to the weights of an uninterrupted run.

The runs are shared: one module-scoped fixture per stage runs each configuration once. The default
test run keeps the SFT comparison (the shortest real 2-rank ZeRO-3 world) and one PPO step in bf16 (the
GPU profiles' precision); DPO, RLVR and the kill-and-resume run are in the slow run (`make test-all`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import CONF, free_port, kill_tulu_when, run_tulu
from tulu_cli.runlog import read_metrics

PARTITIONING = re.compile(r"partitioning \(model\): rank=(\d+) world=(\d+) params=(\d+) zero3=(\d+) "
                          r"partitioned=(\d+) full_numel=(\d+) local_numel=(\d+)")
# ZeRO-3 and DDP sum the same gradients in a different order (reduce-scatter of flat buckets vs
# all-reduce), so float32 weights differ in the last bits and Adam carries that forward. The bound is
# on the norm of the difference over the norm of what training changed: measured 1.5e-6 to 2.6e-5
# for these runs (SFT, DPO, GRPO, PPO); a step out of place or a wrong reference is far above it.
RELATIVE_TOLERANCE = 1e-3
EXTRA_VOCAB = 64


def launch(launcher: str, run_dir: Path) -> list[str]:
    """Overrides that run on `launcher` with its own rendezvous port (tests may run side by side)."""
    return [f"launcher={launcher}", f"launcher.main_port={free_port()}", f"output_dir={run_dir}"]


def assert_one_sharded_world(run_dir: Path) -> None:
    """Both ranks logged world=2 and hold about half of every parameter (partitions are padded)."""
    found = PARTITIONING.findall((run_dir / "logs" / "stage.log").read_text(errors="replace"))
    by_rank = {int(rank): tuple(map(int, rest)) for rank, *rest in found}
    assert sorted(by_rank) == [0, 1], found
    for world, params, zero3, partitioned, full, local in by_rank.values():
        assert world == 2
        assert zero3 == partitioned == params > 0
        assert full / 2 <= local <= full / 2 + params


def assert_one_ddp_world(run_dir: Path) -> None:
    found = PARTITIONING.findall((run_dir / "logs" / "stage.log").read_text(errors="replace"))
    assert sorted(int(rank) for rank, *_ in found) == [0, 1], found
    for _, world, _, zero3, partitioned, full, local in found:
        assert int(world) == 2 and int(zero3) == int(partitioned) == 0 and full == local


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / "model.safetensors")


def relative_difference(zero3: Path, ddp: Path, start: Path) -> tuple[float, float]:
    """(|zero3 - ddp| / |ddp - start|, |ddp - start|) over all weights, with matching names and shapes."""
    left, right, initial = final_weights(zero3), final_weights(ddp), load_file(start / "model.safetensors")
    assert left.keys() == right.keys() == initial.keys()
    for key in left:
        assert left[key].shape == right[key].shape == initial[key].shape, key
    difference = sum(((left[key] - right[key]).double() ** 2).sum() for key in left) ** 0.5
    update = sum(((right[key] - initial[key]).double() ** 2).sum() for key in left) ** 0.5
    return float(difference / update), float(update)


def assert_same_training(zero3: Path, ddp: Path, start: Path) -> None:
    relative, update = relative_difference(zero3, ddp, start)
    assert update > 1e-3, "the run must train for the comparison to mean something"
    assert relative <= RELATIVE_TOLERANCE, relative


@pytest.fixture(scope="module")
def start_model(tmp_path_factory, tiny_tokenizer, tiny_model_factory) -> Path:
    """A tiny policy saved like an SFT `final/`, with more embedding rows than the tokenizer has
    tokens: a run must keep them (under `zero.Init` the local weight reads 0 rows). Its eos logit is
    raised so that about half of short samples stop and half do not: with a non-stop penalty, GRPO
    groups then have reward spread and train (an untrained model's rewards are all equal)."""
    path = tmp_path_factory.mktemp("zero3_start") / "final"
    model = tiny_model_factory(seed=3)
    model.resize_token_embeddings(model.config.vocab_size + EXTRA_VOCAB)
    raise_eos_logit(model, tiny_tokenizer, boost=3.0)
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def raise_eos_logit(model, tokenizer, boost: float) -> None:
    """Add `boost` to the eos logit on average: a random model's final hidden states share a strong
    common direction, so moving the (tied) eos embedding along it lifts that logit at every position."""
    from tulu_cli.config import assets_dir

    rows = [json.loads(line) for line in (assets_dir() / "tiny" / "rlvr_train.jsonl").read_text().splitlines()[:16]]
    with torch.no_grad():
        states = torch.cat([
            model(tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)["input_ids"],
                  output_hidden_states=True).hidden_states[-1][0]
            for row in rows
        ])
        direction = states.mean(0)
        model.get_input_embeddings().weight[tokenizer.eos_token_id] += boost * direction / direction.norm() ** 2


SFT = ["sft", "conf=tiny", "data.max_rows=64", "train.effective_batch_size=8", "train.per_device_batch_size=4",
       "train.max_steps=4", "train.log_every=1", "checkpoint.every_steps=2", "optim.lr=3e-3",
       "optim.warmup_ratio=0"]


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, start_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zero3_sft")
    runs = {"zero3": root / "zero3", "ddp": root / "ddp"}
    run_tulu(*SFT, f"model.path={start_model}", *launch("cpu_zero3", runs["zero3"]))
    run_tulu(*SFT, f"model.path={start_model}", *launch("cpu_ddp2", runs["ddp"]))
    return runs


def test_sft_runs_in_one_sharded_world_and_matches_ddp(sft_runs, start_model):
    assert_one_sharded_world(sft_runs["zero3"])
    assert_one_ddp_world(sft_runs["ddp"])
    assert [m["step"] for m in read_metrics(sft_runs["zero3"])] == [1, 2, 3, 4]
    assert_same_training(sft_runs["zero3"], sft_runs["ddp"], start_model)


def test_final_holds_full_weights_loadable_with_from_pretrained(sft_runs, start_model):
    from transformers import AutoModelForCausalLM

    final = sft_runs["zero3"] / "final"
    start = load_file(start_model / "model.safetensors")
    weights = final_weights(sft_runs["zero3"])
    assert {key: value.shape for key, value in weights.items()} == {k: v.shape for k, v in start.items()}
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.get_input_embeddings().weight.shape[0] == start["model.embed_tokens.weight"].shape[0]
    assert json.loads((final / "config.json").read_text())["vocab_size"] == model.config.vocab_size
    assert torch.equal(model.get_input_embeddings().weight, weights["model.embed_tokens.weight"])


@pytest.mark.slow
def test_sft_resumes_after_a_kill_to_the_uninterrupted_weights(sft_runs, start_model, tmp_path):
    run_dir = tmp_path / "killed"
    args = [*SFT, f"model.path={start_model}", *launch("cpu_zero3", run_dir)]
    killed = kill_tulu_when(args, lambda: (run_dir / "checkpoints" / "step_00000002" / "trainer_state.json").exists())
    assert killed and not (run_dir / "final").exists()
    run_tulu(*args, "resume=true")
    assert "resumed from" in (run_dir / "logs" / "stage.log").read_text(errors="replace")
    assert_one_sharded_world(run_dir)
    resumed, straight = final_weights(run_dir), final_weights(sft_runs["zero3"])
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[key], straight[key]) for key in resumed)


DPO = ["dpo", "conf=tiny", "data.max_rows=32", "data.eval=null", "train.effective_batch_size=8",
       "train.per_device_batch_size=4", "reference.batch_size=8", "train.max_steps=3", "train.log_every=1",
       "optim.lr=1e-3"]


@pytest.fixture(scope="module")
def dpo_runs(tmp_path_factory, start_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zero3_dpo")
    runs = {"ddp": ("cpu_ddp2", "cached"), "zero3": ("cpu_zero3", "cached"), "zero3_online": ("cpu_zero3", "online")}
    for name, (launcher, mode) in runs.items():
        # Each run its own cache: the ZeRO-3 run computes the reference pass itself.
        run_tulu(*DPO, f"model.path={start_model}", f"reference.mode={mode}",
                 f"reference.cache_dir={root / name / 'cache'}", *launch(launcher, root / name))
    return {name: root / name for name in runs}


@pytest.mark.slow
def test_dpo_cached_reference_under_zero3_matches_ddp(dpo_runs, start_model):
    assert_one_sharded_world(dpo_runs["zero3"])
    assert "computed and stored" in (dpo_runs["zero3"] / "logs" / "stage.log").read_text(errors="replace")
    assert_same_training(dpo_runs["zero3"], dpo_runs["ddp"], start_model)


@pytest.mark.slow
def test_dpo_online_reference_under_zero3_matches_ddp(dpo_runs, start_model):
    assert_one_sharded_world(dpo_runs["zero3_online"])
    online, cached = read_metrics(dpo_runs["zero3_online"]), read_metrics(dpo_runs["ddp"])
    # The first step's loss depends on the reference: a broken (e.g. unsharded) one shows here.
    assert online[0]["loss"] == pytest.approx(cached[0]["loss"], abs=1e-4)
    assert_same_training(dpo_runs["zero3_online"], dpo_runs["ddp"], start_model)


RLVR = ["rlvr", "conf=tiny", "data.max_rows=64", "grpo.prompts_per_rollout=4", "grpo.samples_per_prompt=2",
        "ppo.prompts_per_rollout=4", "ppo.epochs_per_rollout=2", "train.per_device_batch_size=2",
        "rollout.response_length=8", "train.max_steps=2", "grpo.non_stop_penalty=-10", "optim.lr=1e-3",
        "ppo.value_warmup_steps=0"]


@pytest.fixture(scope="module")
def rlvr_runs(tmp_path_factory, start_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zero3_rlvr")
    runs = {}
    for algorithm in ("grpo", "ppo"):
        for launcher in ("cpu_zero3", "cpu_ddp2"):
            run_dir = root / f"{algorithm}_{launcher}"
            run_tulu(*RLVR, f"algorithm={algorithm}", f"model.path={start_model}", *launch(launcher, run_dir))
            runs[algorithm, launcher] = run_dir
    return runs


def test_ppo_value_head_joins_the_bf16_partitions_of_a_gpu_profile(start_model, tmp_path):
    """Under bf16 ZeRO-3 (what every GPU profile runs), PPO's new value head takes the dtype of the
    partitions it joins: DeepSpeed packs all of them into one flat buffer of a single dtype, and refused a
    float32 head among the bf16 policy's partitions before the first step."""
    run_dir = tmp_path / "ppo_bf16"
    run_tulu(*RLVR, "algorithm=ppo", f"model.path={start_model}", "train.max_steps=1", *launch("cpu_zero3", run_dir),
             "launcher.mixed_precision=bf16", "+launcher.deepspeed.bf16={enabled: true}")
    assert_one_sharded_world(run_dir)
    [metrics] = read_metrics(run_dir)
    assert metrics["step"] == 1 and math.isfinite(metrics["value_loss"]) and math.isfinite(metrics["loss"])


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_rlvr_generates_from_the_sharded_policy_and_matches_ddp(rlvr_runs, start_model, algorithm):
    zero3, ddp = rlvr_runs[algorithm, "cpu_zero3"], rlvr_runs[algorithm, "cpu_ddp2"]
    assert_one_sharded_world(zero3)
    sharded, plain = read_metrics(zero3), read_metrics(ddp)
    assert [m["step"] for m in sharded] == [1, 2]
    assert 0 < sharded[0]["stop_rate"] < 1
    # Every rank sampled the whole rollout batch with the run's seed: the same responses as DDP's.
    for a, b in zip(sharded, plain, strict=True):
        assert a["response_length"] == b["response_length"] and a["reward"] == b["reward"]
        # PPO's value head (partitioned with the policy) gives the same values, so the same value loss.
        if algorithm == "ppo":
            assert a["value_loss"] == pytest.approx(b["value_loss"], rel=1e-4)
    assert_same_training(zero3, ddp, start_model)


@pytest.mark.slow
def test_offload_settings_keep_the_schedule_and_match_ddp(sft_runs, start_model, tmp_path):
    """`zero3_offload_8gpu`'s DeepSpeed settings on CPU ranks: parameters and optimizer state offloaded,
    the trainer's AdamW kept (so its warmup/decay schedule applies); the same weights as DDP."""
    from omegaconf import OmegaConf

    profile = OmegaConf.load(CONF / "launcher" / "zero3_offload_8gpu.yaml")
    offload = profile.deepspeed.zero_optimization
    run_dir = tmp_path / "offload"
    run_tulu(*SFT, f"model.path={start_model}", *launch("cpu_zero3", run_dir),
             "+launcher.deepspeed.zero_optimization.offload_optimizer={device: cpu}",
             "+launcher.deepspeed.zero_optimization.offload_param={device: cpu}",
             f"+launcher.deepspeed.zero_force_ds_cpu_optimizer={str(profile.deepspeed.zero_force_ds_cpu_optimizer).lower()}")
    assert offload.offload_optimizer.device == offload.offload_param.device == "cpu"
    assert_one_sharded_world(run_dir)
    assert_same_training(run_dir, sft_runs["ddp"], start_model)
