"""Data-scale benchmark: host memory of the real SFT stage does not grow with the number of rows.

Run with `make bench` or `pytest tests/benchmarks/bench_data_scale.py -m bench -s`. Sizes (env vars):
- TULU_BENCH_DATA_ROWS        rows of the large synthetic SFT set (default 500000)
- TULU_BENCH_DATA_SMALL_ROWS  rows of the small set it is compared with (default 5000)
- TULU_BENCH_DATA_RATE_ROWS   rows tokenised with 1 and with 2 processes, side by side (default 20000)
- TULU_BENCH_DATA_NUM_PROC    tokenising processes of the small and the large run (default 2)
- TULU_BENCH_DATA_BASELINE    a checkout of an earlier revision (e.g. a `git worktree` of it): the
                              `baseline` test runs the same stage with its code and with this one on
                              TULU_BENCH_DATA_SMALL_ROWS and TULU_BENCH_DATA_BASELINE_ROWS (default 20000) rows

Each set is generated here as Parquet (nothing is stored in the repository): two-turn conversations
of about 500 tokens of the tiny tokenizer, every row different. Each measurement is a real
`tulu sft conf=tiny` run (2 optimizer steps of 4 rows, max length 512) with its own tokenised-data
cache. Reported: the peak RSS (VmHWM) of the stage process (and of any process it started, e.g. the
tokenising workers) for the small and the large set (tokenised by the same number of processes), for
a second run on the large set (warm cache) the time to the first optimizer step and proof that it
did not tokenise, and tokenisation rows/s with 1 and 2 processes on the same rows.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TULU

ROWS = int(os.environ.get("TULU_BENCH_DATA_ROWS", "500000"))
SMALL_ROWS = int(os.environ.get("TULU_BENCH_DATA_SMALL_ROWS", "5000"))
RATE_ROWS = int(os.environ.get("TULU_BENCH_DATA_RATE_ROWS", "20000"))
NUM_PROC = int(os.environ.get("TULU_BENCH_DATA_NUM_PROC", "2"))
BASELINE = os.environ.get("TULU_BENCH_DATA_BASELINE")
BASELINE_ROWS = int(os.environ.get("TULU_BENCH_DATA_BASELINE_ROWS", "20000"))
TOKENS_PER_ROW = 500
MAX_LENGTH = 512
POOL = 512
GENERATE_BATCH = 10_000
WORDS = ("seven plus three makes ten and the answer is written in full sentences with care while "
         "each step of the working names the numbers being added or multiplied before the final "
         "result appears at the end").split()


def conversation_texts(words: int) -> tuple[list[str], list[str]]:
    """Pools of user texts of `words` / 4 words and assistant texts of `words` words (seeded)."""
    import random

    rng = random.Random(0)
    users = [" ".join(rng.choices(WORDS, k=words // 4)) for _ in range(POOL)]
    answers = [" ".join(rng.choices(WORDS, k=words)) for _ in range(POOL)]
    return users, answers


def words_for_tokens(tokens: int) -> int:
    """Assistant words that make a rendered row about `tokens` tokens long with the tiny tokenizer."""
    from omegaconf import OmegaConf

    from tulu_cli.config import assets_dir, conf_dir
    from tulu_cli.data.chat import tokenize_conversation
    from tulu_cli.modeling import load_tokenizer

    tokenizer = load_tokenizer(OmegaConf.load(conf_dir() / "model" / "tiny.yaml"), assets_dir())
    users, answers = conversation_texts(100)
    sample = [tokenize_conversation(tokenizer, [{"role": "user", "content": u}, {"role": "assistant", "content": a}],
                                    10**6).input_ids for u, a in zip(users[:32], answers[:32], strict=True)]
    per_100_words = sum(len(ids) for ids in sample) / len(sample)
    return max(1, int(100 * tokens / per_100_words))


def write_sft_parquet(path: Path, rows: int, words: int) -> None:
    """`rows` distinct two-turn conversations as Parquet, written a batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    users, answers = conversation_texts(words)
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("id", pa.string()), ("messages", pa.list_(message))])
    with pq.ParquetWriter(str(path), schema) as writer:
        for start in range(0, rows, GENERATE_BATCH):
            numbers = range(start, min(start + GENERATE_BATCH, rows))
            messages = [[{"role": "user", "content": f"question {n}: {users[n % POOL]}"},
                         {"role": "assistant", "content": f"{n} {answers[(n * 7 + n // POOL) % POOL]}"}]
                        for n in numbers]
            table = pa.table({"id": [str(n) for n in numbers], "messages": messages}, schema=schema)
            writer.write_table(table)


