"""`tulu eval` end to end: the tulu3_dev dry run, a tiny eval on an untrained model, and `compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF, run_tulu
from tulu_cli.eval.readiness import task_status
from tulu_cli.eval.results import TaskResult, write_results
from tulu_cli.eval.tasks import select_tasks

TULU3_DEV_TASKS = ["mmlu", "popqa", "truthfulqa", "bbh", "drop", "math", "gsm8k", "humaneval", "humaneval_plus",
                   "ifeval", "alpaca_eval", "safety"]


def save_untrained_tiny_model(directory: Path) -> Path:
    """A randomly initialised tiny model saved like a stage's `final` directory (the recipe's "base")."""
    from tulu_cli.config import assets_dir
    from tulu_cli.modeling import load_model, load_tokenizer

    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "tiny.yaml"))
    tokenizer = load_tokenizer(model_cfg, assets_dir())
    load_model(model_cfg, tokenizer, seed=0).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_tulu3_dev_dry_run_lists_every_task_with_its_settings(tmp_path):
    # resume=true: an eval run may continue in its output_dir (AlpacaEval's saved work)
    result = run_tulu("eval", "conf=tulu3_dev", "--dry-run", f"output_dir={tmp_path}", "resume=true")
    resolved = OmegaConf.load(tmp_path / "config.yaml")
    assert list(resolved.tasks) == TULU3_DEV_TASKS and resolved.resume is True
    assert resolved.generation.backend == "vllm"
    settings = {name: resolved.tasks[name] for name in TULU3_DEV_TASKS}
    assert (settings["gsm8k"].num_shots, settings["gsm8k"].olmes_id, settings["gsm8k"].lm_eval_task) == (
        8, "gsm8k::tulu", "gsm8k_cot")
    assert (settings["math"].num_shots, settings["bbh"].num_shots, settings["drop"].num_shots) == (4, 3, 3)
    assert settings["ifeval"].metric == "prompt_level_loose_acc,none"
    assert (settings["mmlu"].olmes_id, settings["mmlu"].lm_eval_task) == ("mmlu:cot::summarize",
                                                                         "tulu_mmlu_flan_cot_zeroshot")
    table = result.stdout[result.stdout.index("suite tulu3_dev"):]
    for name in TULU3_DEV_TASKS:
        assert name in table
    assert "8 CoT" in table and "gsm8k::tulu" in table and "minerva_math::tulu" in table
    # every task's status: runnable (and what it needs) or why not
    statuses = {spec.name: task_status(spec, OmegaConf.to_container(resolved, resolve=True))
                for spec in select_tasks(OmegaConf.to_container(resolved.tasks, resolve=True), None)}
    runnable = {name for name, status in statuses.items() if status.startswith("runnable")}
    assert runnable == set(TULU3_DEV_TASKS)
    assert statuses["mmlu"] == "runnable; needs: its subtasks' hub datasets (network)"
    assert "confirm_run_unsafe_code=true" in statuses["humaneval"]
    assert (settings["humaneval"].lm_eval_task, settings["humaneval"].metric) == ("tulu_humaneval_pass10",
                                                                                 "pass@10,create_test")
    assert statuses["popqa"] == "runnable; needs: hub dataset akariasai/PopQA (network)"
    assert (settings["popqa"].verifier, settings["popqa"].num_shots, settings["popqa"].olmes_id) == (
        "popqa", 15, "popqa::tulu")
    assert settings["popqa"].fewshot.path.endswith("assets/olmes/popqa_fewshot.jsonl")  # bundled, offline
    assert statuses["alpaca_eval"].startswith("runnable; needs: hub file tatsu-lab/alpaca_eval/"
                                              "alpaca_eval_gpt4_baseline.json")
    assert "judge endpoint https://api.openai.com/v1 serving gpt-4-1106-preview" in statuses["alpaca_eval"]
    assert "alpaca-eval:" in table and "weighted_alpaca_ev" in table  # the runner column (folded)
    assert statuses["safety"].startswith("runnable; needs: hub dataset allenai/tulu-3-harmbench-eval (network)")
    assert statuses["safety"].endswith("a classifier endpoint: set tasks.safety.classifier.base_url and .model (an "
                                       "OpenAI-compatible server of allenai/wildguard with the completions route, "
                                       "e.g. vLLM's)")
    assert sorted(settings["safety"].sets) == ["do_anything_now", "harmbench", "trustllm_jailbreaktrigger",
                                               "wildguardtest", "wildjailbreak", "xstest"]
    assert (settings["safety"].metric, settings["safety"].max_new_tokens) == ("average", 512)
    assert "status" in table and "runnable;" in table and "olmes setting" in table
    assert not (tmp_path / "results.json").exists()


@pytest.fixture(scope="module")
def tiny_eval_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model = save_untrained_tiny_model(root / "base")
    out = root / "run"
    result = run_tulu("eval", "conf=tiny", f"model.path={model}", f"output_dir={out}",
                      "tasks.gsm_tiny.data.max_rows=12", "tasks.ifeval_tiny.data.max_rows=12",
                      "tasks.mc_tiny.data.max_rows=12", "generation.max_new_tokens=16",
                      "tasks.gsm_tiny.max_new_tokens=16", "tasks.ifeval_tiny.max_new_tokens=16")
    return out, result


def test_tiny_eval_of_an_untrained_model_writes_results_and_predictions(tiny_eval_run):
    out, result = tiny_eval_run
    document = json.loads((out / "results.json").read_text())
    assert document["label"] == "base" and document["suite"] == "tiny"
    assert set(document["tasks"]) == {"gsm_tiny", "ifeval_tiny", "mc_tiny"}
    for entry in document["tasks"].values():
        assert entry["status"] == "ok" and entry["n"] == 12
        assert entry["model"].endswith("base") and entry["config_hash"] == document["config_hash"]
        assert entry["settings"]["type"] in ("generative", "multiple_choice") and entry["settings_hash"]
        assert 0.0 <= entry["value"] <= 1.0
        assert set(entry["ran_with"]) == {"runner", "shots", "metric", "decoding", "max tokens", "chat template"}
        assert set(entry["olmes"]) == {"id", "setting"}
    assert document["tasks"]["gsm_tiny"]["value"] == 0.0
    assert document["tasks"]["gsm_tiny"]["ran_with"]["metric"] == document["tasks"]["gsm_tiny"]["metric"]
    assert set(document["tasks"]["ifeval_tiny"]["metrics"]) == {"prompt_strict", "prompt_loose",
                                                                "inst_strict", "inst_loose", "unverified"}
    assert document["tasks"]["ifeval_tiny"]["metrics"]["unverified"] == 0.0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 36
    gsm = [p for p in predictions if p["task"] == "gsm_tiny"]
    assert sum(p["scores"]["accuracy"] for p in gsm) / 12 == document["tasks"]["gsm_tiny"]["value"]
    assert all(p["prompt"].endswith("<|assistant|>\n") for p in gsm)
    assert "gsm_tiny" in result.stdout and "prompt_loose" in result.stdout


def test_compare_tabulates_runs_flags_settings_drift_and_plots(tiny_eval_run, tmp_path):
    out, _ = tiny_eval_run
    document = json.loads((out / "results.json").read_text())
    # A second run as the real report writer records it: same tasks, gsm with other settings.
    results = []
    for name, entry in document["tasks"].items():
        settings = dict(entry["settings"], max_new_tokens=32) if name == "gsm_tiny" else entry["settings"]
        results.append(TaskResult(task=name, type=entry["type"], metric=entry["metric"], value=0.5, n=12,
                                  metrics={entry["metric"]: 0.5}, settings=settings,
                                  settings_hash="changed" if name == "gsm_tiny" else entry["settings_hash"]))
    write_results(tmp_path / "sft_run", results, suite="tiny", label="sft", model={"path": "m"}, config_hash="h")
    plot = tmp_path / "plots" / "scores.png"
    result = run_tulu("eval", "compare", str(out), str(tmp_path / "sft_run"), f"dpo={tmp_path / 'sft_run'}",
                      "--plot", str(plot))
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "metric" in line)
    assert header.index("base") < header.index("sft") < header.index("dpo")
    gsm_row = next(line for line in lines if "gsm_tiny" in line)
    assert "gsm_tiny *" in gsm_row and "0.0" in gsm_row and gsm_row.count("50.0") == 2
    assert "settings differ between runs for: gsm_tiny" in result.stdout
    assert any("average (3 tasks)" in line for line in lines)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = run_tulu("eval", "compare", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 2 and "no results.json" in missing.stdout


def test_tulu3_unseen_dry_run_lists_the_held_out_suite(tmp_path):
    result = run_tulu("eval", "conf=tulu3_unseen", "--dry-run", f"output_dir={tmp_path}")
    resolved = OmegaConf.to_container(OmegaConf.load(tmp_path / "config.yaml"), resolve=True)
    assert list(resolved["tasks"]) == ["agieval", "gpqa", "mmlu_pro", "deepmind_math", "bigcodebench_hard",
                                       "bigcodebench"]
    statuses = {spec.name: task_status(spec, resolved) for spec in select_tasks(resolved["tasks"], None)}
    assert {name for name, status in statuses.items() if status.startswith("runnable")} == {
        "agieval", "gpqa", "mmlu_pro"}
    assert "gated Idavidrein/gpqa" in statuses["gpqa"]
    assert resolved["tasks"]["mmlu_pro"]["num_shots"] == 0 and resolved["generation"]["temperature"] == 0.0
    assert "suite tulu3_unseen: 6 tasks" in result.stdout and "mmlu_pro:0shot_cot::tulu3" in result.stdout
