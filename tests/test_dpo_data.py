"""Preference data: validation, chat-template rendering, last-response labels, truncation, rejects."""

from __future__ import annotations

import json

import pytest

from tulu_cli.data.chat import IGNORE_INDEX, render, tokenize_conversation
from tulu_cli.data.preference_data import encode_preference_example, prepare_preferences


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


def conversation(answer: str, turns: int = 1) -> list[dict]:
    messages = []
    for turn in range(turns - 1):
        messages += [{"role": "user", "content": f"Question {turn}?"}, {"role": "assistant", "content": f"Answer {turn}."}]
    return messages + [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": answer}]


def labelled_text(tokenizer, ids, labels) -> str:
    return tokenizer.decode([token for token, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX])


def test_both_sides_rendered_with_the_template_and_last_turn_labels_only_the_final_response(tokenizer):
    row = {"chosen": conversation("2 + 3 = 5.", turns=2), "rejected": conversation("2 + 3 = 6.", turns=2)}
    encoded = encode_preference_example(row, tokenizer, 256, loss_tokens="last_turn")
    assert encoded["error_reason"] == ""
    for side, answer in (("chosen", "2 + 3 = 5."), ("rejected", "2 + 3 = 6.")):
        ids, labels = encoded[f"{side}_input_ids"], encoded[f"{side}_labels"]
        assert tokenizer.decode(ids) == render(row[side], tokenizer.eos_token)[0]
        # The earlier assistant turn ("Answer 0.") is context, not trained.
        assert labelled_text(tokenizer, ids, labels) == answer + tokenizer.eos_token
    prompt_length = len(tokenizer(render(row["chosen"][:-1], "", add_generation_prompt=True)[0])["input_ids"])
    assert encoded["chosen_input_ids"][:prompt_length] == encoded["rejected_input_ids"][:prompt_length]


def test_prompt_field_supplies_the_shared_turns(tokenizer):
    row = {"prompt": "What is 2 + 3?", "chosen": [{"role": "assistant", "content": "5"}],
           "rejected": [{"role": "assistant", "content": "6"}]}
    encoded = encode_preference_example(row, tokenizer, 256)
    assert encoded["error_reason"] == ""
    assert tokenizer.decode(encoded["chosen_input_ids"]).startswith("<|user|>\nWhat is 2 + 3?\n<|assistant|>\n5")
    # A prompt given alongside full conversations (the Tulu 3 mixtures) is not prepended twice.
    full = {"prompt": "What is 2 + 3?", "chosen": conversation("5"), "rejected": conversation("6")}
    assert encode_preference_example(full, tokenizer, 256)["chosen_input_ids"] == encoded["chosen_input_ids"]


@pytest.mark.parametrize("row,field,reason", [
    ({"chosen": conversation("5"), "rejected": [{"role": "user", "content": "Other?"},
                                                {"role": "assistant", "content": "6"}]},
     "rejected[0]", "prompt_mismatch"),
    ({"chosen": conversation("5", turns=2), "rejected": conversation("6")}, "rejected", "prompt_mismatch"),
    ({"chosen": conversation("5")}, "rejected", "missing_field"),
    ({"chosen": conversation("5"), "rejected": conversation("5")}, "rejected", "identical_responses"),
    ({"chosen": conversation("5")[:1], "rejected": conversation("6")[:1]}, "chosen", "no_assistant_turn"),
    ({"chosen": conversation("5"), "rejected": [{"role": "user", "content": "What is 2 + 3?"},
                                                {"role": "assistant", "content": 6}]},
     "rejected[1].content", "non_string_content"),
])
def test_bad_pairs_name_field_and_reason(tokenizer, row, field, reason):
    encoded = encode_preference_example(row, tokenizer, 256)
    assert (encoded["error_field"], encoded["error_reason"]) == (field, reason)
    assert encoded["chosen_input_ids"] == []


def test_prepare_counts_truncated_and_sets_aside_bad_rows(tokenizer, tmp_path):
    long_answer = "five " * 60
    rows = [{"chosen": conversation("5"), "rejected": conversation("6")},
            {"chosen": conversation(long_answer), "rejected": conversation("6")},
            {"chosen": conversation("5"), "rejected": conversation("5")},
            {"chosen": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "5"}],
             "rejected": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "6"}]}]
    source = tmp_path / "prefs.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{not json\n")
    rejects = tmp_path / "rejects.jsonl"
    pairs, report = prepare_preferences(str(source), {}, 64, tokenizer, rejects)
    counts = {name: value for name, value in report.to_json().items() if name not in ("cache", "encode_s")}
    assert counts == {"source": str(source), "rows_read": 5, "rows_kept": 2, "truncated": 1,
                      "rejected": {"unparsable_line": 1, "identical_responses": 1, "no_trainable_tokens": 1}}
    assert all(len(pair["chosen_input_ids"]) <= 64 for pair in pairs)
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted((item["row"], item["reason"]) for item in written) == [
        (3, "identical_responses"), (4, "no_trainable_tokens"), (5, "unparsable_line")]


