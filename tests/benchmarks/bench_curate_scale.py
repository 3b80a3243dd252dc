"""Curate benchmark: peak RSS of a real `tulu curate` process on a generated mix of N rows against one
of N/10 rows, side by side in one run.

Run with `make bench` or `pytest tests/benchmarks/bench_curate_scale.py -m bench -s`. Size (env var):

- TULU_BENCH_CURATE_ROWS   rows of the large mix (default 200,000; ~600 bytes each); the small one has a tenth

The mix has two sources: Tulu messages (1% repeated rows) and ShareGPT rows of which half repeat the
first source, taken by fraction and by row count, shuffled. Goal: the large mix's peak RSS stays within
200 MB of the small one's (what grows is the de-duplication keys and the mix order, ~50 bytes a row).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROWS = int(os.environ.get("TULU_BENCH_CURATE_ROWS", "200000"))
MAX_RSS_GROWTH = 200 << 20
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


def curate_peak_rss(repo: Path, folder: Path, rows: int) -> tuple[int, dict]:
    """Peak RSS in bytes of one `tulu curate` process building the generated mix, and its counts."""
    tulu, sharegpt = write_sources(folder / "sources", rows)
    mix = f"{{kind:sft,seed:3,sources:{{tulu:{{path:'{tulu}',fraction:0.9}},share:{{path:'{sharegpt}',rows:{rows // 5}}}}}}}"
    script = ("import resource, subprocess, sys; proc = subprocess.run(sys.argv[1:]); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(proc.returncode)")
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_DATASETS_CACHE": str(folder / "cache")}
    proc = subprocess.run([sys.executable, "-c", script, sys.executable, "-m", "tulu_cli.cli", "curate",
                           f"output_dir={folder / 'run'}", "~datasets", f"+datasets.big={mix}"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = json.loads((folder / "run" / "big" / "manifest.json").read_text())["counts"]
    return int(proc.stdout.strip().splitlines()[-1]) * 1024, counts


@pytest.mark.bench
def test_curate_peak_rss_does_not_grow_with_rows(tmp_path):
    small_rss, small = curate_peak_rss(REPO, tmp_path / "small", ROWS // 10)
    large_rss, large = curate_peak_rss(REPO, tmp_path / "large", ROWS)
    print(f"\ncurate peak RSS: {ROWS // 10} rows {small_rss / 2**20:.0f} MiB, {ROWS} rows "
          f"{large_rss / 2**20:.0f} MiB (rows out {small['rows_out']} / {large['rows_out']})")
    assert large["rows_out"] > 9 * small["rows_out"]
    assert large_rss - small_rss < MAX_RSS_GROWTH, (small_rss, large_rss)
