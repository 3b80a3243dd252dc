"""`build_mix` streams: the same output as the in-memory builder it replaced, and Python-object memory that
does not grow with the number of rows."""

from __future__ import annotations

import json
import tracemalloc

from tulu_cli.curate.build import build_mix
from tulu_cli.curate.dataset_dir import write_dataset

# content_sha256 of `pinned_mix` as built by the in-memory builder (one Python dict per row, deduplicated
# through a dict of keys, `pa.Table.from_pylist`, `random.Random(seed).shuffle`), before it streamed.
PINNED_CONTENT_SHA256 = "028ef82c15b4cfb14785e26bd0b259feb6dd3e3ddb0c5451067adaac9a566c63"


def no_progress(description, total):
    return lambda n: None


def chat(prompt, answer="ok"):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def pinned_mix(folder):
    """Three sources with bad rows, duplicates within and across sources, a fraction, a count and an upsample."""
    first = [{"id": f"a{i}", "messages": chat(f"q{i % 900}", f"answer {i}")} for i in range(2500)]
    first[7] = "{broken"
    first[11] = {"id": "bad", "messages": [{"role": "wizard", "content": "x"}]}
    first[13] = {"id": "dup", "messages": chat("q5", "answer 5")}  # the same content as row 6
    second = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"answer {i}"}]}
              for i in range(0, 3000, 2)]  # half of them already in the first source
    third = [{"instruction": f"task {i}", "output": f"done {i}"} for i in range(30)]
    return {"kind": "sft", "shuffle": True, "sources": {
        "first": {"path": str(write_jsonl(folder / "first.jsonl", first)), "fraction": 0.8},
        "second": {"path": str(write_jsonl(folder / "second.jsonl", second)), "rows": 600},
        "third": {"path": str(write_jsonl(folder / "third.jsonl", third)), "rows": 75},
    }}


def test_a_streamed_mix_is_the_mix_the_in_memory_builder_made(tmp_path):
    result = build_mix("m", pinned_mix(tmp_path), seed=7, progress=no_progress)
    manifest = write_dataset(tmp_path / "out", result.rows, {"name": "m"}, rows_per_file=500, order=result.order)
    assert manifest["content_sha256"] == PINNED_CONTENT_SHA256


def _python_peak(tmp_path, rows: int) -> int:
    folder = tmp_path / str(rows)
    folder.mkdir()
    write_jsonl(folder / "rows.jsonl", ({"id": f"r{i}", "messages": chat(f"question {i}", "answer " * 20)}
                                        for i in range(rows)))
    mix = {"kind": "sft", "sources": {"all": {"path": str(folder / "rows.jsonl"), "fraction": 1.0},
                                      "again": {"path": str(folder / "rows.jsonl"), "rows": rows // 2}}}
    tracemalloc.start()
    try:
        result = build_mix("m", mix, seed=0, progress=no_progress, workdir=folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result.order) == rows and result.sources[1].duplicates == rows
    return peak


def test_python_memory_of_a_mix_does_not_grow_with_its_rows(tmp_path):
    small, large = _python_peak(tmp_path, 1_000), _python_peak(tmp_path, 10_000)
    # Ten times the rows: the peak grows by the numpy arrays (keys, indices, order: ~100 bytes a row at the
    # peak, 1 MB here), not by a Python object per row (a dict per row was ~2.7 kB a row: 25 MB more).
    assert large - small < 4 << 20, (small, large)
