"""Eval task pieces on real data: field mapping and rejects, few-shot prompts, IFEval metrics, MC scoring."""

from __future__ import annotations

import json

import pytest

from tulu_cli.config import assets_dir
from tulu_cli.data.chat import render_prompt
from tulu_cli.eval.data import load_items
from tulu_cli.eval.multiple_choice import run_multiple_choice
from tulu_cli.eval.prompts import load_shots, render_chat, with_shots
from tulu_cli.eval.results import mean_metrics
from tulu_cli.eval.scoring import METRIC_WEIGHTS, score_response
from tulu_cli.eval.tasks import TaskConfigError, parse_task, select_tasks


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "not json\n")
    return path


def test_field_mapping_pattern_and_rejects_name_row_and_field(tmp_path):
    data = _write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "Ann has 2 pens and gets 3. How many?", "answer": "2 + 3 = 5\n#### 5"},
        {"question": "Bo has 4 cups.", "answer": "no marker here"},
        {"question": "", "answer": "#### 1"},
    ])
    spec = parse_task("gsm", {"type": "generative", "metric": "accuracy", "verifier": "gsm8k",
                              "data": {"path": str(data)}, "fields": {"prompt": "question", "ground_truth": "answer"},
                              "ground_truth_pattern": r"####\s*(.+)$"})
    items, rejects = load_items(spec)
    assert [(i.messages, i.ground_truth) for i in items] == [
        ([{"role": "user", "content": "Ann has 2 pens and gets 3. How many?"}], "5")]
    found = {(r.row, r.field) for r in rejects}
    assert found == {(2, "answer"), (3, "question"), (4, "<line>")}
    assert all(r.source == str(data) for r in rejects)


def test_ifeval_rows_with_malformed_ground_truth_are_set_aside(tmp_path):
    rows = [json.loads(line) for line in (assets_dir() / "tiny" / "if_test.jsonl").read_text().splitlines()[:3]]
    rows[1]["ground_truth"] = '{"func_name": "no_such_check"}'
    data = tmp_path / "if.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = parse_task("if", {"type": "generative", "metric": "prompt_loose", "data": {"path": str(data)}})
    items, rejects = load_items(spec)
    assert len(items) == 2 and items[0].verifier == "ifeval"
    assert [(r.row, r.field) for r in rejects] == [(2, "ground_truth")]


def test_ifeval_scores_prompt_and_instruction_level_strict_and_loose():
    truth = json.dumps([{"func_name": "validate_lowercase"}, {"func_name": "validate_no_commas"}])
    # Lowercase only with the first line dropped (loose); a comma is in every loose variant.
    scores = score_response("ifeval", "Title Line\nall lower, here\nend", truth, "prompt")
    assert scores == {"prompt_strict": 0.0, "prompt_loose": 0.0, "inst_strict": 0.0, "inst_loose": 0.5,
                      "instructions": 2.0, "unverified": 0.0}
    single = score_response("ifeval", "all lower here", json.dumps({"func_name": "validate_lowercase"}), "p")
    aggregate = mean_metrics([scores, single], METRIC_WEIGHTS)
    assert aggregate["prompt_loose"] == 0.5
    # Instruction level is over instructions: (1 + 1) / 3, not the mean of per-prompt shares.
    assert aggregate["inst_loose"] == pytest.approx(2 / 3)
    assert score_response("gsm8k", "so 4 + 1 = 5\n#### 5", "5", None) == {"accuracy": 1.0, "unverified": 0.0}


def test_few_shot_turns_come_before_the_question_in_the_chat_template():
    spec = parse_task("gsm", {"type": "generative", "metric": "accuracy", "data": {"path": "x.jsonl"},
                              "num_shots": 2, "prompt_template": "Q: {question}",
                              "fewshot": {"examples": [{"question": "1+1?", "answer": "2"},
                                                       {"question": "2+2?", "answer": "4"},
                                                       {"question": "3+3?", "answer": "6"}]}})
    shots = load_shots(spec).for_item()
    assert shots == [("Q: 1+1?", "2"), ("Q: 2+2?", "4")]
    messages = with_shots(shots, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q: 5+5?"}])
    text = render_chat(messages, "tulu")
    assert text == render_prompt(messages)
    assert text.startswith("<|system|>\nBe brief.\n<|user|>\nQ: 1+1?\n<|assistant|>\n2")
    assert text.endswith("<|user|>\nQ: 5+5?\n<|assistant|>\n")
    assert render_chat(messages[1:], "none") == "Q: 1+1?\n2\n\nQ: 2+2?\n4\n\nQ: 5+5?\n"
    too_many = parse_task("g", {**spec.settings, "num_shots": 5})
    with pytest.raises(TaskConfigError, match="num_shots=5"):
        load_shots(too_many)


def test_skip_same_leaves_out_the_shots_of_the_items_own_group_and_keeps_the_source_order():
    examples = [{"question": q, "answer": a, "kind": k} for q, a, k in
                [("1+1?", "2", "add"), ("2*3?", "6", "mul"), ("5-1?", "4", "sub"), ("2+5?", "7", "add")]]
    settings = {"type": "generative", "metric": "accuracy", "data": {"path": "x.jsonl"}, "num_shots": 2,
                "fewshot": {"examples": examples, "skip_same": "kind"}}
    shots = load_shots(parse_task("g", settings))
    assert shots.for_item("add") == [("2*3?", "6"), ("5-1?", "4")]
    assert shots.for_item("mul") == [("1+1?", "2"), ("5-1?", "4")]
    assert shots.for_item("div") == [("1+1?", "2"), ("2*3?", "6")]
    # an "add" item has two shots left once its own two are out: asking for three is an error
    with pytest.raises(TaskConfigError, match="num_shots=3 .* 2 once an item's own 'kind' is left out"):
        load_shots(parse_task("g", {**settings, "num_shots": 3}))


def test_task_selection_errors_name_the_field():
    with pytest.raises(TaskConfigError, match=r"tasks\.a\.type"):
        select_tasks({"a": {"type": "essay", "metric": "x"}}, None)
    with pytest.raises(TaskConfigError, match=r"only: unknown task\(s\) b"):
        select_tasks({"a": {"type": "external", "metric": "x", "reason": "r"}}, ["b"])
    with pytest.raises(TaskConfigError, match=r"tasks\.a\.lm_eval_task"):
        select_tasks({"a": {"type": "lm_eval", "metric": "x"}}, None)


def test_multiple_choice_picks_the_option_the_model_prefers(tiny_model_factory, tiny_tokenizer, tmp_path):
    rows = [{"id": "q1", "question": "What is 2 + 2?", "choices": ["4", "5", "6"], "answer": "A"},
            {"id": "q2", "question": "What is 3 + 3?", "choices": ["5", "6", "7"], "answer": 1},
            {"id": "bad", "question": "?", "choices": ["1", "2"], "answer": 7}]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = parse_task("mc", {"type": "multiple_choice", "metric": "acc", "data": {"path": str(data)}})
    items, rejects = load_items(spec)
    assert [r.field for r in rejects] == ["answer"] and [i.answer for i in items] == [0, 1]
    model = tiny_model_factory()
    metrics, predictions = run_multiple_choice(spec, items, model, tiny_tokenizer, batch_size=2)
    for prediction in predictions:
        best = max(range(len(prediction["logprobs"])), key=prediction["logprobs"].__getitem__)
        assert prediction["pick"] == best and all(lp < 0 for lp in prediction["logprobs"])
    assert metrics["acc"] == sum(p["pick"] == p["answer"] for p in predictions) / 2