def test_curate_style_parquet_directory(tokenizer, tmp_path):
    import datasets

    rows = [{"id": str(i), "prompt": "What is 2 + 3?", "chosen": conversation("5"), "rejected": conversation(str(i)),
             "source": "x"} for i in range(6, 9)]
    (tmp_path / "out").mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "out" / "part-0.parquet"))
    pairs, report = prepare_preferences(str(tmp_path / "out"), {"max_rows": 2}, 128, tokenizer, None)
    assert (report.rows_read, report.rows_kept, len(pairs)) == (2, 2, 2)


THREE_TURNS = {"chosen": conversation("2 + 3 = 5.", turns=3), "rejected": conversation("2 + 3 = 6.", turns=3)}


def test_all_turns_labels_every_assistant_turn_as_the_sft_encoder_does(tokenizer):
    encoded = encode_preference_example(THREE_TURNS, tokenizer, 256)  # the default: the reference's all_turns
    assert encoded["error_reason"] == ""
    eos = tokenizer.eos_token
    for side, answer in (("chosen", "2 + 3 = 5."), ("rejected", "2 + 3 = 6.")):
        ids, labels = encoded[f"{side}_input_ids"], encoded[f"{side}_labels"]
        sft = tokenize_conversation(tokenizer, THREE_TURNS[side], 256)  # how the reference encodes each side
        assert (ids, labels) == (sft.input_ids, sft.labels)
        assert labelled_text(tokenizer, ids, labels) == f"Answer 0.{eos}Answer 1.{eos}{answer}{eos}"
    last = encode_preference_example(THREE_TURNS, tokenizer, 256, loss_tokens="last_turn")
    assert last["chosen_input_ids"] == encoded["chosen_input_ids"]
    assert labelled_text(tokenizer, last["chosen_input_ids"], last["chosen_labels"]) == f"2 + 3 = 5.{eos}"
    with pytest.raises(ValueError, match="loss_tokens"):
        encode_preference_example(THREE_TURNS, tokenizer, 256, loss_tokens="final")


def test_shared_turns_cancel_in_the_summed_loss_and_move_the_normalised_one(tokenizer, tiny_model_factory):
    import torch

    from tulu_cli.train.dpo_losses import preference_loss
    from tulu_cli.train.pair_logprobs import forward_pairs

    policy_model, reference_model = tiny_model_factory(seed=1).eval(), tiny_model_factory(seed=2).eval()
    losses = {}
    for loss_tokens in ("all_turns", "last_turn"):
        pair = encode_preference_example(THREE_TURNS, tokenizer, 256, loss_tokens=loss_tokens)
        with torch.no_grad():
            policy, reference = (forward_pairs(model, [pair], tokenizer.pad_token_id, True, "cpu")
                                 for model in (policy_model, reference_model))
        assert policy.chosen_tokens.item() > (10 if loss_tokens == "all_turns" else 0)
        losses[loss_tokens] = {kind: preference_loss(kind, policy, reference, beta=5.0).losses.item()
                               for kind in ("dpo", "dpo_norm")}
    assert losses["all_turns"]["dpo"] == pytest.approx(losses["last_turn"]["dpo"], abs=1e-4)
    assert abs(losses["all_turns"]["dpo_norm"] - losses["last_turn"]["dpo_norm"]) > 1e-3
