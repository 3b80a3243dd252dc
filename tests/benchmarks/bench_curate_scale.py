"""Curate and decontaminate benchmark: peak memory of a real `tulu curate` process on a generated mix of N
rows against one of N/10 rows, side by side in one run, then of a real `tulu decontaminate remove=true`
on each of the two curated outputs: VmHWM (peak resident set, which also counts pages of the
memory-mapped Arrow files that were read: page cache the kernel can drop) and the peak of RssAnon (the
process's own memory, what grows when rows are held as Python objects).

Run with `make bench` or `pytest tests/benchmarks/bench_curate_scale.py -m bench -s`. Size (env var):

- TULU_BENCH_CURATE_ROWS   rows of the large mix (default 200,000; ~600 bytes each); the small one has a tenth
- TULU_BENCH_CURATE_ROWS_PER_FILE   rows per output shard of both runs (default 10,000)

The mix has two sources: Tulu messages (1% repeated rows) and ShareGPT rows of which half repeat the
first source, taken by fraction and by row count, shuffled. Goal: the large mix's peak private memory
stays within 200 MB of the small one's (what grows is the de-duplication keys and the mix order, about
100 bytes a row at the peak). Decontamination matches each curated mix against an eval set that one row
in 1,000 copies; what may grow there is the list of contaminated rows and the kept-row indices (8 bytes
a row), so the same 200 MB bound holds.

- TULU_BENCH_DECONTAM_BASELINE   a checkout of an earlier revision: its `tulu decontaminate` runs on the
                                 large mix too, beside this one's
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


def peak_memory(repo: Path, arguments: list[str], cwd: Path, env: dict) -> tuple[dict, str]:
    """Run `tulu ARGUMENTS` with `repo`'s code; its {peak_rss_mb, peak_anon_mb} (the stage process and any
    process it started, polled from /proc) and its output."""
    process = subprocess.Popen([sys.executable, "-m", "tulu_cli.cli", *arguments], cwd=cwd,
                               env={**env, "PYTHONPATH": str(repo)},
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
    return {"peak_rss_mb": round(max(hwm for hwm, _ in peaks.values())),
            "peak_anon_mb": round(max(anon for _, anon in peaks.values()))}, output


def curate_peak_memory(repo: Path, folder: Path, rows: int, rows_per_file: int = ROWS_PER_FILE) -> tuple[dict, dict]:
    """The peak memory of `tulu curate` on a generated mix of `rows` rows, and the mix counts."""
    tulu, sharegpt = write_sources(folder / "sources", rows)
    mix = f"{{kind:sft,seed:3,sources:{{tulu:{{path:'{tulu}',fraction:0.9}},share:{{path:'{sharegpt}',rows:{rows // 5}}}}}}}"
    env = {**os.environ, "HF_DATASETS_CACHE": str(folder / "cache")}
    memory, _ = peak_memory(repo, ["curate", f"output_dir={folder / 'run'}", f"rows_per_file={rows_per_file}",
                                   "~datasets", f"+datasets.big={mix}"], folder, env)
    return memory, json.loads((folder / "run" / "big" / "manifest.json").read_text())["counts"]


def decontaminate_peak_memory(repo: Path, folder: Path, output: str = "decontaminate") -> tuple[dict, dict]:
    """The peak memory of `tulu decontaminate remove=true` on the mix `curate_peak_memory` wrote in
    `folder`, against an eval set of every 1,000th question of the first source; the removal counts."""
    evals = folder / "evals.jsonl"
    rows = json.loads((folder / "run" / "big" / "manifest.json").read_text())["counts"]["rows_out"]
    evals.write_text("".join(json.dumps({"id": f"e{n}", "prompt": f"question number {n} " * 10}) + "\n"
                             for n in range(1, rows, 1000)))
    env = {**os.environ, "HF_DATASETS_CACHE": str(folder / "cache")}
    memory, _ = peak_memory(repo, ["decontaminate", "conf=tiny", f"train=[{folder / 'run' / 'big'}]",
                                   f"evals=[{evals}]", "remove=true", f"rows_per_file={ROWS_PER_FILE}",
                                   f"output_dir={folder / output}"], folder, env)
    report = json.loads((folder / output / "report.json").read_text())
    return memory, next(iter(report["removed"].values()))


@pytest.mark.bench
def test_curate_peak_rss_does_not_grow_with_rows(tmp_path):
    small_memory, small = curate_peak_memory(REPO, tmp_path / "small", ROWS // 10)
    large_memory, large = curate_peak_memory(REPO, tmp_path / "large", ROWS)
    print(f"\ncurate: {ROWS // 10} rows {small_memory}, {ROWS} rows {large_memory} "
          f"(rows out {small['rows_out']} / {large['rows_out']})")
    assert large["rows_out"] > 9 * small["rows_out"]
    assert large_memory["peak_anon_mb"] - small_memory["peak_anon_mb"] < MAX_ANON_GROWTH_MB, (small_memory, large_memory)


@pytest.mark.bench
def test_decontaminate_peak_memory_does_not_grow_with_rows(tmp_path):
    curate_peak_memory(REPO, tmp_path / "small", ROWS // 10)
    curate_peak_memory(REPO, tmp_path / "large", ROWS)
    small_memory, small = decontaminate_peak_memory(REPO, tmp_path / "small")
    large_memory, large = decontaminate_peak_memory(REPO, tmp_path / "large")
    line = (f"\ndecontaminate remove=true: {small['rows_in']} rows {small_memory}, {large['rows_in']} rows "
            f"{large_memory} (removed {small['removed']} / {large['removed']})")
    baseline = os.environ.get("TULU_BENCH_DECONTAM_BASELINE")
    if baseline:
        baseline_memory, baseline_counts = decontaminate_peak_memory(Path(baseline), tmp_path / "large", "baseline")
        line += f"; baseline checkout, {large['rows_in']} rows: {baseline_memory} (removed {baseline_counts['removed']})"
    print(line)
    assert large["removed"] > 5 * small["removed"] > 0
    assert large["rows_out"] == large["rows_in"] - large["removed"]
    assert large_memory["peak_anon_mb"] - small_memory["peak_anon_mb"] < MAX_ANON_GROWTH_MB, (small_memory, large_memory)
