"""`tulu sft` end to end on CPU: run directory, multirun, 2 real ranks, and resume after a real kill."""

from __future__ import annotations

import json
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import kill_tulu_when, run_tulu
from tulu_cli.runlog import read_metrics

SHORT = ["conf=tiny", "train.max_steps=12", "train.log_every=2", "checkpoint.every_steps=6"]


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def test_short_run_writes_a_complete_run_directory(tmp_path):
    run_tulu("sft", *SHORT, f"output_dir={tmp_path}")
    for name in ("config.yaml", "command.txt", "metrics.jsonl", "logs/stage.log", "rejects.jsonl"):
        assert (tmp_path / name).exists(), name
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["max_steps"] == 12
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [2, 4, 6, 8, 10, 12]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000006", "step_00000012"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "final")
    assert model.config.model_type == "llama" and tokenizer.eos_token == "<|end_of_text|>"
    initial = load_file(str(tmp_path / "initial" / "model.safetensors"))
    assert any(not torch.equal(initial[k], v) for k, v in final_weights(tmp_path).items()), "initial/ is the untrained model"
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["steps"] == 12 and timings["train_s"] > 0 and timings["checkpoint_s"] > 0
    assert timings["input_tokens"] == planned_input_tokens(tmp_path, tokenizer)


def planned_input_tokens(run_dir, tokenizer) -> int:
    """Input tokens of every row the run's batch plan trains on (packed: no padding)."""
    from tulu_cli.data.sft_data import prepare_sft
    from tulu_cli.train.batching import BatchPlan

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    train = cfg["train"]
    dataset, _ = prepare_sft(cfg["data"], train["max_seq_length"], tokenizer, run_dir / "replay")
    plan = BatchPlan(len(dataset), train["effective_batch_size"], train["per_device_batch_size"], 1, train["epochs"],
                     cfg["seed"], train["max_steps"])
    rows = [row for step in range(plan.total_steps) for batch in plan.micro_batches(step, 0) for row in batch]
    return sum(len(ids) for ids in dataset.select(rows)["input_ids"])


def test_multirun_sweep_gives_each_job_its_own_run_directory(tmp_path):
    run_tulu("sft", "-m", "conf=tiny", "train.max_steps=2", "optim.lr=1e-3,3e-3", f"output_dir={tmp_path}")
    lrs = sorted(yaml.safe_load((tmp_path / job / "config.yaml").read_text())["optim"]["lr"] for job in ("0", "1"))
    assert lrs == [1e-3, 3e-3]
    assert all((tmp_path / job / "final" / "model.safetensors").exists() for job in ("0", "1"))


# "sum" is the slower twin of "mean" (same two launches, another loss reduction): slow run only.
@pytest.mark.parametrize("reduction", ["mean", pytest.param("sum", marks=pytest.mark.slow)])
def test_two_ranks_match_one_rank_with_gradient_accumulation(tmp_path, reduction):
    """Same effective batch: 1 rank x 2 micro-batches vs 2 ranks x 1 micro-batch -> same model."""
    common = ["conf=tiny", "train.max_steps=4", "train.effective_batch_size=16", "train.per_device_batch_size=8",
              f"train.loss_reduction={reduction}", "optim.lr=1e-3", "optim.warmup_ratio=0"]
    run_tulu("sft", *common, f"output_dir={tmp_path / 'one'}")
    result = run_tulu("sft", *common, "launcher=cpu_ddp2", f"output_dir={tmp_path / 'two'}")
    assert "2 rank(s)" in result.stdout
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    loss_one = [m["loss"] for m in read_metrics(tmp_path / "one")]
    loss_two = [m["loss"] for m in read_metrics(tmp_path / "two")]
    assert loss_one == pytest.approx(loss_two, rel=1e-4)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["conf=tiny", "train.max_steps=24", "train.log_every=2", "checkpoint.every_steps=8"]
    run_tulu("sft", *args, f"output_dir={tmp_path / 'straight'}")

    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / "step_00000008" / "trainer_state.json"
    assert kill_tulu_when(["sft", *args, f"output_dir={killed}"], checkpoint.exists), "ended before its checkpoint"
    assert not (killed / "final").exists()

    result = run_tulu("sft", *args, f"output_dir={killed}", "resume=true")
    assert "resumed from" in result.stdout
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(killed)
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    steps = [m["step"] for m in read_metrics(killed)]
    assert steps == sorted(set(steps)) and steps[-1] == 24


def test_resume_refuses_another_plan_and_sets_aside_the_replaced_runs_later_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    args = ["conf=tiny", "train.max_steps=8", "train.log_every=2", "checkpoint.every_steps=4", f"output_dir={run_dir}"]
    run_tulu("sft", *args, "checkpoint.keep=2")
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_00000004", "step_00000008"]
    plan = json.loads((checkpoints / "step_00000008" / "trainer_state.json").read_text())["plan"]
    assert plan["effective_batch_size"] == yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["effective_batch_size"]

    refused = run_tulu("sft", *args, "resume=true", "seed=7", check=False)
    assert refused.returncode != 0
    assert "another batch plan" in refused.stdout + refused.stderr and "seed" in refused.stdout + refused.stderr

    # Rewinding to step 4 replaces steps 5-8: the earlier step 8 moves aside, so neither resume=true nor the
    # rotation (keep=1) can take it for the new run's.
    replaced = (checkpoints / "step_00000008").stat().st_ino
    result = run_tulu("sft", *args, "checkpoint.keep=1", f"resume={checkpoints / 'step_00000004'}")
    assert "checkpoint of the replaced run moved to" in result.stdout
    assert (checkpoints / "superseded" / "step_00000008").stat().st_ino == replaced
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_00000008"]
    assert (checkpoints / "step_00000008").stat().st_ino != replaced


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_preset_trains_in_minutes_and_halves_the_loss(tmp_path):
    start = time.time()
    run_tulu("sft", "conf=tiny", f"output_dir={tmp_path}")
    elapsed = time.time() - start
    metrics = read_metrics(tmp_path)
    assert metrics[-1]["loss"] < 0.5 * metrics[0]["loss"]
    assert elapsed < 180, f"tiny SFT took {elapsed:.0f}s"
