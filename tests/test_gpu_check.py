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
    assert "gpu-check: 8/8 passed" in result.stdout


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
    assert stages == ["sft", "dpo", "dpo_online", "rlvr_grpo", "rlvr_ppo", "sft_lora"]
    for stage in stages:
        launcher = yaml.safe_load((tmp_path / stage / "config.yaml").read_text())["launcher"]
        assert launcher["mixed_precision"] == "bf16"
        assert stage == "sft_lora" or launcher["deepspeed"]["bf16"] == {"enabled": True}
