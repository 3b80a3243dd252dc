"""`tulu decontaminate` on local files: report format, modes, removal, eval sets from config, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import run_tulu
from tulu_cli.curate.eval_suite import eval_set_specs, load_eval_set
from tulu_cli.data.sources import load_source
from tulu_cli.entry import StageError
from tulu_cli.stages.decontaminate import main

EVAL_E = ["Natalia sold clips to 48 of her friends in April and then she sold half as many clips in May",
          "A robe takes 2 bolts of blue fiber and half that much white fiber how many bolts in total"]
EVAL_F = "Write a limerick about a cat who learns to play the violin at midnight in the old town square"


def chat(prompt):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": "An answer."}]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def files(tmp_path):
    a = write_jsonl(tmp_path / "A.jsonl", [
        {"id": "a-copy", "messages": chat(EVAL_E[0])},
        {"id": "a-inside", "messages": chat("Please help me. " + EVAL_E[1].upper() + "! Thanks a lot, friend.")},
        {"id": "a-clean", "messages": chat("Natalia sold clips to friends. What is the capital of France today?")},
        {"id": "a-empty", "messages": []},
        "{broken line",
    ])
    b = write_jsonl(tmp_path / "B.jsonl", [
        {"id": "b-edited", "messages": chat(EVAL_F.replace("midnight", "noon"))},
        {"id": "b-second-turn", "messages": chat("Hi there") + chat(EVAL_F)},
        {"id": "b-unicode", "messages": chat("Écrivez un poème sur la mer ｆｕｌｌ ｗｉｄｔｈ")},
    ])
    e = write_jsonl(tmp_path / "E.jsonl", [{"id": f"e{i}", "prompt": text} for i, text in enumerate(EVAL_E)])
    f = write_jsonl(tmp_path / "F.jsonl", [{"id": "f0", "messages": [{"role": "user", "content": EVAL_F}]}])
    return a, b, e, f


def run(tmp_path, **overrides):
    cfg = {"train": [], "evals": [], "eval_sets": {}, "ngram": 8, "threshold": 0.5, "mode": "ngram",
           "remove": False, "workers": 1, "split": "train", "max_rows": None, "rows_per_file": 1000, **overrides}
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    main(OmegaConf.create(cfg), run_dir)
    return json.loads((run_dir / "report.json").read_text()), run_dir


def test_report_lists_pairs_and_summary(tmp_path, files):
    a, b, e, f = files
    report, _ = run(tmp_path, train=[a, b], evals=[e, f])
    found = {(c["train_file"], c["train_id"], c["eval_file"], c["eval_id"]) for c in report["contaminated"]}
    assert found == {(a, "a-copy", e, "e0"), (a, "a-inside", e, "e1"), (b, "b-edited", f, "f0"),
                     (b, "b-second-turn", f, "f0")}
    assert all(set(c) >= {"train_file", "train_id", "eval_file", "eval_id", "score"} for c in report["contaminated"])
    summary = {(s["train_file"], s["eval_file"]): s for s in report["summary"]}
    assert len(summary) == 4
    assert (summary[(a, e)]["rows_checked"], summary[(a, e)]["rows_contaminated"]) == (4, 2)
    assert summary[(a, e)]["percent"] == 50.0 and summary[(a, f)]["rows_contaminated"] == 0
    assert report["train"][0]["unparsable_lines"] == 1 and report["train"][0]["rows_without_user_turns"] == 1


def test_exact_mode_and_settings(tmp_path, files):
    a, b, e, f = files
    report, _ = run(tmp_path, train=[a, b], evals=[e, f], mode="exact")
    assert {c["train_id"] for c in report["contaminated"]} == {"a-copy", "b-second-turn"}
    report, _ = run(tmp_path, train=[b], evals=[f], threshold=1.0, score="ngram_fraction")
    assert {c["train_id"] for c in report["contaminated"]} == {"b-second-turn"}
    assert report["settings"] == {"ngram": 8, "threshold": 1.0, "mode": "ngram", "score": "ngram_fraction"}
    with pytest.raises(StageError, match="above it"):  # nothing scores above 1 words in 1
        run(tmp_path, train=[b], evals=[f], threshold=1.0)
    with pytest.raises(StageError, match="score must be one of"):
        run(tmp_path, train=[b], evals=[f], score="overlap")


def test_remove_writes_curated_datasets(tmp_path, files):
    a, b, e, f = files
    report, run_dir = run(tmp_path, train=[a, b], evals=[e, f], remove=True)
    out = run_dir / "decontaminated"
    kept = load_source(str(out / "A")).dataset
    assert sorted(kept["id"]) == ["a-clean", "a-empty"]
    manifest = json.loads((out / "A" / "manifest.json").read_text())
    assert manifest["counts"]["rows_in"] == 5 and manifest["counts"]["rows_out"] == 2
    assert manifest["counts"]["rejected"] == {"contaminated": 2, "unparsable_line": 1}
    removed = [json.loads(line) for line in (out / "A.removed.jsonl").read_text().splitlines()]
    assert {r["train_id"] for r in removed} == {"a-copy", "a-inside"}
    # A decontaminated (curate-format) directory is itself a valid training input.
    again, _ = run(tmp_path, train=[str(out / "B")], evals=[f])
    assert again["contaminated"] == [] and report["removed"][b]["rows_out"] == 1


def test_remove_from_a_folder_of_files_drops_only_the_contaminated_row(tmp_path, files):
    # Row numbers start again in every file: the contaminated first row of one shard must not take the
    # first row of the other shards with it, and the report must say which file the row is in.
    _, _, e, _ = files
    folder = tmp_path / "shards"
    folder.mkdir()
    write_jsonl(folder / "part-0.jsonl", [{"messages": chat(EVAL_E[0])}, {"messages": chat("A clean question.")}])
    write_jsonl(folder / "part-1.jsonl", [{"messages": chat("Another clean one.")}, {"messages": chat("And one.")}])
    report, run_dir = run(tmp_path, train=[str(folder)], evals=[e], remove=True)
    [hit] = report["contaminated"]
    assert hit["train_row_file"] == str(folder / "part-0.jsonl") and hit["train_row"] == 1
    assert hit["train_id"] == "row-1" and hit["train_index"] == 0
    assert report["removed"][str(folder)]["rows_out"] == 3 and report["removed"][str(folder)]["removed"] == 1
    kept = load_source(str(run_dir / "decontaminated" / "shards")).dataset
    assert [m[0]["content"] for m in kept["messages"]] == ["A clean question.", "Another clean one.", "And one."]


def test_eval_sets_from_config_with_fields_and_preference_rows(tmp_path):
    evals = write_jsonl(tmp_path / "drop.jsonl", [{"qid": "q1", "passage": "The river flooded the valley in the spring",
                                                    "question": "of 1902 and which town was hit hardest"}])
    prefs = write_jsonl(tmp_path / "prefs.jsonl", [
        {"id": "p1", "chosen": chat("The river flooded the valley in the spring\nof 1902 and which town was hit hardest"),
         "rejected": chat("The river flooded the valley in the spring\nof 1902 and which town was hit hardest")}])
    sets = {"drop": {"path": evals, "fields": ["passage", "question"], "id_field": "qid"}}
    report, _ = run(tmp_path, train=[prefs], eval_sets=sets)
    assert [(c["eval_file"], c["eval_id"], c["train_id"]) for c in report["contaminated"]] == [("drop", "q1", "p1")]
    with pytest.raises(StageError, match="no prompt text"):
        run(tmp_path, train=[prefs], eval_sets={"drop": {"path": evals, "fields": ["nothing"]}})
    # a row missing one of the fields is no instance (it is counted); each field is scored on its own
    write_jsonl(tmp_path / "drop.jsonl", [{"qid": "q1", "passage": "The river flooded the valley in the spring",
                                           "question": "of 1902 and which town was hit hardest"},
                                          {"qid": "q2", "passage": "A passage without its question at all"}])
    only_passage = write_jsonl(tmp_path / "passage.jsonl", [{"id": "p2", "prompt": "The river flooded the valley "
                                                                                    "in the spring, said the news"}])
    report, _ = run(tmp_path, train=[only_passage], eval_sets=sets, threshold=0.49)
    assert report["evals"][0]["instances"] == 1 and report["evals"][0]["rows_without_text"] == 1
    assert [(c["eval_id"], c["score"]) for c in report["contaminated"]] == [("q1", 0.5)]
    report, _ = run(tmp_path, train=[only_passage], eval_sets=sets, threshold=0.5)
    assert report["contaminated"] == []


def test_unreadable_inputs_fail_with_their_name(tmp_path, files):
    a, b, e, f = files
    with pytest.raises(StageError, match="missing.jsonl"):
        run(tmp_path, train=[a, str(tmp_path / "missing.jsonl")], evals=[e])
    with pytest.raises(StageError, match="nope.jsonl"):
        run(tmp_path, train=[a], evals=[str(tmp_path / "nope.jsonl")])
    with pytest.raises(StageError, match="mode"):
        run(tmp_path, train=[a], evals=[e], mode="fuzzy")


def test_cli_end_to_end(tmp_path, files):
    a, b, e, f = files
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "tulu_cli.cli", "decontaminate", f"train=[{a},{b}]",
                           f"evals=[{e},{f}]", f"output_dir={out}", "ngram=8", "threshold=0.5", "mode=ngram",
                           "remove=true"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert len(report["contaminated"]) == 4 and len(report["summary"]) == 4
    assert "tulu decontaminate" in proc.stdout and (out / "decontaminated" / "B" / "manifest.json").exists()


# (dataset, config, split, fields) of every eval set the Tulu 3 release checked its training data against;
# a None config there meant "every config of the dataset".
RELEASE_EVAL_SETS = {
    ("cais/mmlu", "all", "test", ("question",)),
    ("openai/openai_humaneval", None, "test", ("prompt",)),
    ("openai/gsm8k", "main", "test", ("question",)),
    ("ucinlp/drop", None, "validation", ("passage", "question")),
    ("EleutherAI/hendrycks_math", "*", "test", ("problem",)),
    ("google/IFEval", None, "train", ("prompt",)),
    ("akariasai/PopQA", None, "test", ("subj", "prop", "obj")),
    ("tatsu-lab/alpaca_eval", "alpaca_eval", "eval", ("instruction",)),
    ("lukaemon/bbh", "*", "test", ("input",)),
    ("truthfulqa/truthful_qa", "generation", "validation", ("question",)),
    ("allenai/wildguardmix", "wildguardtest", "test", ("prompt",)),
    ("allenai/wildjailbreak", "eval", "train", ("adversarial",)),
    ("allenai/tulu-3-trustllm-jailbreaktrigger-eval", None, "test", ("prompt",)),
    ("allenai/tulu-3-harmbench-eval", None, "test", ("Behavior",)),
    ("allenai/tulu-3-do-anything-now-eval", None, "test", ("prompt",)),
    ("TIGER-Lab/MMLU-Pro", None, "test", ("question",)),
    ("Idavidrein/gpqa", "gpqa_extended", "train", ("Question",)),
    ("lighteval/agi_eval_en", "*", "train", ("passage", "question")),
    ("bigcode/bigcodebench", None, "v0.1.2", ("instruct_prompt",)),
    ("deepmind/math_dataset", "*", "test", ("question",)),
}


def test_release_suite_lists_every_eval_set_with_its_fields(tmp_path):
    out = tmp_path / "dry"
    run_tulu("decontaminate", "conf=tulu3_sft", f"output_dir={out}", "--dry-run")
    config = OmegaConf.to_container(OmegaConf.load(out / "config.yaml"))
    specs = eval_set_specs([], config["eval_sets"])
    listed = {(s.path, "*" if s.configs else s.config, s.split, tuple(s.fields)) for s in specs}
    assert listed == RELEASE_EVAL_SETS
    assert config["score"] == "token_coverage" and config["threshold"] == 0.5 and config["ngram"] == 8
    by_path = {s.path: s for s in specs}
    assert len(by_path["lukaemon/bbh"].configs) == 27 and len(by_path["EleutherAI/hendrycks_math"].configs) == 7
    assert len(by_path["deepmind/math_dataset"].configs) == 56 and by_path["deepmind/math_dataset"].max_rows == 50


def test_eval_set_over_several_configs_with_a_row_limit(tmp_path):
    evals = write_jsonl(tmp_path / "e.jsonl", [{"id": f"q{i}", "question": EVAL_F + f" {i}"} for i in range(5)])
    spec = eval_set_specs([], {"dm": {"path": evals, "configs": ["a", "b"], "max_rows": 2}})[0]
    eval_set = load_eval_set(spec)  # a local file ignores the config: each config reads the same rows
    assert [i.id for i in eval_set.instances] == ["a/q0", "a/q1", "b/q0", "b/q1"] and eval_set.rows_read == 4
    with pytest.raises(ValueError, match="at most one of config/configs"):
        eval_set_specs([], {"dm": {"path": evals, "config": "a", "configs": ["b"]}})
