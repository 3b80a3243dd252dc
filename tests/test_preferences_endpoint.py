"""Preference data over a real OpenAI-compatible HTTP server (127.0.0.1, ephemeral port) in front of a
tiny model: a pool member and an LLM judge, retries of 429/500, unparsable judgements, resume."""

from __future__ import annotations

import json

import pytest

from tests.openai_chat_server import JUDGE_MARKER, TinyChatServer
from tulu_cli.config import assets_dir
from tulu_cli.data.preference_data import pair_conversations
from tulu_cli.data.sources import load_source
from tulu_cli.preferences.chat_api import ApiError, ChatClient, EndpointConfig
from tulu_cli.preferences.pipeline import run_preferences

ASPECTS = {"helpfulness": "Useful?", "honesty": "Calibrated?", "instruction_following": "Compliant?",
           "truthfulness": "No hallucination?"}


@pytest.fixture
def server(tiny_model_factory, tiny_tokenizer):
    with TinyChatServer(tiny_model_factory(seed=2), tiny_tokenizer, list(ASPECTS)) as running:
        yield running


def _prompts_file(tmp_path, count):
    lines = (assets_dir() / "tiny" / "rlvr_train.jsonl").read_text().splitlines()[:count]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, [json.loads(line) for line in lines]


def _config(tiny_dir, prompts, url, judge_url=None):
    endpoint = {"base_url": url, "api_key_env": "TINY_API_KEY", "backoff_s": 0.01, "max_backoff_s": 0.05,
                "max_retries": 3, "timeout_s": 30}
    return {
        "seed": 5, "shard_size": 2,
        "model": {"path": str(tiny_dir)},
        "generation": {"backend": "hf", "batch_size": 8},
        "prompts": {"kind": "rlvr", "sources": {"tiny": {"path": str(prompts), "take": 1.0}}},
        "pool": {"served_a": {**endpoint, "model": "tiny-a", "concurrency": 2},
                 "served_b": {**endpoint, "model": "tiny-b", "concurrency": 2}},
        "completions": {"per_prompt": 3, "on_policy": 1, "max_new_tokens": 8},
        "judge": {"kind": "llm", "aspects": ASPECTS, "max_attempts": 2, "max_new_tokens": 8,
                  "model": {**endpoint, "base_url": judge_url or url, "model": "tiny-judge", "concurrency": 3},
                  "template": JUDGE_MARKER + ".\n{aspects}\n\n{conversation}\n\nResponse:\n{response}\n\n{format}"},
        "binarize": {"pairs": "random_lower", "extremes": "best_vs_worst"},
    }


def test_client_retries_rate_limits_and_server_errors_then_gives_up(server, monkeypatch):
    monkeypatch.setenv("TINY_API_KEY", "secret")
    delays = []
    client = ChatClient(EndpointConfig(server.base_url, "tiny", api_key_env="TINY_API_KEY", backoff_s=0.5,
                                       max_backoff_s=3.0, max_retries=3), sleep=delays.append)
    server.fail_with = [429, 500, 503]
    reply = client.complete([{"role": "user", "content": "Hi"}], temperature=1.0, top_p=1.0, max_tokens=4, seed=1)
    assert isinstance(reply.text, str) and server.failed == [429, 500, 503] and client.retries == 3
    assert len(delays) == 3 and delays[0] < delays[1] < delays[2] <= 3.0  # exponential, capped
    server.fail_with = [500] * 4
    with pytest.raises(ApiError, match="giving up after 4 attempts; last error: HTTP 500"):
        client.complete([{"role": "user", "content": "Hi"}], temperature=1.0, top_p=1.0, max_tokens=4)
    server.fail_with = [400]
    with pytest.raises(ApiError, match="HTTP 400"):  # not retryable
        client.complete([{"role": "user", "content": "Hi"}], temperature=1.0, top_p=1.0, max_tokens=4)
    monkeypatch.delenv("TINY_API_KEY")
    with pytest.raises(Exception, match="TINY_API_KEY"):
        ChatClient(EndpointConfig(server.base_url, "tiny", api_key_env="TINY_API_KEY"))


