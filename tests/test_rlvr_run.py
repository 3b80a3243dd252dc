"""`tulu rlvr` end to end on CPU (a short run per algorithm, resume) and the published presets."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import run_tulu
from tulu_cli.runlog import read_metrics

# Seconds of each phase of a rollout batch, in the order they run.
PHASES = ("generation_s", "scoring_s", "experience_s", "update_s", "weight_sync_s")
REQUIRED = (
    "step",
    "loss",
    "verified_rate",
    "reward",
    "kl",
    "entropy",
    "response_length",
    "clip_fraction",
    "generation_time_share",
    "training_time_share",
    *PHASES,
)
# Small and fast: 4 prompts x 2 samples of at most 12 tokens per rollout batch.
QUICK = [
    "conf=tiny",
    "grpo.prompts_per_rollout=4",
    "grpo.samples_per_prompt=2",
    "ppo.prompts_per_rollout=8",
    "ppo.epochs_per_rollout=2",
    "ppo.value_warmup_steps=1",
    "train.per_device_batch_size=4",
    "rollout.response_length=12",
]


def run_config(run_dir) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def short_run(tmp_path, start_model, algorithm: str, extra_keys: tuple[str, ...]) -> list[dict]:
    """Two rollout batches of `algorithm`; checks the metrics every row must carry and returns them."""
    run_tulu(
        "rlvr",
        *QUICK,
        f"algorithm={algorithm}",
        "train.max_steps=2",
        f"model.path={start_model}",
        f"output_dir={tmp_path}",
    )
    assert run_config(tmp_path)["algorithm"] == algorithm
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2]
    for row in metrics:
        assert all(key in row for key in (*REQUIRED, *extra_keys)), sorted(row)
        assert any(key.startswith("verified_rate/") for key in row)
        assert 0.0 <= row["verified_rate"] <= 1.0
        # Each dataset's rollouts are counted, and the counts tile the batch (GRPO 4x2, PPO 8x1).
        counts = {key: value for key, value in row.items() if key.startswith("rollouts/")}
        assert {key.split("/", 1)[1] for key in counts} == {
            key.split("/", 1)[1] for key in row if key.startswith("verified_rate/")}
        assert sum(counts.values()) == 8
        assert all(row[phase] >= 0 for phase in PHASES)
        # The phases tile the batch: generation plus the rest is the whole.
        assert row["training_s"] == pytest.approx(sum(row[phase] for phase in PHASES[1:]), rel=1e-6)
        assert row["update_s"] > 0 and row["experience_s"] > 0
    assert (tmp_path / "checkpoints" / "step_00000002" / "trainer_state.json").exists()
    stage_log = (tmp_path / "logs" / "stage.log").read_text(errors="replace")
    assert "verified rate, first -> last quarter (1 batches each)" in stage_log
    return metrics


def test_grpo_short_run_writes_metrics_checkpoint_and_final_policy(tmp_path, start_model):
    metrics = short_run(tmp_path, start_model, "grpo", ("kl_loss", "skipped_fraction"))
    assert all(row["updates"] + row["skipped_updates"] == 1 and "value_loss" not in row for row in metrics)
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    start = AutoModelForCausalLM.from_pretrained(start_model)
    assert policy.config.model_type == "llama"
    assert set(policy.state_dict()) == set(start.state_dict())


def test_ppo_short_run_trains_policy_and_value_model(tmp_path, start_model):
    metrics = short_run(tmp_path, start_model, "ppo", ("value_loss", "value_clip_fraction"))
    assert all(row["updates"] == 2 and row["skipped_updates"] == 0 for row in metrics)
    # The first rollout batch trains the value model alone (value warm-up), the second both.
    assert [row["policy_trained"] for row in metrics] == [0.0, 1.0]
    # The random start policy rarely stops within 12 tokens; those responses get the -10 penalty.
    assert metrics[0]["stop_rate"] < 1 and metrics[0]["reward"] < 0
    changed = load_file(str(tmp_path / "final" / "model.safetensors"))
    original = load_file(str(start_model / "model.safetensors"))
    assert any(not torch.equal(changed[name], original[name]) for name in original)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_resumed_run_matches_an_uninterrupted_one(tmp_path, start_model, algorithm):
    common = [*QUICK, f"algorithm={algorithm}", f"model.path={start_model}", "checkpoint.every_steps=2"]
    run_tulu("rlvr", *common, "train.max_steps=4", f"output_dir={tmp_path / 'straight'}")
    run_tulu("rlvr", *common, "train.max_steps=2", f"output_dir={tmp_path / 'resumed'}")
    result = run_tulu(
        "rlvr", *common, "train.max_steps=4", "resume=true", f"output_dir={tmp_path / 'resumed'}"
    )
    assert "resumed from" in result.stdout
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed, strict=True):
        assert a["verified_rate"] == b["verified_rate"] and a["response_length"] == b["response_length"]
    one = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    two = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_bad_configuration_fails_with_a_clear_message(tmp_path, start_model):
    result = run_tulu(
        "rlvr",
        *QUICK,
        "algorithm=grpo",
        "grpo.prompts_per_rollout=3",
        "train.per_device_batch_size=4",
        f"model.path={start_model}",
        f"output_dir={tmp_path}",
        check=False,
    )
    # Checked before launch: the message names the fields and their values.
    assert result.returncode == 2
    assert "grpo.prompts_per_rollout=3" in result.stderr and "per_device_batch_size=4" in result.stderr


@pytest.mark.parametrize(
    "preset, algorithm, published",
    [
        (
            "llama8b",
            "ppo",
            {
                "optim.lr": 3e-7,
                "ppo.beta": 0.05,
                "optim.warmup_ratio": 0.0,
                "ppo.prompts_per_rollout": 224,
                "train.episodes": 10_000_000,
                "ppo.reward_model_path": "allenai/Llama-3.1-Tulu-3-8B-RM",
                "ppo.loss_aggregation": "micro_batch_mean",
            },
        ),
        (
            "llama70b",
            "ppo",
            {
                "optim.lr": 1e-7,
                "ppo.beta": 0.07,
                "optim.warmup_ratio": 0.1,
                "ppo.prompts_per_rollout": 640,
                "train.episodes": 400_000,
                # Tulu 3 started the 70B value model from the 8B reward model too.
                "ppo.reward_model_path": "allenai/Llama-3.1-Tulu-3-8B-RM",
            },
        ),
        (
            "grpo8b",
            "grpo",
            {
                "optim.lr": 5e-7,
                "optim.scheduler": "constant",
                "grpo.beta": 0.01,
                "grpo.kl_estimator": "k3",
                "grpo.samples_per_prompt": 16,
                "grpo.prompts_per_rollout": 48,
                "grpo.non_stop_penalty": 0.0,
                "grpo.group_std": "unbiased",
                "grpo.zero_spread_groups": "keep",
                "grpo.kl_log_ratio_clamp": 40.0,
                "grpo.loss_aggregation": "micro_batch_mean",
            },
        ),
    ],
)
def test_dry_run_of_published_presets_shows_the_recipe_values(tmp_path, preset, algorithm, published):
    result = run_tulu("rlvr", f"conf={preset}", f"output_dir={tmp_path}", "--dry-run")
    assert "nothing is launched" in result.stdout
    config = run_config(tmp_path)
    assert config["algorithm"] == algorithm
    assert config["generation"]["backend"] == "vllm"
    assert config["rollout"]["response_length"] == 2048 and config["rollout"]["max_prompt_length"] == 2048
    assert config["rollout"]["temperature"] == 1.0 and config["rollout"]["verifier_reward"] == 10.0
    section = config[algorithm]
    if algorithm == "ppo":
        assert {
            key: section[key]
            for key in (
                "epochs_per_rollout",
                "minibatches_per_rollout",
                "clip",
                "value_coef",
                "value_clip",
                "gamma",
                "lam",
                "whiten_advantages",
                "samples_per_prompt",
                "non_stop_penalty",
                "kl_estimator",
            )
        } == {
            "epochs_per_rollout": 4,
            "minibatches_per_rollout": 1,
            "clip": 0.2,
            "value_coef": 0.1,
            "value_clip": 0.2,
            "gamma": 1.0,
            "lam": 0.95,
            "whiten_advantages": True,
            "samples_per_prompt": 1,
            "non_stop_penalty": -10.0,
            "kl_estimator": "k1",
        }
        assert config["optim"]["scheduler"] == "linear"
    else:
        assert section["epochs_per_rollout"] * section["minibatches_per_rollout"] == 2
    for dotted, value in published.items():
        group, key = dotted.split(".")
        assert config[group][key] == value, dotted
        assert yaml.safe_dump({key: value}).strip() in result.stdout, dotted


def test_unknown_algorithm_option_fails_before_training(tmp_path, start_model):
    result = run_tulu(
        "rlvr", *QUICK, "algorithm=grpo", "grpo.group_std=sample", f"model.path={start_model}",
        f"output_dir={tmp_path}", check=False,
    )
    assert result.returncode != 0
    assert "grpo.group_std must be one of unbiased, population" in (tmp_path / "logs" / "failure.txt").read_text()
