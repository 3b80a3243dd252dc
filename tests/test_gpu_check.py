"""`make gpu-check` without a GPU: every stage's configuration resolves under the one-GPU ZeRO-3
profile (dry run), and on a machine without CUDA it fails at once with the fix, not mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.conftest import ROOT


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tulu_cli.gpu_check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


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