def test_a_reply_with_a_lone_surrogate_is_stored_with_a_replacement_character(server, tmp_path, monkeypatch):
    # A lone surrogate escape decodes to a string that UTF-8 cannot encode: it could be neither hashed,
    # journaled nor stored in Arrow. The client replaces it, as a UTF-8 decoder replaces a bad byte.
    from tulu_cli.preferences.store import CallJournal, fingerprint

    monkeypatch.setenv("TINY_API_KEY", "secret")
    server.reply_suffix = "\ud800"
    client = ChatClient(EndpointConfig(server.base_url, "tiny", api_key_env="TINY_API_KEY"))
    reply = client.complete([{"role": "user", "content": "Hi"}], temperature=1.0, top_p=1.0, max_tokens=4, seed=1)
    assert reply.text.endswith("\ufffd") and "\ud800" not in reply.text
    journal = CallJournal(tmp_path / "calls.jsonl")
    journal.append(fingerprint({"text": reply.text}), {"text": reply.text})
    assert list(journal.load().values()) == [{"text": reply.text}]


def test_pool_member_and_llm_judge_over_http(server, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_API_KEY", "secret")
    prompts_file, rows = _prompts_file(tmp_path, 6)
    unrateable = rows[3]["messages"][0]["content"]
    server.fail_with = [429, 500]
    server.unparsable_judgements = 1
    server.never_rate = unrateable  # every judgement of this prompt's completions is unparsable
    run_dir = tmp_path / "run"
    run_preferences(_config(tiny_dir, prompts_file, server.base_url), run_dir)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completions"] == 18 and summary["unrated"] == 3
    # 3 unrateable completions x 2 attempts, plus one reply that was unparsable once and then parsed.
    assert summary["unparsable_replies"] == 3 * 2 + 1
    side = load_source(str(run_dir / "completions")).dataset
    assert len(side) == 6
    for row in side:
        assert [c["model"] for c in row["completions"]][0] == "on_policy"
        assert sorted(c["model"] for c in row["completions"][1:]) == ["served_a", "served_b"]
        for rating in row["ratings"]:
            if row["messages"][0]["content"] == unrateable:
                assert rating["ratings"] is None and rating["error"].startswith("unparsable after 2")
                assert len(rating["replies"]) == 2
            else:
                assert set(rating["ratings"]) == set(ASPECTS) and 1 <= rating["mean"] <= 5
    for name in ("pairs", "extremes"):
        info = summary["datasets"][name]
        assert info["pairs"] + sum(info["skipped"].values()) == 6 and info["skipped"]["too_few_rated"] == 1
        pairs = load_source(str(run_dir / name)).dataset
        assert len(pairs) == info["pairs"] > 0
        for pair in pairs:
            assert pair["chosen_rating"] > pair["rejected_rating"]
            pair_conversations(pair)  # what the DPO loader accepts
    # Every served judging request used the rubric template with all four aspects.
    assert all("truthfulness: <1-5>" in b["messages"][-1]["content"] for b in server.judging_requests())

    # A second run over the same directory pays for nothing and writes the same datasets.
    served, before = len(server.served), {n: json.loads((run_dir / n / "manifest.json").read_text())["content_sha256"]
                                          for n in ("pairs", "completions")}
    run_preferences(_config(tiny_dir, prompts_file, server.base_url), run_dir)
    assert len(server.served) == served
    assert before == {n: json.loads((run_dir / n / "manifest.json").read_text())["content_sha256"]
                      for n in ("pairs", "completions")}


def test_failed_run_resumes_without_resending_finished_calls(server, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_API_KEY", "secret")
    prompts_file, _ = _prompts_file(tmp_path, 6)
    run_dir = tmp_path / "run"
    server.fail_after = 5  # the pool's 12 completions: 5 succeed, then the server breaks
    with pytest.raises(ApiError):
        run_preferences(_config(tiny_dir, prompts_file, server.base_url), run_dir)
    first = len(server.served)
    assert first == 5 and not (run_dir / "pairs").exists()
    journaled = sum(len(p.read_text().splitlines()) for p in run_dir.glob("work/*/completions/served_*/*.calls.jsonl"))
    finished = sum(len(p.read_text().splitlines()) for p in run_dir.glob("work/*/completions/served_*/shard-*[0-9].jsonl"))
    assert journaled + finished == 5
    server.fail_after = None
    run_preferences(_config(tiny_dir, prompts_file, server.base_url), run_dir)
    pool_calls = [b for b in server.served if b["model"] in ("tiny-a", "tiny-b")]
    assert len(pool_calls) == 12  # 6 prompts x 2 pool completions, none sent twice
    assert len({(b["messages"][-1]["content"], b["seed"]) for b in pool_calls}) == 12
    assert json.loads((run_dir / "summary.json").read_text())["completions"] == 18


def test_the_assembly_spool_goes_when_writing_an_output_fails(server, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TINY_API_KEY", "secret")
    prompts_file, _ = _prompts_file(tmp_path, 2)
    run_dir = tmp_path / "run"
    (run_dir / ".assemble-left-by-a-killed-run").mkdir(parents=True)
    (run_dir / "pairs").write_text("a file where the pairs dataset goes")
    with pytest.raises(OSError):
        run_preferences(_config(tiny_dir, prompts_file, server.base_url), run_dir)
    assert (run_dir / "completions" / "manifest.json").exists()  # written before the failing one
    assert list(run_dir.glob(".assemble-*")) == []


def test_a_prompt_the_server_refuses_is_set_aside_and_the_run_finishes(server, tiny_dir, tmp_path, monkeypatch):
    # One prompt too long for the endpoint's context: its pool completions and the judging of its other
    # completion are refused (HTTP 400). The run records why, finishes, and a rerun sends nothing again.
    monkeypatch.setenv("TINY_API_KEY", "secret")
    prompts_file, prompts = _prompts_file(tmp_path, 4)
    refused = next(m["content"] for m in prompts[1]["messages"] if m["role"] == "user")
    server.too_long = refused
    run_dir = tmp_path / "run"
    run_preferences(_config(tiny_dir, prompts_file, server.base_url), run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["completions"] == 12 and summary["completions_refused"] == 2 and summary["unrated"] == 3
    assert server.failed.count(400) == 3  # two pool completions, one judgement, each asked once
    side = load_source(str(run_dir / "completions")).dataset
    row = next(r for r in side if refused in json.dumps(r["messages"]))
    errors = [rating["error"] for rating in row["ratings"]]
    assert sum("no completion" in e and "HTTP 400" in e for e in errors if e) == 2
    assert sum(e is not None and e.startswith("http") and "maximum context length" in e for e in errors) == 1
    pairs = load_source(str(run_dir / "pairs")).dataset
    assert all(refused not in json.dumps(pair["chosen"]) for pair in pairs)
    served, failed = len(server.served), len(server.failed)
    run_preferences(_config(tiny_dir, prompts_file, server.base_url), run_dir)
    assert (len(server.served), len(server.failed)) == (served, failed)


def test_a_torn_journal_line_is_cut_so_the_next_call_is_kept(tmp_path):
    from tulu_cli.errors import StageError
    from tulu_cli.preferences.store import CallJournal

    path = tmp_path / "calls.jsonl"
    journal = CallJournal(path)
    journal.append("a", {"text": "first"})
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"key": "b", "value": {"te')  # a kill in the middle of a write
    assert journal.load() == {"a": {"text": "first"}}
    journal.append("c", {"text": "third"})
    assert CallJournal(path).load() == {"a": {"text": "first"}, "c": {"text": "third"}}

    path.write_text(path.read_text().replace('"a"', '"a', 1))  # a line damaged in the middle of the file
    with pytest.raises(StageError, match=r"calls\.jsonl, line 1: not a journaled call"):
        CallJournal(path).load()
