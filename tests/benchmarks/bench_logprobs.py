"""Peak host memory of one packed micro-batch's log-probs with a 128k vocabulary (Llama 3's 128,256),
forward and backward: the full float32 log-softmax of every position's logits (the old way), the
chunked `token_logprobs` over every position's logits, and `labelled_logprobs`, which runs the output
layer only at the positions that predict a label. The packed row holds rows of 256 tokens whose
first half is prompt (no label).

Run with `make bench` or `pytest tests/benchmarks/bench_logprobs.py -m bench -s`. Size (env vars):
- TULU_BENCH_LOGPROB_TOKENS  tokens in the packed row (default 2048; 8192 needs ~20 GB for the old way)
- TULU_BENCH_LOGPROB_VOCAB   vocabulary size (default 128256)

Each variant runs in its own subprocess: a one-layer bf16 Llama (hidden size 64, so the logits
dominate), one forward pass, the summed log-probs of every labelled token, backward. The figure is
the process's peak RSS (getrusage ru_maxrss) minus its RSS just before the forward pass, so model
and interpreter memory cancel out.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOKENS = int(os.environ.get("TULU_BENCH_LOGPROB_TOKENS", "2048"))
VOCAB = int(os.environ.get("TULU_BENCH_LOGPROB_VOCAB", "128256"))
ROOT = Path(__file__).resolve().parents[2]
ROW = 256


def current_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(variant: str, tokens: int, vocab: int) -> dict:
    """Runs in the child process: one forward + backward of `variant`; returns memory and time."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.test_logprobs import full_logsoftmax_logprobs
    from tulu_cli.train.logprobs import labelled_logprobs, token_logprobs

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=tokens)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    ids = torch.randint(0, vocab, (1, tokens))
    labels = ids.clone()
    for start in range(0, tokens, ROW):
        labels[0, start:start + ROW // 2] = -100  # each row's prompt
    before = current_rss_bytes()
    started = time.perf_counter()
    if variant == "labelled_only":
        logprobs, _ = labelled_logprobs(model, {"input_ids": ids, "labels": labels})
    else:
        compute = {"full_float32": full_logsoftmax_logprobs, "chunked": token_logprobs}[variant]
        logprobs, _ = compute(model(input_ids=ids, use_cache=False).logits, labels)
    logprobs.sum().backward()
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": variant, "peak_growth_bytes": peak - before, "seconds": seconds,
            "logits_bytes": tokens * vocab * 2, "sum": float(logprobs.sum())}


def run_child(variant: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_logprobs", variant, str(TOKENS), str(VOCAB)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.bench
def test_chunked_logprobs_peak_memory_against_full_float32():
    full, chunked, labelled = run_child("full_float32"), run_child("chunked"), run_child("labelled_only")
    gib = 1 << 30
    print(f"\nlog-probs of one packed row, {TOKENS} tokens x {VOCAB} vocabulary (half of them prompt), bf16 "
          f"logits of every position {full['logits_bytes'] / gib:.2f} GiB; peak RSS growth over forward + backward:")
    for row in (full, chunked, labelled):
        print(f"  {row['variant']:>13}: {row['peak_growth_bytes'] / gib:.2f} GiB, {row['seconds']:.1f} s")
    print(f"  ratio full / chunked: memory {full['peak_growth_bytes'] / chunked['peak_growth_bytes']:.2f}x, "
          f"time {full['seconds'] / chunked['seconds']:.2f}x")
    print(f"  ratio chunked / labelled_only: memory "
          f"{chunked['peak_growth_bytes'] / labelled['peak_growth_bytes']:.2f}x, "
          f"time {chunked['seconds'] / labelled['seconds']:.2f}x")
    for row in (chunked, labelled):
        assert abs(full["sum"] - row["sum"]) <= 1e-4 * abs(full["sum"])
    # The old way holds a float32 copy of the logits (twice their bf16 size) on top of them.
    assert chunked["peak_growth_bytes"] < full["peak_growth_bytes"] - full["logits_bytes"]
    # Only the labelled half of the positions gets logits (and a logits gradient).
    assert labelled["peak_growth_bytes"] < chunked["peak_growth_bytes"] - full["logits_bytes"] / 2


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
