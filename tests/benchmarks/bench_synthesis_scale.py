"""Synthesis benchmark: peak memory of a real `tulu curate conf=persona_math` run over N personas against one
over N/10, side by side in one run. The generator is a fast HTTP server on 127.0.0.1 that writes a different
~40-word problem for every request and a ~2 KB answer to every problem; the run removes near duplicates,
decontaminates against the bundled GSM test questions (instead of the tulu3_dev suite) and keeps one
response a prompt.
Reported: the peak resident set (VmHWM) and the peak private memory (RssAnon) of the stage process and
any process it started, polled from /proc.

Run with `make bench` or `pytest tests/benchmarks/bench_synthesis_scale.py -m bench -s`. Sizes (env vars):

- TULU_BENCH_SYNTH_PERSONAS   personas of the large run (default 20,000; one prompt each)
- TULU_BENCH_SYNTH_BASELINE   a checkout of an earlier revision: its stage runs the large set too, beside
                              this one's

Goal: the large run's peak private memory stays within 100 MB of the small one's. What may grow is a few
numbers a row (persona digests, near-duplicate band keys, a keep flag); every prompt, reply and response is
read back one batch or shard at a time.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tests.benchmarks.bench_curate_scale import REPO, peak_memory
from tests.benchmarks.bench_preferences_scale import CannedServer

PERSONAS = int(os.environ.get("TULU_BENCH_SYNTH_PERSONAS", "20000"))
BASELINE = os.environ.get("TULU_BENCH_SYNTH_BASELINE")
MAX_ANON_GROWTH_MB = 100
WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "vo", "ze") for b in range(250)]
ANSWER = " ".join(["step"] * 400) + " The answer is 7."


def generated_text(body: dict) -> str:
    """A seeded ~40-word problem for a prompt request (one that names a persona), a ~2 KB answer otherwise."""
    if "persona" in body["messages"][-1]["content"]:
        return "Problem: " + " ".join(random.Random(body.get("seed")).choices(WORDS, k=40)) + "?"
    return ANSWER


def synthesis_peak_memory(repo: Path, folder: Path, personas: int, server: CannedServer) -> tuple[dict, dict]:
    """The peak memory of persona synthesis over `personas` personas, and its summary."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "personas.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for i in range(personas):
            handle.write(json.dumps({"id": f"p{i}", "persona": f"person number {i}, who keeps {i % 97} goats"}) + "\n")
    env = {**os.environ, "HF_DATASETS_CACHE": str(folder / "cache")}
    evals = REPO / "tulu_cli" / "assets" / "tiny" / "gsm_test.jsonl"
    memory, _ = peak_memory(repo, ["curate", "conf=persona_math", f"model.base_url={server.base_url}",
                                   "model.api_key_env=null", "model.max_retries=0", "model.concurrency=8",
                                   f"output_dir={folder / 'run'}", f"personas.path={source}",
                                   "personas.config=null", "personas.take=null", "decontaminate.eval_sets=null",
                                   f"decontaminate.evals=[{evals}]", "decontaminate.workers=1",
                                   "responses.samples=1", "responses.self_consistency=null", "shard_size=500",
                                   "rows_per_file=10000"], folder, env)
    return memory, json.loads((folder / "run" / "summary.json").read_text())


@pytest.mark.bench
def test_synthesis_memory_does_not_grow_with_personas(tmp_path):
    server = CannedServer(generated_text)
    try:
        small_memory, small = synthesis_peak_memory(REPO, tmp_path / "small", PERSONAS // 10, server)
        large_memory, large = synthesis_peak_memory(REPO, tmp_path / "large", PERSONAS, server)
        line = (f"\nsynthesis: {PERSONAS // 10} personas {small_memory}, {PERSONAS} personas {large_memory} "
                f"(rows {small['counts']['rows']} / {large['counts']['rows']})")
        if BASELINE:
            baseline_memory, baseline = synthesis_peak_memory(Path(BASELINE), tmp_path / "baseline", PERSONAS, server)
            line += f"; baseline checkout, {PERSONAS} personas: {baseline_memory}"
            assert baseline["counts"] == large["counts"]
        print(line)
    finally:
        server.close()
    assert large["counts"]["generated"] == PERSONAS and large["counts"]["rows"] > 0.9 * PERSONAS
    assert large["datasets"]["sft"]["rows"] == large["counts"]["rows"]
    assert large_memory["peak_anon_mb"] - small_memory["peak_anon_mb"] < MAX_ANON_GROWTH_MB, (small_memory, large_memory)
