"""Curate benchmark: peak memory of a real `tulu curate` process on a generated mix of N rows against one
of N/10 rows, side by side in one run: VmHWM (peak resident set, which also counts pages of the
memory-mapped Arrow files that were read: page cache the kernel can drop) and the peak of RssAnon (the
process's own memory, what grows when rows are held as Python objects).

Run with `make bench` or `pytest tests/benchmarks/bench_curate_scale.py -m bench -s`. Size (env var):

- TULU_BENCH_CURATE_ROWS   rows of the large mix (default 200,000; ~600 bytes each); the small one has a tenth
- TULU_BENCH_CURATE_ROWS_PER_FILE   rows per output shard of both runs (default 10,000)

The mix has two sources: Tulu messages (1% repeated rows) and ShareGPT rows of which half repeat the
first source, taken by fraction and by row count, shuffled. Goal: the large mix's peak private memory
stays within 200 MB of the small one's (what grows is the de-duplication keys and the mix order, about
100 bytes a row at the peak).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.benchmarks.bench_data_scale import descendants, memory_mb

ROWS = int(os.environ.get("TULU_BENCH_CURATE_ROWS", "200000"))
# Rows per output shard: the write step holds one shard's rows (taken, then Parquet-encoded), so the two
# runs compare at the same shard size; at the stage default (100,000) a 100k-row shard costs ~300 MB.
ROWS_PER_FILE = int(os.environ.get("TULU_BENCH_CURATE_ROWS_PER_FILE", "10000"))
MAX_ANON_GROWTH_MB = 200
REPO = Path(__file__).resolve().parents[2]


def write_sources(folder: Path, rows: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    tulu, sharegpt = folder / "tulu.jsonl", folder / "sharegpt.jsonl"
    with tulu.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            n = i if i % 100 else i // 2  # 1% repeat an earlier row
            handle.write(json.dumps({"id": f"t{i}", "messages": [
                {"role": "user", "content": f"question number {n} " * 10},
                {"role": "assistant", "content": f"answer {n} " * 30}]}) + "\n")
    with sharegpt.open("w", encoding="utf-8") as handle:
        for i in range(rows // 2):
            n = 2 * i if i % 2 else rows + i  # half repeat a row of the first source
            handle.write(json.dumps({"conversations": [{"from": "human", "value": f"question number {n} " * 10},
                                                       {"from": "gpt", "value": f"answer {n} " * 30}]}) + "\n")
    return tulu, sharegpt


def curate_peak_memory(repo: Path, folder: Path, rows: int, rows_per_file: int = ROWS_PER_FILE) -> tuple[dict, dict]:
    """({peak_rss_mb, peak_anon_mb} of the `tulu curate` stage process, polled from /proc), the mix counts."""
    tulu, sharegpt = write_sources(folder / "sources", rows)
    mix = f"{{kind:sft,seed:3,sources:{{tulu:{{path:'{tulu}',fraction:0.9}},share:{{path:'{sharegpt}',rows:{rows // 5}}}}}}}"
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_DATASETS_CACHE": str(folder / "cache")}
    process = subprocess.Popen([sys.executable, "-m", "tulu_cli.cli", "curate", f"output_dir={folder / 'run'}",
                                f"rows_per_file={rows_per_file}", "~datasets", f"+datasets.big={mix}"], cwd=folder, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, tuple[float, float]] = {}

    def watch() -> None:
        while process.poll() is None:
            for pid in [process.pid, *descendants(process.pid)]:
                memory = memory_mb(pid)
                if memory is not None:
                    hwm, anon = peaks.get(pid, (0.0, 0.0))
                    peaks[pid] = (max(hwm, memory[0]), max(anon, memory[1]))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output, _ = process.communicate()
    watcher.join()
    assert process.returncode == 0, output[-4000:]
    counts = json.loads((folder / "run" / "big" / "manifest.json").read_text())["counts"]
    return {"peak_rss_mb": round(max(hwm for hwm, _ in peaks.values())),
            "peak_anon_mb": round(max(anon for _, anon in peaks.values()))}, counts


@pytest.mark.bench
def test_curate_peak_rss_does_not_grow_with_rows(tmp_path):
    small_memory, small = curate_peak_memory(REPO, tmp_path / "small", ROWS // 10)
    large_memory, large = curate_peak_memory(REPO, tmp_path / "large", ROWS)
    print(f"\ncurate: {ROWS // 10} rows {small_memory}, {ROWS} rows {large_memory} "
          f"(rows out {small['rows_out']} / {large['rows_out']})")
    assert large["rows_out"] > 9 * small["rows_out"]
    assert large_memory["peak_anon_mb"] - small_memory["peak_anon_mb"] < MAX_ANON_GROWTH_MB, (small_memory, large_memory)
