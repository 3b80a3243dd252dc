"""The synthesis pipeline against a real OpenAI-compatible HTTP server with scripted replies (standing in for
a strong generator such as GPT-4o): persona prompts, near-duplicate removal, decontamination against an
eval file, math self-consistency into ground truths, resume after a failure without re-sending answered
calls; plus the near-duplicate, consensus and persona-loading units."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest

from tulu_cli.data.sources import load_source
from tulu_cli.errors import StageError
from tulu_cli.preferences.chat_api import ApiError
from tulu_cli.rewards.registry import verify
from tulu_cli.synthesis.near_dup import NearDupConfig, near_duplicates
from tulu_cli.synthesis.personas import load_personas
from tulu_cli.synthesis.pipeline import run_synthesis
from tulu_cli.synthesis.responses import Consensus, consensus

EVAL_QUESTION = "A farmer has 17 sheep and buys 5 more at the market. How many sheep does the farmer have?"
PERSONAS = ["a baker", "a sailor", "a nurse", "a baker's twin", "a quiz master", "a pilot"]


class ScriptedChatServer:
    """Answers prompt requests per persona and response requests per problem, deterministically by seed."""

    def __init__(self):
        self.served: list[dict] = []
        self.fail_after: int | None = None  # after this many served requests the server fails (HTTP 503)
        self.too_long: str | None = None  # requests with this text are refused (HTTP 400), one by one
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    @staticmethod
    def reply(body: dict) -> str:
        text = body["messages"][-1]["content"]
        persona = re.search(r"persona: (.*)\n", text)
        if persona:
            who = persona.group(1)
            if who == "a quiz master":
                return EVAL_QUESTION  # copies an eval question: decontamination removes it
            if who.startswith("a baker"):  # both bakers write (nearly) the same problem
                article = "The" if who == "a baker" else "the"
                return f"Problem: {article} bakery sells 12 loaves each hour for 8 hours. How many loaves?"
            times = body["seed"] % 1000 + 2
            return f"Problem: {who} counts {len(who)} boxes and then {times} times as many. How many boxes?"
        numbers = [int(n) for n in re.findall(r"\d+", text)]
        if "pilot" in text:  # the samples disagree: no consensus
            return f"It is \\boxed{{{body['seed'] % 1000}}}."
        return f"Multiply and add: the answer is \\boxed{{{numbers[0] * numbers[-1]}}}."

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                refused = server.too_long is not None and server.too_long in body["messages"][-1]["content"]
                with server._lock:
                    failing = server.fail_after is not None and len(server.served) >= server.fail_after
                    if not failing and not refused:
                        server.served.append(body)
                if failing or refused:
                    self.send_response(400 if refused else 503)
                    self.end_headers()
                    self.wfile.write(b'{"error": "too long"}' if refused else b'{"error": "scripted failure"}')
                    return
                payload = json.dumps(
                    {
                        "choices": [
                            {
                                "message": {"role": "assistant", "content": server.reply(body)},
                                "finish_reason": "stop",
                            }
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        return Handler


@pytest.fixture
def server():
    running = ScriptedChatServer()
    yield running
    running.close()


def _config(tmp_path, server) -> dict:
    personas = tmp_path / "personas.jsonl"
    personas.write_text(
        "".join(json.dumps({"id": f"p{i}", "persona": p}) + "\n" for i, p in enumerate(PERSONAS))
        + '{"id": "bad", "persona": ""}\n'
    )
    evals = tmp_path / "eval.jsonl"
    evals.write_text(json.dumps({"id": "e1", "question": EVAL_QUESTION}) + "\n")
    endpoint = {"base_url": server.base_url, "model": "scripted", "max_retries": 0, "concurrency": 2}
    return {
        "seed": 3,
        "skill": "math",
        "shard_size": 2,
        "rows_per_file": 4,
        "model": endpoint,
        "personas": {"path": str(personas), "field": "persona"},
        "prompt_generation": {
            "template": "Write a math problem for this persona: {persona}\nOnly the problem.",
            "per_persona": 2,
            "strip_prefixes": ["Problem:"],
            "min_words": 3,
        },
        "sampling": {"temperature": 1.0, "max_new_tokens": 64},
        "near_dup": {"ngram": 3, "threshold": 0.8},
        "decontaminate": {"evals": [str(evals)], "ngram": 8, "threshold": 0.5},
        "responses": {
            "samples": 3,
            "max_new_tokens": 64,
            "self_consistency": {"verifier": "math", "min_agreement": 0.6},
            "verify": True,
        },
    }


def test_persona_math_over_an_endpoint(tmp_path, server):
    run_synthesis(_config(tmp_path, server), tmp_path / "run")
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    counts = summary["counts"]
    # 6 personas x 2 prompts; the bakers' 4 prompts are one problem; the quiz master's 2 copy the eval
    # question (and are near duplicates of each other); the pilot's samples never agree.
    assert counts["personas"] == 6 and counts["personas_rejected"] == 1 and counts["generated"] == 12
    assert counts["near_dup:near_duplicate"] == 4 and counts["decontaminate:contaminated"] == 1
    assert counts["self_consistency:no_consensus"] == 2 and counts["rows"] == 5
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rejects} == {"personas", "near_dup", "decontaminate", "self_consistency"}
    assert next(r for r in rejects if r["stage"] == "personas")["field"] == "persona"
    rlvr = load_source(str(run / "rlvr")).dataset
    assert len(rlvr) == 5 and set(rlvr["dataset"]) == {"math"}
    sft = load_source(str(run / "sft")).dataset
    for row, conversation in zip(rlvr, sft["messages"], strict=True):
        assert conversation[0] == row["messages"][0]
        assert verify("math", conversation[-1]["content"], row["ground_truth"]) == 1.0
    manifest = json.loads((run / "rlvr" / "manifest.json").read_text())
    assert manifest["generator"]["base_url"] == server.base_url and "{persona}" in manifest["template"]
    assert manifest["seed"] == 3 and manifest["counts"] == counts and len(manifest["files"]) == 2
    assert {r["persona"] for r in pq.read_table(run / "prompts" / "data").to_pylist()} == {
        "a baker",
        "a sailor",
        "a nurse",
    }


def test_failed_run_resumes_without_resending_answered_calls(tmp_path, server):
    config = _config(tmp_path, server)
    reference = tmp_path / "reference"
    run_synthesis(config, reference)
    total = len(server.served)
    server.served.clear()
    server.fail_after = 9  # prompt shards of 4 requests: two finish, the third dies halfway
    with pytest.raises(ApiError):
        run_synthesis(config, tmp_path / "resumed")
    first = len(server.served)
    # What was set aside before the failure (the empty persona) is kept; the spool is gone.
    rejects = [json.loads(line) for line in (tmp_path / "resumed" / "rejects.jsonl").read_text().splitlines()]
    assert {(r["row"], r["field"], r["reason"]) for r in rejects if r["stage"] == "personas"} == {
        (7, "persona", "bad_persona")}
    assert not list((tmp_path / "resumed").glob(".synthesis-*"))
    server.fail_after = None
    run_synthesis(config, tmp_path / "resumed")
    assert first == 9 and len(server.served) == total
    for name in ("prompts", "rlvr", "sft"):
        hashes = [
            json.loads((run / name / "manifest.json").read_text())["content_sha256"]
            for run in (reference, tmp_path / "resumed")
        ]
        assert hashes[0] == hashes[1]


def test_a_refused_request_is_a_reject_and_the_run_goes_on(tmp_path, server):
    server.too_long = "a sailor"  # its two prompt requests: refused as too long for the context
    run_synthesis(_config(tmp_path, server), tmp_path / "run")
    counts = json.loads((tmp_path / "run" / "summary.json").read_text())["counts"]
    assert counts["prompt_generation:request_rejected"] == 2 and counts["rows"] == 5 - 2  # the sailor gave 2
    rejects = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()]
    refused = [r for r in rejects if r["reason"] == "request_rejected"]
    assert len(refused) == 2 and all("HTTP 400" in r["detail"] for r in refused)


def test_near_duplicates_keep_the_first_and_ignore_case_and_punctuation():
    texts = [
        "The quick brown fox jumps over the lazy dog near the river bank today.",
        "the QUICK brown fox, jumps over the lazy dog near the river bank today!",
        "A completely different sentence about baking bread in a stone oven.",
        "The quick brown fox jumps over the lazy dog near the river bank yesterday.",
        "short",
        "Short.",
    ]
    found = {index: (kept, similarity) for index, kept, similarity in near_duplicates(texts, NearDupConfig(ngram=3, threshold=0.7))}
    assert found[1] == (0, 1.0) and found[5] == (4, 1.0) and 2 not in found
    assert found[3][0] == 0 and 0.7 <= found[3][1] < 1.0
    assert 3 not in {index for index, _, _ in near_duplicates(texts, NearDupConfig(ngram=3, threshold=0.95))}
    with pytest.raises(ValueError, match="multiple of bands"):
        NearDupConfig(num_perm=10, bands=4)


def test_consensus_takes_the_majority_answer():
    texts = [
        "so \\boxed{\\frac{1}{2}}",
        "Final Answer: The final answer is 0.5. I hope it is correct.",
        "\\boxed{3}",
        "no answer here",
    ]
    result = consensus(texts, "math", 0.5)
    assert result == Consensus("\\frac{1}{2}", 0, 0.5)
    assert consensus(texts, "math", 0.6)[0] == "no_consensus"
    assert consensus(["I think 1,200 apples.", "That makes 1200.", "12"], "gsm8k", 0.6) == Consensus(
        "1200", 0, 2 / 3
    )
    assert consensus(["none", "nothing"], "gsm8k", 0.5)[0] == "no_final_answer"
    with pytest.raises(StageError, match="verifier"):
        consensus(["x"], "ifeval", 0.5)


def test_personas_take_and_rejects(tmp_path):
    path = tmp_path / "personas.jsonl"
    path.write_text(
        '{"persona": "a"}\n{"persona": "b"}\n{"persona": "a"}\n{"name": "c"}\nnot json\n{"persona": "d"}\n'
    )
    rejects: list[dict] = []
    personas = list(load_personas({"path": str(path)}, 0, rejects.append))
    assert [p.text for p in personas] == ["a", "b", "d"] and personas[0].id == "persona-1"
    assert sorted((r["row"], r["reason"]) for r in rejects) == [
        (3, "duplicate"),
        (4, "missing_field"),
        (5, "unparsable_line"),
    ]
    # The rows read, set aside for their content, come in row order (lines that did not parse come first).
    assert [r["row"] for r in rejects if r["reason"] != "unparsable_line"] == [3, 4]
    assert all(r["file"] == str(path) for r in rejects)
    assert len(load_personas({"path": str(path), "take": 2}, 0, rejects.append)) == 2
    assert len(load_personas({"path": str(path), "take": 10}, 0, rejects.append)) == 3
    with pytest.raises(StageError, match="unknown keys"):
        load_personas({"path": str(path), "colour": 1}, 0, rejects.append)


def _in_memory_near_duplicates(texts: list[str], cfg: NearDupConfig) -> dict[int, tuple[int, float]]:
    """The plain LSH: every text's shingle set in memory, buckets keyed by the raw band bytes."""
    from tulu_cli.synthesis.near_dup import _permutations, jaccard, shingles, signature

    a, b = _permutations(cfg.num_perm)
    width = cfg.num_perm // cfg.bands
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(cfg.bands)]
    sets = [shingles(text, cfg.ngram) for text in texts]
    found = {}
    for index, shingle_set in enumerate(sets):
        sig = signature(shingle_set, a, b)
        keys = [sig[band * width:(band + 1) * width].tobytes() for band in range(cfg.bands)]
        candidates = {kept for band, key in enumerate(keys) for kept in buckets[band].get(key, ())}
        best = max(((jaccard(shingle_set, sets[kept]), -kept) for kept in candidates), default=None)
        if best is not None and best[0] >= cfg.threshold:
            found[index] = (-best[1], best[0])
            continue
        for band, key in enumerate(keys):
            buckets[band].setdefault(key, []).append(index)
    return found


