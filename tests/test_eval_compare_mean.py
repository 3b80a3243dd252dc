"""`tulu eval compare --mean`: one column per label with the mean and spread of its runs (e.g. one per
seed), and each column's gain over the one before it, paired run by run."""

import json
import os
import subprocess

from tests.conftest import ROOT, TULU


def write_run(directory, label, scores):
    directory.mkdir(parents=True)
    tasks = {name: {"metric": "acc", "value": value, "status": "ok", "settings_hash": name}
             for name, value in scores.items()}
    (directory / "results.json").write_text(json.dumps({"label": label, "suite": "tiny", "tasks": tasks}))
    return directory


def compare(*args):
    return subprocess.run([*TULU, "eval", "compare", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


def test_mean_columns_and_paired_gains(tmp_path):
    runs = {
        ("sft", 1): {"a": 0.40, "b": 0.60}, ("sft", 2): {"a": 0.50, "b": 0.70},
        ("dpo", 1): {"a": 0.50, "b": 0.80}, ("dpo", 2): {"a": 0.60, "b": 0.80},
    }
    args = [f"{label}={write_run(tmp_path / f'{label}{seed}', label, scores)}" for (label, seed), scores in runs.items()]
    result = compare("--mean", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
             for line in result.stdout.splitlines() if line.count("│") > 3}
    # a: sft 0.40, 0.50 -> 45.0 ± 7.1; dpo 0.50, 0.60 -> 55.0 ± 7.1 (sample std of two values d apart: d / sqrt 2).
    assert lines["a"] == ["acc", "45.0 ± 7.1", "55.0 ± 7.1"]
    assert lines["b"] == ["acc", "65.0 ± 7.1", "80.0 ± 0.0"]
    # Averages per run: sft 0.50, 0.60; dpo 0.65, 0.70 -> gains 0.15, 0.10 -> 12.5 ± 3.5.
    assert lines["average (2 tasks)"] == ["", "55.0 ± 7.1", "67.5 ± 3.5"]
    assert lines["gain over the column before"] == ["", "", "12.5 ± 3.5"]


def test_mean_refuses_labels_with_different_numbers_of_runs(tmp_path):
    one = write_run(tmp_path / "s1", "sft", {"a": 0.5})
    two = write_run(tmp_path / "s2", "sft", {"a": 0.6})
    three = write_run(tmp_path / "d1", "dpo", {"a": 0.7})
    result = compare("--mean", f"sft={one}", f"sft={two}", f"dpo={three}")
    assert result.returncode == 2 and "different numbers of runs" in result.stdout
