"""Loader benchmark: a JSONL file of Tulu-style rows read into Arrow, cold and from the cache.

Run with `make bench` or `pytest tests/benchmarks/bench_loader.py -m bench -s`. Size (env var):

- TULU_BENCH_LOADER_ROWS   rows (default 1,000,000; ~500 bytes each)

Measured, side by side in one process: a cold load (parse, infer types, write Arrow) and a cached load
in rows/s; the peak of Python memory during a cold load (tracemalloc), which must stay flat whatever
the number of rows; and, as a reference on the first 100,000 rows, `datasets.Dataset.from_list` of the
parsed rows (what a loader that holds every row as a Python object does) in time and peak memory.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

ROWS = int(os.environ.get("TULU_BENCH_LOADER_ROWS", "1000000"))
REFERENCE_ROWS = 100_000
# One batch of rows as Python objects, with room; independent of the number of rows.
MAX_PYTHON_PEAK = 32 << 20


def _write_rows(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            handle.write(json.dumps({"id": f"row-{i}", "messages": [
                {"role": "user", "content": f"question number {i} " * 10},
                {"role": "assistant", "content": "answer " * 30}]}) + "\n")


def _from_list(path: Path, rows: int) -> None:
    import datasets

    with path.open(encoding="utf-8") as handle:
        parsed = [json.loads(line) for _, line in zip(range(rows), handle, strict=False)]
    datasets.Dataset.from_list(parsed)


def _from_list_time_and_peak(path: Path, rows: int) -> tuple[float, int]:
    start = time.perf_counter()
    _from_list(path, rows)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    _from_list(path, rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak


@pytest.mark.bench
def test_bench_loader(monkeypatch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", root / "cache")
        from tulu_cli.data.sources import load_source

        source = root / "rows.jsonl"
        _write_rows(source, ROWS)
        size_mb = source.stat().st_size / 1e6

        start = time.perf_counter()
        loaded = load_source(str(source))
        cold = time.perf_counter() - start
        assert len(loaded.dataset) == ROWS and not loaded.rejects
        start = time.perf_counter()
        load_source(str(source))
        cached = time.perf_counter() - start

        copy = root / "rows_copy.jsonl"
        copy.write_bytes(source.read_bytes())
        tracemalloc.start()
        load_source(str(copy))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        reference_rows = min(ROWS, REFERENCE_ROWS)
        reference_seconds, reference_peak = _from_list_time_and_peak(source, reference_rows)
        loader_seconds = cold * reference_rows / ROWS
        print(f"\n[loader bench] {ROWS:,} rows ({size_mb:.0f} MB): cold {ROWS / cold:,.0f} rows/s, "
              f"cached {ROWS / cached:,.0f} rows/s; Python peak during a cold load {peak / 2**20:.1f} MiB")
        print(f"[loader bench] Dataset.from_list of {reference_rows:,} rows: {reference_rows / reference_seconds:,.0f}"
              f" rows/s (loader/from_list time {loader_seconds / reference_seconds:.2f}), Python peak "
              f"{reference_peak / 2**20:.1f} MiB")
        assert peak < MAX_PYTHON_PEAK, peak
