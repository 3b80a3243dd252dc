"""The recipes chain the stages: the 8B dry run shows every stage with the published values, and
the tiny pipeline runs end to end (slow)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import ROOT, TULU


def recipe(name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`tulu recipe NAME ARGS...`: the recipe shipped in the package, calling the `tulu` beside this Python."""
    return subprocess.run([*TULU, "recipe", name, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=timeout)


def stage_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("== ")]


@pytest.mark.slow
def test_8b_dry_run_prints_every_stage_with_its_published_values(tmp_path):
    result = recipe("tulu3_8b", "--dry-run", "--runs", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    stages = [line.split(":")[0][3:] for line in stage_lines(result.stdout)]
    assert stages == ["curate"] * 3 + ["decontaminate", "sft", "dpo", "rlvr"] + ["eval"] * 3
    out = result.stdout
    assert out.count("launch command") == 10
    for shown in ("tulu_cli.train.sft", "lr: 5.0e-06", "effective_batch_size: 128", "max_seq_length: 4096",
                  "warmup_ratio: 0.03", "loss_reduction: sum",  # SFT
                  "type: dpo_norm", "beta: 5.0", "lr: 5.0e-07",  # DPO
                  "algorithm: ppo", "lr: 3.0e-07", "beta: 0.05",  # RLVR
                  "--use_deepspeed", "meta-llama/Llama-3.1-8B"):
        assert shown in out, shown
    assert f"model.path={tmp_path}/sft/final" in out and f"model.path={tmp_path}/dpo/final" in out
    # A rerun of a published recipe never deletes a training run: only the user's `STAGE:overwrite=true` does.
    assert "overwrite=true" not in out
    replaced = recipe("tulu3_8b", "--dry-run", "--runs", str(tmp_path), "sft:overwrite=true")
    assert [line for line in stage_lines(replaced.stdout) if "overwrite=true" in line][0].startswith("== sft")


def test_from_skips_the_earlier_stages(tmp_path):
    result = recipe("tulu3_70b", "--dry-run", "--from", "dpo", "--runs", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = [line for line in stage_lines(result.stdout) if "skipped" in line]
    assert len(skipped) == 5 and "lr: 2.0e-07" in result.stdout
    bad = recipe("tulu3_8b", "--from", "nope")
    assert bad.returncode == 2 and "unknown stage" in bad.stderr


@pytest.mark.slow
def test_seed_reaches_every_stage_of_each_seeds_run(tmp_path):
    result = recipe("tiny_seeds", "2", "3", "--dry-run", "--runs", str(tmp_path), "sft:train.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = stage_lines(result.stdout)
    for seed in (2, 3):
        mine = [line for line in lines if f"output_dir={tmp_path}/seed{seed}/" in line]
        assert len(mine) == 10 and all(f"seed={seed}" in line.split() for line in mine), mine
    assert sum("train.epochs=1" in line for line in lines) == 2


def test_compare_step_takes_no_stage_overrides(tmp_path):
    """`--seed N` and bare key=value overrides go to the stages, not to `tulu eval compare` (which takes runs)."""
    for model in ("base", "sft", "dpo", "rlvr"):
        run = tmp_path / "eval" / model
        run.mkdir(parents=True)
        tasks = {"gsm_tiny": {"metric": "accuracy", "value": 0.5, "status": "ok", "settings_hash": "x"}}
        (run / "results.json").write_text(json.dumps({"label": model, "suite": "tiny", "tasks": tasks}))
    result = recipe("tiny", "--runs", str(tmp_path), "--from", "compare", "--seed", "3", "optim.lr=1e-3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    compare_line = next(line for line in stage_lines(result.stdout) if line.startswith("== compare"))
    assert "seed=3" not in compare_line and "optim.lr" not in compare_line
    assert (tmp_path / "compare.png").exists()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_tiny_pipeline_end_to_end(tmp_path):
    result = recipe("tiny", "--runs", str(tmp_path), timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tulu eval compare" in result.stdout and (tmp_path / "compare.png").exists()

    tasks = {name: json.loads((tmp_path / "eval" / name / "results.json").read_text())["tasks"]
             for name in ("base", "sft", "dpo", "rlvr")}
    gsm = {name: task["gsm_tiny"]["value"] for name, task in tasks.items()}
    average = {name: sum(t["value"] for t in task.values()) / len(task) for name, task in tasks.items()}
    # Each stage raises the three-task average; SFT teaches the arithmetic, and RLVR does not lower it in
    # the model it starts from (held-out GSM moves within its noise after SFT: 196 problems, ~3 points).
    assert average["base"] < average["sft"] < average["dpo"] < average["rlvr"], average
    assert gsm["sft"] > gsm["base"] + 0.1
    assert gsm["rlvr"] >= gsm["dpo"], gsm
