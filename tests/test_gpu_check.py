"""`make gpu-check` without a GPU: every stage's configuration resolves under the one-GPU ZeRO-3
profile (dry run), on a machine without CUDA it fails at once with the fix, not mid-run, and each
rank's partitioning report is read however the ranks' output interleaved. The slow run rehearses the
whole check on 2 CPU ranks in the GPU profiles' bf16."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT


def gpu_check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tulu_cli.gpu_check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_dry_run_resolves_every_stage_under_the_one_gpu_zero3_profile(tmp_path):
    result = gpu_check("--dry-run", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in ("sft", "dpo", "dpo_online", "rlvr_grpo", "rlvr_ppo", "rlvr_vllm"):
        assert f"PASS {stage}" in result.stdout
        config = yaml.safe_load((tmp_path / stage / "config.yaml").read_text())
        launcher = config["launcher"]
        assert launcher["kind"] == "accelerate" and launcher["processes_per_machine"] == 1
        assert launcher["mixed_precision"] == "bf16" and launcher["deepspeed"]["zero_optimization"]["stage"] == 3
        assert "--use_deepspeed" in (tmp_path / stage / "command.txt").read_text()
    assert yaml.safe_load((tmp_path / "rlvr_ppo" / "config.yaml").read_text())["generation"]["backend"] == "hf"
    vllm = yaml.safe_load((tmp_path / "rlvr_vllm" / "config.yaml").read_text())["generation"]
    assert vllm["backend"] == "vllm" and vllm["vllm"]["mode"] == "colocate"
    for stage in ("sft_lora", "sft_qlora"):
        config = yaml.safe_load((tmp_path / stage / "config.yaml").read_text())
        assert config["model"]["lora"]["enabled"] and config["launcher"]["deepspeed"] is None
        assert config["launcher"]["mixed_precision"] == "bf16"
    assert yaml.safe_load((tmp_path / "sft_qlora" / "config.yaml").read_text())["model"]["lora"]["load_in_4bit"]
    assert yaml.safe_load((tmp_path / "eval" / "config.yaml").read_text())["launcher"]["kind"] == "python"
    assert "gpu-check: 9/9 passed" in result.stdout


def test_without_cuda_it_fails_at_the_preflight_with_the_install_command(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    result = gpu_check("--output-dir", str(tmp_path))
    assert result.returncode == 1
    assert "FAIL preflight" in result.stdout and "TORCH_SPEC" in result.stdout
    assert json.loads((tmp_path / "summary.json").read_text())[0]["passed"] is False


def fake_run(run_dir, log: str):
    import torch
    from safetensors.torch import save_file

    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "final").mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 1.5}\n')
    (run_dir / "logs" / "stage.log").write_text(log)
    save_file({"w": torch.ones(2, 2)}, str(run_dir / "final" / "model.safetensors"))
    return run_dir


def test_partitioning_reports_are_read_when_two_ranks_wrote_them_onto_one_line(tmp_path):
    from tulu_cli.gpu_check import check_run

    report = "partitioning (model): rank={} world=2 params=38 zero3={} partitioned=38 full_numel=8 local_numel=4"
    both = fake_run(tmp_path / "both", "start\n" + report.format(1, 38) + report.format(0, 38) + "\nstep 1\n")
    assert check_run(both) == (True, "1 steps, last loss 1.5, final/ full weights")
    half = fake_run(tmp_path / "half", report.format(0, 38) + "\n" + report.format(1, 30) + "\n")
    assert check_run(half) == (False, "parameters not managed by ZeRO-3: rank 1: 30 of 38 parameters")
    assert check_run(fake_run(tmp_path / "none", "step 1\n"))[1].endswith("no partitioning report")


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_stage_in_the_gpu_profiles_bf16(tmp_path):
    result = gpu_check("--launcher", "cpu_zero3", "--output-dir", str(tmp_path), timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    stages = [outcome["stage"] for outcome in json.loads((tmp_path / "summary.json").read_text())]
    assert stages == ["sft", "dpo", "dpo_online", "rlvr_grpo", "rlvr_ppo", "eval", "sft_lora"]
    assert "PASS eval" in result.stdout and "3 tasks scored on cpu" in result.stdout
    for stage in set(stages) - {"eval"}:
        launcher = yaml.safe_load((tmp_path / stage / "config.yaml").read_text())["launcher"]
        assert launcher["mixed_precision"] == "bf16"
        assert stage == "sft_lora" or launcher["deepspeed"]["bf16"] == {"enabled": True}


def test_eval_stage_passes_only_with_every_task_scored_on_the_gpu(tmp_path):
    from tulu_cli.gpu_check import check_eval

    def eval_run(name: str, device: str, tasks: dict):
        run_dir = tmp_path / name
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({"tasks": tasks}))
        (run_dir / "logs" / "stage.log").write_text(f"loading\neval model on {device}\n")
        return run_dir

    scored = {"gsm_tiny": {"status": "ok", "value": 0.25}, "mc_tiny": {"status": "ok", "value": 0.5}}
    assert check_eval(eval_run("gpu", "cuda:0", scored), on_gpu=True) == (
        True, "2 tasks scored on cuda:0: gsm_tiny 0.25, mc_tiny 0.5")
    assert check_eval(eval_run("cpu", "cpu", scored), on_gpu=True) == (False, "the model ran on cpu, not the GPU")
    failed = {**scored, "ifeval_tiny": {"status": "error", "value": None, "detail": "no usable items"},
              "popqa_tiny": {"status": "ok", "value": float("nan")}}
    assert check_eval(eval_run("failed", "cuda:0", failed), on_gpu=True) == (
        False, "tasks not scored: ifeval_tiny: error, score None (no usable items); popqa_tiny: ok, score nan")


def test_a_stage_that_exits_cleanly_without_its_outputs_fails_alone(tmp_path, monkeypatch):
    from tulu_cli import gpu_check as check

    monkeypatch.setattr(check, "stage_command", lambda stage, work, launcher: [sys.executable, "-c", "pass"])
    outcome = check.run_stage("sft", tmp_path, "zero3_1gpu", dry_run=False)
    assert not outcome.passed and outcome.detail.startswith("outputs unreadable: FileNotFoundError")


def test_the_rehearsal_turns_on_deepspeeds_bf16_only_where_the_profile_has_deepspeed(tmp_path):
    from tulu_cli.gpu_check import stage_command

    assert "+launcher.deepspeed.bf16={enabled: true}" in stage_command("sft", tmp_path, "cpu_zero3")
    for launcher in ("cpu", "cpu_ddp2"):
        command = stage_command("sft", tmp_path, launcher)
        assert "launcher.mixed_precision=bf16" in command
        assert not any(arg.startswith("+launcher.deepspeed") for arg in command)
