"""Preference-data benchmark: peak memory of a real `tulu curate conf=prefs_tiny` run over N prompts against
one over N/10, side by side in one run, each completion written by one of two pool endpoints (a fast
HTTP server on 127.0.0.1 answering every request with ~2 KB of text) and judged by the verifiers.
Reported: the peak resident set (VmHWM) and the peak private memory (RssAnon) of the stage process and
any process it started (verifier workers), polled from /proc.

Run with `make bench` or `pytest tests/benchmarks/bench_preferences_scale.py -m bench -s`. Sizes (env vars):

- TULU_BENCH_PREFS_PROMPTS    prompts of the large run (default 20,000; two completions each)
- TULU_BENCH_PREFS_BASELINE   a checkout of an earlier revision: its stage runs the large set too, beside
                              this one's

Goal: the large run's peak private memory stays within 150 MB of the small one's. What may grow is the
prompt ids and the mix order (tens of bytes a prompt); every completion, judgement and pair is read
back and assembled one shard of prompts at a time.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.benchmarks.bench_curate_scale import REPO, peak_memory

PROMPTS = int(os.environ.get("TULU_BENCH_PREFS_PROMPTS", "20000"))
BASELINE = os.environ.get("TULU_BENCH_PREFS_BASELINE")
MAX_ANON_GROWTH_MB = 150
FILLER = " ".join(["step"] * 400)


def worked_answer(body: dict) -> str:
    """'<~2 KB of working> The answer is K.', K from the request's seed."""
    return f"{FILLER} The answer is {int(body.get('seed') or 0) % 3}."


class CannedServer:
    """`/v1/chat/completions` on 127.0.0.1, answering each request body with `reply(body)`."""

    def __init__(self, reply: Callable[[dict], str] = worked_answer):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                text = reply(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text},
                                                   "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def preference_peak_memory(repo: Path, folder: Path, prompts: int, model: Path, server: CannedServer) -> tuple[dict, dict]:
    """The peak memory of the preference stage over `prompts` GSM8K-style prompts, and its summary."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "prompts.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for i in range(prompts):
            handle.write(json.dumps({"id": f"q{i}", "dataset": "gsm8k", "ground_truth": str(i % 3),
                                     "messages": [{"role": "user", "content": f"Question {i}: what is {i} mod 3?"}]})
                         + "\n")
    member = "{{base_url:'{url}',model:{name},max_retries:0,concurrency:8}}"
    pool = ",".join(f"{name}:" + member.format(url=server.base_url, name=name) for name in ("a", "b"))
    env = {**os.environ, "HF_DATASETS_CACHE": str(folder / "cache")}
    memory, _ = peak_memory(repo, ["curate", "conf=prefs_tiny", f"model.path={model}", f"output_dir={folder / 'run'}",
                                   f"prompts.sources.tiny_rlvr.path={source}", f"prompts.sources.tiny_rlvr.take={prompts}",
                                   f"+pool={{{pool}}}", "completions.per_prompt=2", "completions.on_policy=0",
                                   "shard_size=500", "rows_per_file=10000"], folder, env)
    return memory, json.loads((folder / "run" / "summary.json").read_text())


@pytest.mark.bench
def test_preference_stage_memory_does_not_grow_with_prompts(tmp_path, tiny_dir):
    server = CannedServer()
    try:
        small_memory, small = preference_peak_memory(REPO, tmp_path / "small", PROMPTS // 10, tiny_dir, server)
        large_memory, large = preference_peak_memory(REPO, tmp_path / "large", PROMPTS, tiny_dir, server)
        line = (f"\npreferences: {PROMPTS // 10} prompts {small_memory}, {PROMPTS} prompts {large_memory} "
                f"(pairs {small['datasets']['pairs']['pairs']} / {large['datasets']['pairs']['pairs']})")
        if BASELINE:
            baseline_memory, baseline = preference_peak_memory(Path(BASELINE), tmp_path / "baseline", PROMPTS,
                                                               tiny_dir, server)
            line += f"; baseline checkout, {PROMPTS} prompts: {baseline_memory}"
            assert baseline["datasets"]["pairs"]["pairs"] == large["datasets"]["pairs"]["pairs"]
        print(line)
    finally:
        server.close()
    assert large["completions"] == 2 * PROMPTS and large["unrated"] == 0
    assert large["datasets"]["pairs"]["pairs"] > 9 * small["datasets"]["pairs"]["pairs"] > 0
    assert large_memory["peak_anon_mb"] - small_memory["peak_anon_mb"] < MAX_ANON_GROWTH_MB, (small_memory, large_memory)