def test_near_duplicates_match_the_in_memory_lsh_and_brute_force_jaccard():
    import random

    from tulu_cli.synthesis.near_dup import jaccard, shingles

    rng = random.Random(5)
    vocabulary = [f"w{i}" for i in range(400)]
    texts = []
    for _ in range(1200):
        if texts and rng.random() < 0.3:  # an edited copy of an earlier text: one to three words changed
            words = rng.choice(texts).split()
            for _ in range(rng.randint(1, 3)):
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choices(vocabulary, k=rng.randint(12, 30))))
    texts += ["", "  ", texts[7]]
    cfg = NearDupConfig(ngram=3, threshold=0.6, num_perm=64, bands=16)
    found = {index: (kept, similarity) for index, kept, similarity in near_duplicates(texts, cfg)}
    assert found == _in_memory_near_duplicates(texts, cfg)
    assert len(found) > 100 and found[len(texts) - 1] == (7, 1.0) and found[len(texts) - 2][1] == 1.0
    for index, (kept, similarity) in found.items():  # every removal is right by the exact Jaccard
        assert kept < index and kept not in found
        assert similarity == jaccard(shingles(texts[index], 3), shingles(texts[kept], 3)) >= 0.6


def test_streamed_fingerprint_is_the_fingerprint_of_the_whole_document():
    from tulu_cli.preferences.store import Streamed, fingerprint, streamed_fingerprint

    items = [{"b": [1, 2.5, None], "a": "caf\u00e9 \U0001f600"}, "x", 3]
    pairs = {"k1": {"z": 1, "y": [True]}, "k\u00e9": "v", "k2": []}
    document = {"seed": 3, "nested": {"b": 1, "a": {"d": None}}, "text": 'quote " and \\'}
    whole = fingerprint({**document, "items": items, "pairs": pairs})
    assert streamed_fingerprint({**document, "items": Streamed(iter(items)),
                                 "pairs": Streamed(iter(sorted(pairs.items())), mapping=True)}) == whole
    assert streamed_fingerprint({**document, "items": Streamed(iter(items[:2])),
                                 "pairs": Streamed(iter(sorted(pairs.items())), mapping=True)}) != whole
    assert streamed_fingerprint({"empty": Streamed(iter([]))}) == fingerprint({"empty": []})


