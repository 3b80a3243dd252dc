"""Tokenised rows stay memory-mapped, are cached on disk, and trainers read exactly the rows they read before."""

from __future__ import annotations

import json
import os

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from tests.conftest import run_tulu
from tulu_cli.config import assets_dir
from tulu_cli.data.encoded import encode_source, token_features
from tulu_cli.data.preference_data import COLUMNS, encode_preference_example, prepare_preferences
from tulu_cli.data.sft_data import encode_sft_example, prepare_sft
from tulu_cli.io import read_jsonl
from tulu_cli.train.batching import BatchPlan, read_rows

GOOD = {"messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]}


def write_sft_source(path, rows: int = 40) -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": f"What is {i} + 3?"},
                                      {"role": "assistant", "content": str(i + 3)}]}) for i in range(rows)]
    lines.insert(3, json.dumps({"text": "no messages"}))
    path.write_text("\n".join(lines) + "\n")


def data_cfg(source, cache, **extra):
    return OmegaConf.create({"train": str(source), "cache_dir": str(cache), **extra})


def counting_encoder(calls: list):
    def encode(example, **kwargs):
        calls.append(1)
        return encode_sft_example(example, **kwargs)
    return encode


def test_second_preparation_is_a_cache_hit_that_tokenises_nothing(tmp_path, tiny_tokenizer):
    source = tmp_path / "sft.jsonl"
    write_sft_source(source)
    cfg, calls = data_cfg(source, tmp_path / "cache"), []
    options, features = {"tokenizer": tiny_tokenizer, "max_length": 64}, token_features(["input_ids", "labels"])
    first, cold = encode_source(str(source), cfg, counting_encoder(calls), options, features, tmp_path / "r1.jsonl")
    assert cold.cache == "miss" and len(calls) == 41
    calls.clear()
    second, warm = encode_source(str(source), cfg, counting_encoder(calls), options, features, tmp_path / "r2.jsonl")
    assert warm.cache == "hit" and calls == []
    assert (warm.rows_read, warm.rows_kept, dict(warm.rejected)) == (41, 40, {"missing_field": 1})
    # The rejects of the run that tokenised are written again for the run that reused the rows.
    assert read_jsonl(tmp_path / "r2.jsonl") == read_jsonl(tmp_path / "r1.jsonl") != []
    assert second[:] == first[:]
    # Rows are memory-mapped from the cache entry, not held in memory.
    assert second.cache_files and all(str(tmp_path / "cache") in f["filename"] for f in second.cache_files)


def test_cache_key_follows_max_length_tokenizer_and_source(tmp_path, tiny_tokenizer):
    from tulu_cli.config import assets_dir as assets
    from tulu_cli.modeling import load_tokenizer

    source, cache = tmp_path / "sft.jsonl", tmp_path / "cache"
    write_sft_source(source)
    cfg = data_cfg(source, cache)

    def entries() -> set[str]:
        return {path.name for path in cache.iterdir() if not path.name.startswith(".")}

    prepare_sft(cfg, 64, tiny_tokenizer, tmp_path)
    assert len(entries()) == 1
    assert prepare_sft(cfg, 64, tiny_tokenizer, tmp_path)[1].cache == "hit"
    assert prepare_sft(cfg, 32, tiny_tokenizer, tmp_path)[1].cache == "miss" and len(entries()) == 2
    other = load_tokenizer({"train_tokenizer": {"files": ["tiny/sft_train.jsonl"], "vocab_size": 320}}, assets())
    assert prepare_sft(cfg, 64, other, tmp_path)[1].cache == "miss" and len(entries()) == 3
    # A rewritten source is a new entry, with its new rows.
    write_sft_source(source, rows=20)
    stamp = source.stat().st_mtime_ns + 10**9
    os.utime(source, ns=(stamp, stamp))
    dataset, report = prepare_sft(cfg, 64, tiny_tokenizer, tmp_path)
    assert report.cache == "miss" and len(dataset) == 20 and len(entries()) == 4
    # The number of tokenising processes does not change the rows, so it is not part of the key.
    assert prepare_sft(data_cfg(source, cache, num_proc=2), 64, tiny_tokenizer, tmp_path)[1].cache == "hit"


def test_two_tokenising_processes_give_the_same_rows_as_one(tmp_path, tiny_tokenizer):
    source = tmp_path / "sft.jsonl"
    write_sft_source(source, rows=200)
    one, first = prepare_sft(data_cfg(source, tmp_path / "one"), 128, tiny_tokenizer, tmp_path)
    two, report = prepare_sft(data_cfg(source, tmp_path / "two", num_proc=2), 128, tiny_tokenizer, tmp_path)
    assert report.cache == "miss" and one[:] == two[:]
    assert report.rows_kept == first.rows_kept == 200 and report.rejected == first.rejected == {"missing_field": 1}


def eager_rows(source, encode, columns, **options) -> list[dict]:
    """What the trainers held before rows were read lazily: every usable encoded row as a dict."""
    rows = [encode(json.loads(line), **options) for line in source.read_text().splitlines() if line.strip()]
    return [{column: row[column] for column in columns} for row in rows if not row["error_reason"]]


@pytest.mark.parametrize("kind", ["sft", "preference"])
def test_micro_batches_read_lazily_equal_the_rows_held_in_memory_before(tmp_path, tiny_tokenizer, kind):
    if kind == "sft":
        source = assets_dir() / "tiny" / "sft_train.jsonl"
        dataset, _ = prepare_sft(data_cfg(source, tmp_path / "cache"), 128, tiny_tokenizer, tmp_path)
        before = eager_rows(source, encode_sft_example, ["input_ids", "labels"], tokenizer=tiny_tokenizer,
                            max_length=128)
    else:
        source = assets_dir() / "tiny" / "prefs_train.jsonl"
        dataset, _ = prepare_preferences(str(source), {"cache_dir": str(tmp_path / "cache")}, 128, tiny_tokenizer,
                                         None)
        before = eager_rows(source, encode_preference_example, COLUMNS, tokenizer=tiny_tokenizer, max_length=128)
    assert len(dataset) == len(before)
    plan = BatchPlan(len(dataset), 32, 8, 2, 2, seed=3)
    for step in range(plan.total_steps):
        for rank in range(2):
            for rows in plan.micro_batches(step, rank):
                assert read_rows(dataset, rows) == [before[i] for i in rows]


def test_warm_run_reuses_the_tokenised_rows_and_trains_the_same_model(tmp_path):
    common = ["conf=tiny", "train.max_steps=2", "train.log_every=1", f"data.cache_dir={tmp_path / 'cache'}",
              "checkpoint.every_steps=100"]
    cold = run_tulu("sft", *common, f"output_dir={tmp_path / 'cold'}")
    warm = run_tulu("sft", *common, f"output_dir={tmp_path / 'warm'}", "data.num_proc=2")
    assert "'cache': 'miss'" in cold.stdout and "'cache': 'hit'" in warm.stdout
    assert "tokenising" not in warm.stdout + warm.stderr
    assert (tmp_path / "warm" / "rejects.jsonl").read_text() == (tmp_path / "cold" / "rejects.jsonl").read_text()
    first = load_file(str(tmp_path / "cold" / "final" / "model.safetensors"))
    second = load_file(str(tmp_path / "warm" / "final" / "model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

