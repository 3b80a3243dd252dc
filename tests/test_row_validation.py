"""Row validation at data time: OpenAI-style content parts become text (other parts are rejected), and RLVR
rows whose ifeval ground truth the verifier cannot parse are set aside with file, row and field."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tulu_cli.curate.schemas import normalize_row
from tulu_cli.data.validate import RowError, check_messages
from tulu_cli.train.rl.data import prepare_rlvr

USER = [{"role": "user", "content": "Describe a cat."}]


def parts(*texts, kind="text"):
    return [{"type": kind, "text": text} for text in texts]


def test_text_parts_become_one_text_in_every_schema():
    messages = [{"role": "user", "content": parts("Describe", "a cat.")},
                {"role": "assistant", "content": parts("Furry.")}]
    assert check_messages(messages) == [{"role": "user", "content": "Describe\na cat."},
                                        {"role": "assistant", "content": "Furry."}]
    assert messages[0]["content"] == parts("Describe", "a cat.")  # the caller's row is left as it was
    assert normalize_row({"messages": messages}, "sft")["messages"][0]["content"] == "Describe\na cat."
    sharegpt = {"conversations": [{"from": "human", "value": parts("Hi")}, {"from": "gpt", "value": "Hello"}]}
    assert normalize_row(sharegpt, "sft")["messages"][0] == {"role": "user", "content": "Hi"}
    prompt = [{"role": "user", "content": parts("Pick one.")}]
    pair = {"prompt": prompt, "chosen": prompt + [{"role": "assistant", "content": "A"}],
            "rejected": prompt + [{"role": "assistant", "content": parts("B", kind="output_text")}]}
    row = normalize_row(pair, "preference")
    assert row["prompt"] == "Pick one." and row["rejected"][-1]["content"] == "B"


@pytest.mark.parametrize(("content", "field", "reason"), [
    ([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x.png"}}],
     "messages[0].content[1].type", "non_text_content"),
    ([{"type": "input_audio", "input_audio": {}}], "messages[0].content[0].type", "non_text_content"),
    ([{"type": "text", "text": 3}], "messages[0].content[0].text", "non_string_content"),
    (["bare string"], "messages[0].content", "non_string_content"),
    ([], "messages[0].content", "empty_content"),
    (parts("  "), "messages[0].content", "empty_content"),
])
def test_parts_that_are_not_text_are_rejected_with_the_part_named(content, field, reason):
    with pytest.raises(RowError) as caught:
        check_messages([{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}])
    assert (caught.value.field, caught.value.reason) == (field, reason)


def ifeval_row(truth, prompt=USER):
    return {"messages": prompt, "ground_truth": truth if isinstance(truth, str) else json.dumps(truth),
            "dataset": "ifeval"}


BAD_IFEVAL = [
    ('{"func_name": "verify_keywords", "keyword_list": ["cat"', "not valid JSON"),
    ({"func_name": "verify_everything"}, "unknown func_name 'verify_everything'"),
    ({"func_name": "verify_keywords"}, "missing argument(s) keyword_list"),
    ({"instruction_id_list": ["punctuation:no_such"], "kwargs": [{}]}, "unknown instruction id"),
]


def test_rlvr_rows_with_an_unusable_ifeval_ground_truth_are_set_aside(tmp_path, tiny_tokenizer):
    good = [ifeval_row({"func_name": "verify_keywords", "keyword_list": ["cat"]}),
            ifeval_row({"func_name": "validate_repeat_prompt", "original_prompt": "Describe a cat."}),
            ifeval_row({"instruction_id_list": ["combination:repeat_prompt"], "kwargs": [{}]})]
    source = tmp_path / "rlvr.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in good + [ifeval_row(t) for t, _ in BAD_IFEVAL]))
    kept, report = prepare_rlvr(OmegaConf.create({"train": str(source)}), tiny_tokenizer, 64, tmp_path)
    assert len(kept) == 3 and report.rejected == {"bad_ground_truth": 4}
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["source"], r["row"], r["field"]) for r in rejects] == [(str(source), n, "ground_truth") for n in (4, 5, 6, 7)]
    for reject, (_, words) in zip(rejects, BAD_IFEVAL, strict=True):
        assert words in reject["detail"]


def test_curate_sets_aside_rlvr_rows_with_an_unusable_ifeval_ground_truth():
    verifiers = {"ifeval", "gsm8k", "math"}
    for truth, words in BAD_IFEVAL:
        with pytest.raises(RowError) as caught:
            normalize_row(ifeval_row(truth), "rlvr", known_verifiers=verifiers)
        assert (caught.value.field, caught.value.reason) == ("ground_truth", "bad_ground_truth")
        assert words in caught.value.detail
    row = normalize_row(ifeval_row({"func_name": "validate_lowercase"}), "rlvr", known_verifiers=verifiers)
    assert row["dataset"] == "ifeval"
