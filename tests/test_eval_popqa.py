"""PopQA as the tulu3_dev preset runs it, offline on a local file of PopQA-shaped rows: the OLMES prompt
with few-shot turns, answers cut at a blank line, scored by accepted-answer containment; bad rows set aside."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF
from tulu_cli.eval.models import EvalModel
from tulu_cli.eval.tasks import parse_task
from tulu_cli.rewards import verify
from tulu_cli.stages.evaluate import run_task

ROWS = [
    {"id": 4222362, "subj": "George Rankin", "prop": "occupation", "obj": "politician", "s_pop": 142,
     "question": "What is George Rankin's occupation?",
     "possible_answers": '["politician", "political leader", "political figure", "polit.", "pol"]'},
    {"id": 6054, "subj": "Oslo", "prop": "country", "obj": "Norway", "s_pop": 9000,
     "question": "In what country is Oslo?", "possible_answers": '["Norway", "Kingdom of Norway"]'},
    {"id": 77, "subj": "Blue Lagoon", "prop": "genre", "obj": "drama", "s_pop": 30,
     "question": "What genre is Blue Lagoon?", "possible_answers": '["drama", "drama film"]'},
    {"id": 78, "subj": "Nobody", "prop": "genre", "obj": "jazz", "s_pop": 3,
     "question": "What genre is Nobody?", "possible_answers": "jazz"},
]


def test_popqa_scores_an_accepted_answer_as_olmes_does():
    answers = ROWS[0]["possible_answers"]
    assert verify("popqa", " He was a political figure", answers) == 1.0
    assert verify("popqa", " Politician.", answers) == 1.0  # capitalised
    assert verify("popqa", " a pollster", answers) == 1.0  # "pol" is an accepted alias, matched inside words
    norway = ROWS[1]["possible_answers"]
    assert verify("popqa", "Oslo is in norway.", norway) == 1.0  # lowercased
    assert verify("popqa", "NORWAY", norway) == 0.0  # neither as written, lowercased nor capitalised
    assert verify("popqa", "Sweden", norway) == 0.0
    with pytest.raises(ValueError, match="JSON list"):
        verify("popqa", "jazz", "jazz")


def test_popqa_preset_runs_offline_on_a_local_file(tmp_path, tiny_model_factory, tiny_tokenizer):
    data = tmp_path / "popqa.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    model_dir = tmp_path / "model"
    tiny_model_factory(seed=3).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    preset = OmegaConf.to_container(OmegaConf.load(CONF / "eval" / "tulu3_dev.yaml"))["tasks"]["popqa"]
    assert (preset["num_shots"], preset["max_new_tokens"], preset["stop"]) == (15, 15, ["\n\n"])
    preset.update(num_shots=2, max_new_tokens=8, data={"path": str(data)},
                  fewshot={**preset["fewshot"], "path": str(data)})
    spec = parse_task("popqa", preset)
    generation = {"backend": "hf", "batch_size": 4, "max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    model = EvalModel({"path": str(model_dir), "chat_template": "tulu", "dtype": "float32",
                       "attn_implementation": "sdpa"}, generation, tmp_path, seed=0)
    result, predictions, rejects = run_task(spec, model, {"generation": generation, "seed": 0}, tmp_path / "work")
    assert result.status == "ok", result.detail
    assert result.n == 3 and result.rejected == 1
    (reject,) = rejects
    assert (reject.row, reject.field, reject.reason) == (4, "possible_answers", "bad_eval_row")
    assert str(data) in reject.source and "JSON list" in reject.detail
    first = predictions[0]
    # the two shots are earlier chat turns, each question in the OLMES form
    assert first["prompt"].count("Q: What is George Rankin's occupation? A:") == 2
    assert "Q: In what country is Oslo? A:" in first["prompt"] and "politician" in first["prompt"]
    scores = [verify("popqa", row["response"], row["ground_truth"]) for row in predictions]
    assert [row["scores"]["accuracy"] for row in predictions] == scores
    assert result.value == pytest.approx(sum(scores) / 3)
    assert all("\n\n" not in row["response"] for row in predictions)
