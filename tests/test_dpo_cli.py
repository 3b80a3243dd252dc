"""`tulu dpo` end to end: presets, a short real run, resume after a kill, and the tiny preset learning."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import kill_tulu_when, run_tulu
from tulu_cli.runlog import read_metrics

TRAIN_KEYS = {"step", "loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy", "lr",
              "tokens_per_s"}
EVAL_KEYS = {"eval/rewards/accuracy", "eval/rewards/margin", "eval/loss"}


def tulu(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return run_tulu(*args, timeout=timeout)


@pytest.fixture(scope="module")
def start_model(tmp_path_factory, tiny_tokenizer, tiny_model_factory) -> Path:
    """A tiny Llama with random weights, saved with its tokenizer like an SFT run's final/."""
    target = tmp_path_factory.mktemp("sft") / "final"
    tiny_model_factory().save_pretrained(target)
    tiny_tokenizer.save_pretrained(target)
    return target


def short_run(model: Path, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return ["dpo", "conf=tiny", f"model.path={model}", f"output_dir={run_dir}", f"reference.cache_dir={cache}",
            "data.max_rows=48", "train.effective_batch_size=8", "train.per_device_batch_size=4",
            "reference.batch_size=16", *extra]


def test_dry_run_shows_published_hyperparameters(tmp_path):
    result = tulu("dpo", "conf=llama8b", "--dry-run", f"output_dir={tmp_path / 'r8'}")
    config = yaml.safe_load((tmp_path / "r8" / "config.yaml").read_text())
    assert config["loss"] == {"type": "dpo_norm", "beta": 5.0, "label_smoothing": 0.0, "simpo_gamma_beta_ratio": 0.3}
    assert config["optim"]["lr"] == 5e-7 and config["optim"]["warmup_ratio"] == 0.1
    assert config["optim"]["scheduler"] == "linear" and config["optim"]["weight_decay"] == 0.0
    assert config["train"]["epochs"] == 1 and config["train"]["effective_batch_size"] == 128
    assert config["train"]["max_seq_length"] == 2048 and config["model"]["gradient_checkpointing"] is True
    assert config["model"]["path"] == "allenai/Llama-3.1-Tulu-3-8B-SFT" and config["reference"]["mode"] == "cached"
    assert config["loss_tokens"] == "all_turns"  # every assistant turn, as the reference encodes pairs
    for shown in ("type: dpo_norm", "beta: 5.0", "lr: 5.0e-07", "effective_batch_size: 128", "max_seq_length: 2048",
                  "warmup_ratio: 0.1", "tulu_cli.train.dpo"):
        assert shown in result.stdout
    tulu("dpo", "conf=llama70b", "--dry-run", f"output_dir={tmp_path / 'r70'}")
    config70 = yaml.safe_load((tmp_path / "r70" / "config.yaml").read_text())
    assert config70["optim"]["lr"] == 2e-7 and config70["loss"]["type"] == "dpo_norm"
    assert config70["model"]["path"] == "allenai/Llama-3.1-Tulu-3-70B-SFT" and config70["loss_tokens"] == "all_turns"


def test_short_run_logs_rewards_and_evaluates(start_model, tmp_path):
    run_dir = tmp_path / "run"
    tulu(*short_run(start_model, run_dir, tmp_path / "cache", "data.max_rows=16", "train.max_steps=2",
                    "train.log_every=1", "checkpoint.every_steps=1"))
    metrics = read_metrics(run_dir)
    train_rows = [row for row in metrics if "loss" in row]
    eval_rows = [row for row in metrics if "eval/loss" in row]
    assert [row["step"] for row in train_rows] == [1, 2] and [row["step"] for row in eval_rows] == [2]
    assert all(TRAIN_KEYS <= row.keys() for row in train_rows) and all(EVAL_KEYS <= row.keys() for row in eval_rows)
    # The first step starts at the reference: every reward is 0 and the loss is log 2.
    assert train_rows[0]["rewards/margin"] == pytest.approx(0, abs=1e-5)
    assert train_rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert (run_dir / "final" / "model.safetensors").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]
    state = json.loads((run_dir / "checkpoints" / "step_00000002" / "trainer_state.json").read_text())
    assert (tmp_path / "cache" / state["plan"]["reference_key"] / "logprobs.safetensors").exists()
    assert json.loads((run_dir / "timings.json").read_text())["reference_cached"] is False


