"""RLVR data validation (reasons, rejects file) and per-response tensors from packed or padded batches."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from tulu_cli.data.chat import render_prompt
from tulu_cli.train.rl.data import prepare_rlvr, prompt_rows
from tulu_cli.train.rl.experience import response_outputs
from tulu_cli.train.rl.models import PolicyAndValue, ValueModel


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "{not json\n")


def test_prepare_rlvr_keeps_good_rows_and_sets_bad_ones_aside_with_reasons(tmp_path, tiny_tokenizer):
    user = [{"role": "user", "content": "What is 2 + 3?"}]
    rows = [
        {"messages": user, "ground_truth": "5", "dataset": "gsm8k"},
        # A final assistant turn is not part of the prompt.
        {"messages": user + [{"role": "assistant", "content": "5"}], "ground_truth": "5", "dataset": "GSM8K"},
        {"messages": user, "ground_truth": 5, "dataset": "gsm8k"},
        {"messages": user, "ground_truth": "5", "dataset": "no_such_verifier"},
        {"messages": [{"role": "user", "content": ""}], "ground_truth": "5", "dataset": "gsm8k"},
        {"messages": user, "dataset": "gsm8k"},
        {"messages": [{"role": "user", "content": "word " * 400}], "ground_truth": "5", "dataset": "gsm8k"},
    ]
    source = tmp_path / "rlvr.jsonl"
    write_rows(source, rows)
    prepared, report = prepare_rlvr(OmegaConf.create({"train": str(source)}), tiny_tokenizer, 64, tmp_path)
    assert len(prepared) == 2 and report.rows_kept == 2 and report.rows_read == 8
    kept = prompt_rows(prepared, [0, 1])
    assert kept[1].messages == user and kept[1].dataset == "GSM8K"
    assert kept[0].prompt == kept[1].prompt == render_prompt(user)
    assert kept[0].prompt_ids == tiny_tokenizer(render_prompt(user), add_special_tokens=False)["input_ids"]
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["field"], r["reason"]) for r in rejects] == [
        (8, "<line>", "unparsable_line"),
        (3, "ground_truth", "non_string_ground_truth"),
        (4, "dataset", "unknown_dataset"),
        (5, "messages[0].content", "empty_content"),
        (6, "ground_truth", "missing_field"),
        (7, "messages", "prompt_too_long"),
    ]
    assert str(source) == rejects[1]["source"]


@pytest.mark.parametrize("packing", [True, False])
def test_response_tensors_match_one_sequence_at_a_time(tiny_model_factory, packing):
    policy = tiny_model_factory(seed=1)
    backbone = tiny_model_factory(seed=2).model
    model = PolicyAndValue(policy, ValueModel(backbone, torch.nn.Linear(backbone.config.hidden_size, 1)))
    model.eval()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    responses = [[20, 21], [22, 23, 24, 25], [26]]
    logprobs, values, entropy = response_outputs(
        model, prompts, responses, pad_id=2, packing=packing, device="cpu", with_entropy=True
    )
    assert logprobs.shape == values.shape == entropy.shape == (3, 4)
    with torch.no_grad():
        for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            ids = torch.tensor([prompt + response])
            logits = policy(ids).logits[0].log_softmax(-1)
            start = len(prompt) - 1  # the position that predicts the first response token
            expected = torch.stack([logits[start + i, token] for i, token in enumerate(response)])
            torch.testing.assert_close(logprobs[row, : len(response)], expected, rtol=1e-4, atol=1e-5)
            assert torch.all(logprobs[row, len(response) :] == 0)
            expected_values = model.value(ids)[0, start : start + len(response)]
            torch.testing.assert_close(values[row, : len(response)], expected_values, rtol=1e-4, atol=1e-5)
            expected_entropy = -(logits.exp() * logits).sum(-1)[start : start + len(response)]
            torch.testing.assert_close(entropy[row, : len(response)], expected_entropy, rtol=1e-4, atol=1e-5)
