"""Schema normalisation, validation reasons, mixing semantics and the de-dup key of `tulu curate`."""

from __future__ import annotations

import pytest

from tulu_cli.curate.mixing import MixError, parse_sources, select, target_rows
from tulu_cli.curate.schemas import content_key, normalize_row
from tulu_cli.data.validate import RowError

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


@pytest.mark.parametrize("row", [
    {"messages": [{"role": "user", "content": "Hi", "extra": 1}, {"role": "assistant", "content": "Hello!"}]},
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    {"prompt": "Hi", "completion": "Hello!"},
    {"prompt": [CHAT[0]], "completion": [CHAT[1]]},
])
def test_sft_forms_normalise_to_messages(row):
    assert normalize_row(row, "sft") == {"messages": CHAT}


def test_alpaca_joins_instruction_and_input():
    row = {"instruction": "Translate.", "input": "Hallo", "output": "Hello"}
    assert normalize_row(row, "sft")["messages"] == [
        {"role": "user", "content": "Translate.\n\nHallo"}, {"role": "assistant", "content": "Hello"}]
    assert normalize_row({**row, "input": ""}, "sft")["messages"][0]["content"] == "Translate."


def test_preference_forms():
    pair = {"chosen": CHAT, "rejected": [CHAT[0], {"role": "assistant", "content": "Go away."}]}
    assert normalize_row(pair, "preference")["prompt"] == "Hi"
    assert normalize_row({**pair, "prompt": "Hi"}, "preference")["rejected"][1]["content"] == "Go away."
    strings = normalize_row({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}, "preference")
    assert strings["chosen"] == CHAT
    assert normalize_row(pair, "sft", "chosen") == {"messages": CHAT}


def test_rlvr_row_keeps_verifier_fields():
    row = {"messages": [CHAT[0]], "ground_truth": "4", "dataset": "gsm8k", "constraint": {"n": 2}}
    out = normalize_row(row, "rlvr", known_verifiers={"gsm8k"})
    assert out["ground_truth"] == "4" and out["constraint"] == '{"n": 2}' and out["constraint_type"] is None


@pytest.mark.parametrize("kind, row, field, reason", [
    ("sft", {"id": 1}, "messages", "missing_field"),
    ("sft", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "unknown_role"),
    ("sft", {"conversations": [{"from": "alien", "value": "x"}]}, "conversations[0].from", "unknown_role"),
    ("sft", {"messages": [{"role": "user", "content": "  "}, CHAT[1]]}, "messages[0].content", "empty_content"),
    ("sft", {"messages": [{"role": "user", "content": 7}, CHAT[1]]}, "messages[0].content", "non_string_content"),
    ("sft", {"messages": [CHAT[1], CHAT[0]]}, "messages[0].role", "turn_order"),
    ("sft", {"messages": [CHAT[0], {"role": "system", "content": "s"}]}, "messages[1].role", "turn_order"),
    ("sft", {"messages": [CHAT[0]]}, "messages", "no_assistant_turn"),
    ("sft", {"instruction": "x"}, "output", "missing_field"),
    ("preference", {"chosen": CHAT}, "rejected", "missing_field"),
    ("preference", {"chosen": CHAT, "rejected": [{"role": "user", "content": "Other"}, CHAT[1]]},
     "rejected", "prompt_mismatch"),
    ("preference", {"prompt": "Something else", "chosen": CHAT, "rejected": CHAT}, "prompt", "prompt_mismatch"),
    ("rlvr", {"messages": [CHAT[0]], "dataset": "gsm8k"}, "ground_truth", "missing_field"),
    ("rlvr", {"messages": [CHAT[0]], "ground_truth": "1", "dataset": "poetry"}, "dataset", "unknown_verifier"),
])
def test_bad_rows_name_field_and_reason(kind, row, field, reason):
    with pytest.raises(RowError) as error:
        normalize_row(row, kind, known_verifiers={"gsm8k"})
    assert (error.value.field, error.value.reason) == (field, reason)


def test_content_key_is_exact():
    a = normalize_row({"messages": CHAT}, "sft")
    b = normalize_row({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}, "sft")
    c = normalize_row({"messages": [CHAT[0], {"role": "assistant", "content": "Hello"}]}, "sft")
    assert content_key("sft", a) == content_key("sft", b) != content_key("sft", c)


def _modes(sources):
    return [(s.take, s.take_mode) for s in parse_sources(sources)]


def test_bare_numbers_follow_the_reference_rule():
    # no number above 1: all fractions, so an integer 1 means every row
    assert _modes({"a": 1, "b": 0.5}) == [(1, "fraction"), (0.5, "fraction")]
    # some number above 1: all row counts, so 1 is one row
    assert _modes({"a": 1, "b": 100}) == [(1, "rows"), (100, "rows")]
    assert _modes({"a": {"path": "x", "take": 3}}) == [(3, "rows")]
    with pytest.raises(MixError, match=r"\['a'\] are not integers"):
        parse_sources({"a": 1.0, "b": 100})  # the reference refuses to mix fractions and counts
    with pytest.raises(MixError, match="not integers"):
        parse_sources({"a": 2.5})


def test_explicit_rows_and_fraction_cannot_be_misread():
    sources = {"a": {"path": "x", "fraction": 1.0}, "b": {"path": "y", "rows": 1}, "c": {"path": "z", "rows": 240},
               "d": 0.5}
    assert _modes(sources) == [(1.0, "fraction"), (1, "rows"), (240, "rows"), (0.5, "fraction")]
    assert target_rows(1, "rows", 50) == 1 and target_rows(1, "fraction", 50) == 50
    for bad in ({"a": {"path": "x", "rows": 2.5}}, {"a": {"path": "x", "rows": 2, "fraction": 0.5}},
                {"a": {"path": "x", "fraction": -1}}, {"a": {"path": "x", "take": True}}):
        with pytest.raises(MixError):
            parse_sources(bad)


def test_selection_is_the_reference_seeded_shuffle_then_first_rows():
    import datasets

    shuffled = datasets.Dataset.from_dict({"i": list(range(1000))}).shuffle(seed=42)["i"]
    assert select(1000, 30, 42) == shuffled[:30]  # the reference: shuffle(seed=42), then select(range(30))
    assert select(1000, 1000, 42) == shuffled
    assert select(100, 30, 1) != select(100, 30, 2)
    up = select(4, 10, 1)  # beyond the reference (which cannot upsample): the permutation repeated
    assert up[:4] == up[4:8] == select(4, 4, 1) and up[8:] == up[:2]
    assert select(0, 5, 1) == [] and select(5, 0, 1) == []


def test_sources_config_forms_and_errors():
    specs = parse_sources({"org/data": 0.25, "local": {"path": "x.jsonl", "rows": 10, "format": "alpaca"}})
    assert [(s.path, s.take, s.take_mode) for s in specs] == [("org/data", 0.25, "fraction"), ("x.jsonl", 10, "rows")]
    for bad in ({"a": {"path": "x", "take": -1}}, {"a": {"path": "x", "take": True}},
                {"a": {"path": "x", "format": "csv"}}, {"a": {"path": "x", "weight": 1}}, {}):
        with pytest.raises(MixError):
            parse_sources(bad)