def test_missing_start_model_is_a_clear_error(tmp_path):
    result = run_tulu("dpo", "conf=tiny", f"output_dir={tmp_path}", check=False, timeout=120)
    assert result.returncode != 0 and "model.path is not set" in result.stdout + result.stderr
    assert not (tmp_path / "metrics.jsonl").exists()
    result = run_tulu("dpo", "conf=tiny", f"output_dir={tmp_path}", "model.path=some/model", "loss_tokens=final",
                      check=False, timeout=120)
    assert result.returncode != 0 and "loss_tokens must be one of all_turns, last_turn" in result.stdout + result.stderr


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run_and_reuses_cache(start_model, tmp_path):
    cache = tmp_path / "cache"
    steps = ["train.max_steps=5", "train.log_every=1", "checkpoint.every_steps=2", "train.eval_every=5"]
    tulu(*short_run(start_model, tmp_path / "whole", cache, *steps))
    killed = tmp_path / "killed"
    checkpoint = killed / "checkpoints" / "step_00000002" / "trainer_state.json"
    assert kill_tulu_when(short_run(start_model, killed, cache, *steps), checkpoint.exists, timeout=600)
    assert not (killed / "final").exists()
    tulu(*short_run(start_model, killed, cache, *steps, "resume=true"))
    log = (killed / "logs" / "stage.log").read_text()
    assert "resumed from" in log and "reference log-probs (train): loaded" in log
    assert json.loads((killed / "timings.json").read_text())["reference_cached"] is True
    whole = {row["step"]: row for row in read_metrics(tmp_path / "whole") if "loss" in row}
    resumed = {row["step"]: row for row in read_metrics(killed) if "loss" in row}
    assert sorted(resumed) == [1, 2, 3, 4, 5]
    for step in range(1, 6):
        assert resumed[step]["loss"] == pytest.approx(whole[step]["loss"], abs=1e-5)
        assert resumed[step]["rewards/margin"] == pytest.approx(whole[step]["rewards/margin"], abs=1e-4)
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2  # train and eval entries


@pytest.mark.slow
def test_online_reference_matches_cached(start_model, tmp_path):
    steps = ["train.max_steps=3", "train.log_every=1"]
    tulu(*short_run(start_model, tmp_path / "cached", tmp_path / "cache", *steps))
    tulu(*short_run(start_model, tmp_path / "online", tmp_path / "unused", *steps, "reference.mode=online"))
    assert not (tmp_path / "unused").exists()
    cached, online = read_metrics(tmp_path / "cached"), read_metrics(tmp_path / "online")
    for a, b in zip([r for r in cached if "loss" in r], [r for r in online if "loss" in r], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
        assert a["rewards/margin"] == pytest.approx(b["rewards/margin"], abs=1e-3)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_tiny_preset_learns_the_preference(tmp_path):
    tulu("sft", "conf=tiny", f"output_dir={tmp_path / 'sft'}", timeout=1800)
    tulu("dpo", "conf=tiny", f"model.path={tmp_path / 'sft' / 'final'}", f"output_dir={tmp_path / 'dpo'}",
         f"reference.cache_dir={tmp_path / 'cache'}", timeout=1800)
    evals = [row for row in read_metrics(tmp_path / "dpo") if "eval/rewards/accuracy" in row]
    assert len(evals) >= 2
    assert evals[-1]["eval/rewards/accuracy"] > 0.5
    assert evals[-1]["eval/rewards/margin"] > evals[0]["eval/rewards/margin"] > 0


@pytest.mark.slow
def test_two_ranks_match_one_rank(start_model, tmp_path):
    """2 CPU ranks x 1 micro-batch and 1 rank x 2 micro-batches train the same model."""
    import torch
    from safetensors.torch import load_file

    common = ["data.max_rows=16", "train.max_steps=2", "optim.warmup_ratio=0"]
    tulu(*short_run(start_model, tmp_path / "one", tmp_path / "cache1", *common))
    tulu(*short_run(start_model, tmp_path / "two", tmp_path / "cache2", *common, "launcher=cpu_ddp2"))
    one = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
