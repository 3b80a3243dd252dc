"""PopQA as the tulu3_dev preset runs it, offline on a local file of PopQA-shaped rows: OLMES's `popqa::tulu`
prompt (its fixed shots as chat turns, the question's own relation left out), answers cut at a blank line,
scored by accepted-answer containment; bad rows set aside."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF
from tulu_cli.config import register_resolvers
from tulu_cli.eval.models import EvalModel
from tulu_cli.eval.tasks import parse_task
from tulu_cli.rewards import verify
from tulu_cli.stages.evaluate import run_task

ROWS = [
    {"id": 4222362, "subj": "George Rankin", "prop": "occupation", "prop_id": 22, "obj": "politician", "s_pop": 142,
     "question": "What is George Rankin's occupation?",
     "possible_answers": '["politician", "political leader", "political figure", "polit.", "pol"]'},
    {"id": 6054, "subj": "Oslo", "prop": "country", "prop_id": 182, "obj": "Norway", "s_pop": 9000,
     "question": "In what country is Oslo?", "possible_answers": '["Norway", "Kingdom of Norway"]'},
    {"id": 77, "subj": "Blue Lagoon", "prop": "genre", "prop_id": 91, "obj": "drama", "s_pop": 30,
     "question": "What genre is Blue Lagoon?", "possible_answers": '["drama", "drama film"]'},
    {"id": 78, "subj": "Nobody", "prop": "genre", "prop_id": 91, "obj": "jazz", "s_pop": 3,
     "question": "What genre is Nobody?", "possible_answers": "jazz"},
]

# OLMES's popqa::tulu input for PopQA's first test row (an occupation question), written out by hand from OLMES:
# `popqa::tulu` (oe_eval/configs/tasks.py) is the popqa task in chat format with the shots as earlier turns
# (fewshot_as_multiturn); its 15 shots are FEWSHOT_SOURCES["popqa"] (oe_eval/tasks/fewshot_sources.py) in order
# without the one of the question's own relation (Thomas Widdrington's occupation), each "Q: {question} A:"
# answered by its object; rendered with the model's chat template (here the Tulu one, eos <|end_of_text|>).
GEORGE_RANKIN_PROMPT = (
    "<|user|>\nQ: In what city was Glover Morrill Allen born? A:\n<|assistant|>\nWalpole<|end_of_text|>\n"
    "<|user|>\nQ: What genre is The Arab? A:\n<|assistant|>\nadventure film<|end_of_text|>\n"
    "<|user|>\nQ: Who is the father of Qasim ibn Muhammad ibn Abi Bakr? A:\n"
    "<|assistant|>\nMuhammad ibn Abi Bakr<|end_of_text|>\n"
    "<|user|>\nQ: In what country is Cora? A:\n<|assistant|>\nUnited States of America<|end_of_text|>\n"
    "<|user|>\nQ: Who was the producer of Genre? A:\n<|assistant|>\nDon Hertzfeldt<|end_of_text|>\n"
    "<|user|>\nQ: Who was the director of Up in the Air? A:\n<|assistant|>\nHoward Bretherton<|end_of_text|>\n"
    "<|user|>\nQ: What is Lima the capital of? A:\n<|assistant|>\nPeru<|end_of_text|>\n"
    "<|user|>\nQ: Who was the screenwriter for Trivandrum Lodge? A:\n<|assistant|>\nAnoop Menon<|end_of_text|>\n"
    "<|user|>\nQ: Who was the composer of 1983? A:\n<|assistant|>\nGopi Sundar<|end_of_text|>\n"
    "<|user|>\nQ: What color is chalk? A:\n<|assistant|>\nwhite<|end_of_text|>\n"
    "<|user|>\nQ: What is the religion of Spring Arbor University? A:\n"
    "<|assistant|>\nFree Methodist Church<|end_of_text|>\n"
    "<|user|>\nQ: What sport does Harry Clay play? A:\n<|assistant|>\nassociation football<|end_of_text|>\n"
    "<|user|>\nQ: Who is the author of B\u00b2FH paper? A:\n<|assistant|>\nWilliam Alfred Fowler<|end_of_text|>\n"
    "<|user|>\nQ: Who is the mother of Terry Fox? A:\n<|assistant|>\nBetty Fox<|end_of_text|>\n"
    "<|user|>\nQ: What is the capital of Kingdom of Italy? A:\n<|assistant|>\nFlorence<|end_of_text|>\n"
    "<|user|>\nQ: What is George Rankin's occupation? A:\n<|assistant|>\n"
)


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
    register_resolvers()
    preset = OmegaConf.to_container(OmegaConf.load(CONF / "eval" / "tulu3_dev.yaml"), resolve=True)["tasks"]["popqa"]
    assert (preset["num_shots"], preset["max_new_tokens"], preset["stop"]) == (15, 15, ["\n\n"])
    preset.update(max_new_tokens=8, data={"path": str(data)})
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
    assert predictions[0]["prompt"] == GEORGE_RANKIN_PROMPT
    # a country question gets the occupation shot and not the country one; each prompt has 15 shots
    oslo = predictions[1]["prompt"]
    assert oslo.startswith("<|user|>\nQ: What is Thomas Widdrington's occupation? A:\n<|assistant|>\npolitician")
    assert "Cora" not in oslo and oslo.endswith("<|user|>\nQ: In what country is Oslo? A:\n<|assistant|>\n")
    assert all(row["prompt"].count("<|assistant|>") == 16 for row in predictions)
    scores = [verify("popqa", row["response"], row["ground_truth"]) for row in predictions]
    assert [row["scores"]["accuracy"] for row in predictions] == scores
    assert result.value == pytest.approx(sum(scores) / 3)
    assert all("\n\n" not in row["response"] for row in predictions)