def test_the_work_store_keeps_the_name_the_whole_request_list_gives_it(tmp_path, server):
    # Requests are hashed a piece at a time; the store must still be found under the fingerprint of the
    # whole list, the name a run with every request in memory gave it.
    from tulu_cli.generation import SamplingConfig
    from tulu_cli.preferences.store import fingerprint
    from tulu_cli.synthesis.generate import PromptTemplate

    config = _config(tmp_path, server)
    del config["responses"]
    run_synthesis(config, tmp_path / "run")
    personas = load_personas(config["personas"], config["seed"], lambda reject: None)
    template = PromptTemplate.from_config(config["prompt_generation"])
    requests = [r.__dict__ for persona in personas for r in template.requests(persona, config["seed"])]
    sampling = SamplingConfig(max_new_tokens=64, temperature=1.0, top_p=1.0)
    key = fingerprint({"requests": requests, "model": config["model"], "sampling": sampling.__dict__,
                       "shard_size": 2, "generation": {}, "seed": 3})
    assert [path.name for path in (tmp_path / "run" / "work" / "prompts").iterdir()] == [key]
    assert not list((tmp_path / "run").glob(".synthesis-*")), "the run's intermediate files are removed"


def test_a_run_where_no_row_survives_still_writes_its_rejects(tmp_path, server):
    config = _config(tmp_path, server)
    config["prompt_generation"]["min_words"] = 100  # every generated prompt is too short
    with pytest.raises(StageError, match="no row survived"):
        run_synthesis(config, tmp_path / "run")
    rejects = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()]
    assert sum(r["reason"] == "too_short" for r in rejects) == 12
    assert not list((tmp_path / "run").glob(".synthesis-*"))
