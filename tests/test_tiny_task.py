"""The bundled tiny task: reproducible, held-out sets unseen in training, and built so that each stage of
the recipe has something to add (under-covered constraints in SFT, worked-answer multiple choice)."""

import json
from collections import Counter

import pytest

from tulu_cli.config import assets_dir
from tulu_cli.data.tiny_task import SFT_COMPLIANCE, UNDER_COVERED, build
from tulu_cli.rewards.registry import verify_batch

TINY = assets_dir() / "tiny"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (TINY / name).read_text().splitlines()]


def user_prompts(name: str) -> set[str]:
    found = set()
    for row in rows(name):
        if "question" in row:
            found.add(row["question"])
        elif "prompt" in row:
            found.add(row["prompt"])
        else:
            found.add(row["messages"][0]["content"])
    return found


def test_the_bundled_files_are_the_generators_output_byte_for_byte(tmp_path):
    counts = build(tmp_path)
    for name in counts:
        assert (tmp_path / name).read_bytes() == (TINY / name).read_bytes(), name


def test_held_out_prompts_never_appear_in_training_files():
    held_out = user_prompts("gsm_test.jsonl") | user_prompts("if_test.jsonl") | user_prompts("mc_test.jsonl")
    for name in ("sft_train.jsonl", "prefs_train.jsonl", "rlvr_train.jsonl"):
        assert not held_out & user_prompts(name), name


def test_sft_answers_mostly_ignore_the_under_covered_constraints():
    sft = rows("sft_train.jsonl")
    verdicts: dict[str, list[float]] = {}
    batch, kinds = [], []
    for row in sft:
        prompt = row["messages"][0]["content"]
        kind = next((k for k, marker in MARKERS.items() if marker in prompt), None)
        if kind is None:
            continue
        batch.append({"dataset": "ifeval", "response": row["messages"][1]["content"], "ground_truth": GROUND_TRUTH[kind]})
        kinds.append(kind)
    for kind, result in zip(kinds, verify_batch(batch), strict=True):
        verdicts.setdefault(kind, []).append(result.score)
    assert set(verdicts) == set(MARKERS)
    for kind, scores in verdicts.items():
        share = sum(scores) / len(scores)
        if kind in UNDER_COVERED:
            assert abs(share - SFT_COMPLIANCE) < 0.12, (kind, share)
        else:
            assert share == 1.0, (kind, share)


# A phrase of each constraint's instruction, and the verifier ground truth the RLVR rows carry for it.
MARKERS = {"lowercase": "all lowercase letters", "uppercase": "all capital letters", "end_phrase": "exact phrase",
           "no_commas": "any commas", "quotation": "double quotation marks", "title": "double angular brackets",
           "postscript": "postscript"}
GROUND_TRUTH = {
    "lowercase": '{"func_name": "validate_lowercase"}', "uppercase": '{"func_name": "validate_uppercase"}',
    "end_phrase": '{"func_name": "validate_end", "end_phrase": "That is all."}',
    "no_commas": '{"func_name": "validate_no_commas"}', "quotation": '{"func_name": "validate_quotation"}',
    "title": '{"func_name": "validate_title"}',
    "postscript": '{"func_name": "verify_postscript", "postscript_marker": "P.S."}',
}


@pytest.mark.parametrize("name", ["rlvr_train.jsonl", "if_test.jsonl", "gsm_test.jsonl"])
def test_verifiable_rows_carry_the_ground_truth_of_their_constraint(name):
    found = Counter()
    for row in rows(name):
        if row["dataset"] == "ifeval":
            assert row["ground_truth"] == GROUND_TRUTH[row["constraint_type"]]
            assert MARKERS[row["constraint_type"]] in row["messages"][0]["content"]
            found[row["constraint_type"]] += 1
        else:
            assert row["dataset"] == "gsm8k" and row["ground_truth"].isdigit()
    if name != "gsm_test.jsonl":
        assert set(found) == set(MARKERS)


def test_preference_pairs_pass_and_fail_their_verifier():
    """The static pairs: chosen follows the constraint (or has the right sum), rejected does not."""
    batch = []
    for row in rows("prefs_train.jsonl")[:300]:
        kind = next((k for k, marker in MARKERS.items() if marker in row["prompt"]), None)
        if kind is None:
            answer = row["chosen"][-1]["content"].rsplit("#### ", 1)[1]
            dataset, truth = "gsm8k", answer
        else:
            dataset, truth = "ifeval", GROUND_TRUTH[kind]
        batch.append({"dataset": dataset, "response": row["chosen"][-1]["content"], "ground_truth": truth})
        batch.append({"dataset": dataset, "response": row["rejected"][-1]["content"], "ground_truth": truth})
    scores = [result.score for result in verify_batch(batch)]
    assert scores[0::2] == [1.0] * (len(batch) // 2)
    assert scores[1::2] == [0.0] * (len(batch) // 2)


def test_multiple_choice_options_are_worked_answers_differing_only_in_the_result():
    for row in rows("mc_test.jsonl"):
        correct = row["choices"][row["answer"]]
        results = [int(choice.rsplit("#### ", 1)[1]) for choice in row["choices"]]
        assert results == sorted(set(results)) and len(results) == 4
        for choice, result in zip(row["choices"], results, strict=True):
            assert f"= {result} " in choice
            if choice != correct:
                stripped = choice.replace(f"= {result} ", "= X ").rsplit("#### ", 1)[0]
                assert stripped == correct.replace(f"= {results[row['answer']]} ", "= X ").rsplit("#### ", 1)[0]
