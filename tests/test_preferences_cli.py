"""`tulu curate conf=prefs_tiny` end to end: on-policy samples judged by the verifiers, pairs readable by
the DPO loader; a run SIGKILLed halfway and restarted gives the same datasets as an uninterrupted one."""

from __future__ import annotations

import json

import pytest

from tests.conftest import kill_tulu_when, run_tulu
from tulu_cli.config import assets_dir
from tulu_cli.data.preference_data import pair_conversations
from tulu_cli.data.sources import load_source


def _lowercase_prompts(tmp_path, count):
    """Verifiable prompts an untrained tiny model passes by chance (random text is sometimes all lowercase)."""
    rows = [json.loads(line) for line in (assets_dir() / "tiny" / "rlvr_train.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["dataset"] == "ifeval"][:count]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({**r, "ground_truth": json.dumps({"func_name": "validate_lowercase"})}) + "\n"
                            for r in rows))
    return path


def _args(model, prompts, out, count, shard_size, tokens):
    return ["curate", "conf=prefs_tiny", f"model.path={model}", f"output_dir={out}",
            f"prompts.sources.tiny_rlvr.path={prompts}", f"prompts.sources.tiny_rlvr.take={count}",
            f"shard_size={shard_size}", f"completions.max_new_tokens={tokens}"]


def _hashes(run):
    return {name: json.loads((run / name / "manifest.json").read_text())["content_sha256"]
            for name in ("pairs", "pairs_best_vs_worst", "completions")}


def test_prefs_tiny_builds_verifier_judged_pairs(tmp_path, tiny_dir):
    out = tmp_path / "prefs"
    run_tulu(*_args(tiny_dir, _lowercase_prompts(tmp_path, 16), out, 16, 4, 6))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == 16 and summary["completions"] == 64 and summary["unrated"] == 0
    for name in ("pairs", "pairs_best_vs_worst"):
        info = summary["datasets"][name]
        assert info["pairs"] > 0 and info["pairs"] + sum(info["skipped"].values()) == 16
        assert set(info["skipped"]) <= {"all_verified", "none_verified"}
    pairs = load_source(str(out / "pairs")).dataset
    for pair in pairs:
        assert (pair["chosen_rating"], pair["rejected_rating"]) == (1.0, 0.0)
        assert pair["chosen"][-1]["content"] == pair["chosen"][-1]["content"].lower()
        assert pair["rejected"][-1]["content"] != pair["rejected"][-1]["content"].lower()
        pair_conversations(pair)  # what `tulu dpo data.train=DIR/pairs` accepts
    side = load_source(str(out / "completions")).dataset
    assert len(side) == 16 and all(len(r["completions"]) == len(r["ratings"]) == 4 for r in side)
    assert all(r["completions"][i]["model"] == "on_policy" for r in side for i in range(4))


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_datasets(tmp_path, tiny_dir):
    prompts = _lowercase_prompts(tmp_path, 24)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_tulu(*_args(tiny_dir, prompts, reference, 24, 2, 24))

    def shards():
        return list(resumed.glob("work/*/completions/on_policy/shard-*[0-9].jsonl"))

    assert kill_tulu_when(_args(tiny_dir, prompts, resumed, 24, 2, 24), lambda: len(shards()) >= 3, timeout=240), \
        "the run ended before it could be killed halfway"
    shard_dir = shards()[0].parent
    finished = len(list(shard_dir.glob("shard-*[0-9].jsonl")))
    assert 3 <= finished < 12 and not (resumed / "pairs").exists()

    run_tulu(*_args(tiny_dir, prompts, resumed, 24, 2, 24))
    assert _hashes(resumed) == _hashes(reference)
    assert json.loads((resumed / "summary.json").read_text()) | {"datasets": None} == \
        json.loads((reference / "summary.json").read_text()) | {"datasets": None}