def descendants(pid: int) -> list[int]:
    """Processes below `pid` (from each process's parent id in /proc/PID/stat)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found += children
        pending += children
    return found


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(VmHWM: peak resident set, RssAnon: private memory now) of process `pid`, in MiB.

    VmHWM also counts the pages of memory-mapped files that were read (page cache the kernel can
    drop), RssAnon only the process's own memory: what would grow if rows were held as Python objects.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(re.findall(r"^(VmHWM|RssAnon):\s+(\d+) kB", status, re.MULTILINE))
    if len(fields) < 2:
        return None
    return int(fields["VmHWM"]) / 1024, int(fields["RssAnon"]) / 1024


def run_stage(name: str, source: Path, work: Path, num_proc: int = 1, cache: Path | None = None,
              root: Path = ROOT) -> dict:
    """A real `tulu sft` run on `source` with the code of checkout `root`; the stage process's peak
    RSS (polled from /proc), the time to its first optimizer step, and its data report."""
    run_dir = work / name
    args = ["sft", "conf=tiny", f"data.train={source}", f"data.num_proc={num_proc}", f"output_dir={run_dir}",
            f"train.max_seq_length={MAX_LENGTH}", "train.max_steps=2", "train.effective_batch_size=4",
            "train.per_device_batch_size=2", "train.log_every=1", "checkpoint.every_steps=1000"]
    if root == ROOT:
        args.append(f"data.cache_dir={cache or work / f'cache_{name}'}")
    env = {**os.environ, "PYTHONPATH": str(root), "HF_DATASETS_CACHE": str(work / "hf_datasets")}
    started = time.time()
    process = subprocess.Popen([*TULU, *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    peaks: dict[int, tuple[str, float, float]] = {}
    first_step: list[float] = []

    def watch() -> None:
        metrics = run_dir / "metrics.jsonl"
        while process.poll() is None:
            for pid in descendants(process.pid):
                memory = memory_mb(pid)
                if memory is not None:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    _, _, anon = peaks.get(pid, ("", 0.0, 0.0))
                    peaks[pid] = (command, memory[0], max(anon, memory[1]))
            if not first_step and metrics.exists() and metrics.stat().st_size:
                first_step.append(time.time() - started)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output, _ = process.communicate()
    watcher.join()
    if process.returncode != 0:
        raise AssertionError(f"tulu {' '.join(args)} exited {process.returncode}\n{output[-4000:]}")
    stage = [(hwm, anon) for command, hwm, anon in peaks.values() if "tulu_cli.train.sft" in command]
    report = ast.literal_eval(re.search(r"^data: (\{.*\})$", output, re.MULTILINE).group(1))
    result = {"stage_peak_rss_mb": round(max(hwm for hwm, _ in stage), 1),
              "stage_peak_anon_mb": round(max(anon for _, anon in stage), 1),
              "all_processes_peak_rss_mb": round(max(hwm for _, hwm, _ in peaks.values()), 1),
              "first_step_s": round(first_step[0], 1) if first_step else None,
              "wall_s": round(time.time() - started, 1), "tokenised": "tokenising" in output, "report": report}
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


@pytest.mark.bench
@pytest.mark.timeout(4 * 3600)
def test_stage_memory_does_not_grow_with_rows(tmp_path):
    words = words_for_tokens(TOKENS_PER_ROW)
    sources = {}
    for rows in sorted({SMALL_ROWS, RATE_ROWS, ROWS}):
        started = time.time()
        sources[rows] = tmp_path / f"sft_{rows}.parquet"
        write_sft_parquet(sources[rows], rows, words)
        print(f"generated {rows} rows in {time.time() - started:.1f}s ({sources[rows].stat().st_size / 2**20:.0f} MiB)",
              flush=True)

    # The memory runs first; the small and the large set tokenise with the same number of processes.
    small = run_stage("small", sources[SMALL_ROWS], tmp_path, num_proc=NUM_PROC)
    large = run_stage("large", sources[ROWS], tmp_path, num_proc=NUM_PROC)
    warm = run_stage("large_warm", sources[ROWS], tmp_path, num_proc=NUM_PROC, cache=tmp_path / "cache_large")
    rate_one = run_stage("rate_1", sources[RATE_ROWS], tmp_path, num_proc=1)
    rate_two = run_stage("rate_2", sources[RATE_ROWS], tmp_path, num_proc=2)

    def rows_per_s(result: dict) -> float:
        return round(result["report"]["rows_read"] / result["report"]["encode_s"], 1)

    summary = {
        "rows": {"small": SMALL_ROWS, "large": ROWS, "rate": RATE_ROWS},
        "stage_peak_rss_mb": {"small": small["stage_peak_rss_mb"], "large": large["stage_peak_rss_mb"],
                              "large_warm": warm["stage_peak_rss_mb"]},
        "stage_peak_anon_mb": {"small": small["stage_peak_anon_mb"], "large": large["stage_peak_anon_mb"],
                               "large_warm": warm["stage_peak_anon_mb"]},
        "any_process_peak_rss_mb": {"small": small["all_processes_peak_rss_mb"],
                                    "large": large["all_processes_peak_rss_mb"]},
        "rss_growth_mb": round(large["stage_peak_rss_mb"] - small["stage_peak_rss_mb"], 1),
        "anon_growth_mb": round(large["stage_peak_anon_mb"] - small["stage_peak_anon_mb"], 1),
        "tokenise_rows_per_s": {"num_proc_1": rows_per_s(rate_one), "num_proc_2": rows_per_s(rate_two),
                                f"large_num_proc_{NUM_PROC}": rows_per_s(large)},
        "first_step_s": {"large_cold": large["first_step_s"], "large_warm": warm["first_step_s"]},
        "warm_cache": warm["report"]["cache"], "warm_tokenised": warm["tokenised"],
        "tokens_per_row_target": TOKENS_PER_ROW, "words_per_answer": words,
    }
    print(json.dumps(summary, indent=2), flush=True)
    assert large["report"]["rows_kept"] == ROWS and large["report"]["cache"] == "miss"
    assert warm["report"]["cache"] == "hit" and not warm["tokenised"]
    # The goal: the stage's own memory grows by less than 1 GB (VmHWM is reported beside it; it also
    # counts cached file pages the kernel can drop).
    assert summary["anon_growth_mb"] < 1024, summary


@pytest.mark.bench
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not BASELINE, reason="TULU_BENCH_DATA_BASELINE names no earlier checkout")
def test_peak_memory_against_a_baseline_checkout(tmp_path):
    words = words_for_tokens(TOKENS_PER_ROW)
    results = {}
    for rows in (SMALL_ROWS, BASELINE_ROWS):
        source = tmp_path / f"sft_{rows}.parquet"
        write_sft_parquet(source, rows, words)
        for label, root in (("baseline", Path(BASELINE).resolve()), ("this", ROOT)):
            result = run_stage(f"{label}_{rows}", source, tmp_path, root=root)
            results[f"{label}_{rows}"] = {"rss": result["stage_peak_rss_mb"], "anon": result["stage_peak_anon_mb"]}
    summary = {"stage_peak_rss_mb": results,
               "rss_growth_mb": {label: round(results[f"{label}_{BASELINE_ROWS}"]["rss"]
                                              - results[f"{label}_{SMALL_ROWS}"]["rss"], 1)
                                 for label in ("baseline", "this")}}
    print(json.dumps(summary, indent=2), flush=True)
    assert summary["rss_growth_mb"]["this"] < summary["rss_growth_mb"]["baseline"], summary


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-m", "bench", "-s", "-q", "-p", "no:cacheprovider"]))
