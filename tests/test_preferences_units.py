"""Preference-data building blocks: rating parsing, binarisation, slot assignment, the call journal."""

from __future__ import annotations

import pytest

from tulu_cli.errors import StageError
from tulu_cli.preferences.assign import ON_POLICY, assign_models, check_slots
from tulu_cli.preferences.binarize import Candidate, choose_pair
from tulu_cli.preferences.judges import parse_ratings, tie_reason
from tulu_cli.preferences.store import ShardStore

ASPECTS = ["helpfulness", "honesty"]


@pytest.mark.parametrize("reply, expected", [
    ("helpfulness: 4\nhonesty: 5", {"helpfulness": 4.0, "honesty": 5.0}),
    ("Thinking... helpfulness: 2 maybe\n**Helpfulness**: 3\n- honesty: 4/5", {"helpfulness": 3.0, "honesty": 4.0}),
    ("helpfulness: 1\nhonesty: 1\nOn reflection:\nhelpfulness: 2\nhonesty: 3", {"helpfulness": 2.0, "honesty": 3.0}),
    ("helpfulness: 4", None),  # an aspect missing
    ("helpfulness: 6\nhonesty: 5", None),  # out of range
    ("helpfulness: four\nhonesty: 5", None),
    ("I cannot rate this.", None),
])
def test_parse_ratings(reply, expected):
    assert parse_ratings(reply, ASPECTS, 1, 5) == expected


def _candidates(*means):
    return [Candidate(slot, f"text {slot}", mean) for slot, mean in enumerate(means)]


def test_random_lower_picks_the_best_and_a_strictly_lower_one_seeded():
    candidates = _candidates(2.0, 4.5, 3.0, 1.0, 4.5)
    rejected = set()
    for prompt in range(40):
        chosen, other = choose_pair(candidates, "random_lower", 0, f"p{prompt}", tie_reason("llm"))
        assert chosen.mean == 4.5 and other.mean < 4.5
        rejected.add(other.slot)
        assert choose_pair(candidates, "random_lower", 0, f"p{prompt}", tie_reason("llm")) == (chosen, other)
    assert rejected == {0, 2, 3}  # every lower completion gets drawn for some prompt


def test_best_vs_worst_and_skips():
    chosen, rejected = choose_pair(_candidates(2.0, 4.0, 1.0, 3.0), "best_vs_worst", 0, "p", tie_reason("llm"))
    assert (chosen.slot, rejected.slot) == (1, 2)
    assert choose_pair(_candidates(3.0, 3.0, None), "random_lower", 0, "p", tie_reason("llm")) == "all_tied"
    assert choose_pair(_candidates(None, 2.0), "random_lower", 0, "p", tie_reason("llm")) == "too_few_rated"
    assert choose_pair(_candidates(1.0, 1.0), "random_lower", 0, "p", tie_reason("verifier")) == "all_verified"
    assert choose_pair(_candidates(0.0, 0.0), "best_vs_worst", 0, "p", tie_reason("verifier")) == "none_verified"
    same_text = [Candidate(0, "same", 1.0), Candidate(1, "same", 0.0)]
    assert choose_pair(same_text, "random_lower", 0, "p", tie_reason("verifier")) == "identical_responses"
    with pytest.raises(ValueError, match="strategy"):
        choose_pair(_candidates(1.0, 0.0), "coin_flip", 0, "p", tie_reason("llm"))


def test_on_policy_model_is_forced_into_every_set():
    pool = [f"m{i}" for i in range(6)]
    drawn = set()
    for prompt in range(50):
        slots = assign_models(f"p{prompt}", 4, 1, pool, seed=3)
        assert slots[0] == ON_POLICY and len(set(slots[1:])) == 3 and ON_POLICY not in slots[1:]
        assert slots == assign_models(f"p{prompt}", 4, 1, list(reversed(pool)), seed=3)
        drawn.update(slots[1:])
    assert drawn == set(pool)
    assert assign_models("p", 4, 4, [], seed=0) == [ON_POLICY] * 4


@pytest.mark.parametrize("per_prompt, on_policy, pool, message", [
    (1, 1, [], "at least 2"),
    (4, 1, ["a", "b"], "has 2 member"),
    (4, 5, [], "between 0"),
    (2, 1, [ON_POLICY], "reserved"),
])
def test_bad_slot_settings_are_reported(per_prompt, on_policy, pool, message):
    with pytest.raises(StageError, match=message):
        check_slots(per_prompt, on_policy, pool)


def test_journal_ignores_a_torn_tail_and_a_finished_shard_drops_it(tmp_path):
    store = ShardStore(tmp_path / "s", {"what": "test"})
    journal = store.journal(0)
    journal.append("a", {"text": "1"})
    journal.append("b", {"text": "2"})
    with journal.path.open("a") as handle:
        handle.write('{"key": "c", "val')  # killed mid-write
    assert journal.load() == {"a": {"text": "1"}, "b": {"text": "2"}}
    assert not store.done(0)
    store.write(0, [{"key": "a"}, {"key": "b"}])
    assert store.done(0) and store.read(0) == [{"key": "a"}, {"key": "b"}] and not journal.path.exists()


def test_prompts_are_read_a_shard_at_a_time_and_the_work_key_is_the_whole_descriptions_fingerprint(tmp_path):
    # The work store's name hashes every prompt and its models as one JSON document; it is now written
    # a piece at a time. It must equal the fingerprint of the whole document (so a store made before is
    # found), over more prompts than one read, with repeated ids and ids that sort by code point.
    import json

    from tulu_cli.preferences.pipeline import work_key
    from tulu_cli.preferences.prompts import READ_ROWS, load_prompts
    from tulu_cli.preferences.store import fingerprint
    from tulu_cli.progress import progress_bars

    rows = [{"id": ["dup", "é", "z", "ä", f"p{i}"][i % 5],
             "messages": [{"role": "user", "content": f"question {i} ü"}, {"role": "assistant", "content": "a"}]}
            for i in range(READ_ROWS + 100)]
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    with progress_bars() as new_bar:
        prompts, _ = load_prompts({"kind": "sft", "sources": {"s": {"path": str(source), "take": 1.0}}}, 3, new_bar)
    everything = list(prompts)
    assert len(everything) == len(rows) and len({p.id for p in everything}) == len(rows)
    assert [p.id for p in everything if p.id.startswith("dup")][:3] == ["dup", "dup#2", "dup#3"]
    assert prompts.shard(1, 7) == everything[7:14] and all(p.messages[-1]["role"] == "user" for p in everything)

    def slots_of(uid: str) -> list[str]:
        return assign_models(uid, 3, 1, ["a", "b"], 3)

    specs, sampling, generation = {"a": {"base_url": "http://a"}, "b": {"path": "x"}}, {"temperature": 1.0}, None
    whole = fingerprint({"prompts": [p.to_json() for p in everything], "slots": {p.id: slots_of(p.id) for p in everything},
                         "shard_size": 8, "models": specs, "sampling": sampling, "generation": generation, "seed": 3})
    assert work_key(prompts, slots_of, 8, specs, sampling, generation, 3) == whole
    assert work_key(prompts, slots_of, 9, specs, sampling, generation, 3) != whole
